#include "protocol/sender_keys.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "crypto/primitives.h"
#include "signal/wire.pb.h"

namespace parley::protocol {

namespace {

constexpr std::uint8_t kMessageKeySeedLabel = 0x01;
constexpr std::uint8_t kChainKeySeedLabel = 0x02;
constexpr std::string_view kWhisperGroupInfo = "WhisperGroup";
constexpr std::size_t kIvSize = 16;
constexpr std::size_t kCipherKeySize = 32;

void wipe(std::string* s) {
  if (!s->empty()) secure_zero(s->data(), s->size());
}

SecretBytes hmac_label(const SecretBytes& seed, std::uint8_t label) {
  const std::uint8_t input[1] = {label};
  crypto::Sha256Digest d = crypto::hmac_sha256(seed.view(), ByteView(input, 1));
  SecretBytes out{ByteView(d.data(), d.size())};
  secure_zero(d.data(), d.size());
  return out;
}

// sender_chain_key_create_message_key / _create_next.
SenderMessageKey message_key_of(const SenderChainKey& chain) {
  return SenderMessageKey{chain.iteration, hmac_label(chain.seed, kMessageKeySeedLabel)};
}
SenderChainKey next_chain_key(const SenderChainKey& chain) {
  return SenderChainKey{chain.iteration + 1, hmac_label(chain.seed, kChainKeySeedLabel)};
}

// sender_message_key_create: HKDF(seed, no salt, "WhisperGroup", 48) = IV(16) || key(32).
Result<SecretBytes> derive_key_material(const SenderMessageKey& key) {
  return crypto::hkdf_sha256(key.seed.view(), ByteView(), as_bytes(kWhisperGroupInfo),
                             kIvSize + kCipherKeySize);
}
ByteView iv_of(const SecretBytes& material) { return material.view().subspan(0, kIvSize); }
ByteView cipher_key_of(const SecretBytes& material) {
  return material.view().subspan(kIvSize, kCipherKeySize);
}

Result<SenderKeyRecord> load_record(SenderKeyStore& store, const SenderKeyName& name) {
  PARLEY_ASSIGN_OR_RETURN(std::optional<SenderKeyRecord> loaded, store.load_sender_key(name));
  if (!loaded) return SenderKeyRecord();
  return std::move(*loaded);
}

// libsignal key_helper: generate_sender_key_id (0..INT32_MAX), generate_sender_key (32 bytes),
// generate_sender_signing_key.
SenderKeyState fresh_own_state(Rng& rng) {
  std::uint32_t key_id = rng.next_u32() & 0x7FFFFFFFu;
  SecretBytes seed(kSenderChainSeedSize);
  rng.fill(seed.mutable_view());
  crypto::KeyPair signing = crypto::KeyPair::generate(rng);
  return SenderKeyState(key_id, SenderChainKey{0, std::move(seed)}, signing.public_key,
                        std::move(signing.private_key));
}

SenderKeyDistributionMessage distribution_message_for(const SenderKeyState& state) {
  return SenderKeyDistributionMessage::create(state.key_id(), state.chain_key().iteration,
                                              state.chain_key().seed.view(),
                                              state.signing_public());
}

// group_cipher_get_sender_key: the message key for `iteration`, advancing `state` (a copy the
// caller commits only on success).
Result<SenderMessageKey> message_key_for(SenderKeyState& state, std::uint32_t iteration) {
  const std::uint32_t current = state.chain_key().iteration;
  if (current > iteration) {
    std::optional<SenderMessageKey> stored = state.take_message_key(iteration);
    if (!stored) {
      return make_error(ErrorCode::kDuplicateMessage, "sender key: message key already used");
    }
    return std::move(*stored);
  }
  if (iteration - current > kMaxSenderKeyForwardJump) {
    return make_error(ErrorCode::kTooFarAhead, "sender key: message too far ahead of chain");
  }
  SenderChainKey chain = state.chain_key().clone();
  while (chain.iteration < iteration) {
    state.add_message_key(message_key_of(chain));
    chain = next_chain_key(chain);
  }
  SenderMessageKey result = message_key_of(chain);
  state.set_chain_key(next_chain_key(chain));
  return result;
}

Status version_status(std::uint8_t version_byte) {
  if ((version_byte >> 4) != kSenderKeyMessageVersion) {
    return make_error(ErrorCode::kBadVersion, "sender key: unsupported message version");
  }
  return Status::ok();
}

}  // namespace

// ---- SenderKeyDistributionMessage ------------------------------------------------------------

SenderKeyDistributionMessage SenderKeyDistributionMessage::create(
    std::uint32_t key_id, std::uint32_t iteration, ByteView chain_key,
    const crypto::PublicKey& signing_key) {
  signal::wire::SenderKeyDistributionMessage p;
  p.set_id(key_id);
  p.set_iteration(iteration);
  p.mutable_chain_key()->assign(as_chars(chain_key));
  p.set_signing_key(std::string(as_chars(signing_key.serialize())));
  std::string body = p.SerializeAsString();
  wipe(p.mutable_chain_key());
  SecretBytes serialized(1 + body.size());
  serialized.data()[0] = kSenderKeyVersionByte;
  std::copy(body.begin(), body.end(), serialized.data() + 1);
  wipe(&body);
  return SenderKeyDistributionMessage(key_id, iteration, SecretBytes(chain_key), signing_key,
                                      std::move(serialized));
}

Result<SenderKeyDistributionMessage> SenderKeyDistributionMessage::parse(ByteView serialized) {
  if (serialized.size() > kMaxSenderKeyDistributionMessageSize) {
    return make_error(ErrorCode::kTooLarge, "sender key distribution message too large");
  }
  if (serialized.size() < 2) {
    return make_error(ErrorCode::kMalformed, "sender key distribution message too short");
  }
  PARLEY_TRY(version_status(serialized[0]));
  signal::wire::SenderKeyDistributionMessage p;
  const ByteView body = serialized.subspan(1);
  if (!p.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return make_error(ErrorCode::kMalformed, "sender key distribution message does not parse");
  }
  Status status = Status::ok();
  std::optional<crypto::PublicKey> signing_key;
  if (!p.has_id() || !p.has_iteration() || !p.has_chain_key() || !p.has_signing_key()) {
    status = make_error(ErrorCode::kMalformed, "sender key distribution message is incomplete");
  } else if (p.chain_key().size() != kSenderChainSeedSize) {
    status = make_error(ErrorCode::kMalformed, "sender key distribution message: bad chain key");
  } else {
    auto key = crypto::PublicKey::deserialize(as_bytes(p.signing_key()));
    if (key) {
      signing_key = *key;
    } else {
      status = make_error(ErrorCode::kMalformed, "sender key distribution message: bad key");
    }
  }
  if (!status.is_ok()) {
    wipe(p.mutable_chain_key());
    return status;
  }
  SecretBytes chain_key{as_bytes(p.chain_key())};
  wipe(p.mutable_chain_key());
  return SenderKeyDistributionMessage(p.id(), p.iteration(), std::move(chain_key), *signing_key,
                                      SecretBytes(serialized));
}

SenderKeyDistributionMessage SenderKeyDistributionMessage::clone() const {
  return SenderKeyDistributionMessage(key_id_, iteration_, chain_key_.clone(), signing_key_,
                                      serialized_.clone());
}

// ---- SenderKeyMessage ------------------------------------------------------------------------

SenderKeyMessage SenderKeyMessage::create(std::uint32_t key_id, std::uint32_t iteration,
                                          ByteView ciphertext,
                                          const crypto::PrivateKey& signing_key, Rng& rng) {
  signal::wire::SenderKeyMessage p;
  p.set_id(key_id);
  p.set_iteration(iteration);
  p.set_ciphertext(std::string(as_chars(ciphertext)));
  SenderKeyMessage m;
  m.key_id_ = key_id;
  m.iteration_ = iteration;
  m.ciphertext_ = to_bytes(ciphertext);
  m.serialized_.push_back(kSenderKeyVersionByte);
  append(m.serialized_, as_bytes(p.SerializeAsString()));
  auto signature = signing_key.sign(m.serialized_, rng);
  append(m.serialized_, signature);
  return m;
}

Result<SenderKeyMessage> SenderKeyMessage::parse(ByteView serialized) {
  if (serialized.size() > kMaxSenderKeyMessageSize) {
    return make_error(ErrorCode::kTooLarge, "sender key message too large");
  }
  if (serialized.size() <= 1 + crypto::kSignatureSize) {
    return make_error(ErrorCode::kMalformed, "sender key message too short");
  }
  PARLEY_TRY(version_status(serialized[0]));
  const ByteView body = serialized.subspan(1, serialized.size() - 1 - crypto::kSignatureSize);
  signal::wire::SenderKeyMessage p;
  if (!p.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return make_error(ErrorCode::kMalformed, "sender key message does not parse");
  }
  if (!p.has_id() || !p.has_iteration() || !p.has_ciphertext()) {
    return make_error(ErrorCode::kMalformed, "sender key message is incomplete");
  }
  SenderKeyMessage m;
  m.version_ = static_cast<std::uint8_t>(serialized[0] >> 4);
  m.key_id_ = p.id();
  m.iteration_ = p.iteration();
  m.ciphertext_ = to_bytes(p.ciphertext());
  m.serialized_ = to_bytes(serialized);
  return m;
}

bool SenderKeyMessage::verify_signature(const crypto::PublicKey& signing_key) const {
  if (serialized_.size() <= crypto::kSignatureSize) return false;
  const ByteView all(serialized_);
  const std::size_t signed_len = all.size() - crypto::kSignatureSize;
  return crypto::verify_signature(signing_key, all.first(signed_len), all.subspan(signed_len));
}

// ---- Session building ------------------------------------------------------------------------

Result<SenderKeyDistributionMessage> create_distribution_message(SenderKeyStore& store,
                                                                 const SenderKeyName& name,
                                                                 Rng& rng) {
  PARLEY_ASSIGN_OR_RETURN(SenderKeyRecord record, load_record(store, name));
  if (record.empty()) {
    record.set_state(fresh_own_state(rng));
    PARLEY_TRY(store.store_sender_key(name, record));
  }
  return distribution_message_for(*record.current_state());
}

Status process_distribution_message(SenderKeyStore& store, const SenderKeyName& name,
                                    const SenderKeyDistributionMessage& message) {
  PARLEY_ASSIGN_OR_RETURN(SenderKeyRecord record, load_record(store, name));
  record.add_state(SenderKeyState(message.key_id(),
                                  SenderChainKey{message.iteration(), message.chain_key().clone()},
                                  message.signing_key(), std::nullopt));
  return store.store_sender_key(name, record);
}

Result<SenderKeyDistributionMessage> rotate_sender_key(SenderKeyStore& store,
                                                       const SenderKeyName& name, Rng& rng) {
  PARLEY_ASSIGN_OR_RETURN(SenderKeyRecord record, load_record(store, name));
  std::optional<std::uint32_t> old_id;
  if (const SenderKeyState* old = record.current_state()) old_id = old->key_id();
  SenderKeyState state = fresh_own_state(rng);
  // A new key id must differ from the old one, or receivers would keep decrypting with the old
  // chain under that id.
  while (old_id && state.key_id() == *old_id) state = fresh_own_state(rng);
  record.set_state(std::move(state));
  PARLEY_TRY(store.store_sender_key(name, record));
  return distribution_message_for(*record.current_state());
}

// ---- GroupCipher -----------------------------------------------------------------------------

Result<Bytes> GroupCipher::encrypt(ByteView plaintext) {
  PARLEY_ASSIGN_OR_RETURN(SenderKeyRecord record, load_record(store_, name_));
  SenderKeyState* state = record.current_state();
  if (state == nullptr || !state->signing_private()) {
    return make_error(ErrorCode::kNoSenderKey, "sender key: no sending chain for this group");
  }
  if (state->chain_key().iteration == std::numeric_limits<std::uint32_t>::max()) {
    return make_error(ErrorCode::kOutOfRange, "sender key: chain exhausted, rotate the key");
  }
  SenderMessageKey key = message_key_of(state->chain_key());
  PARLEY_ASSIGN_OR_RETURN(SecretBytes material, derive_key_material(key));
  PARLEY_ASSIGN_OR_RETURN(Bytes ciphertext, crypto::aes256_cbc_encrypt(cipher_key_of(material),
                                                                       iv_of(material), plaintext));
  SenderKeyMessage message = SenderKeyMessage::create(state->key_id(), key.iteration, ciphertext,
                                                      *state->signing_private(), rng_);
  state->set_chain_key(next_chain_key(state->chain_key()));
  PARLEY_TRY(store_.store_sender_key(name_, record));
  return message.serialized();
}

Result<Bytes> GroupCipher::decrypt(ByteView serialized) {
  PARLEY_ASSIGN_OR_RETURN(SenderKeyMessage message, SenderKeyMessage::parse(serialized));
  // The store hands out a copy: every change below stays local until the final store call.
  PARLEY_ASSIGN_OR_RETURN(SenderKeyRecord record, load_record(store_, name_));
  SenderKeyState* state = record.state_for_key_id(message.key_id());
  if (state == nullptr) {
    return make_error(ErrorCode::kNoSenderKey, "sender key: no chain with this key id");
  }
  if (!message.verify_signature(state->signing_public())) {
    return make_error(ErrorCode::kBadSignature, "sender key: message signature does not verify");
  }
  PARLEY_ASSIGN_OR_RETURN(SenderMessageKey key, message_key_for(*state, message.iteration()));
  PARLEY_ASSIGN_OR_RETURN(SecretBytes material, derive_key_material(key));
  PARLEY_ASSIGN_OR_RETURN(
      Bytes plaintext,
      crypto::aes256_cbc_decrypt(cipher_key_of(material), iv_of(material), message.ciphertext()));
  PARLEY_TRY(store_.store_sender_key(name_, record));
  return plaintext;
}

}  // namespace parley::protocol
