#pragma once
// X.509 helpers for the TLS listener: a self-signed certificate for first start, and the
// certificate pin (SHA-256 of the leaf certificate's DER encoding) that invite links carry.
// Stateless and thread-safe. Only this module includes OpenSSL.

#include <string>
#include <string_view>

#include "base/bytes.h"
#include "base/result.h"
#include "crypto/primitives.h"

namespace parley::crypto {

// A certificate and its private key, both PEM. key_pem is secret: write it 0600.
struct TlsIdentity {
  std::string cert_pem;
  std::string key_pem;
};

// A fresh ECDSA P-256 key and a self-signed X.509 v3 certificate for `common_name`
// (subject CN and subjectAltName; an IP literal becomes an IP SAN, anything else a DNS SAN),
// valid from one hour ago for `days` days. kInvalidArgument on an empty name or days <= 0;
// kCryptoFailure when OpenSSL fails.
Result<TlsIdentity> generate_self_signed(std::string_view common_name, int days);

// SHA-256 of the DER encoding of the first certificate in `cert_pem`.
// kMalformed when no certificate parses.
Result<Sha256Digest> certificate_pin(std::string_view cert_pem);

}  // namespace parley::crypto
