#include "crypto/curve.h"

#include <sodium.h>

#include <algorithm>
#include <cstdlib>

namespace parley::crypto {
namespace {

void ensure_sodium() {
  static const bool ready = [] {
    if (sodium_init() < 0) std::abort();
    return true;
  }();
  (void)ready;
}

Status bad_key(const char* what) { return make_error(ErrorCode::kBadKeyFormat, what); }

}  // namespace

// ---- PublicKey ----------------------------------------------------------------------------------

Result<PublicKey> PublicKey::deserialize(ByteView serialized) {
  if (serialized.size() != kSerializedPublicKeySize) {
    return bad_key("serialized public key must be 33 bytes");
  }
  if (serialized[0] != kDjbKeyType) return bad_key("unknown public key type byte");
  return from_raw(serialized.subspan(1));
}

Result<PublicKey> PublicKey::from_raw(ByteView raw32) {
  if (raw32.size() != kCurveKeySize) return bad_key("raw public key must be 32 bytes");
  std::array<std::uint8_t, kCurveKeySize> u;
  std::copy(raw32.begin(), raw32.end(), u.begin());
  return PublicKey(u);
}

Bytes PublicKey::serialize() const {
  Bytes out;
  out.reserve(kSerializedPublicKeySize);
  out.push_back(kDjbKeyType);
  out.insert(out.end(), u_.begin(), u_.end());
  return out;
}

// ---- PrivateKey ---------------------------------------------------------------------------------

Result<PrivateKey> PrivateKey::from_bytes(ByteView scalar32) {
  if (scalar32.size() != kCurveKeySize) return bad_key("private key must be 32 bytes");
  return PrivateKey(SecretBytes(scalar32));
}

PublicKey PrivateKey::public_key() const {
  if (scalar_.size() != kCurveKeySize) std::abort();  // a bug: moved-from key
  ensure_sodium();
  std::array<std::uint8_t, kCurveKeySize> u{};
  if (crypto_scalarmult_base(u.data(), scalar_.data()) != 0) std::abort();
  auto pub = PublicKey::from_raw(u);
  if (!pub.has_value()) std::abort();  // cannot happen: u has the right size
  return std::move(pub).value();
}

Result<SecretBytes> PrivateKey::agree(const PublicKey& their) const {
  if (scalar_.size() != kCurveKeySize) std::abort();  // a bug: moved-from key
  ensure_sodium();
  SecretBytes shared(kCurveKeySize);
  if (crypto_scalarmult(shared.data(), scalar_.data(), their.raw().data()) != 0) {
    return make_error(ErrorCode::kWeakKey, "key agreement produced the all-zero output");
  }
  return shared;
}

// ---- KeyPair ------------------------------------------------------------------------------------

KeyPair KeyPair::generate(Rng& rng) {
  SecretBytes k(kCurveKeySize);
  rng.fill(k.mutable_view());  // exactly 32 bytes: tests script this draw
  k.data()[0] &= 248;
  k.data()[31] &= 127;
  k.data()[31] |= 64;
  auto kp = from_private(k.view());
  if (!kp.has_value()) std::abort();  // cannot happen: the scalar has the right size
  return std::move(kp).value();
}

Result<KeyPair> KeyPair::from_private(ByteView scalar32) {
  PARLEY_ASSIGN_OR_RETURN(PrivateKey priv, PrivateKey::from_bytes(scalar32));
  PublicKey pub = priv.public_key();
  return KeyPair{pub, std::move(priv)};
}

}  // namespace parley::crypto
