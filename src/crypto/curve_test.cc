#include "crypto/curve.h"

#include <gtest/gtest.h>
#include <sodium.h>  // test-only: to observe the Edwards sign bit of generated keys

#include <deque>
#include <string>

#include "base/bytes.h"
#include "base/rng.h"

namespace parley::crypto {
namespace {

Bytes hex(std::string_view h) {
  auto b = from_hex(h);
  EXPECT_TRUE(b.has_value()) << h;
  return b.value_or(Bytes{});
}

// Hands out exactly the scripted bytes; fails the test on any extra draw.
class ScriptedRng final : public Rng {
 public:
  void push(ByteView b) { bytes_.insert(bytes_.end(), b.begin(), b.end()); }
  void fill(std::span<std::uint8_t> out) override {
    if (out.size() > bytes_.size()) {
      ADD_FAILURE() << "ScriptedRng over-drawn: wanted " << out.size() << ", have "
                    << bytes_.size();
      std::fill(out.begin(), out.end(), std::uint8_t{0});
      bytes_.clear();
      return;
    }
    for (auto& b : out) {
      b = bytes_.front();
      bytes_.pop_front();
    }
  }
  std::size_t remaining() const { return bytes_.size(); }

 private:
  std::deque<std::uint8_t> bytes_;
};

std::string x25519_hex(std::string_view scalar, std::string_view u) {
  auto priv = PrivateKey::from_bytes(hex(scalar));
  auto pub = PublicKey::from_raw(hex(u));
  EXPECT_TRUE(priv.has_value() && pub.has_value());
  if (!priv || !pub) return "";
  auto shared = priv->agree(*pub);
  EXPECT_TRUE(shared.has_value());
  if (!shared) return "";
  return to_hex(shared->view());
}

// ---- X25519 (RFC 7748) -------------------------------------------------------------------------

TEST(X25519, Rfc7748Section5_2) {
  EXPECT_EQ(x25519_hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
                       "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
  EXPECT_EQ(x25519_hex("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
                       "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"),
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957");
}

TEST(X25519, Rfc7748Iterated) {
  Bytes k = hex("0900000000000000000000000000000000000000000000000000000000000000");
  Bytes u = k;
  for (int i = 1; i <= 1000; ++i) {
    Bytes next = hex(x25519_hex(to_hex(k), to_hex(u)));
    u = k;
    k = next;
    if (i == 1) {
      EXPECT_EQ(to_hex(k), "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079");
    }
  }
  EXPECT_EQ(to_hex(k), "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51");
}

TEST(X25519, Rfc7748Section6_1AliceBob) {
  auto alice = KeyPair::from_private(
      hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
  auto bob = KeyPair::from_private(
      hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
  ASSERT_TRUE(alice.has_value());
  ASSERT_TRUE(bob.has_value());
  EXPECT_EQ(to_hex(alice->public_key.raw()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(to_hex(bob->public_key.raw()),
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  auto ab = alice->private_key.agree(bob->public_key);
  auto ba = bob->private_key.agree(alice->public_key);
  ASSERT_TRUE(ab.has_value());
  ASSERT_TRUE(ba.has_value());
  EXPECT_EQ(to_hex(ab->view()), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  EXPECT_TRUE(*ab == *ba);
}

// ---- Keys ---------------------------------------------------------------------------------------

TEST(Keys, GenerateDrawsExactly32BytesAndClamps) {
  ScriptedRng rng;
  rng.push(hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
  rng.push(hex("ff"));  // a sentinel that must not be consumed
  KeyPair kp = KeyPair::generate(rng);
  EXPECT_EQ(rng.remaining(), 1u);
  EXPECT_EQ(to_hex(kp.private_key.bytes().view()),
            "70076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c6a");
  EXPECT_EQ(to_hex(kp.public_key.raw()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  KeyPair copy = kp.clone();
  EXPECT_EQ(copy.public_key, kp.public_key);
  EXPECT_TRUE(copy.private_key.bytes() == kp.private_key.bytes());
}

TEST(Keys, SerializeRoundTrip) {
  DeterministicRng rng(11);
  KeyPair kp = KeyPair::generate(rng);
  Bytes ser = kp.public_key.serialize();
  ASSERT_EQ(ser.size(), kSerializedPublicKeySize);
  EXPECT_EQ(ser[0], kDjbKeyType);
  auto back = PublicKey::deserialize(ser);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, kp.public_key);
}

TEST(Keys, WrongSizesAndTypeAreBadKeyFormat) {
  const Bytes good = hex("0545aada58359159b017d2813d629779bf2f8fe3595cf90911d39f1fc9efbfe948");
  EXPECT_TRUE(PublicKey::deserialize(good).has_value());
  EXPECT_EQ(PublicKey::deserialize(ByteView(good).first(32)).status().code(),
            ErrorCode::kBadKeyFormat);
  Bytes longer = good;
  longer.push_back(0);
  EXPECT_EQ(PublicKey::deserialize(longer).status().code(), ErrorCode::kBadKeyFormat);
  Bytes wrong_type = good;
  wrong_type[0] = 0x06;
  EXPECT_EQ(PublicKey::deserialize(wrong_type).status().code(), ErrorCode::kBadKeyFormat);
  EXPECT_EQ(PublicKey::deserialize({}).status().code(), ErrorCode::kBadKeyFormat);
  EXPECT_EQ(PublicKey::from_raw(Bytes(31)).status().code(), ErrorCode::kBadKeyFormat);
  EXPECT_EQ(PublicKey::from_raw(Bytes(33)).status().code(), ErrorCode::kBadKeyFormat);
  EXPECT_EQ(PrivateKey::from_bytes(Bytes(31)).status().code(), ErrorCode::kBadKeyFormat);
  EXPECT_EQ(PrivateKey::from_bytes(Bytes(33)).status().code(), ErrorCode::kBadKeyFormat);
  EXPECT_EQ(KeyPair::from_private(Bytes(0)).status().code(), ErrorCode::kBadKeyFormat);
}

TEST(Keys, LowOrderPeerKeyIsWeak) {
  DeterministicRng rng(12);
  KeyPair kp = KeyPair::generate(rng);
  for (std::string_view u : {
           "0000000000000000000000000000000000000000000000000000000000000000",
           "0100000000000000000000000000000000000000000000000000000000000000",
           "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
       }) {
    auto peer = PublicKey::from_raw(hex(u));
    ASSERT_TRUE(peer.has_value());
    auto shared = kp.private_key.agree(*peer);
    ASSERT_FALSE(shared.has_value()) << u;
    EXPECT_EQ(shared.error().code(), ErrorCode::kWeakKey);
  }
}

// ---- XEdDSA -------------------------------------------------------------------------------------

constexpr std::string_view kLibsignalIdentityPub =
    "0545aada58359159b017d2813d629779bf2f8fe3595cf90911d39f1fc9efbfe948";
constexpr std::string_view kLibsignalIdentityPriv =
    "500c266be0338442bbe640d8cae33035e83c0b5c1df3206d54d2934a5b0e155e";
constexpr std::string_view kLibsignalMessage =
    "0573a2a2ea41123fd0689a195c6f8c75de46836f0e1b9d8ec2f75e938546d9d839";
constexpr std::string_view kLibsignalSignature =
    "3e1ef0eb68557517e8229fd2d728c6f70efe69b34cb0f42b79c743d6b9c155b9"
    "a289e041aa30d1feb5ba54281060790fdd2a1db955b6dd3ddb4ac96b69649506";

TEST(XEdDSA, VerifiesLibsignalSignature) {
  auto key = PublicKey::deserialize(hex(kLibsignalIdentityPub));
  ASSERT_TRUE(key.has_value());
  const Bytes msg = hex(kLibsignalMessage);
  const Bytes sig = hex(kLibsignalSignature);
  EXPECT_TRUE(verify_signature(*key, msg, sig));

  Bytes bad_msg = msg;
  bad_msg[10] ^= 0x01;
  EXPECT_FALSE(verify_signature(*key, bad_msg, sig));
  for (std::size_t i : {std::size_t{0}, std::size_t{31}, std::size_t{32}, std::size_t{63}}) {
    for (std::uint8_t bit : {std::uint8_t{0x01}, std::uint8_t{0x80}}) {
      Bytes bad_sig = sig;
      bad_sig[i] ^= bit;
      EXPECT_FALSE(verify_signature(*key, msg, bad_sig)) << i << " " << int{bit};
    }
  }
}

TEST(XEdDSA, LibsignalPrivateKeyGivesLibsignalPublicKey) {
  auto priv = PrivateKey::from_bytes(hex(kLibsignalIdentityPriv));
  ASSERT_TRUE(priv.has_value());
  EXPECT_EQ(to_hex(priv->public_key().serialize()), kLibsignalIdentityPub);

  // And our own signature with that key verifies against the libsignal public key.
  DeterministicRng rng(5);
  const Bytes msg = hex(kLibsignalMessage);
  auto sig = priv->sign(msg, rng);
  auto key = PublicKey::deserialize(hex(kLibsignalIdentityPub));
  ASSERT_TRUE(key.has_value());
  EXPECT_TRUE(verify_signature(*key, msg, sig));
}

TEST(XEdDSA, SignDrawsExactly64Bytes) {
  auto priv = PrivateKey::from_bytes(hex(kLibsignalIdentityPriv));
  ASSERT_TRUE(priv.has_value());
  ScriptedRng rng;
  rng.push(Bytes(64, 0x42));
  rng.push(hex("ff"));
  auto sig1 = priv->sign(as_bytes("m"), rng);
  EXPECT_EQ(rng.remaining(), 1u);
  // Same randomness gives the same signature; different randomness a different one.
  ScriptedRng again;
  again.push(Bytes(64, 0x42));
  EXPECT_EQ(priv->sign(as_bytes("m"), again), sig1);
  ScriptedRng other;
  other.push(Bytes(64, 0x43));
  EXPECT_NE(priv->sign(as_bytes("m"), other), sig1);
}

bool edwards_sign_bit(const PrivateKey& priv) {
  std::uint8_t a[32];
  std::copy(priv.bytes().view().begin(), priv.bytes().view().end(), a);
  std::uint8_t cap_a[32];
  EXPECT_EQ(crypto_scalarmult_ed25519_base(cap_a, a), 0);  // clamps like X25519
  return (cap_a[31] & 0x80) != 0;
}

TEST(XEdDSA, RoundTripRandomKeysBothSignBits) {
  DeterministicRng rng(2024);
  int sign_set = 0, sign_clear = 0;
  for (int i = 0; i < 200; ++i) {
    KeyPair kp = KeyPair::generate(rng);
    (edwards_sign_bit(kp.private_key) ? sign_set : sign_clear)++;
    Bytes msg(static_cast<std::size_t>(i));
    rng.fill(msg);
    auto sig = kp.private_key.sign(msg, rng);
    EXPECT_EQ(sig[63] & 0x80, 0);
    ASSERT_TRUE(verify_signature(kp.public_key, msg, sig)) << i;

    if (!msg.empty()) {
      Bytes bad_msg = msg;
      bad_msg[static_cast<std::size_t>(i) % msg.size()] ^= 0x04;
      EXPECT_FALSE(verify_signature(kp.public_key, bad_msg, sig));
    }
    auto bad_sig = sig;
    bad_sig[static_cast<std::size_t>(i) % 64] ^= 0x10;
    EXPECT_FALSE(verify_signature(kp.public_key, msg, bad_sig));
    auto raw = kp.public_key.raw();
    raw[static_cast<std::size_t>(i) % 31] ^= 0x02;
    auto bad_key = PublicKey::from_raw(raw);
    ASSERT_TRUE(bad_key.has_value());
    EXPECT_FALSE(verify_signature(*bad_key, msg, sig));
  }
  EXPECT_GT(sign_set, 0);
  EXPECT_GT(sign_clear, 0);
}

TEST(XEdDSA, RejectsMalformedInput) {
  DeterministicRng rng(9);
  KeyPair kp = KeyPair::generate(rng);
  const Bytes msg = to_bytes("hello");
  auto sig = kp.private_key.sign(msg, rng);
  ASSERT_TRUE(verify_signature(kp.public_key, msg, sig));
  EXPECT_FALSE(verify_signature(kp.public_key, msg, ByteView(sig).first(63)));
  Bytes longer(sig.begin(), sig.end());
  longer.push_back(0);
  EXPECT_FALSE(verify_signature(kp.public_key, msg, longer));
  EXPECT_FALSE(verify_signature(kp.public_key, msg, {}));
  EXPECT_FALSE(verify_signature(kp.public_key, msg, Bytes(64)));

  // u = p - 1 (no Edwards point), u = p and u = 2^255 - 1 (non-canonical).
  for (std::string_view u : {
           "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
           "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
           "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
           "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
           "0000000000000000000000000000000000000000000000000000000000000000",
       }) {
    auto key = PublicKey::from_raw(hex(u));
    ASSERT_TRUE(key.has_value());
    EXPECT_FALSE(verify_signature(*key, msg, sig)) << u;
  }

  // A non-canonical s (s + L) is refused.
  auto high_s = sig;
  static const std::uint8_t kL[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
                                      0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
                                      0,    0,    0,    0,    0,    0,    0,    0,
                                      0,    0,    0,    0,    0,    0,    0,    0x10};
  unsigned carry = 0;
  for (std::size_t i = 0; i < 32; ++i) {
    const unsigned v = high_s[32 + i] + kL[i] + carry;
    high_s[32 + i] = static_cast<std::uint8_t>(v);
    carry = v >> 8;
  }
  EXPECT_FALSE(verify_signature(kp.public_key, msg, high_s));
}

}  // namespace
}  // namespace parley::crypto
