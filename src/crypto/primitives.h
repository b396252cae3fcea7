#pragma once
// Hashes, MACs, KDFs and ciphers over OpenSSL 3 and libsodium. Stateless and thread-safe.
// Only src/crypto includes the underlying libraries.

#include <array>
#include <cstdint>
#include <utility>

#include "base/bytes.h"
#include "base/result.h"
#include "base/rng.h"
#include "base/secret_bytes.h"

namespace parley::crypto {

using Sha256Digest = std::array<std::uint8_t, 32>;
using Sha512Digest = std::array<std::uint8_t, 64>;

Sha256Digest sha256(ByteView data);
Sha512Digest sha512(ByteView data);

// Incremental SHA-256 (for hashing files and large blobs). Not thread-safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(ByteView data);
  Sha256Digest finish();

 private:
  alignas(64) std::array<std::uint8_t, 128> state_;  // crypto_hash_sha256_state
};

// HMAC-SHA256 (RFC 2104). Key of any length.
Sha256Digest hmac_sha256(ByteView key, ByteView data);
// Same, over the concatenation of several parts (avoids building a temporary buffer).
Sha256Digest hmac_sha256(ByteView key, std::initializer_list<ByteView> parts);

// HMAC-SHA256 of two messages under one key (keys the HMAC once).
std::pair<Sha256Digest, Sha256Digest> hmac_sha256_pair(ByteView key, ByteView first,
                                                       ByteView second);

// HKDF-SHA256 (RFC 5869) extract-and-expand; an empty salt means HashLen zero bytes.
// kInvalidArgument when `length` > 255 * 32.
Result<SecretBytes> hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::size_t length);

// AES-256-CBC with PKCS#7 padding. Key 32 bytes, IV 16 bytes (kInvalidArgument otherwise).
Result<Bytes> aes256_cbc_encrypt(ByteView key, ByteView iv, ByteView plaintext);
// kDecryptFailed on a length that is not a positive multiple of 16 or on bad padding.
Result<Bytes> aes256_cbc_decrypt(ByteView key, ByteView iv, ByteView ciphertext);

// AES-256-GCM (attachments, local storage). Output/input is ciphertext || 16-byte tag.
Result<Bytes> aes256_gcm_encrypt(ByteView key, ByteView nonce12, ByteView aad, ByteView plaintext);
// kDecryptFailed when the tag does not verify.
Result<Bytes> aes256_gcm_decrypt(ByteView key, ByteView nonce12, ByteView aad, ByteView sealed);

// A cryptographically secure Rng (libsodium randombytes). Thread-safe. Served from a per-thread
// pool of libsodium output (one getrandom per 4 KB); requests over 64 bytes are expanded with
// ChaCha20 from a fresh 32-byte seed out of that pool.
class SystemRng final : public Rng {
 public:
  void fill(std::span<std::uint8_t> out) override;
};

// Ed25519 device-authentication keys (server login). 32-byte seed -> keypair.
struct Ed25519KeyPair {
  std::array<std::uint8_t, 32> public_key;
  SecretBytes secret_key;  // 64 bytes, libsodium layout (seed || public key)
  static Ed25519KeyPair generate(Rng& rng);
  static Result<Ed25519KeyPair> from_seed(ByteView seed32);
  std::array<std::uint8_t, 64> sign(ByteView message) const;
};
bool ed25519_verify(ByteView public_key32, ByteView message, ByteView signature64);

}  // namespace parley::crypto
