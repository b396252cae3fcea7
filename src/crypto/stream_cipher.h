#pragma once
// Incremental AES-256-CBC (PKCS#7) and HMAC-SHA256, for data too large to hold in memory at once
// (attachments are encrypted and checked file chunk by file chunk). Both are OpenSSL EVP.
//
// Each object is single-use (one message), move-only and not thread-safe. The key schedule and
// MAC state live inside OpenSSL and are cleansed when the object is destroyed; the key bytes
// passed in are not retained.

#include <memory>

#include "base/bytes.h"
#include "base/result.h"
#include "crypto/primitives.h"

namespace parley::crypto {

class Aes256CbcStream {
 public:
  enum class Direction { kEncrypt, kDecrypt };

  // kInvalidArgument unless `key` is 32 bytes and `iv` 16; kCryptoFailure when OpenSSL cannot
  // set up the context.
  static Result<Aes256CbcStream> create(Direction direction, ByteView key, ByteView iv);

  ~Aes256CbcStream();
  Aes256CbcStream(Aes256CbcStream&& other) noexcept;
  Aes256CbcStream& operator=(Aes256CbcStream&& other) noexcept;
  Aes256CbcStream(const Aes256CbcStream&) = delete;
  Aes256CbcStream& operator=(const Aes256CbcStream&) = delete;

  // Processes `in` and appends the output available so far (at most in.size() + 16 bytes) to
  // `out`. kInvalidArgument after finish() or on a moved-from object; kCryptoFailure on a
  // library error.
  Status update(ByteView in, Bytes& out);
  // Appends the last block(s) to `out`: the padding block when encrypting; when decrypting,
  // the last plaintext bytes, or kDecryptFailed when the total input length is not a positive
  // multiple of 16 or the padding is bad. The object cannot be used afterwards.
  Status finish(Bytes& out);

 private:
  struct Impl;
  explicit Aes256CbcStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// HMAC-SHA256 (RFC 2104) over data given in pieces. A key of any length.
// OpenSSL failures (allocation, a missing provider) are unrecoverable and abort; no input can
// cause them.
class HmacSha256Stream {
 public:
  explicit HmacSha256Stream(ByteView key);
  ~HmacSha256Stream();
  HmacSha256Stream(HmacSha256Stream&& other) noexcept;
  HmacSha256Stream& operator=(HmacSha256Stream&& other) noexcept;
  HmacSha256Stream(const HmacSha256Stream&) = delete;
  HmacSha256Stream& operator=(const HmacSha256Stream&) = delete;

  void update(ByteView data);
  // The MAC of everything given to update(). Call once; the object cannot be used afterwards
  // (a second call or an update() afterwards aborts: a bug).
  Sha256Digest finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace parley::crypto
