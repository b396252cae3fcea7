#pragma once
// The key schedule of Signal Protocol v3: X3DH master secret, root-chain steps, symmetric chain
// steps and message keys. Pure functions over src/crypto; thread-safe.
//
//   x3dh:        HKDF(ikm = 0xFF*32 || DH1 || DH2 || DH3 [|| DH4], salt = 0*32,
//                     info = "WhisperText", L = 64) = RK || CK
//   root step:   HKDF(ikm = DH(our ratchet, their ratchet), salt = RK,
//                     info = "WhisperRatchet", L = 64) = RK' || CK
//   chain step:  MK seed = HMAC(CK, 0x01), CK' = HMAC(CK, 0x02)
//   message keys: HKDF(ikm = MK seed, salt = 0*32, info = "WhisperMessageKeys", L = 80)
//                     = cipher key (32) || mac key (32) || iv (16)

#include <cstdint>
#include <utility>

#include "base/result.h"
#include "base/secret_bytes.h"
#include "crypto/curve.h"

namespace parley::protocol {

inline constexpr std::size_t kKeySize = 32;

struct MessageKeys {
  SecretBytes cipher_key;  // 32
  SecretBytes mac_key;     // 32
  SecretBytes iv;          // 16
  std::uint32_t counter = 0;

  MessageKeys clone() const {
    return MessageKeys{cipher_key.clone(), mac_key.clone(), iv.clone(), counter};
  }
  // Derives the keys from a message-key seed (HMAC(CK, 0x01)).
  static Result<MessageKeys> derive(ByteView seed, std::uint32_t counter);
};

struct ChainKey {
  SecretBytes key;  // 32
  std::uint32_t index = 0;

  ChainKey clone() const { return ChainKey{key.clone(), index}; }
  SecretBytes message_key_seed() const;  // HMAC(CK, 0x01)
  ChainKey next() const;                 // HMAC(CK, 0x02), index + 1
  Result<MessageKeys> message_keys() const;
  // message_keys() and next() together, keying the HMAC once.
  Result<std::pair<MessageKeys, ChainKey>> step() const;
};

struct RootKey {
  SecretBytes key;  // 32

  RootKey clone() const { return RootKey{key.clone()}; }
  // One DH-ratchet step: the new root key and the new chain (index 0).
  Result<std::pair<RootKey, ChainKey>> create_chain(const crypto::PublicKey& their_ratchet,
                                                    const crypto::PrivateKey& our_ratchet) const;
};

// Splits the X3DH master secret (already prefixed with 0xFF*32) into root and chain keys.
Result<std::pair<RootKey, ChainKey>> derive_initial_keys(ByteView master_secret);

}  // namespace parley::protocol
