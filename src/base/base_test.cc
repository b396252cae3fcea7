#include <gtest/gtest.h>

#include "base/bytes.h"
#include "base/result.h"
#include "base/rng.h"
#include "base/secret_bytes.h"

namespace parley {
namespace {

TEST(Hex, RoundTrip) {
  Bytes b = {0x00, 0x01, 0xab, 0xff};
  EXPECT_EQ(to_hex(b), "0001abff");
  EXPECT_EQ(from_hex("0001ABff"), b);
}

TEST(Hex, RejectsOddLengthAndBadDigits) {
  EXPECT_FALSE(from_hex("abc").has_value());
  EXPECT_FALSE(from_hex("zz").has_value());
}

TEST(SecretBytes, ConstantTimeEqualityAndMove) {
  SecretBytes a(as_bytes("secret"));
  SecretBytes b = a.clone();
  EXPECT_TRUE(a == b);
  SecretBytes c(as_bytes("secreT"));
  EXPECT_FALSE(a == c);
  SecretBytes d = std::move(a);
  EXPECT_EQ(d.size(), 6u);
  EXPECT_EQ(a.size(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_FALSE(constant_time_equal(as_bytes("ab"), as_bytes("abc")));
}

TEST(SecretBytes, SecureZeroClears) {
  std::uint8_t buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  secure_zero(buf, sizeof buf);
  for (auto v : buf) EXPECT_EQ(v, 0);
}

TEST(Result, ValueAndError) {
  Result<int> ok = 5;
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(*ok, 5);
  Result<int> err = make_error(ErrorCode::kBadMac, "mac mismatch");
  ASSERT_FALSE(err.has_value());
  EXPECT_EQ(err.error().code(), ErrorCode::kBadMac);
  EXPECT_EQ(err.error().to_string(), "bad_mac: mac mismatch");
}

Status fails() { return make_error(ErrorCode::kNotFound, "x"); }
Result<int> propagates() {
  PARLEY_TRY(fails());
  return 1;
}
TEST(Result, TryPropagates) { EXPECT_EQ(propagates().error().code(), ErrorCode::kNotFound); }

TEST(DeterministicRng, Reproducible) {
  DeterministicRng a(42), b(42), c(43);
  Bytes x(37), y(37), z(37);
  a.fill(x);
  b.fill(y);
  c.fill(z);
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(a.uniform(7), 7u);
}

}  // namespace
}  // namespace parley
