#pragma once
// Attachment encryption (the Signal attachment format), file to file, streaming: a file is
// processed in 64 KiB pieces and never held whole in memory.
//
//   key        = 64 random bytes: AES-256 key (32) || HMAC-SHA256 key (32)
//   ciphertext = IV (16) || AES-256-CBC-PKCS#7(plaintext) || HMAC-SHA256(IV || CBC output) (32)
//   digest     = SHA-256(ciphertext)
//
// So a plaintext of n bytes gives 16 + 16 * (n / 16 + 1) + 32 bytes of ciphertext. The digest
// travels in the message pointing at the attachment (client::Attachment) and is what ties the
// downloaded blob to that message; the MAC authenticates under the per-attachment key.
//
// Both functions are stateless and thread-safe for distinct files. Every failure leaves no
// output file behind: output is written to a hidden temporary file in the destination directory
// and only renamed into place when complete (and, for decryption, verified).

#include <cstdint>
#include <filesystem>
#include <string_view>

#include "base/bytes.h"
#include "base/result.h"
#include "base/rng.h"
#include "base/secret_bytes.h"
#include "crypto/primitives.h"

namespace parley::client {

inline constexpr std::size_t kAttachmentKeySize = 64;
inline constexpr std::size_t kAttachmentIvSize = 16;
inline constexpr std::size_t kAttachmentMacSize = 32;
inline constexpr std::size_t kAttachmentDigestSize = 32;
// The default bound on an attachment's plaintext (the server's default slot limit is 100 MiB of
// ciphertext; both are configurable).
inline constexpr std::uint64_t kDefaultMaxAttachmentSize = std::uint64_t{100} << 20;

// The ciphertext size for `plaintext_size` bytes of plaintext (see above).
std::uint64_t attachment_ciphertext_size(std::uint64_t plaintext_size);

// What encrypting a file produced. `key` is secret; the rest is not.
struct EncryptedAttachmentFile {
  SecretBytes key;                // kAttachmentKeySize bytes
  crypto::Sha256Digest digest{};  // SHA-256 of the ciphertext file
  crypto::Sha256Digest plaintext_sha256{};
  std::uint64_t plaintext_size = 0;
  std::uint64_t ciphertext_size = 0;
};

// Encrypts the regular file `plaintext` under a fresh key and IV drawn from `rng` and writes the
// ciphertext to `ciphertext` (mode 0600, replacing a file of that name; fsynced).
// Errors: kNotFound / kIo (reading or writing), kInvalidArgument (not a regular file),
// kTooLarge (more than `max_plaintext_size` bytes), kIo also when the file changed size while
// being read.
Result<EncryptedAttachmentFile> encrypt_attachment_file(
    const std::filesystem::path& plaintext, const std::filesystem::path& ciphertext, Rng& rng,
    std::uint64_t max_plaintext_size = kDefaultMaxAttachmentSize);

// What a received pointer promises about a ciphertext. The views must stay valid for the call.
struct AttachmentExpectation {
  ByteView key;                      // kAttachmentKeySize bytes
  ByteView digest;                   // kAttachmentDigestSize bytes
  std::uint64_t plaintext_size = 0;  // exact
  ByteView plaintext_sha256;         // 32 bytes, or empty: not checked
  std::uint64_t max_plaintext_size = kDefaultMaxAttachmentSize;
};

// Verifies the ciphertext file against `expect` (its size, then MAC and digest, compared in
// constant time) and only then decrypts it, saving the plaintext in `dest_dir` as `file_name`
// or, when that name is taken, "stem (1).ext", "stem (2).ext", ... (an existing file is never
// replaced). The MAC is computed again over the bytes actually decrypted and the plaintext's
// size and SHA-256 are checked before the file is made visible. Returns the path saved as.
// `file_name` must be one plain path component (see safe_attachment_file_name in
// attachments.h): kInvalidArgument otherwise, and for keys/digests of the wrong size.
// Errors: kTooLarge (plaintext_size above the bound), kMalformed (the ciphertext has the wrong
// size for plaintext_size, e.g. truncated), kBadMac (MAC or digest mismatch), kDecryptFailed
// (bad padding, or the plaintext does not match its size or SHA-256), kAlreadyExists (no free
// name), kNotFound / kIo. No output file exists after a failure.
Result<std::filesystem::path> decrypt_attachment_file(const std::filesystem::path& ciphertext,
                                                      const std::filesystem::path& dest_dir,
                                                      std::string_view file_name,
                                                      const AttachmentExpectation& expect);

// Streams the SHA-256 of a whole file (kNotFound / kIo).
Result<crypto::Sha256Digest> sha256_file(const std::filesystem::path& path);

}  // namespace parley::client
