#include "protocol/messages.h"

#include "crypto/primitives.h"
#include "signal/wire.pb.h"

namespace parley::protocol {

namespace wire = signal::wire;

Status check_version_byte(ByteView serialized) {
  if (serialized.empty()) return make_error(ErrorCode::kMalformed, "empty message");
  if ((serialized[0] >> 4) != kCiphertextVersion) {
    return make_error(ErrorCode::kBadVersion, "unsupported message version");
  }
  return Status::ok();
}

namespace {

Status check_size(ByteView serialized, std::size_t min) {
  if (serialized.size() > kMaxMessageSize) {
    return make_error(ErrorCode::kTooLarge, "message exceeds the size limit");
  }
  PARLEY_TRY(check_version_byte(serialized));
  if (serialized.size() < min) return make_error(ErrorCode::kMalformed, "message too short");
  return Status::ok();
}

crypto::Sha256Digest compute_mac(const crypto::PublicKey& sender_identity,
                                 const crypto::PublicKey& receiver_identity, ByteView mac_key,
                                 ByteView versioned_body) {
  Bytes s = sender_identity.serialize();
  Bytes r = receiver_identity.serialize();
  return crypto::hmac_sha256(mac_key, {ByteView(s), ByteView(r), versioned_body});
}

}  // namespace

Result<WhisperMessage> WhisperMessage::parse(ByteView serialized) {
  PARLEY_TRY(check_size(serialized, 1 + kMacSize));
  ByteView body = serialized.subspan(1, serialized.size() - 1 - kMacSize);
  wire::WhisperMessage p;
  if (!p.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return make_error(ErrorCode::kMalformed, "whisper message does not parse");
  }
  if (!p.has_ratchet_key() || !p.has_counter() || !p.has_ciphertext()) {
    return make_error(ErrorCode::kMalformed, "whisper message is incomplete");
  }
  auto key = crypto::PublicKey::deserialize(as_bytes(p.ratchet_key()));
  if (!key) return make_error(ErrorCode::kMalformed, "whisper message: bad ratchet key");
  WhisperMessage m;
  m.ratchet_key_ = *key;
  m.counter_ = p.counter();
  m.previous_counter_ = p.previous_counter();
  m.ciphertext_ = to_bytes(p.ciphertext());
  m.serialized_ = to_bytes(serialized);
  return m;
}

Result<WhisperMessage> WhisperMessage::create(ByteView mac_key,
                                              const crypto::PublicKey& ratchet_key,
                                              std::uint32_t counter,
                                              std::uint32_t previous_counter, ByteView ciphertext,
                                              const crypto::PublicKey& sender_identity,
                                              const crypto::PublicKey& receiver_identity) {
  wire::WhisperMessage p;
  p.set_ratchet_key(std::string(as_chars(ratchet_key.serialize())));
  p.set_counter(counter);
  p.set_previous_counter(previous_counter);
  p.set_ciphertext(std::string(as_chars(ciphertext)));
  WhisperMessage m;
  m.serialized_.reserve(1 + p.ByteSizeLong() + kMacSize);
  m.serialized_.push_back(kVersionByte);
  const std::size_t body_size = p.ByteSizeLong();
  m.serialized_.resize(1 + body_size);
  if (!p.SerializeToArray(m.serialized_.data() + 1, static_cast<int>(body_size))) {
    return make_error(ErrorCode::kInternal, "whisper message does not serialize");
  }
  if (m.serialized_.size() + kMacSize > kMaxMessageSize) {
    return make_error(ErrorCode::kTooLarge, "message exceeds the size limit");
  }
  auto mac = compute_mac(sender_identity, receiver_identity, mac_key, m.serialized_);
  m.serialized_.insert(m.serialized_.end(), mac.begin(), mac.begin() + kMacSize);
  m.ratchet_key_ = ratchet_key;
  m.counter_ = counter;
  m.previous_counter_ = previous_counter;
  m.ciphertext_ = to_bytes(ciphertext);
  return m;
}

Status WhisperMessage::verify_mac(const crypto::PublicKey& sender_identity,
                                  const crypto::PublicKey& receiver_identity,
                                  ByteView mac_key) const {
  ByteView all(serialized_);
  ByteView body = all.first(all.size() - kMacSize);
  ByteView their_mac = all.last(kMacSize);
  auto mac = compute_mac(sender_identity, receiver_identity, mac_key, body);
  if (!constant_time_equal(ByteView(mac).first(kMacSize), their_mac)) {
    return make_error(ErrorCode::kBadMac, "message authentication failed");
  }
  return Status::ok();
}

Result<PreKeyWhisperMessage> PreKeyWhisperMessage::parse(ByteView serialized) {
  PARLEY_TRY(check_size(serialized, 2));
  ByteView body = serialized.subspan(1);
  wire::PreKeyWhisperMessage p;
  if (!p.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return make_error(ErrorCode::kMalformed, "prekey message does not parse");
  }
  if (!p.has_signed_pre_key_id() || !p.has_base_key() || !p.has_identity_key() ||
      !p.has_message()) {
    return make_error(ErrorCode::kMalformed, "prekey message is incomplete");
  }
  auto base = crypto::PublicKey::deserialize(as_bytes(p.base_key()));
  auto identity = crypto::PublicKey::deserialize(as_bytes(p.identity_key()));
  if (!base || !identity) return make_error(ErrorCode::kMalformed, "prekey message: bad key");
  PARLEY_ASSIGN_OR_RETURN(WhisperMessage inner, WhisperMessage::parse(as_bytes(p.message())));
  PreKeyWhisperMessage m;
  m.registration_id_ = p.registration_id();
  if (p.has_pre_key_id()) m.pre_key_id_ = p.pre_key_id();
  m.signed_pre_key_id_ = p.signed_pre_key_id();
  m.base_key_ = *base;
  m.identity_key_ = *identity;
  m.message_ = std::move(inner);
  m.serialized_ = to_bytes(serialized);
  return m;
}

PreKeyWhisperMessage PreKeyWhisperMessage::create(std::uint32_t registration_id,
                                                  std::optional<std::uint32_t> pre_key_id,
                                                  std::uint32_t signed_pre_key_id,
                                                  const crypto::PublicKey& base_key,
                                                  const crypto::PublicKey& identity_key,
                                                  WhisperMessage message) {
  wire::PreKeyWhisperMessage p;
  p.set_registration_id(registration_id);
  if (pre_key_id) p.set_pre_key_id(*pre_key_id);
  p.set_signed_pre_key_id(signed_pre_key_id);
  p.set_base_key(std::string(as_chars(base_key.serialize())));
  p.set_identity_key(std::string(as_chars(identity_key.serialize())));
  p.set_message(std::string(as_chars(message.serialized())));
  PreKeyWhisperMessage m;
  m.serialized_.push_back(kVersionByte);
  std::string body = p.SerializeAsString();
  append(m.serialized_, as_bytes(body));
  m.registration_id_ = registration_id;
  m.pre_key_id_ = pre_key_id;
  m.signed_pre_key_id_ = signed_pre_key_id;
  m.base_key_ = base_key;
  m.identity_key_ = identity_key;
  m.message_ = std::move(message);
  return m;
}

}  // namespace parley::protocol
