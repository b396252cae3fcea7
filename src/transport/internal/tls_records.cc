#include "transport/internal/tls_records.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <new>

namespace parley::transport::internal {

namespace {

struct SuiteInfo {
  const char* cipher;  // EVP cipher name
  const char* digest;  // the suite's hash
  std::size_t key_size;
  std::size_t hash_size;
};

const SuiteInfo& info(TlsRecords::Suite s) {
  static const SuiteInfo kInfo[] = {
      {"AES-128-GCM", "SHA256", 16, 32},
      {"AES-256-GCM", "SHA384", 32, 48},
      {"ChaCha20-Poly1305", "SHA256", 32, 32},
  };
  return kInfo[static_cast<int>(s)];
}

// Every key this process installs gets a number, so that a thread's cipher context can tell
// whether it already holds the key it is asked for (a connection sending several records in a
// row) without comparing key bytes, and never mistakes a new connection's key for an old one
// that lived at the same address.
std::atomic<std::uint64_t> g_key_serial{0};

// Per thread, suite and direction, a direct-mapped cache of keyed contexts: a connection that
// sends or receives again soon finds its key still in place (keying a context costs OpenSSL 3.0
// about 2,000 instructions), while the memory stays bounded whatever the number of
// connections: at most kCacheSlots contexts of about 1.2 KB each are ever made per table.
constexpr std::size_t kCacheSlots = 256;

struct ThreadCiphers {
  struct Slot {
    EVP_CIPHER_CTX* ctx = nullptr;
    std::uint64_t keyed = 0;  // the serial of the key it holds; 0: none
  };
  Slot slots[3][2][kCacheSlots];  // [suite][encrypt][serial % kCacheSlots]
  ThreadCiphers() = default;
  ThreadCiphers(const ThreadCiphers&) = delete;
  ThreadCiphers& operator=(const ThreadCiphers&) = delete;
  ~ThreadCiphers() {
    for (auto& suite : slots) {
      for (auto& table : suite) {
        for (Slot& s : table) EVP_CIPHER_CTX_free(s.ctx);  // frees the key schedule cleansed
      }
    }
  }
};

// This thread's cache: made on first use, freed when the thread ends. Once it is gone (a record
// sealed while the thread is ending), nullptr.
struct ThreadCiphersOwner {
  ThreadCiphers* ciphers = nullptr;
  bool ended = false;
  ~ThreadCiphersOwner() {
    delete ciphers;
    ciphers = nullptr;
    ended = true;
  }
};
thread_local ThreadCiphersOwner t_ciphers;

ThreadCiphers* thread_ciphers() {
  if (t_ciphers.ciphers == nullptr && !t_ciphers.ended) {
    t_ciphers.ciphers = new (std::nothrow) ThreadCiphers();
  }
  return t_ciphers.ciphers;
}

// A key replaced or gone: this thread's context that holds it is freed (cleansed), so that no
// old traffic key outlives its use here (RFC 8446 section 7.2). A context keyed on another
// thread keeps it until its slot is reused.
void forget_key(TlsRecords::Suite suite, bool encrypt, std::uint64_t serial) {
  if (serial == 0 || t_ciphers.ciphers == nullptr) return;
  ThreadCiphers::Slot& slot =
      t_ciphers.ciphers->slots[static_cast<int>(suite)][encrypt ? 1 : 0][serial % kCacheSlots];
  if (slot.keyed != serial) return;
  EVP_CIPHER_CTX_free(slot.ctx);
  slot.ctx = nullptr;
  slot.keyed = 0;
}

EVP_CIPHER* fetched_cipher(TlsRecords::Suite s) {
  static EVP_CIPHER* const kCiphers[] = {
      EVP_CIPHER_fetch(nullptr, info(TlsRecords::Suite::kAes128GcmSha256).cipher, nullptr),
      EVP_CIPHER_fetch(nullptr, info(TlsRecords::Suite::kAes256GcmSha384).cipher, nullptr),
      EVP_CIPHER_fetch(nullptr, info(TlsRecords::Suite::kChaCha20Poly1305Sha256).cipher, nullptr),
  };
  return kCiphers[static_cast<int>(s)];
}

// The nonce of record `seq` (RFC 8446 section 5.3): the IV with the sequence number, big-endian
// and left-padded, XORed into its last eight bytes.
void make_nonce(const std::uint8_t iv[12], std::uint64_t seq, std::uint8_t nonce[12]) {
  std::memcpy(nonce, iv, 12);
  for (int i = 0; i < 8; ++i) nonce[11 - i] ^= static_cast<std::uint8_t>(seq >> (8 * i));
}

// HKDF-Expand-Label(secret, label, "", length) through OpenSSL's TLS 1.3 KDF.
Result<SecretBytes> expand_label(const SuiteInfo& si, ByteView secret, const char* label,
                                 std::size_t length) {
  static EVP_KDF* const kKdf = EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_TLS1_3_KDF, nullptr);
  if (kKdf == nullptr) return make_error(ErrorCode::kInternal, "tls records: no TLS13-KDF");
  EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kKdf);
  if (kctx == nullptr) return make_error(ErrorCode::kInternal, "tls records: EVP_KDF_CTX_new");
  static constexpr char kPrefix[] = "tls13 ";
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(si.digest), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                        const_cast<std::uint8_t*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, const_cast<char*>(kPrefix),
                                        sizeof kPrefix - 1),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, const_cast<char*>(label),
                                        std::strlen(label)),
      OSSL_PARAM_construct_end(),
  };
  SecretBytes out(length);
  const int ok = EVP_KDF_derive(kctx, out.data(), out.size(), params);
  EVP_KDF_CTX_free(kctx);
  if (ok != 1) return make_error(ErrorCode::kInternal, "tls records: HKDF-Expand-Label failed");
  return out;
}

}  // namespace

TlsRecords::Direction::~Direction() {
  secure_zero(secret, sizeof secret);
  secure_zero(key, sizeof key);
  secure_zero(iv, sizeof iv);
}

std::optional<TlsRecords::Suite> TlsRecords::suite_for(std::uint16_t cipher_id) {
  switch (cipher_id) {
    case 0x1301:
      return Suite::kAes128GcmSha256;
    case 0x1302:
      return Suite::kAes256GcmSha384;
    case 0x1303:
      return Suite::kChaCha20Poly1305Sha256;
    default:
      return std::nullopt;
  }
}

Result<std::unique_ptr<TlsRecords>> TlsRecords::make(Suite suite, ByteView read_secret,
                                                     ByteView write_secret, std::uint64_t read_seq,
                                                     std::uint64_t write_seq,
                                                     std::uint32_t records_per_key) {
  const SuiteInfo& si = info(suite);
  if (read_secret.size() != si.hash_size || write_secret.size() != si.hash_size) {
    return make_error(ErrorCode::kInvalidArgument, "tls records: a secret of the wrong length");
  }
  if (fetched_cipher(suite) == nullptr) {
    return make_error(ErrorCode::kInternal, "tls records: cipher unavailable");
  }
  if (records_per_key == 0) {
    return make_error(ErrorCode::kInvalidArgument, "tls records: no record per key");
  }
  std::unique_ptr<TlsRecords> r(new TlsRecords(suite, records_per_key));
  PARLEY_TRY(r->set_secret(r->read_, read_secret));
  PARLEY_TRY(r->set_secret(r->write_, write_secret));
  r->read_.seq = read_seq;
  r->write_.seq = write_seq;
  return r;
}

Status TlsRecords::set_secret(Direction& d, ByteView secret) {
  const SuiteInfo& si = info(suite_);
  if (secret.size() != si.hash_size || si.hash_size > sizeof d.secret) {
    return make_error(ErrorCode::kInvalidArgument, "tls records: a secret of the wrong length");
  }
  auto key = expand_label(si, secret, "key", si.key_size);
  if (!key) return key.error();
  auto iv = expand_label(si, secret, "iv", sizeof d.iv);
  if (!iv) return iv.error();
  forget_key(suite_, &d == &write_, d.serial);
  std::memmove(d.secret, secret.data(), secret.size());
  d.secret_size = secret.size();
  secure_zero(d.key, sizeof d.key);
  std::memcpy(d.key, key->data(), key->size());
  std::memcpy(d.iv, iv->data(), sizeof d.iv);
  d.seq = 0;
  d.serial = 0;  // a new key: the thread contexts must be keyed again
  return Status::ok();
}

TlsRecords::~TlsRecords() {
  forget_key(suite_, false, read_.serial);
  forget_key(suite_, true, write_.serial);
}

Status TlsRecords::next_secret(Direction& d) {
  auto next =
      expand_label(info(suite_), ByteView(d.secret, d.secret_size), "traffic upd", d.secret_size);
  if (!next) return next.error();
  return set_secret(d, next->view());
}

Status TlsRecords::update_read_key() { return next_secret(read_); }
Status TlsRecords::update_write_key() { return next_secret(write_); }

namespace {

// This thread's context for `suite` and direction, keyed with `key` (whose serial is `*serial`,
// 0 when it has none yet) and the nonce. nullptr when OpenSSL fails.
EVP_CIPHER_CTX* keyed_context(TlsRecords::Suite suite, bool encrypt, const std::uint8_t* key,
                              std::uint64_t* serial, const std::uint8_t nonce[12]) {
  ThreadCiphers* ciphers = thread_ciphers();
  if (ciphers == nullptr) return nullptr;
  if (*serial == 0) *serial = g_key_serial.fetch_add(1, std::memory_order_relaxed) + 1;
  ThreadCiphers::Slot& slot =
      ciphers->slots[static_cast<int>(suite)][encrypt ? 1 : 0][*serial % kCacheSlots];
  if (slot.ctx == nullptr) {
    slot.ctx = EVP_CIPHER_CTX_new();
    if (slot.ctx == nullptr || EVP_CipherInit_ex(slot.ctx, fetched_cipher(suite), nullptr, nullptr,
                                                 nullptr, encrypt ? 1 : 0) != 1) {
      EVP_CIPHER_CTX_free(slot.ctx);
      slot.ctx = nullptr;
      return nullptr;
    }
  }
  const bool rekey = slot.keyed != *serial;
  slot.keyed = 0;  // until this call succeeds
  if (EVP_CipherInit_ex(slot.ctx, nullptr, nullptr, rekey ? key : nullptr, nonce,
                        encrypt ? 1 : 0) != 1) {
    return nullptr;
  }
  slot.keyed = *serial;
  return slot.ctx;
}

void write_header(std::uint8_t* out, std::size_t length) {
  out[0] = TlsRecords::kApplicationData;
  out[1] = 0x03;
  out[2] = 0x03;
  out[3] = static_cast<std::uint8_t>(length >> 8);
  out[4] = static_cast<std::uint8_t>(length);
}

}  // namespace

Result<std::size_t> TlsRecords::seal(ContentType type, const std::uint8_t* plain, std::size_t n,
                                     std::uint8_t* out) {
  if (n > kMaxPlaintext) return make_error(ErrorCode::kInvalidArgument, "tls records: too long");
  if (write_.seq == std::numeric_limits<std::uint64_t>::max()) {
    return make_error(ErrorCode::kResourceExhausted, "tls records: sequence number exhausted");
  }
  const std::size_t length = n + 1 + kTagSize;
  write_header(out, length);
  std::uint8_t nonce[12];
  make_nonce(write_.iv, write_.seq, nonce);
  EVP_CIPHER_CTX* ctx = keyed_context(suite_, true, write_.key, &write_.serial, nonce);
  int len = 0;
  std::uint8_t* body = out + kHeaderSize;
  // The content and its type encrypted in place in one call: each EVP call costs hundreds of
  // instructions in OpenSSL 3.0, more than copying a message.
  if (n != 0 && body != plain) std::memmove(body, plain, n);
  body[n] = type;
  if (ctx == nullptr || EVP_EncryptUpdate(ctx, nullptr, &len, out, kHeaderSize) != 1 ||
      EVP_EncryptUpdate(ctx, body, &len, body, static_cast<int>(n + 1)) != 1 ||
      EVP_EncryptFinal_ex(ctx, body + n + 1, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, kTagSize, body + n + 1) != 1) {
    return make_error(ErrorCode::kInternal, "tls records: sealing failed");
  }
  ++write_.seq;
  return kHeaderSize + length;
}

std::optional<TlsRecords::Fault> TlsRecords::check_header(const std::uint8_t* data, std::size_t n,
                                                          std::size_t* record_size) {
  *record_size = 0;
  if (n < kHeaderSize) return std::nullopt;
  if (data[0] != kApplicationData) {
    return Fault{kUnexpectedMessage, "a record that is not protected application data"};
  }
  if (data[1] != 0x03 || data[2] != 0x03) return Fault{kDecodeError, "a record of another version"};
  const std::size_t length = (std::size_t{data[3]} << 8) | data[4];
  if (length > kMaxCiphertext) return Fault{kRecordOverflow, "a record over 2^14 + 256 bytes"};
  if (length < kTagSize + 1) return Fault{kDecodeError, "a record too short to be protected"};
  *record_size = kHeaderSize + length;
  return std::nullopt;
}

TlsRecords::OpenResult TlsRecords::open(std::uint8_t* record, std::size_t size) {
  OpenResult r;
  std::size_t expected = 0;
  if (auto fault = check_header(record, size, &expected)) {
    r.fault = *fault;
    return r;
  }
  if (expected != size) {
    r.fault = {kDecodeError, "a record cut or run on"};
    return r;
  }
  if (read_.seq == std::numeric_limits<std::uint64_t>::max()) {
    r.fault = {kUnexpectedMessage, "sequence number exhausted"};
    return r;
  }
  const std::size_t sealed = size - kHeaderSize - kTagSize;  // inner plaintext with its type
  std::uint8_t* body = record + kHeaderSize;
  std::uint8_t nonce[12];
  make_nonce(read_.iv, read_.seq, nonce);
  EVP_CIPHER_CTX* ctx = keyed_context(suite_, false, read_.key, &read_.serial, nonce);
  int len = 0;
  if (ctx == nullptr || EVP_DecryptUpdate(ctx, nullptr, &len, record, kHeaderSize) != 1 ||
      EVP_DecryptUpdate(ctx, body, &len, body, static_cast<int>(sealed)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, kTagSize, body + sealed) != 1 ||
      EVP_DecryptFinal_ex(ctx, body + sealed, &len) != 1) {
    r.fault = {kBadRecordMac, "a record that does not authenticate"};
    return r;
  }
  ++read_.seq;
  if (sealed > kMaxPlaintext + 1) {
    r.fault = {kRecordOverflow, "a plaintext over 2^14 bytes"};
    return r;
  }
  // The inner type is the last byte that is not zero padding.
  std::size_t end = sealed;
  while (end > 0 && body[end - 1] == 0) --end;
  if (end == 0) {
    r.fault = {kUnexpectedMessage, "a record of padding only"};
    return r;
  }
  r.opened = Opened{static_cast<ContentType>(body[end - 1]), end - 1};
  return r;
}

}  // namespace parley::transport::internal
