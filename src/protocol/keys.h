#pragma once
// Identity keys, registration ids, prekeys and prekey bundles (Signal Protocol v3).
//
// - A one-time prekey id is in 1..kMaxPreKeyId; 0 means "absent" on the wire and is never issued.
// - A signed prekey carries an XEdDSA signature by the identity key over its 33-byte public key.
// - A PreKeyBundle is what a server hands out for one device of a peer.
// Values; thread-safe to copy. Records holding private keys are move-only (clone() to copy).

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "base/rng.h"
#include "crypto/curve.h"

namespace parley::protocol {

inline constexpr std::uint32_t kMaxPreKeyId = 0xFFFFFE;
inline constexpr std::uint32_t kMaxRegistrationId = 16380;

struct PreKeyRecord {
  std::uint32_t id = 0;
  crypto::KeyPair key_pair;

  PreKeyRecord clone() const { return PreKeyRecord{id, key_pair.clone()}; }
  Bytes serialize() const;
  static Result<PreKeyRecord> deserialize(ByteView bytes);
};

struct SignedPreKeyRecord {
  std::uint32_t id = 0;
  crypto::KeyPair key_pair;
  std::array<std::uint8_t, crypto::kSignatureSize> signature{};
  std::uint64_t timestamp_ms = 0;

  SignedPreKeyRecord clone() const {
    return SignedPreKeyRecord{id, key_pair.clone(), signature, timestamp_ms};
  }
  Bytes serialize() const;
  static Result<SignedPreKeyRecord> deserialize(ByteView bytes);
};

struct PreKeyBundle {
  std::uint32_t registration_id = 0;
  std::uint32_t device_id = 1;
  std::optional<std::uint32_t> pre_key_id;
  std::optional<crypto::PublicKey> pre_key;
  std::uint32_t signed_pre_key_id = 0;
  crypto::PublicKey signed_pre_key;
  Bytes signed_pre_key_signature;
  crypto::PublicKey identity_key;
};

// A fresh identity key pair.
crypto::KeyPair generate_identity_key_pair(Rng& rng);
// A registration id in 1..kMaxRegistrationId (libsignal's generateRegistrationId).
std::uint32_t generate_registration_id(Rng& rng);
// `count` one-time prekeys with ids start, start+1, ... wrapping within 1..kMaxPreKeyId.
std::vector<PreKeyRecord> generate_pre_keys(std::uint32_t start, std::uint32_t count, Rng& rng);
// A signed prekey with id `id`, signed by `identity`.
SignedPreKeyRecord generate_signed_pre_key(const crypto::KeyPair& identity, std::uint32_t id,
                                           std::uint64_t timestamp_ms, Rng& rng);

// Checks a bundle's shapes and its signed-prekey signature. kBadSignature when the signature
// does not verify; kInvalidArgument when a prekey id is out of range.
Status verify_bundle(const PreKeyBundle& bundle);

}  // namespace parley::protocol
