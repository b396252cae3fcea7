#include "protocol/keys.h"

#include "signal/storage.pb.h"

namespace parley::protocol {

crypto::KeyPair generate_identity_key_pair(Rng& rng) { return crypto::KeyPair::generate(rng); }

std::uint32_t generate_registration_id(Rng& rng) { return rng.uniform(kMaxRegistrationId) + 1; }

std::vector<PreKeyRecord> generate_pre_keys(std::uint32_t start, std::uint32_t count, Rng& rng) {
  std::vector<PreKeyRecord> out;
  out.reserve(count);
  std::uint32_t id = (start == 0 || start > kMaxPreKeyId) ? 1 : start;
  for (std::uint32_t i = 0; i < count; ++i) {
    out.push_back(PreKeyRecord{id, crypto::KeyPair::generate(rng)});
    id = id >= kMaxPreKeyId ? 1 : id + 1;
  }
  return out;
}

SignedPreKeyRecord generate_signed_pre_key(const crypto::KeyPair& identity, std::uint32_t id,
                                           std::uint64_t timestamp_ms, Rng& rng) {
  crypto::KeyPair kp = crypto::KeyPair::generate(rng);
  auto sig = identity.private_key.sign(kp.public_key.serialize(), rng);
  return SignedPreKeyRecord{id, std::move(kp), sig, timestamp_ms};
}

Status verify_bundle(const PreKeyBundle& bundle) {
  if (bundle.pre_key_id.has_value() != bundle.pre_key.has_value()) {
    return make_error(ErrorCode::kInvalidArgument, "bundle: one-time prekey id without key");
  }
  if (bundle.pre_key_id && (*bundle.pre_key_id == 0 || *bundle.pre_key_id > kMaxPreKeyId)) {
    return make_error(ErrorCode::kInvalidArgument, "bundle: one-time prekey id out of range");
  }
  if (bundle.signed_pre_key_id > kMaxPreKeyId) {
    return make_error(ErrorCode::kInvalidArgument, "bundle: signed prekey id out of range");
  }
  if (!crypto::verify_signature(bundle.identity_key, bundle.signed_pre_key.serialize(),
                                bundle.signed_pre_key_signature)) {
    return make_error(ErrorCode::kBadSignature, "bundle: signed prekey signature does not verify");
  }
  return Status::ok();
}

namespace {

template <typename Proto>
void wipe_string(Proto& p, std::string* s) {
  (void)p;
  if (!s->empty()) secure_zero(s->data(), s->size());
}

Result<crypto::KeyPair> key_pair_from(const std::string& pub, const std::string& priv) {
  PARLEY_ASSIGN_OR_RETURN(crypto::KeyPair kp, crypto::KeyPair::from_private(as_bytes(priv)));
  auto parsed_pub = crypto::PublicKey::deserialize(as_bytes(pub));
  if (!parsed_pub || *parsed_pub != kp.public_key) {
    return make_error(ErrorCode::kMalformed, "key record: public key does not match private key");
  }
  return kp;
}

}  // namespace

Bytes PreKeyRecord::serialize() const {
  signal::storage::PreKeyRecordStructure p;
  p.set_id(id);
  p.set_public_key(std::string(as_chars(key_pair.public_key.serialize())));
  p.set_private_key(std::string(as_chars(key_pair.private_key.bytes().view())));
  std::string out = p.SerializeAsString();
  wipe_string(p, p.mutable_private_key());
  Bytes bytes = to_bytes(out);
  secure_zero(out.data(), out.size());
  return bytes;
}

Result<PreKeyRecord> PreKeyRecord::deserialize(ByteView bytes) {
  signal::storage::PreKeyRecordStructure p;
  if (!p.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return make_error(ErrorCode::kMalformed, "prekey record does not parse");
  }
  auto kp = key_pair_from(p.public_key(), p.private_key());
  wipe_string(p, p.mutable_private_key());
  if (!kp) return kp.error();
  return PreKeyRecord{p.id(), std::move(kp).value()};
}

Bytes SignedPreKeyRecord::serialize() const {
  signal::storage::SignedPreKeyRecordStructure p;
  p.set_id(id);
  p.set_public_key(std::string(as_chars(key_pair.public_key.serialize())));
  p.set_private_key(std::string(as_chars(key_pair.private_key.bytes().view())));
  p.set_signature(std::string(as_chars(signature)));
  p.set_timestamp(timestamp_ms);
  std::string out = p.SerializeAsString();
  wipe_string(p, p.mutable_private_key());
  Bytes bytes = to_bytes(out);
  secure_zero(out.data(), out.size());
  return bytes;
}

Result<SignedPreKeyRecord> SignedPreKeyRecord::deserialize(ByteView bytes) {
  signal::storage::SignedPreKeyRecordStructure p;
  if (!p.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return make_error(ErrorCode::kMalformed, "signed prekey record does not parse");
  }
  auto kp = key_pair_from(p.public_key(), p.private_key());
  wipe_string(p, p.mutable_private_key());
  if (!kp) return kp.error();
  if (p.signature().size() != crypto::kSignatureSize) {
    return make_error(ErrorCode::kMalformed, "signed prekey record: bad signature size");
  }
  SignedPreKeyRecord r{p.id(), std::move(kp).value(), {}, p.timestamp()};
  std::copy(p.signature().begin(), p.signature().end(), r.signature.begin());
  return r;
}

}  // namespace parley::protocol
