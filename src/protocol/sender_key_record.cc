#include "protocol/sender_key_record.h"

#include <algorithm>
#include <string>
#include <utility>

#include "signal/storage.pb.h"

namespace parley::protocol {

namespace {

using StateProto = signal::storage::SenderKeyStateStructure;
using RecordProto = signal::storage::SenderKeyRecordStructure;

constexpr std::size_t kMessageKeySeedSize = 32;

void wipe(std::string* s) {
  if (!s->empty()) secure_zero(s->data(), s->size());
}

// Zeroizes every secret string field of `p` (chain seeds, message-key seeds, private keys).
void wipe_secrets(RecordProto& p) {
  for (StateProto& s : *p.mutable_sender_key_states()) {
    if (s.has_sender_chain_key()) wipe(s.mutable_sender_chain_key()->mutable_seed());
    if (s.has_sender_signing_key()) wipe(s.mutable_sender_signing_key()->mutable_private_());
    for (auto& mk : *s.mutable_sender_message_keys()) wipe(mk.mutable_seed());
  }
}

// Writes a secret into a proto string field without a temporary copy.
void set_secret(std::string* field, ByteView secret) { field->assign(as_chars(secret)); }

Status malformed(const char* what) {
  return make_error(ErrorCode::kMalformed, std::string("sender key record: ") + what);
}

Result<SenderKeyState> state_from_proto(const StateProto& s) {
  if (!s.has_sender_key_id() || !s.has_sender_chain_key() || !s.has_sender_signing_key()) {
    return malformed("state lacks a field");
  }
  const auto& ck = s.sender_chain_key();
  if (!ck.has_iteration() || !ck.has_seed() || ck.seed().size() != kSenderChainSeedSize) {
    return malformed("bad chain key");
  }
  const auto& sk = s.sender_signing_key();
  if (!sk.has_public_()) return malformed("no signing key");
  auto pub = crypto::PublicKey::deserialize(as_bytes(sk.public_()));
  if (!pub) return malformed("bad signing key");
  std::optional<crypto::PrivateKey> priv;
  if (sk.has_private_()) {
    auto kp = crypto::KeyPair::from_private(as_bytes(sk.private_()));
    if (!kp || kp->public_key != *pub) return malformed("signing key pair does not match");
    priv.emplace(std::move(kp->private_key));
  }
  if (static_cast<std::size_t>(s.sender_message_keys_size()) > kMaxSenderMessageKeys) {
    return malformed("too many message keys");
  }
  SenderKeyState state(s.sender_key_id(),
                       SenderChainKey{ck.iteration(), SecretBytes(as_bytes(ck.seed()))}, *pub,
                       std::move(priv));
  for (const auto& mk : s.sender_message_keys()) {
    if (!mk.has_iteration() || !mk.has_seed() || mk.seed().size() != kMessageKeySeedSize) {
      return malformed("bad message key");
    }
    state.add_message_key(SenderMessageKey{mk.iteration(), SecretBytes(as_bytes(mk.seed()))});
  }
  return state;
}

void state_to_proto(const SenderKeyState& state, StateProto& s) {
  s.set_sender_key_id(state.key_id());
  auto* ck = s.mutable_sender_chain_key();
  ck->set_iteration(state.chain_key().iteration);
  set_secret(ck->mutable_seed(), state.chain_key().seed.view());
  auto* sk = s.mutable_sender_signing_key();
  sk->set_public_(std::string(as_chars(state.signing_public().serialize())));
  if (state.signing_private()) {
    set_secret(sk->mutable_private_(), state.signing_private()->bytes().view());
  }
  for (const SenderMessageKey& key : state.message_keys()) {
    auto* mk = s.add_sender_message_keys();
    mk->set_iteration(key.iteration);
    set_secret(mk->mutable_seed(), key.seed.view());
  }
}

}  // namespace

// ---- SenderKeyState --------------------------------------------------------------------------

SenderKeyState::SenderKeyState(std::uint32_t key_id, SenderChainKey chain_key,
                               const crypto::PublicKey& signing_public,
                               std::optional<crypto::PrivateKey> signing_private)
    : key_id_(key_id),
      chain_key_(std::move(chain_key)),
      signing_public_(signing_public),
      signing_private_(std::move(signing_private)) {}

SenderKeyState::SenderKeyState(const SenderKeyState& other)
    : key_id_(other.key_id_),
      chain_key_(other.chain_key_.clone()),
      signing_public_(other.signing_public_) {
  if (other.signing_private_) signing_private_.emplace(other.signing_private_->clone());
  for (const SenderMessageKey& key : other.message_keys_) message_keys_.push_back(key.clone());
}

SenderKeyState& SenderKeyState::operator=(const SenderKeyState& other) {
  if (this != &other) *this = SenderKeyState(other);
  return *this;
}

bool SenderKeyState::has_message_key(std::uint32_t iteration) const {
  return std::any_of(message_keys_.begin(), message_keys_.end(),
                     [iteration](const SenderMessageKey& k) { return k.iteration == iteration; });
}

void SenderKeyState::add_message_key(SenderMessageKey key) {
  message_keys_.push_back(std::move(key));
  while (message_keys_.size() > kMaxSenderMessageKeys) message_keys_.pop_front();
}

std::optional<SenderMessageKey> SenderKeyState::take_message_key(std::uint32_t iteration) {
  auto it =
      std::find_if(message_keys_.begin(), message_keys_.end(),
                   [iteration](const SenderMessageKey& k) { return k.iteration == iteration; });
  if (it == message_keys_.end()) return std::nullopt;
  SenderMessageKey key = std::move(*it);
  message_keys_.erase(it);
  return key;
}

// ---- SenderKeyRecord -------------------------------------------------------------------------

SenderKeyState* SenderKeyRecord::state_for_key_id(std::uint32_t key_id) {
  for (SenderKeyState& s : states_) {
    if (s.key_id() == key_id) return &s;
  }
  return nullptr;
}

const SenderKeyState* SenderKeyRecord::state_for_key_id(std::uint32_t key_id) const {
  for (const SenderKeyState& s : states_) {
    if (s.key_id() == key_id) return &s;
  }
  return nullptr;
}

void SenderKeyRecord::add_state(SenderKeyState state) {
  std::optional<SenderKeyState> existing;
  for (auto it = states_.begin(); it != states_.end();) {
    if (it->key_id() != state.key_id()) {
      ++it;
      continue;
    }
    if (!existing && it->signing_public() == state.signing_public()) {
      existing.emplace(std::move(*it));
    }
    it = states_.erase(it);
  }
  states_.push_front(existing ? std::move(*existing) : std::move(state));
  while (states_.size() > kMaxSenderKeyStates) states_.pop_back();
}

void SenderKeyRecord::set_state(SenderKeyState state) {
  states_.clear();
  states_.push_front(std::move(state));
}

Bytes SenderKeyRecord::serialize() const {
  RecordProto p;
  p.set_format_version(kSenderKeyRecordFormatVersion);
  for (const SenderKeyState& state : states_) state_to_proto(state, *p.add_sender_key_states());
  std::string out = p.SerializeAsString();
  wipe_secrets(p);
  Bytes bytes = to_bytes(out);
  wipe(&out);
  return bytes;
}

Result<SenderKeyRecord> SenderKeyRecord::deserialize(ByteView bytes) {
  RecordProto p;
  if (bytes.size() > static_cast<std::size_t>(INT32_MAX) ||
      !p.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return malformed("does not parse");
  }
  SenderKeyRecord record;
  Status status = Status::ok();
  if (!p.has_format_version() || p.format_version() != kSenderKeyRecordFormatVersion) {
    status = malformed("unknown format version");
  } else if (static_cast<std::size_t>(p.sender_key_states_size()) > kMaxSenderKeyStates) {
    status = malformed("too many states");
  } else {
    for (const StateProto& s : p.sender_key_states()) {
      auto state = state_from_proto(s);
      if (!state) {
        status = state.error();
        break;
      }
      record.states_.push_back(std::move(state).value());  // stored newest first
    }
  }
  wipe_secrets(p);
  if (!status.is_ok()) return status;
  return record;
}

}  // namespace parley::protocol
