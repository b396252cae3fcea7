#include "crypto/primitives.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <new>

namespace parley::crypto {
namespace {

constexpr std::size_t kAesKeySize = 32;
constexpr std::size_t kAesBlockSize = 16;
constexpr std::size_t kGcmNonceSize = 12;
constexpr std::size_t kGcmTagSize = 16;
constexpr std::size_t kHashLen = 32;
// EVP takes int lengths; feed large inputs in chunks well below INT_MAX.
constexpr std::size_t kEvpChunk = std::size_t{1} << 30;

void ensure_sodium() {
  static const bool ready = [] {
    if (sodium_init() < 0) std::abort();  // no CSPRNG: cannot continue safely
    return true;
  }();
  (void)ready;
}

// ---- OpenSSL handles, fetched once and cached for the life of the process ----------------------

const EVP_CIPHER* cached_cipher(const char* name) {
  const EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, name, nullptr);
  if (cipher == nullptr) std::abort();  // the default provider is missing: unrecoverable
  return cipher;
}

const EVP_CIPHER* aes256_cbc() {
  static const EVP_CIPHER* cipher = cached_cipher("AES-256-CBC");
  return cipher;
}

const EVP_CIPHER* aes256_gcm() {
  static const EVP_CIPHER* cipher = cached_cipher("AES-256-GCM");
  return cipher;
}

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};

// A per-thread cipher context bound to one cipher. The first init passes the cipher; later inits
// pass nullptr so OpenSSL keeps the provider context and only rekeys (no allocation per call).
class ThreadCipherCtx {
 public:
  explicit ThreadCipherCtx(const EVP_CIPHER* cipher) : cipher_(cipher) {}

  // Returns nullptr on failure.
  EVP_CIPHER_CTX* init(const std::uint8_t* key, const std::uint8_t* iv, bool encrypt) {
    if (!ctx_) {
      ctx_.reset(EVP_CIPHER_CTX_new());
      if (!ctx_) return nullptr;
      primed_ = false;
    }
    const EVP_CIPHER* c = primed_ ? nullptr : cipher_;
    if (EVP_CipherInit_ex2(ctx_.get(), c, key, iv, encrypt ? 1 : 0, nullptr) != 1) {
      ctx_.reset();  // start over with a fresh context next time
      return nullptr;
    }
    primed_ = true;
    return ctx_.get();
  }

 private:
  const EVP_CIPHER* cipher_;
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter> ctx_;
  bool primed_ = false;
};

ThreadCipherCtx& cbc_ctx() {
  thread_local ThreadCipherCtx ctx(aes256_cbc());
  return ctx;
}

ThreadCipherCtx& gcm_ctx() {
  thread_local ThreadCipherCtx ctx(aes256_gcm());
  return ctx;
}

// Runs EVP_CipherUpdate over `in` in int-sized chunks; appends to out at *written.
bool cipher_update(EVP_CIPHER_CTX* ctx, ByteView in, std::uint8_t* out, std::size_t* written) {
  std::size_t pos = 0;
  while (pos < in.size()) {
    const std::size_t n = std::min(kEvpChunk, in.size() - pos);
    int outl = 0;
    if (EVP_CipherUpdate(ctx, out + *written, &outl, in.data() + pos, static_cast<int>(n)) != 1) {
      return false;
    }
    *written += static_cast<std::size_t>(outl);
    pos += n;
  }
  return true;
}

bool cipher_aad(EVP_CIPHER_CTX* ctx, ByteView aad) {
  std::size_t pos = 0;
  while (pos < aad.size()) {
    const std::size_t n = std::min(kEvpChunk, aad.size() - pos);
    int outl = 0;
    if (EVP_CipherUpdate(ctx, nullptr, &outl, aad.data() + pos, static_cast<int>(n)) != 1) {
      return false;
    }
    pos += n;
  }
  return true;
}

crypto_hash_sha256_state* as_sha256_state(std::uint8_t* p) {
  return std::launder(reinterpret_cast<crypto_hash_sha256_state*>(p));
}

// ---- HMAC-SHA256 and HKDF-SHA256 handles -------------------------------------------------------

struct MacCtxDeleter {
  void operator()(EVP_MAC_CTX* ctx) const { EVP_MAC_CTX_free(ctx); }
};

char kSha256Name[] = "SHA256";

// A per-thread HMAC-SHA256 context: fetched and bound to SHA-256 once, then only rekeyed, so
// the message path does no provider fetch and no allocation per MAC.
EVP_MAC_CTX* thread_hmac_ctx() {
  thread_local std::unique_ptr<EVP_MAC_CTX, MacCtxDeleter> ctx = [] {
    static EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac == nullptr) std::abort();  // the default provider is missing: unrecoverable
    std::unique_ptr<EVP_MAC_CTX, MacCtxDeleter> c(EVP_MAC_CTX_new(mac));
    if (!c) std::abort();
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, kSha256Name, 0),
        OSSL_PARAM_construct_end()};
    if (EVP_MAC_CTX_set_params(c.get(), params) != 1) std::abort();
    return c;
  }();
  return ctx.get();
}

}  // namespace

// ---- Hashes -------------------------------------------------------------------------------------

Sha256Digest sha256(ByteView data) {
  Sha256Digest out;
  crypto_hash_sha256(out.data(), data.data(), data.size());
  return out;
}

Sha512Digest sha512(ByteView data) {
  Sha512Digest out;
  crypto_hash_sha512(out.data(), data.data(), data.size());
  return out;
}

static_assert(sizeof(crypto_hash_sha256_state) <= 128, "Sha256::state_ too small");
static_assert(alignof(crypto_hash_sha256_state) <= 64, "Sha256::state_ under-aligned");

Sha256::Sha256() { crypto_hash_sha256_init(new (state_.data()) crypto_hash_sha256_state); }

Sha256::~Sha256() { sodium_memzero(state_.data(), state_.size()); }

void Sha256::update(ByteView data) {
  crypto_hash_sha256_update(as_sha256_state(state_.data()), data.data(), data.size());
}

Sha256Digest Sha256::finish() {
  Sha256Digest out;
  crypto_hash_sha256_final(as_sha256_state(state_.data()), out.data());
  return out;
}

// ---- HMAC / HKDF --------------------------------------------------------------------------------
//
// HMAC is OpenSSL's (EVP_MAC "HMAC") with a per-thread context bound to SHA-256 once. Allocation
// or provider failures inside OpenSSL are unrecoverable and abort; no input can cause them.

Sha256Digest hmac_sha256(ByteView key, ByteView data) { return hmac_sha256(key, {data}); }

namespace {

// Keys the per-thread context with `key`, or re-initializes it with the previous key when
// `key` is null (OpenSSL keeps the keyed inner/outer states: no re-hash of the key).
EVP_MAC_CTX* hmac_begin(const ByteView* key) {
  static const std::uint8_t kEmpty[1] = {0};
  EVP_MAC_CTX* ctx = thread_hmac_ctx();
  const int ok = key == nullptr
                     ? EVP_MAC_init(ctx, nullptr, 0, nullptr)
                     // OpenSSL refuses a null key pointer; an empty key is a valid HMAC key.
                     : EVP_MAC_init(ctx, key->empty() ? kEmpty : key->data(), key->size(), nullptr);
  if (ok != 1) std::abort();
  return ctx;
}

Sha256Digest hmac_end(EVP_MAC_CTX* ctx, std::initializer_list<ByteView> parts) {
  for (ByteView part : parts) {
    if (!part.empty() && EVP_MAC_update(ctx, part.data(), part.size()) != 1) std::abort();
  }
  Sha256Digest out;
  std::size_t len = 0;
  if (EVP_MAC_final(ctx, out.data(), &len, out.size()) != 1 || len != kHashLen) std::abort();
  return out;
}

}  // namespace

Sha256Digest hmac_sha256(ByteView key, std::initializer_list<ByteView> parts) {
  return hmac_end(hmac_begin(&key), parts);
}

std::pair<Sha256Digest, Sha256Digest> hmac_sha256_pair(ByteView key, ByteView first,
                                                       ByteView second) {
  Sha256Digest a = hmac_end(hmac_begin(&key), {first});
  Sha256Digest b = hmac_end(hmac_begin(nullptr), {second});
  return {a, b};
}

// HKDF (RFC 5869) is two lines over HMAC: extract PRK = HMAC(salt, IKM), then expand
// T(i) = HMAC(PRK, T(i-1) || info || i). It is written over OpenSSL's HMAC rather than through
// EVP_KDF because OpenSSL 3.0's EVP_KDF fetches the digest and parses parameters on every call:
// measured at 2.5 µs against 1.5 µs here, on the message path where it runs once per message
// (docs/benchmarks.md). primitives_test.cc checks it against the RFC 5869 vectors and against
// EVP_KDF for every output length.
Result<SecretBytes> hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::size_t length) {
  if (length > 255 * kHashLen) {
    return make_error(ErrorCode::kInvalidArgument, "hkdf output length too large");
  }
  SecretBytes out(length);
  if (length == 0) return out;
  static const std::uint8_t kZeroSalt[kHashLen] = {};
  Sha256Digest prk = hmac_sha256(salt.empty() ? ByteView(kZeroSalt, kHashLen) : salt, ikm);
  Sha256Digest t{};
  std::size_t done = 0;
  for (std::uint8_t i = 1; done < length; ++i) {
    const std::uint8_t counter[1] = {i};
    const ByteView prk_view(prk);
    t = hmac_end(hmac_begin(i == 1 ? &prk_view : nullptr),
                 {i == 1 ? ByteView() : ByteView(t), info, ByteView(counter, 1)});
    const std::size_t n = std::min(kHashLen, length - done);
    std::copy(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(n), out.data() + done);
    done += n;
  }
  sodium_memzero(prk.data(), prk.size());
  sodium_memzero(t.data(), t.size());
  return out;
}

// ---- AES-256-CBC --------------------------------------------------------------------------------

Result<Bytes> aes256_cbc_encrypt(ByteView key, ByteView iv, ByteView plaintext) {
  if (key.size() != kAesKeySize || iv.size() != kAesBlockSize) {
    return make_error(ErrorCode::kInvalidArgument, "aes-cbc needs a 32-byte key and 16-byte iv");
  }
  EVP_CIPHER_CTX* ctx = cbc_ctx().init(key.data(), iv.data(), /*encrypt=*/true);
  if (ctx == nullptr) return make_error(ErrorCode::kCryptoFailure, "aes-cbc init failed");
  Bytes out(plaintext.size() + kAesBlockSize);
  std::size_t written = 0;
  if (!cipher_update(ctx, plaintext, out.data(), &written)) {
    return make_error(ErrorCode::kCryptoFailure, "aes-cbc encrypt failed");
  }
  int outl = 0;
  if (EVP_CipherFinal_ex(ctx, out.data() + written, &outl) != 1) {
    return make_error(ErrorCode::kCryptoFailure, "aes-cbc encrypt failed");
  }
  out.resize(written + static_cast<std::size_t>(outl));
  return out;
}

Result<Bytes> aes256_cbc_decrypt(ByteView key, ByteView iv, ByteView ciphertext) {
  if (key.size() != kAesKeySize || iv.size() != kAesBlockSize) {
    return make_error(ErrorCode::kInvalidArgument, "aes-cbc needs a 32-byte key and 16-byte iv");
  }
  if (ciphertext.empty() || ciphertext.size() % kAesBlockSize != 0) {
    return make_error(ErrorCode::kDecryptFailed, "aes-cbc ciphertext length is invalid");
  }
  EVP_CIPHER_CTX* ctx = cbc_ctx().init(key.data(), iv.data(), /*encrypt=*/false);
  if (ctx == nullptr) return make_error(ErrorCode::kCryptoFailure, "aes-cbc init failed");
  Bytes out(ciphertext.size() + kAesBlockSize);
  std::size_t written = 0;
  if (!cipher_update(ctx, ciphertext, out.data(), &written)) {
    return make_error(ErrorCode::kDecryptFailed, "aes-cbc decrypt failed");
  }
  int outl = 0;
  if (EVP_CipherFinal_ex(ctx, out.data() + written, &outl) != 1) {
    secure_zero(out.data(), out.size());
    return make_error(ErrorCode::kDecryptFailed, "aes-cbc padding is invalid");
  }
  out.resize(written + static_cast<std::size_t>(outl));
  return out;
}

// ---- AES-256-GCM --------------------------------------------------------------------------------

Result<Bytes> aes256_gcm_encrypt(ByteView key, ByteView nonce12, ByteView aad, ByteView plaintext) {
  if (key.size() != kAesKeySize || nonce12.size() != kGcmNonceSize) {
    return make_error(ErrorCode::kInvalidArgument, "aes-gcm needs a 32-byte key, 12-byte nonce");
  }
  EVP_CIPHER_CTX* ctx = gcm_ctx().init(key.data(), nonce12.data(), /*encrypt=*/true);
  if (ctx == nullptr) return make_error(ErrorCode::kCryptoFailure, "aes-gcm init failed");
  Bytes out(plaintext.size() + kGcmTagSize);
  std::size_t written = 0;
  int outl = 0;
  if (!cipher_aad(ctx, aad) || !cipher_update(ctx, plaintext, out.data(), &written) ||
      EVP_CipherFinal_ex(ctx, out.data() + written, &outl) != 1) {
    return make_error(ErrorCode::kCryptoFailure, "aes-gcm encrypt failed");
  }
  written += static_cast<std::size_t>(outl);
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kGcmTagSize),
                          out.data() + written) != 1) {
    return make_error(ErrorCode::kCryptoFailure, "aes-gcm tag failed");
  }
  out.resize(written + kGcmTagSize);
  return out;
}

Result<Bytes> aes256_gcm_decrypt(ByteView key, ByteView nonce12, ByteView aad, ByteView sealed) {
  if (key.size() != kAesKeySize || nonce12.size() != kGcmNonceSize) {
    return make_error(ErrorCode::kInvalidArgument, "aes-gcm needs a 32-byte key, 12-byte nonce");
  }
  if (sealed.size() < kGcmTagSize) {
    return make_error(ErrorCode::kDecryptFailed, "aes-gcm input shorter than the tag");
  }
  const ByteView body = sealed.first(sealed.size() - kGcmTagSize);
  std::uint8_t tag[kGcmTagSize];
  std::copy(sealed.end() - kGcmTagSize, sealed.end(), tag);

  EVP_CIPHER_CTX* ctx = gcm_ctx().init(key.data(), nonce12.data(), /*encrypt=*/false);
  if (ctx == nullptr) return make_error(ErrorCode::kCryptoFailure, "aes-gcm init failed");
  Bytes out(body.size() + kAesBlockSize);
  std::size_t written = 0;
  if (!cipher_aad(ctx, aad) || !cipher_update(ctx, body, out.data(), &written) ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kGcmTagSize), tag) != 1) {
    secure_zero(out.data(), out.size());
    return make_error(ErrorCode::kDecryptFailed, "aes-gcm decrypt failed");
  }
  int outl = 0;
  if (EVP_CipherFinal_ex(ctx, out.data() + written, &outl) != 1) {
    secure_zero(out.data(), out.size());
    return make_error(ErrorCode::kDecryptFailed, "aes-gcm tag does not verify");
  }
  out.resize(written + static_cast<std::size_t>(outl));
  return out;
}

// ---- Randomness ---------------------------------------------------------------------------------

namespace {

// Randomness costs one getrandom system call per 4 KB, not one per request (the server asks
// several times per message: frame padding, ids). Requests of up to 64 bytes are served from a
// per-thread pool: 4 KB expanded with ChaCha20 (randombytes_buf_deterministic) from a 32-byte
// seed that the kernel gives (randombytes_buf). Filling the pool from randombytes_buf directly
// would cost 16 system calls, as libsodium asks getrandom for at most 256 bytes at a time. A
// larger request is expanded the same way from a seed taken from the pool. Bytes are wiped from
// the pool as they are handed out, and the pool when its thread ends. A forked child must not
// use the pool it inherited; parley only forks to exec (posix_spawn).
class RandomPool {
 public:
  static constexpr std::size_t kSize = 4096;
  static constexpr std::size_t kDirect = 64;  // larger requests are expanded from a seed
  ~RandomPool() { sodium_memzero(bytes_.data(), bytes_.size()); }

  void fill(std::span<std::uint8_t> out) {
    if (out.size() <= kDirect) {
      take(out);
      return;
    }
    std::array<std::uint8_t, randombytes_SEEDBYTES> seed;
    take(seed);
    randombytes_buf_deterministic(out.data(), out.size(), seed.data());
    sodium_memzero(seed.data(), seed.size());
  }

 private:
  void take(std::span<std::uint8_t> out) {
    if (left_ < out.size()) {
      std::array<std::uint8_t, randombytes_SEEDBYTES> seed;
      randombytes_buf(seed.data(), seed.size());
      randombytes_buf_deterministic(bytes_.data(), bytes_.size(), seed.data());
      sodium_memzero(seed.data(), seed.size());
      left_ = bytes_.size();
    }
    std::uint8_t* from = bytes_.data() + (bytes_.size() - left_);
    std::memcpy(out.data(), from, out.size());
    sodium_memzero(from, out.size());
    left_ -= out.size();
  }

  std::array<std::uint8_t, kSize> bytes_{};
  std::size_t left_ = 0;
};

}  // namespace

void SystemRng::fill(std::span<std::uint8_t> out) {
  ensure_sodium();
  if (out.empty()) return;
  thread_local RandomPool pool;
  pool.fill(out);
}

// ---- Ed25519 ------------------------------------------------------------------------------------

Ed25519KeyPair Ed25519KeyPair::generate(Rng& rng) {
  SecretBytes seed(crypto_sign_SEEDBYTES);
  rng.fill(seed.mutable_view());
  auto kp = from_seed(seed.view());
  if (!kp.has_value()) std::abort();  // cannot happen: the seed has the right size
  return std::move(kp).value();
}

Result<Ed25519KeyPair> Ed25519KeyPair::from_seed(ByteView seed32) {
  if (seed32.size() != crypto_sign_SEEDBYTES) {
    return make_error(ErrorCode::kBadKeyFormat, "ed25519 seed must be 32 bytes");
  }
  ensure_sodium();
  Ed25519KeyPair kp{{}, SecretBytes(crypto_sign_SECRETKEYBYTES)};
  if (crypto_sign_seed_keypair(kp.public_key.data(), kp.secret_key.data(), seed32.data()) != 0) {
    return make_error(ErrorCode::kCryptoFailure, "ed25519 key derivation failed");
  }
  return kp;
}

std::array<std::uint8_t, 64> Ed25519KeyPair::sign(ByteView message) const {
  std::array<std::uint8_t, 64> sig{};
  if (secret_key.size() != crypto_sign_SECRETKEYBYTES) std::abort();  // a bug: moved-from key
  ensure_sodium();
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), secret_key.data());
  return sig;
}

bool ed25519_verify(ByteView public_key32, ByteView message, ByteView signature64) {
  if (public_key32.size() != crypto_sign_PUBLICKEYBYTES ||
      signature64.size() != crypto_sign_BYTES) {
    return false;
  }
  ensure_sodium();
  return crypto_sign_verify_detached(signature64.data(), message.data(), message.size(),
                                     public_key32.data()) == 0;
}

}  // namespace parley::crypto
