#include "crypto/stream_cipher.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

namespace parley::crypto {
namespace {

constexpr std::size_t kKeySize = 32;
constexpr std::size_t kBlockSize = 16;
// EVP takes int lengths; feed large inputs in pieces well below INT_MAX.
constexpr std::size_t kEvpPiece = std::size_t{1} << 30;

const EVP_CIPHER* aes256_cbc_cipher() {
  static const EVP_CIPHER* cipher = [] {
    const EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
    if (c == nullptr) std::abort();  // the default provider is missing: unrecoverable
    return c;
  }();
  return cipher;
}

EVP_MAC* hmac_algorithm() {
  static EVP_MAC* mac = [] {
    EVP_MAC* m = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (m == nullptr) std::abort();
    return m;
  }();
  return mac;
}

}  // namespace

// ---- AES-256-CBC --------------------------------------------------------------------------------

struct Aes256CbcStream::Impl {
  EVP_CIPHER_CTX* ctx = nullptr;
  bool finished = false;
  ~Impl() { EVP_CIPHER_CTX_free(ctx); }  // frees and cleanses the key schedule
};

Aes256CbcStream::Aes256CbcStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Aes256CbcStream::~Aes256CbcStream() = default;
Aes256CbcStream::Aes256CbcStream(Aes256CbcStream&& other) noexcept = default;
Aes256CbcStream& Aes256CbcStream::operator=(Aes256CbcStream&& other) noexcept = default;

Result<Aes256CbcStream> Aes256CbcStream::create(Direction direction, ByteView key, ByteView iv) {
  if (key.size() != kKeySize || iv.size() != kBlockSize) {
    return make_error(ErrorCode::kInvalidArgument,
                      "aes-256-cbc needs a 32-byte key and 16-byte iv");
  }
  auto impl = std::make_unique<Impl>();
  impl->ctx = EVP_CIPHER_CTX_new();
  if (impl->ctx == nullptr) return make_error(ErrorCode::kCryptoFailure, "aes-256-cbc: no context");
  const int enc = direction == Direction::kEncrypt ? 1 : 0;
  const int init =
      EVP_CipherInit_ex2(impl->ctx, aes256_cbc_cipher(), key.data(), iv.data(), enc, nullptr);
  if (init != 1 || EVP_CIPHER_CTX_set_padding(impl->ctx, 1) != 1) {
    return make_error(ErrorCode::kCryptoFailure, "aes-256-cbc: init failed");
  }
  return Aes256CbcStream(std::move(impl));
}

Status Aes256CbcStream::update(ByteView in, Bytes& out) {
  if (!impl_ || impl_->finished) {
    return make_error(ErrorCode::kInvalidArgument, "aes-256-cbc: stream already finished");
  }
  std::size_t pos = 0;
  while (pos < in.size()) {
    const std::size_t n = std::min(kEvpPiece, in.size() - pos);
    const std::size_t old = out.size();
    out.resize(old + n + kBlockSize);
    int outl = 0;
    if (EVP_CipherUpdate(impl_->ctx, out.data() + old, &outl, in.data() + pos,
                         static_cast<int>(n)) != 1) {
      out.resize(old);
      impl_->finished = true;
      return make_error(ErrorCode::kCryptoFailure, "aes-256-cbc: update failed");
    }
    out.resize(old + static_cast<std::size_t>(outl));
    pos += n;
  }
  return Status::ok();
}

Status Aes256CbcStream::finish(Bytes& out) {
  if (!impl_ || impl_->finished) {
    return make_error(ErrorCode::kInvalidArgument, "aes-256-cbc: stream already finished");
  }
  impl_->finished = true;
  const bool encrypting = EVP_CIPHER_CTX_is_encrypting(impl_->ctx) == 1;
  const std::size_t old = out.size();
  out.resize(old + kBlockSize);
  int outl = 0;
  if (EVP_CipherFinal_ex(impl_->ctx, out.data() + old, &outl) != 1) {
    out.resize(old);
    if (encrypting) return make_error(ErrorCode::kCryptoFailure, "aes-256-cbc: final failed");
    return make_error(ErrorCode::kDecryptFailed, "aes-256-cbc: bad length or padding");
  }
  out.resize(old + static_cast<std::size_t>(outl));
  return Status::ok();
}

// ---- HMAC-SHA256 --------------------------------------------------------------------------------

struct HmacSha256Stream::Impl {
  EVP_MAC_CTX* ctx = nullptr;
  ~Impl() { EVP_MAC_CTX_free(ctx); }  // cleanses the keyed state
};

HmacSha256Stream::HmacSha256Stream(ByteView key) : impl_(std::make_unique<Impl>()) {
  static const std::uint8_t kEmpty[1] = {0};
  impl_->ctx = EVP_MAC_CTX_new(hmac_algorithm());
  if (impl_->ctx == nullptr) std::abort();
  char digest_name[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
      OSSL_PARAM_construct_end()};
  // OpenSSL refuses a null key pointer; an empty key is a valid HMAC key.
  if (EVP_MAC_init(impl_->ctx, key.empty() ? kEmpty : key.data(), key.size(), params) != 1) {
    std::abort();
  }
}

HmacSha256Stream::~HmacSha256Stream() = default;
HmacSha256Stream::HmacSha256Stream(HmacSha256Stream&& other) noexcept = default;
HmacSha256Stream& HmacSha256Stream::operator=(HmacSha256Stream&& other) noexcept = default;

void HmacSha256Stream::update(ByteView data) {
  if (!impl_) std::abort();  // used after finish() or a move: a bug
  if (!data.empty() && EVP_MAC_update(impl_->ctx, data.data(), data.size()) != 1) std::abort();
}

Sha256Digest HmacSha256Stream::finish() {
  if (!impl_) std::abort();
  Sha256Digest out;
  std::size_t len = 0;
  if (EVP_MAC_final(impl_->ctx, out.data(), &len, out.size()) != 1 || len != out.size()) {
    std::abort();
  }
  impl_.reset();
  return out;
}

}  // namespace parley::crypto
