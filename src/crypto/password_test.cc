#include "crypto/password.h"

#include <gtest/gtest.h>

#include <string>

namespace parley::crypto {
namespace {

const Bytes kSalt(kPasswordSaltSize, 0x5a);

TEST(Argon2id, DeterministicAndSized) {
  auto a = derive_key_argon2id("correct horse", kSalt, PasswordParams::kTesting);
  auto b = derive_key_argon2id("correct horse", kSalt, PasswordParams::kTesting);
  ASSERT_TRUE(a.has_value()) << a.status().to_string();
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(a->size(), kPasswordKeySize);
  EXPECT_TRUE(*a == *b);
}

TEST(Argon2id, InputsChangeTheKey) {
  auto base = derive_key_argon2id("pass", kSalt, PasswordParams::kTesting).value();
  Bytes other_salt = kSalt;
  other_salt[0] ^= 1;
  EXPECT_FALSE(base == derive_key_argon2id("pasS", kSalt, PasswordParams::kTesting).value());
  EXPECT_FALSE(base == derive_key_argon2id("pass", other_salt, PasswordParams::kTesting).value());
  EXPECT_FALSE(base == derive_key_argon2id("pass", kSalt, PasswordParams{2, 8 << 10}).value());
}

// A known answer from libsodium's own test suite (test/default/pwhash_argon2id.c, tv3: the
// encoded hash "$argon2id$v=19$m=4882,t=2,p=1$bA81arsiXysd3WbTRzmEOw$Nm8Q..." of the empty
// password), decoded from its PHC string. (Other tv3 entries are deliberate failures.)
TEST(Argon2id, KnownAnswers) {
  struct Vector {
    std::uint64_t ops;
    std::size_t mem_kib;
    const char* salt;
    const char* key;
  };
  const Vector vectors[] = {
      {2, 4882, "6c0f356abb225f2b1ddd66d34739843b",
       "366f1004cfbb447d435e8f6bbe9e5cc0a10e38e7c3da0e89bb19578a1a0d7291"},
  };
  for (const Vector& v : vectors) {
    auto key =
        derive_key_argon2id("", from_hex(v.salt).value(), PasswordParams{v.ops, v.mem_kib * 1024});
    ASSERT_TRUE(key.has_value()) << key.status().to_string();
    EXPECT_EQ(to_hex(key->view()), v.key);
  }
}

TEST(Argon2id, RefusesBadArguments) {
  EXPECT_EQ(derive_key_argon2id("p", Bytes(15, 0), PasswordParams::kTesting).status().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(derive_key_argon2id("p", kSalt, PasswordParams{0, 8 << 10}).status().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(derive_key_argon2id("p", kSalt, PasswordParams{1, 1024}).status().code(),
            ErrorCode::kInvalidArgument);
}

TEST(Argon2id, DefaultsAreLibsodiumInteractive) {
  EXPECT_EQ(PasswordParams::kInteractive.ops, 2u);
  EXPECT_EQ(PasswordParams::kInteractive.mem_bytes, std::size_t{64} << 20);
}

}  // namespace
}  // namespace parley::crypto
