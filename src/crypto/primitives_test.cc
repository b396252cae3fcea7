#include "crypto/primitives.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>  // test-only: reference implementations to cross-check
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <sodium.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/bytes.h"
#include "base/rng.h"

namespace parley::crypto {
namespace {

Bytes hex(std::string_view h) {
  auto b = from_hex(h);
  EXPECT_TRUE(b.has_value()) << h;
  return b.value_or(Bytes{});
}

Bytes repeat(std::uint8_t v, std::size_t n) { return Bytes(n, v); }

Bytes range(int from, int to) {  // [from, to)
  Bytes b;
  for (int i = from; i < to; ++i) b.push_back(static_cast<std::uint8_t>(i));
  return b;
}

// ---- SHA-2
// ----------------------------------------------------------------------------------------

TEST(Sha, Abc) {
  EXPECT_EQ(to_hex(sha256(as_bytes("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(sha512(as_bytes("abc"))),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
}

TEST(Sha, IncrementalMatchesOneShot) {
  DeterministicRng rng(7);
  Bytes data(1000);
  rng.fill(data);
  Sha256 h;
  h.update(ByteView(data).first(1));
  h.update(ByteView(data).subspan(1, 500));
  h.update(ByteView(data).subspan(501));
  EXPECT_EQ(h.finish(), sha256(data));

  Sha256 abc;
  abc.update(as_bytes("a"));
  abc.update(as_bytes("bc"));
  EXPECT_EQ(to_hex(abc.finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// ---- HMAC-SHA256 (RFC 4231) --------------------------------------------------------------------

TEST(HmacSha256, Rfc4231) {
  EXPECT_EQ(to_hex(hmac_sha256(repeat(0x0b, 20), as_bytes("Hi There"))),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");  // case 1
  EXPECT_EQ(to_hex(hmac_sha256(as_bytes("Jefe"), as_bytes("what do ya want for nothing?"))),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");  // case 2
  EXPECT_EQ(to_hex(hmac_sha256(repeat(0xaa, 20), repeat(0xdd, 50))),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");  // case 3
  EXPECT_EQ(to_hex(hmac_sha256(repeat(0xaa, 131),
                               as_bytes("Test Using Larger Than Block-Size Key - Hash Key First"))),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");  // case 6
}

TEST(HmacSha256, PartsEqualConcatenation) {
  const Bytes key = to_bytes("key");
  EXPECT_EQ(hmac_sha256(key, {as_bytes("what do ya "), as_bytes(""), as_bytes("want")}),
            hmac_sha256(key, as_bytes("what do ya want")));
}

TEST(HmacSha256, MatchesLibsodiumForAllKeyLengths) {
  DeterministicRng rng(4);
  for (std::size_t klen = 0; klen <= 200; klen += 1) {
    Bytes key(klen), msg(klen * 3 % 257);
    rng.fill(key);
    rng.fill(msg);
    crypto_auth_hmacsha256_state st;
    const std::uint8_t dummy = 0;  // libsodium declares the key pointer nonnull
    crypto_auth_hmacsha256_init(&st, key.empty() ? &dummy : key.data(), key.size());
    crypto_auth_hmacsha256_update(&st, msg.data(), msg.size());
    Sha256Digest want;
    crypto_auth_hmacsha256_final(&st, want.data());
    EXPECT_EQ(hmac_sha256(key, msg), want) << klen;
  }
}

// ---- HKDF-SHA256 (RFC 5869) --------------------------------------------------------------------

TEST(HkdfSha256, Rfc5869Case1) {
  auto okm = hkdf_sha256(repeat(0x0b, 22), range(0x00, 0x0d), range(0xf0, 0xfa), 42);
  ASSERT_TRUE(okm.has_value());
  EXPECT_EQ(to_hex(okm->view()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
            "34007208d5b887185865");
}

TEST(HkdfSha256, Rfc5869Case2) {
  auto okm = hkdf_sha256(range(0x00, 0x50), range(0x60, 0xb0), range(0xb0, 0x100), 82);
  ASSERT_TRUE(okm.has_value());
  EXPECT_EQ(to_hex(okm->view()),
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
            "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
            "cc30c58179ec3e87c14c01d5c1f3434f1d87");
}

TEST(HkdfSha256, Rfc5869Case3EmptySaltAndInfo) {
  auto okm = hkdf_sha256(repeat(0x0b, 22), {}, {}, 42);
  ASSERT_TRUE(okm.has_value());
  EXPECT_EQ(to_hex(okm->view()),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
            "9d201395faa4b61a96c8");
  // An empty salt is the same as HashLen zero bytes.
  auto zeros = hkdf_sha256(repeat(0x0b, 22), repeat(0, 32), {}, 42);
  ASSERT_TRUE(zeros.has_value());
  EXPECT_TRUE(*okm == *zeros);
}

// Cross-check against OpenSSL's EVP_KDF HKDF for many lengths and inputs.
Bytes openssl_hkdf(ByteView ikm, ByteView salt, ByteView info, std::size_t length) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  char digest[] = "SHA256";
  static std::uint8_t zero_salt[32] = {};
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<std::uint8_t*>(ikm.data()),
                                        ikm.size()),
      OSSL_PARAM_construct_octet_string(
          OSSL_KDF_PARAM_SALT, salt.empty() ? zero_salt : const_cast<std::uint8_t*>(salt.data()),
          salt.empty() ? 32 : salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<std::uint8_t*>(info.data()),
                                        info.size()),
      OSSL_PARAM_construct_end()};
  Bytes out(length);
  EXPECT_EQ(EVP_KDF_derive(ctx, out.data(), out.size(), params), 1);
  EVP_KDF_CTX_free(ctx);
  EVP_KDF_free(kdf);
  return out;
}

TEST(HkdfSha256, MatchesOpenSslEvpKdf) {
  DeterministicRng rng(6);
  for (std::size_t len : {1, 16, 31, 32, 33, 64, 80, 96, 255, 1000, 8160}) {
    Bytes ikm(1 + len % 70), salt(len % 3 == 0 ? 0 : 32), info(len % 40 + 1);
    rng.fill(ikm);
    rng.fill(salt);
    rng.fill(info);
    auto ours = hkdf_sha256(ikm, salt, info, len);
    ASSERT_TRUE(ours.has_value());
    EXPECT_EQ(to_hex(ours->view()), to_hex(openssl_hkdf(ikm, salt, info, len))) << len;
  }
}

TEST(HkdfSha256, LengthBounds) {
  auto too_long = hkdf_sha256(repeat(1, 32), {}, {}, 255 * 32 + 1);
  ASSERT_FALSE(too_long.has_value());
  EXPECT_EQ(too_long.error().code(), ErrorCode::kInvalidArgument);
  auto max = hkdf_sha256(repeat(1, 32), {}, {}, 255 * 32);
  ASSERT_TRUE(max.has_value());
  EXPECT_EQ(max->size(), 255u * 32u);
  auto empty = hkdf_sha256(repeat(1, 32), {}, {}, 0);
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->empty());
}

// ---- AES-256-CBC (NIST SP 800-38A F.2.5) -------------------------------------------------------

constexpr std::string_view kCbcKey =
    "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
constexpr std::string_view kCbcIv = "000102030405060708090a0b0c0d0e0f";
constexpr std::string_view kCbcPlain =
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
constexpr std::string_view kCbcCipher =
    "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d"
    "39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b";

TEST(Aes256Cbc, NistVectorPlusPaddingBlock) {
  auto ct = aes256_cbc_encrypt(hex(kCbcKey), hex(kCbcIv), hex(kCbcPlain));
  ASSERT_TRUE(ct.has_value());
  ASSERT_EQ(ct->size(), 80u);  // four vector blocks + one full PKCS#7 padding block
  EXPECT_EQ(to_hex(ByteView(*ct).first(64)), kCbcCipher);
  auto pt = aes256_cbc_decrypt(hex(kCbcKey), hex(kCbcIv), *ct);
  ASSERT_TRUE(pt.has_value());
  EXPECT_EQ(to_hex(*pt), kCbcPlain);
}

TEST(Aes256Cbc, RoundTripManySizes) {
  DeterministicRng rng(1);
  Bytes key(32), iv(16);
  rng.fill(key);
  rng.fill(iv);
  for (std::size_t n = 0; n < 70; ++n) {
    Bytes msg(n);
    rng.fill(msg);
    auto ct = aes256_cbc_encrypt(key, iv, msg);
    ASSERT_TRUE(ct.has_value());
    EXPECT_EQ(ct->size(), (n / 16 + 1) * 16);
    auto pt = aes256_cbc_decrypt(key, iv, *ct);
    ASSERT_TRUE(pt.has_value()) << n;
    EXPECT_EQ(*pt, msg);
  }
}

TEST(Aes256Cbc, Refusals) {
  const Bytes key = hex(kCbcKey), iv = hex(kCbcIv);
  EXPECT_EQ(aes256_cbc_encrypt(ByteView(key).first(31), iv, {}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(aes256_cbc_encrypt(key, ByteView(iv).first(15), {}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(aes256_cbc_decrypt(key, iv, {}).error().code(), ErrorCode::kDecryptFailed);
  EXPECT_EQ(aes256_cbc_decrypt(key, iv, Bytes(17)).error().code(), ErrorCode::kDecryptFailed);
  // The NIST ciphertext without our padding block ends in random-looking bytes: bad padding.
  auto bad = aes256_cbc_decrypt(key, iv, hex(kCbcCipher));
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), ErrorCode::kDecryptFailed);
  // A good ciphertext still decrypts on the same thread after a failure.
  auto ct = aes256_cbc_encrypt(key, iv, as_bytes("hello"));
  ASSERT_TRUE(ct.has_value());
  auto pt = aes256_cbc_decrypt(key, iv, *ct);
  ASSERT_TRUE(pt.has_value());
  EXPECT_EQ(as_chars(*pt), "hello");
}

// ---- AES-256-GCM -------------------------------------------------------------------------------

TEST(Aes256Gcm, RoundTripAndTamper) {
  DeterministicRng rng(2);
  Bytes key(32), nonce(12), msg(100);
  rng.fill(key);
  rng.fill(nonce);
  rng.fill(msg);
  const Bytes aad = to_bytes("header");
  auto sealed = aes256_gcm_encrypt(key, nonce, aad, msg);
  ASSERT_TRUE(sealed.has_value());
  ASSERT_EQ(sealed->size(), msg.size() + 16);
  auto opened = aes256_gcm_decrypt(key, nonce, aad, *sealed);
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(*opened, msg);

  for (std::size_t i : {std::size_t{0}, std::size_t{50}, sealed->size() - 1}) {
    Bytes t = *sealed;
    t[i] ^= 0x01;
    auto r = aes256_gcm_decrypt(key, nonce, aad, t);
    ASSERT_FALSE(r.has_value()) << i;
    EXPECT_EQ(r.error().code(), ErrorCode::kDecryptFailed);
  }
  EXPECT_EQ(aes256_gcm_decrypt(key, nonce, to_bytes("Header"), *sealed).error().code(),
            ErrorCode::kDecryptFailed);
  EXPECT_EQ(aes256_gcm_decrypt(key, nonce, aad, ByteView(*sealed).first(15)).error().code(),
            ErrorCode::kDecryptFailed);
  EXPECT_EQ(aes256_gcm_encrypt(key, ByteView(nonce).first(11), aad, msg).error().code(),
            ErrorCode::kInvalidArgument);

  auto empty = aes256_gcm_encrypt(key, nonce, {}, {});
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->size(), 16u);
  auto empty_open = aes256_gcm_decrypt(key, nonce, {}, *empty);
  ASSERT_TRUE(empty_open.has_value());
  EXPECT_TRUE(empty_open->empty());
}

TEST(Aes256Gcm, KnownAnswer) {
  // NIST GCM test case 13 (AES-256, zero key, zero IV, empty plaintext): tag only.
  auto sealed = aes256_gcm_encrypt(Bytes(32), Bytes(12), {}, {});
  ASSERT_TRUE(sealed.has_value());
  EXPECT_EQ(to_hex(*sealed), "530f8afbc74536b9a963b4f1c4cb738b");
  // Test case 14: one zero block.
  auto one = aes256_gcm_encrypt(Bytes(32), Bytes(12), {}, Bytes(16));
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(to_hex(*one), "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919");
}

// ---- SystemRng / Ed25519 -----------------------------------------------------------------------

TEST(SystemRng, FillsBytes) {
  SystemRng rng;
  Bytes a(32), b(32);
  rng.fill(a);
  rng.fill(b);
  EXPECT_NE(a, b);
  EXPECT_NE(a, Bytes(32));
}

// Small requests come from a per-thread pool: across refills and threads no output repeats
// (16-byte values: a repeat would mean bytes handed out twice).
TEST(SystemRng, PoolNeverRepeatsAcrossRefillsAndThreads) {
  constexpr int kPerThread = 2000;  // 46 KB per thread: many refills of the 4 KB pool
  std::vector<std::vector<Bytes>> got(3);
  std::vector<std::thread> threads;
  for (auto& out : got) {
    threads.emplace_back([&out] {
      SystemRng rng;
      for (int i = 0; i < kPerThread; ++i) {
        Bytes v(16);
        rng.fill(v);
        out.push_back(std::move(v));
        Bytes odd(7);  // odd sizes shift the pool's offset
        rng.fill(odd);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<Bytes> all;
  for (const auto& out : got) all.insert(out.begin(), out.end());
  EXPECT_EQ(all.size(), 3u * kPerThread);
  // Above 64 bytes a request is expanded from a fresh seed: two never repeat.
  Bytes big1(3000), big2(3000);
  SystemRng().fill(big1);
  SystemRng().fill(big2);
  EXPECT_NE(big1, Bytes(3000));
  EXPECT_NE(big1, big2);
  EXPECT_NE(Bytes(big1.begin(), big1.begin() + 1500), Bytes(big1.begin() + 1500, big1.end()));
}

TEST(Ed25519, Rfc8032Test1) {
  auto kp = Ed25519KeyPair::from_seed(
      hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"));
  ASSERT_TRUE(kp.has_value());
  EXPECT_EQ(to_hex(kp->public_key),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  const auto sig = kp->sign({});
  EXPECT_EQ(to_hex(sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
  EXPECT_TRUE(ed25519_verify(kp->public_key, {}, sig));
}

TEST(Ed25519, SignVerifyAndRefusals) {
  DeterministicRng rng(3);
  const Ed25519KeyPair kp = Ed25519KeyPair::generate(rng);
  const Bytes msg = to_bytes("login challenge");
  auto sig = kp.sign(msg);
  EXPECT_TRUE(ed25519_verify(kp.public_key, msg, sig));
  EXPECT_FALSE(ed25519_verify(kp.public_key, to_bytes("login challengE"), sig));
  sig[5] ^= 1;
  EXPECT_FALSE(ed25519_verify(kp.public_key, msg, sig));
  EXPECT_FALSE(ed25519_verify(ByteView(kp.public_key).first(31), msg, sig));
  EXPECT_FALSE(ed25519_verify(kp.public_key, msg, ByteView(sig).first(63)));
  EXPECT_EQ(Ed25519KeyPair::from_seed(Bytes(31)).status().code(), ErrorCode::kBadKeyFormat);
}

}  // namespace
}  // namespace parley::crypto
