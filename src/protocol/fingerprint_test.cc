// Numeric safety numbers, checked against libsignal's published vectors.
//
// Vectors: libsignal NumericFingerprintGeneratorTest (signalapp/libsignal-protocol-java and
// signalapp/libsignal java/.../fingerprint/NumericFingerprintGeneratorTest.java,
// testVectorsVersion1; the same constants appear in libsignal rust/protocol/src/fingerprint.rs).

#include "protocol/fingerprint.h"

#include <gtest/gtest.h>

#include <string>

#include "base/rng.h"
#include "signal/fingerprint.pb.h"

namespace parley::protocol {
namespace {

constexpr char kAliceIdentity[] =
    "0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868";
constexpr char kBobIdentity[] =
    "05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b";
constexpr char kAliceStableId[] = "+14152222222";
constexpr char kBobStableId[] = "+14153333333";
constexpr char kDisplayableFingerprintV1[] =
    "300354477692869396892869876765458257569162576843440918079131";
constexpr char kAliceScannableFingerprintV1[] =
    "080112220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df1a220a20d62cbf"
    "73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d";
constexpr char kBobScannableFingerprintV1[] =
    "080112220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d1a220a201e301a"
    "0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df";
// libsignal's ALICE_SCANNABLE_FINGERPRINT_V2: the same content with version 2.
constexpr char kAliceScannableFingerprintV2[] =
    "080212220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df1a220a20d62cbf"
    "73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d";

crypto::PublicKey key_from_hex(const char* hex) {
  auto bytes = from_hex(hex);
  EXPECT_TRUE(bytes.has_value());
  auto key = crypto::PublicKey::deserialize(*bytes);
  EXPECT_TRUE(key.has_value());
  return *key;
}

Bytes hex(const char* h) { return *from_hex(h); }

struct Pair {
  NumericFingerprint alice;
  NumericFingerprint bob;
};

Pair vector_pair() {
  const crypto::PublicKey alice = key_from_hex(kAliceIdentity);
  const crypto::PublicKey bob = key_from_hex(kBobIdentity);
  return Pair{create_fingerprint(kFingerprintIterations, as_bytes(kAliceStableId), alice,
                                 as_bytes(kBobStableId), bob),
              create_fingerprint(kFingerprintIterations, as_bytes(kBobStableId), bob,
                                 as_bytes(kAliceStableId), alice)};
}

TEST(FingerprintTest, LibsignalVectorsVersion1) {
  Pair p = vector_pair();
  EXPECT_EQ(p.alice.display_text(), kDisplayableFingerprintV1);
  EXPECT_EQ(p.bob.display_text(), kDisplayableFingerprintV1);
  EXPECT_EQ(to_hex(p.alice.scannable_payload()), kAliceScannableFingerprintV1);
  EXPECT_EQ(to_hex(p.bob.scannable_payload()), kBobScannableFingerprintV1);
}

TEST(FingerprintTest, ScannedComparison) {
  Pair p = vector_pair();
  auto alice_scans_bob = p.alice.compare_scanned(p.bob.scannable_payload());
  auto bob_scans_alice = p.bob.compare_scanned(p.alice.scannable_payload());
  ASSERT_TRUE(alice_scans_bob.has_value());
  ASSERT_TRUE(bob_scans_alice.has_value());
  EXPECT_TRUE(*alice_scans_bob);
  EXPECT_TRUE(*bob_scans_alice);
  EXPECT_TRUE(*p.alice.compare_scanned(hex(kBobScannableFingerprintV1)));

  // Scanning your own code (local and remote not swapped) does not match.
  auto self = p.alice.compare_scanned(p.alice.scannable_payload());
  ASSERT_TRUE(self.has_value());
  EXPECT_FALSE(*self);
}

TEST(FingerprintTest, SymmetricAndSixtyDigits) {
  DeterministicRng rng(5);
  crypto::KeyPair alice = crypto::KeyPair::generate(rng);
  crypto::KeyPair bob = crypto::KeyPair::generate(rng);
  NumericFingerprint a = create_fingerprint(1024, as_bytes("alice"), alice.public_key,
                                            as_bytes("bob"), bob.public_key);
  NumericFingerprint b = create_fingerprint(1024, as_bytes("bob"), bob.public_key,
                                            as_bytes("alice"), alice.public_key);
  EXPECT_EQ(a.display_text(), b.display_text());
  ASSERT_EQ(a.display_text().size(), 60u);
  for (char c : a.display_text()) EXPECT_TRUE(c >= '0' && c <= '9');
  EXPECT_TRUE(*a.compare_scanned(b.scannable_payload()));
  EXPECT_TRUE(*b.compare_scanned(a.scannable_payload()));
}

TEST(FingerprintTest, MismatchingKeysOrIdentifiers) {
  DeterministicRng rng(6);
  crypto::KeyPair alice = crypto::KeyPair::generate(rng);
  crypto::KeyPair bob = crypto::KeyPair::generate(rng);
  crypto::KeyPair mitm = crypto::KeyPair::generate(rng);
  NumericFingerprint bob_view = create_fingerprint(1024, as_bytes("+14153333333"), bob.public_key,
                                                   as_bytes("+14152222222"), alice.public_key);

  // Alice sees the attacker's key instead of Bob's.
  NumericFingerprint alice_mitm = create_fingerprint(
      1024, as_bytes("+14152222222"), alice.public_key, as_bytes("+14153333333"), mitm.public_key);
  EXPECT_NE(alice_mitm.display_text(), bob_view.display_text());
  EXPECT_FALSE(*alice_mitm.compare_scanned(bob_view.scannable_payload()));
  EXPECT_FALSE(*bob_view.compare_scanned(alice_mitm.scannable_payload()));

  // Alice uses a different stable identifier for herself.
  NumericFingerprint alice_wrong_id = create_fingerprint(
      1024, as_bytes("+141512222222"), alice.public_key, as_bytes("+14153333333"), bob.public_key);
  EXPECT_NE(alice_wrong_id.display_text(), bob_view.display_text());
  EXPECT_FALSE(*alice_wrong_id.compare_scanned(bob_view.scannable_payload()));
  EXPECT_FALSE(*bob_view.compare_scanned(alice_wrong_id.scannable_payload()));
}

TEST(FingerprintTest, BadScannedPayloads) {
  Pair p = vector_pair();
  // Another version (libsignal's V2 payload): a version mismatch.
  auto v2 = p.bob.compare_scanned(hex(kAliceScannableFingerprintV2));
  ASSERT_FALSE(v2.has_value());
  EXPECT_EQ(v2.error().code(), ErrorCode::kBadVersion);

  // A missing part is a version mismatch too (as libsignal).
  signal::fingerprint::CombinedFingerprints partial;
  partial.set_version(1);
  partial.mutable_local_fingerprint()->set_content(std::string(32, 'a'));
  auto missing = p.bob.compare_scanned(as_bytes(partial.SerializeAsString()));
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), ErrorCode::kBadVersion);

  // libsignal testFingerprintParsingFail: a corrupted length byte.
  Bytes corrupt = p.bob.scannable_payload();
  corrupt[5] += 1;
  auto bad = p.alice.compare_scanned(corrupt);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), ErrorCode::kMalformed);

  // Right shape, wrong content.
  Bytes flipped = p.bob.scannable_payload();
  flipped[10] ^= 0x01;
  auto wrong = p.alice.compare_scanned(flipped);
  ASSERT_TRUE(wrong.has_value());
  EXPECT_FALSE(*wrong);
}

}  // namespace
}  // namespace parley::protocol
