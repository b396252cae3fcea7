#pragma once
// Curve25519 keys as Signal Protocol v3 uses them.
//
// - PublicKey: an X25519 u-coordinate. Serialized as 33 bytes: the type byte 0x05 ("DJB")
//   followed by the 32-byte little-endian u-coordinate, exactly as libsignal does.
// - PrivateKey: a 32-byte X25519 scalar (clamped on generation), held in SecretBytes.
// - Signatures are XEdDSA ("curve25519 signatures" in libsignal): 64 bytes, verified against the
//   Montgomery public key; the Edwards sign bit travels in sig[63] & 0x80.
// All types are values; none hold shared state; all functions are thread-safe.

#include <array>
#include <cstdint>

#include "base/bytes.h"
#include "base/result.h"
#include "base/rng.h"
#include "base/secret_bytes.h"

namespace parley::crypto {

inline constexpr std::size_t kCurveKeySize = 32;
inline constexpr std::size_t kSerializedPublicKeySize = 33;
inline constexpr std::uint8_t kDjbKeyType = 0x05;
inline constexpr std::size_t kSignatureSize = 64;

class PublicKey {
 public:
  PublicKey() = default;  // all-zero u; only a placeholder until assigned
  // Parses the 33-byte serialized form; kBadKeyFormat on wrong size or type byte.
  static Result<PublicKey> deserialize(ByteView serialized);
  // Wraps a bare 32-byte u-coordinate; kBadKeyFormat on wrong size.
  static Result<PublicKey> from_raw(ByteView raw32);

  Bytes serialize() const;  // 33 bytes
  const std::array<std::uint8_t, kCurveKeySize>& raw() const { return u_; }

  friend bool operator==(const PublicKey&, const PublicKey&) = default;
  friend auto operator<=>(const PublicKey&, const PublicKey&) = default;

 private:
  explicit PublicKey(const std::array<std::uint8_t, kCurveKeySize>& u) : u_(u) {}
  std::array<std::uint8_t, kCurveKeySize> u_{};
};

class PrivateKey {
 public:
  PrivateKey() = default;  // empty; only a placeholder until assigned
  // Wraps a 32-byte scalar as given (X25519 clamps when it multiplies); kBadKeyFormat otherwise.
  static Result<PrivateKey> from_bytes(ByteView scalar32);

  PrivateKey clone() const { return PrivateKey(scalar_.clone()); }
  const SecretBytes& bytes() const { return scalar_; }

  PublicKey public_key() const;

  // X25519(this, their). kWeakKey when the result is all zeros (a low-order peer key).
  Result<SecretBytes> agree(const PublicKey& their) const;

  // XEdDSA signature over `message`, drawing 64 random bytes from `rng` (libsignal-compatible).
  std::array<std::uint8_t, kSignatureSize> sign(ByteView message, Rng& rng) const;

 private:
  explicit PrivateKey(SecretBytes s) : scalar_(std::move(s)) {}
  SecretBytes scalar_;
};

struct KeyPair {
  PublicKey public_key;
  PrivateKey private_key;

  // Draws 32 bytes from `rng`, clamps them (libsignal's generateKeyPair) and derives the public
  // key. Tests and the vector verifier inject exact key pairs through a scripted Rng.
  static KeyPair generate(Rng& rng);
  static Result<KeyPair> from_private(ByteView scalar32);
  KeyPair clone() const { return KeyPair{public_key, private_key.clone()}; }
};

// Verifies an XEdDSA signature (sign bit in sig[63] & 0x80). Returns false on any malformed
// input; never throws or aborts on peer data.
bool verify_signature(const PublicKey& key, ByteView message, ByteView signature);

}  // namespace parley::crypto
