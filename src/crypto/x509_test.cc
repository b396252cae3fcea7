#include "crypto/x509.h"

#include <gtest/gtest.h>

#include <string>

namespace parley::crypto {
namespace {

// Decodes the base64 body of the first PEM block (test-only helper).
Bytes pem_body_der(const std::string& pem) {
  const std::string begin = "-----BEGIN CERTIFICATE-----";
  const std::string end = "-----END CERTIFICATE-----";
  auto b = pem.find(begin);
  auto e = pem.find(end);
  EXPECT_NE(b, std::string::npos);
  EXPECT_NE(e, std::string::npos);
  std::string b64 = pem.substr(b + begin.size(), e - b - begin.size());
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  Bytes out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : b64) {
    auto pos = kAlphabet.find(c);
    if (pos == std::string::npos) continue;  // newlines, '='
    acc = (acc << 6) | static_cast<std::uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xff));
    }
  }
  return out;
}

TEST(X509, SelfSignedHasPemCertAndKey) {
  auto id = generate_self_signed("chat.example.org", 30);
  ASSERT_TRUE(id.has_value()) << id.error().to_string();
  EXPECT_NE(id->cert_pem.find("-----BEGIN CERTIFICATE-----"), std::string::npos);
  EXPECT_NE(id->key_pem.find("PRIVATE KEY-----"), std::string::npos);
  auto other = generate_self_signed("chat.example.org", 30);
  ASSERT_TRUE(other.has_value());
  EXPECT_NE(id->cert_pem, other->cert_pem);  // fresh key and serial each time
}

TEST(X509, IpCommonName) {
  auto id = generate_self_signed("127.0.0.1", 1);
  ASSERT_TRUE(id.has_value()) << id.error().to_string();
}

TEST(X509, PinIsSha256OfDer) {
  auto id = generate_self_signed("localhost", 10);
  ASSERT_TRUE(id.has_value());
  auto pin = certificate_pin(id->cert_pem);
  ASSERT_TRUE(pin.has_value());
  Bytes der = pem_body_der(id->cert_pem);
  EXPECT_EQ(*pin, sha256(der));
}

TEST(X509, RefusesBadInput) {
  EXPECT_EQ(generate_self_signed("", 10).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(generate_self_signed("a,b", 10).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(generate_self_signed("x", 0).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(certificate_pin("").error().code(), ErrorCode::kMalformed);
  EXPECT_EQ(certificate_pin("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .error()
                .code(),
            ErrorCode::kMalformed);
}

}  // namespace
}  // namespace parley::crypto
