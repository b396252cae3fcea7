#include "crypto/x509.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <climits>
#include <memory>

namespace parley::crypto {
namespace {

template <auto Fn>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Fn(p);
  }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;

Status crypto_error(const char* what) {
  return make_error(ErrorCode::kCryptoFailure, std::string("x509: ") + what);
}

std::string bio_to_string(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || data == nullptr) return {};
  return std::string(data, static_cast<std::size_t>(len));
}

bool is_ip_literal(std::string_view s) {
  if (s.empty()) return false;
  bool v4 = true;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || c == '.')) v4 = false;
  }
  if (v4) return true;
  return s.find(':') != std::string_view::npos;  // IPv6
}

Status add_extension(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext) return crypto_error("extension");
  if (X509_add_ext(cert, ext.get(), -1) != 1) return crypto_error("add extension");
  return Status::ok();
}

}  // namespace

Result<TlsIdentity> generate_self_signed(std::string_view common_name, int days) {
  if (common_name.empty() || common_name.size() > 64 || days <= 0 || days > 36500) {
    return make_error(ErrorCode::kInvalidArgument, "x509: bad common name or validity");
  }
  for (char c : common_name) {
    // Keep the config-string syntax of X509V3_EXT_conf_nid safe: no separators.
    if (c == ',' || c == '\n' || c == '\r' || c == '\0') {
      return make_error(ErrorCode::kInvalidArgument, "x509: bad common name");
    }
  }
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return crypto_error("key generation");

  X509Ptr cert(X509_new());
  if (!cert) return crypto_error("alloc");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) return crypto_error("version");

  // 128-bit random positive serial.
  unsigned char serial_bytes[16];
  if (RAND_bytes(serial_bytes, sizeof serial_bytes) != 1) return crypto_error("rand");
  serial_bytes[0] &= 0x7f;
  serial_bytes[0] |= 0x01;
  BnPtr serial(BN_bin2bn(serial_bytes, sizeof serial_bytes, nullptr));
  if (!serial || BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return crypto_error("serial");
  }
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr) == nullptr) {
    return crypto_error("validity");
  }
  if (X509_set_pubkey(cert.get(), key.get()) != 1) return crypto_error("pubkey");

  const std::string cn(common_name);
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1) {
    return crypto_error("subject");
  }
  if (X509_set_issuer_name(cert.get(), name) != 1) return crypto_error("issuer");

  const std::string san = (is_ip_literal(cn) ? "IP:" : "DNS:") + cn;
  PARLEY_TRY(add_extension(cert.get(), NID_subject_alt_name, san));
  PARLEY_TRY(add_extension(cert.get(), NID_basic_constraints, "critical,CA:FALSE"));
  PARLEY_TRY(add_extension(cert.get(), NID_key_usage, "critical,digitalSignature"));
  PARLEY_TRY(add_extension(cert.get(), NID_ext_key_usage, "serverAuth"));
  PARLEY_TRY(add_extension(cert.get(), NID_subject_key_identifier, "hash"));

  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) return crypto_error("sign");

  TlsIdentity out;
  {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), cert.get()) != 1) return crypto_error("cert pem");
    out.cert_pem = bio_to_string(bio.get());
  }
  {
    BioPtr bio(BIO_new(BIO_s_secmem()));
    if (!bio) bio.reset(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr,
                                         nullptr) != 1) {
      return crypto_error("key pem");
    }
    out.key_pem = bio_to_string(bio.get());
  }
  if (out.cert_pem.empty() || out.key_pem.empty()) return crypto_error("pem");
  return out;
}

Result<Sha256Digest> certificate_pin(std::string_view cert_pem) {
  if (cert_pem.empty() || cert_pem.size() > INT_MAX) {
    return make_error(ErrorCode::kMalformed, "x509: no certificate");
  }
  BioPtr bio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  if (!bio) return crypto_error("alloc");
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return make_error(ErrorCode::kMalformed, "x509: no certificate");
  unsigned char* der = nullptr;
  int len = i2d_X509(cert.get(), &der);
  if (len <= 0 || der == nullptr) return crypto_error("der");
  Sha256Digest digest = sha256(ByteView(der, static_cast<std::size_t>(len)));
  OPENSSL_free(der);
  return digest;
}

}  // namespace parley::crypto
