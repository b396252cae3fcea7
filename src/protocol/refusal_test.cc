// Every refusal returns a clear error code and leaves every store exactly as it was.
#include <gtest/gtest.h>

#include "protocol/testing/parties.h"

namespace parley::protocol {
namespace {

using testing::Party;

class RefusalTest : public ::testing::Test {
 protected:
  DeterministicRng rng_{99};
  Party alice_{"alice", rng_};
  Party bob_{"bob", rng_};

  CiphertextMessage send(Party& from, Party& to, const std::string& msg) {
    auto c = from.cipher_for(to, rng_).encrypt(to_bytes(msg));
    EXPECT_TRUE(c.has_value()) << c.status().to_string();
    return std::move(c).value();
  }
  // Asserts that delivering `bytes` to Bob fails with `code` and changes none of Bob's stores.
  void expect_refused(MessageType type, const Bytes& bytes, ErrorCode code) {
    const std::string before = bob_.store.snapshot();
    auto r = bob_.cipher_for(alice_, rng_).decrypt(type, bytes);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), code) << r.error().to_string();
    EXPECT_EQ(bob_.store.snapshot(), before);
  }
  // An established session: Alice -> Bob prekey message, Bob answers, Alice reads.
  void establish() {
    ASSERT_TRUE(alice_.builder_for(bob_, rng_).process_bundle(bob_.bundle(1)).is_ok());
    auto m = send(alice_, bob_, "init");
    ASSERT_TRUE(bob_.cipher_for(alice_, rng_).decrypt(m.type, m.serialized).has_value());
    auto r = send(bob_, alice_, "ack");
    ASSERT_TRUE(alice_.cipher_for(bob_, rng_).decrypt(r.type, r.serialized).has_value());
  }
};

TEST_F(RefusalTest, TamperedMac) {
  establish();
  auto m = send(alice_, bob_, "tamper me");
  m.serialized.back() ^= 0x01;
  expect_refused(m.type, m.serialized, ErrorCode::kBadMac);
}

TEST_F(RefusalTest, TamperedCiphertext) {
  establish();
  auto m = send(alice_, bob_, "tamper me");
  m.serialized[m.serialized.size() - 12] ^= 0x80;  // inside the ciphertext field
  expect_refused(m.type, m.serialized, ErrorCode::kBadMac);
}

TEST_F(RefusalTest, WrongVersionByte) {
  establish();
  auto m = send(alice_, bob_, "v");
  for (std::uint8_t v : {0x22, 0x43, 0x00, 0xff}) {
    Bytes b = m.serialized;
    b[0] = v;
    expect_refused(m.type, b, ErrorCode::kBadVersion);
  }
}

TEST_F(RefusalTest, TruncatedAndEmptyAndGarbage) {
  establish();
  auto m = send(alice_, bob_, "cut");
  for (std::size_t len : {std::size_t{0}, std::size_t{1}, std::size_t{5}, m.serialized.size() - 9,
                          m.serialized.size() - 1}) {
    Bytes b(m.serialized.begin(), m.serialized.begin() + static_cast<std::ptrdiff_t>(len));
    const std::string before = bob_.store.snapshot();
    auto r = bob_.cipher_for(alice_, rng_).decrypt(m.type, b);
    ASSERT_FALSE(r.has_value()) << "length " << len;
    const ErrorCode c = r.error().code();
    EXPECT_TRUE(c == ErrorCode::kMalformed || c == ErrorCode::kBadMac) << r.error().to_string();
    EXPECT_EQ(bob_.store.snapshot(), before);
  }
  Bytes garbage = {0x33, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  expect_refused(MessageType::kWhisper, garbage, ErrorCode::kMalformed);
  expect_refused(MessageType::kPreKeyWhisper, garbage, ErrorCode::kMalformed);
}

TEST_F(RefusalTest, OversizeMessage) {
  establish();
  Bytes big(kMaxMessageSize + 1, 0x41);
  big[0] = kVersionByte;
  expect_refused(MessageType::kWhisper, big, ErrorCode::kTooLarge);
  expect_refused(MessageType::kPreKeyWhisper, big, ErrorCode::kTooLarge);
}

TEST_F(RefusalTest, ReplayedMessage) {
  establish();
  auto m = send(alice_, bob_, "once");
  ASSERT_TRUE(bob_.cipher_for(alice_, rng_).decrypt(m.type, m.serialized).has_value());
  expect_refused(m.type, m.serialized, ErrorCode::kDuplicateMessage);
}

TEST_F(RefusalTest, ReplayedPreKeyMessage) {
  ASSERT_TRUE(alice_.builder_for(bob_, rng_).process_bundle(bob_.bundle(2)).is_ok());
  auto m = send(alice_, bob_, "prekey once");
  ASSERT_TRUE(bob_.cipher_for(alice_, rng_).decrypt(m.type, m.serialized).has_value());
  expect_refused(m.type, m.serialized, ErrorCode::kDuplicateMessage);
}

TEST_F(RefusalTest, TooFarAhead) {
  establish();
  for (std::uint32_t i = 0; i <= kMaxForwardJump + 1; ++i) {
    auto c = alice_.cipher_for(bob_, rng_).encrypt(to_bytes(std::string("x")));
    ASSERT_TRUE(c.has_value());
    if (i == kMaxForwardJump + 1) expect_refused(c->type, c->serialized, ErrorCode::kTooFarAhead);
  }
}

TEST_F(RefusalTest, UnknownOneTimePreKey) {
  ASSERT_TRUE(alice_.builder_for(bob_, rng_).process_bundle(bob_.bundle(4)).is_ok());
  auto m = send(alice_, bob_, "uses prekey 4");
  ASSERT_TRUE(bob_.store.pre_keys.remove_pre_key(4).is_ok());
  expect_refused(m.type, m.serialized, ErrorCode::kUnknownPreKey);
}

TEST_F(RefusalTest, UnknownSignedPreKey) {
  ASSERT_TRUE(alice_.builder_for(bob_, rng_).process_bundle(bob_.bundle(4)).is_ok());
  auto m = send(alice_, bob_, "uses spk 1");
  ASSERT_TRUE(bob_.store.signed_pre_keys.remove_signed_pre_key(1).is_ok());
  expect_refused(m.type, m.serialized, ErrorCode::kUnknownSignedPreKey);
}

TEST_F(RefusalTest, BadSignedPreKeySignature) {
  PreKeyBundle b = bob_.bundle(1);
  b.signed_pre_key_signature[5] ^= 0x10;
  const std::string before = alice_.store.snapshot();
  Status s = alice_.builder_for(bob_, rng_).process_bundle(b);
  EXPECT_EQ(s.code(), ErrorCode::kBadSignature);
  EXPECT_EQ(alice_.store.snapshot(), before);
  // A signature by someone else's key is refused too.
  PreKeyBundle c = bob_.bundle(1);
  c.identity_key = alice_.store.identity.identity_key_pair()->public_key;
  EXPECT_EQ(alice_.builder_for(bob_, rng_).process_bundle(c).code(), ErrorCode::kBadSignature);
  EXPECT_EQ(alice_.store.snapshot(), before);
}

TEST_F(RefusalTest, ChangedIdentityIsReportedNotAccepted) {
  establish();
  // Bob re-installs with a new identity under the same address.
  DeterministicRng rng2(7);
  Party new_bob("bob", rng2);
  const std::string before = alice_.store.snapshot();
  Status s = alice_.builder_for(new_bob, rng_).process_bundle(new_bob.bundle(1));
  EXPECT_EQ(s.code(), ErrorCode::kUntrustedIdentity);
  EXPECT_EQ(alice_.store.snapshot(), before);

  // New Bob initiates towards Alice: Alice refuses and keeps her state.
  ASSERT_TRUE(new_bob.builder_for(alice_, rng2).process_bundle(alice_.bundle(2)).is_ok());
  auto m = new_bob.cipher_for(alice_, rng2).encrypt(to_bytes(std::string("it's me")));
  ASSERT_TRUE(m.has_value());
  auto r = alice_.cipher_for(new_bob, rng_).decrypt(m->type, m->serialized);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kUntrustedIdentity);
  EXPECT_EQ(alice_.store.snapshot(), before);

  // Once the user accepts the new key, the same message decrypts.
  auto saved = alice_.store.identity.save_identity(new_bob.address, new_bob.bundle(0).identity_key);
  ASSERT_TRUE(saved.has_value());
  EXPECT_TRUE(*saved);  // it replaced a different key
  auto ok = alice_.cipher_for(new_bob, rng_).decrypt(m->type, m->serialized);
  ASSERT_TRUE(ok.has_value()) << ok.status().to_string();
}

TEST_F(RefusalTest, NoSession) {
  auto c = alice_.cipher_for(bob_, rng_).encrypt(to_bytes(std::string("x")));
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), ErrorCode::kNoSession);
  establish();
  auto m = send(alice_, bob_, "to nobody");
  DeterministicRng rng3(3);
  Party carol("carol", rng3);
  auto r = carol.cipher_for(alice_, rng3).decrypt(m.type, m.serialized);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kNoSession);
}

TEST_F(RefusalTest, MessageForSomeoneElseFailsMac) {
  establish();
  DeterministicRng rng3(3);
  Party carol("carol", rng3);
  ASSERT_TRUE(carol.builder_for(bob_, rng3).process_bundle(bob_.bundle(2)).is_ok());
  auto m = carol.cipher_for(bob_, rng3).encrypt(to_bytes(std::string("hi")));
  ASSERT_TRUE(m.has_value());
  // Delivered to Bob as if from Alice: a prekey message with Carol's identity key is untrusted
  // for Alice's address, and nothing changes.
  expect_refused(m->type, m->serialized, ErrorCode::kUntrustedIdentity);
}

}  // namespace
}  // namespace parley::protocol
