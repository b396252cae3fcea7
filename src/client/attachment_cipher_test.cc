#include "client/attachment_cipher.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "base/rng.h"
#include "client/attachments.h"
#include "client/internal/test_dir.h"

namespace parley::client {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

void write_file(const fs::path& p, ByteView data) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  ASSERT_TRUE(f.good());
}

Bytes read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Writes `size` deterministic pseudo-random bytes in 1 MiB pieces (never all in memory).
void write_random_file(const fs::path& p, std::uint64_t size, std::uint64_t seed) {
  DeterministicRng rng(seed);
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  Bytes piece(1 << 20);
  for (std::uint64_t done = 0; done < size;) {
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(piece.size(), size - done));
    rng.fill(std::span<std::uint8_t>(piece).first(n));
    f.write(reinterpret_cast<const char*>(piece.data()), static_cast<std::streamsize>(n));
    done += n;
  }
  ASSERT_TRUE(f.good());
}

// Every entry of a directory, hidden ones included.
std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

void flip_byte(const fs::path& p, std::uint64_t offset) {
  std::fstream f(p, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x01);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
  ASSERT_TRUE(f.good());
}

class AttachmentCipherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    out_ = dir_.path() / "out";
    fs::create_directories(out_);
  }

  // Encrypts `data` from "in" to "ct".
  EncryptedAttachmentFile encrypt(ByteView data) {
    write_file(in(), data);
    auto enc = encrypt_attachment_file(in(), ct(), rng_);
    EXPECT_TRUE(enc.has_value()) << enc.status().to_string();
    return enc.has_value() ? std::move(*enc) : EncryptedAttachmentFile{};
  }

  AttachmentExpectation expect(const EncryptedAttachmentFile& enc) const {
    AttachmentExpectation e;
    e.key = enc.key.view();
    e.digest = enc.digest;
    e.plaintext_size = enc.plaintext_size;
    e.plaintext_sha256 = enc.plaintext_sha256;
    return e;
  }

  fs::path in() const { return dir_.path() / "in"; }
  fs::path ct() const { return dir_.path() / "ct"; }

  TempDir dir_;
  fs::path out_;
  DeterministicRng rng_{42};
};

TEST_F(AttachmentCipherTest, RoundTripsSmallAndBoundarySizes) {
  for (std::size_t len : {0u, 1u, 15u, 16u, 17u, 65535u, 65536u, 65537u, 200001u}) {
    Bytes data(len);
    rng_.fill(data);
    auto enc = encrypt(data);
    ASSERT_EQ(enc.key.size(), kAttachmentKeySize);
    EXPECT_EQ(enc.plaintext_size, len);
    EXPECT_EQ(enc.ciphertext_size, attachment_ciphertext_size(len));
    EXPECT_EQ(fs::file_size(ct()), attachment_ciphertext_size(len));
    EXPECT_EQ(enc.plaintext_sha256, crypto::sha256(data));
    EXPECT_EQ(enc.digest, crypto::sha256(read_file(ct())));
    const std::string name = "file" + std::to_string(len) + ".bin";
    auto saved = decrypt_attachment_file(ct(), out_, name, expect(enc));
    ASSERT_TRUE(saved.has_value()) << len << ": " << saved.status().to_string();
    EXPECT_EQ(*saved, out_ / name);
    EXPECT_EQ(read_file(*saved), data) << len;
  }
  // Only the plaintexts: no temporary files left behind.
  EXPECT_EQ(entries(out_).size(), 9u);
  EXPECT_EQ(entries(dir_.path()), (std::set<std::string>{"ct", "in", "out"}));
}

TEST_F(AttachmentCipherTest, EmptyFileHasOnePaddingBlock) {
  auto enc = encrypt({});
  EXPECT_EQ(enc.ciphertext_size, 16u + 16u + 32u);
  auto saved = decrypt_attachment_file(ct(), out_, "empty", expect(enc));
  ASSERT_TRUE(saved.has_value()) << saved.status().to_string();
  EXPECT_EQ(fs::file_size(*saved), 0u);
}

TEST_F(AttachmentCipherTest, FreshKeyAndIvEveryTime) {
  const Bytes data(1000, 7);
  auto a = encrypt(data);
  const Bytes ct_a = read_file(ct());
  auto b = encrypt(data);
  EXPECT_FALSE(a.key == b.key);
  EXPECT_NE(a.digest, b.digest);
  const Bytes ct_b = read_file(ct());
  EXPECT_NE(Bytes(ct_a.begin(), ct_a.begin() + 16), Bytes(ct_b.begin(), ct_b.begin() + 16));  // IVs
  EXPECT_EQ(a.plaintext_sha256, b.plaintext_sha256);
}

TEST_F(AttachmentCipherTest, TwentyMegabytesStreamed) {
  const std::uint64_t size = (20ull << 20) + 12345;
  write_random_file(in(), size, 2024);
  auto enc = encrypt_attachment_file(in(), ct(), rng_);
  ASSERT_TRUE(enc.has_value()) << enc.status().to_string();
  EXPECT_EQ(enc->plaintext_size, size);
  auto in_hash = sha256_file(in());
  ASSERT_TRUE(in_hash.has_value());
  EXPECT_EQ(enc->plaintext_sha256, *in_hash);
  auto ct_hash = sha256_file(ct());
  ASSERT_TRUE(ct_hash.has_value());
  EXPECT_EQ(enc->digest, *ct_hash);
  auto saved = decrypt_attachment_file(ct(), out_, "big.bin", expect(*enc));
  ASSERT_TRUE(saved.has_value()) << saved.status().to_string();
  EXPECT_EQ(fs::file_size(*saved), size);
  auto out_hash = sha256_file(*saved);
  ASSERT_TRUE(out_hash.has_value());
  EXPECT_EQ(*out_hash, *in_hash);
}

TEST_F(AttachmentCipherTest, AnyTamperedByteIsRefusedAndLeavesNothing) {
  Bytes data(100000);
  rng_.fill(data);
  auto enc = encrypt(data);
  const std::uint64_t n = enc.ciphertext_size;
  const Bytes original = read_file(ct());
  // IV, first block, a middle block, the padding block, the MAC, the very last byte.
  for (std::uint64_t at :
       {std::uint64_t{0}, std::uint64_t{15}, std::uint64_t{16}, n / 2, n - 33, n - 32, n - 1}) {
    write_file(ct(), original);
    flip_byte(ct(), at);
    auto saved = decrypt_attachment_file(ct(), out_, "x.bin", expect(enc));
    ASSERT_FALSE(saved.has_value()) << "tampered byte " << at << " accepted";
    EXPECT_EQ(saved.error().code(), ErrorCode::kBadMac) << at << ": " << saved.error().to_string();
    EXPECT_TRUE(entries(out_).empty()) << at;
  }
}

TEST_F(AttachmentCipherTest, WrongKeyDigestOrHashIsRefused) {
  Bytes data(5000);
  rng_.fill(data);
  auto enc = encrypt(data);
  // The MAC half of the key wrong: the MAC does not verify.
  {
    SecretBytes key = enc.key.clone();
    key.data()[40] ^= 1;
    auto e = expect(enc);
    e.key = key.view();
    EXPECT_EQ(decrypt_attachment_file(ct(), out_, "x", e).status().code(), ErrorCode::kBadMac);
  }
  // The AES half wrong: MAC and digest verify, decryption fails (padding or plaintext hash).
  {
    SecretBytes key = enc.key.clone();
    key.data()[3] ^= 1;
    auto e = expect(enc);
    e.key = key.view();
    EXPECT_EQ(decrypt_attachment_file(ct(), out_, "x", e).status().code(),
              ErrorCode::kDecryptFailed);
  }
  // Another attachment's digest.
  {
    crypto::Sha256Digest other = enc.digest;
    other[0] ^= 1;
    auto e = expect(enc);
    e.digest = other;
    EXPECT_EQ(decrypt_attachment_file(ct(), out_, "x", e).status().code(), ErrorCode::kBadMac);
  }
  // A plaintext hash that does not match what the sender promised.
  {
    crypto::Sha256Digest other = enc.plaintext_sha256;
    other[31] ^= 1;
    auto e = expect(enc);
    e.plaintext_sha256 = other;
    EXPECT_EQ(decrypt_attachment_file(ct(), out_, "x", e).status().code(),
              ErrorCode::kDecryptFailed);
  }
  // Keys and digests of the wrong size.
  {
    auto e = expect(enc);
    e.key = enc.key.view().first(32);
    EXPECT_EQ(decrypt_attachment_file(ct(), out_, "x", e).status().code(),
              ErrorCode::kInvalidArgument);
  }
  EXPECT_TRUE(entries(out_).empty());
  // The genuine expectation still works.
  EXPECT_TRUE(decrypt_attachment_file(ct(), out_, "x", expect(enc)).has_value());
}

TEST_F(AttachmentCipherTest, TruncatedOrResizedCiphertextIsRefused) {
  Bytes data(3000);
  rng_.fill(data);
  auto enc = encrypt(data);
  const Bytes original = read_file(ct());
  for (std::size_t cut : {std::size_t{1}, std::size_t{16}, std::size_t{32}, original.size()}) {
    write_file(ct(), ByteView(original).first(original.size() - cut));
    EXPECT_EQ(decrypt_attachment_file(ct(), out_, "x", expect(enc)).status().code(),
              ErrorCode::kMalformed)
        << cut;
  }
  // Truncated by one block and claimed 16 bytes shorter: the sizes fit, the MAC does not.
  write_file(ct(), ByteView(original).first(original.size() - 16));
  auto e = expect(enc);
  e.plaintext_size -= 16;
  e.plaintext_sha256 = {};
  EXPECT_EQ(decrypt_attachment_file(ct(), out_, "x", e).status().code(), ErrorCode::kBadMac);
  // Extra bytes appended.
  Bytes longer = original;
  longer.push_back(0);
  write_file(ct(), longer);
  EXPECT_EQ(decrypt_attachment_file(ct(), out_, "x", expect(enc)).status().code(),
            ErrorCode::kMalformed);
  EXPECT_TRUE(entries(out_).empty());
}

TEST_F(AttachmentCipherTest, SizeBoundsAreEnforced) {
  Bytes data(2000, 1);
  write_file(in(), data);
  auto too_big = encrypt_attachment_file(in(), ct(), rng_, 1999);
  EXPECT_EQ(too_big.status().code(), ErrorCode::kTooLarge);
  EXPECT_FALSE(fs::exists(ct()));
  auto enc = encrypt(data);
  auto e = expect(enc);
  e.max_plaintext_size = 1000;
  EXPECT_EQ(decrypt_attachment_file(ct(), out_, "x", e).status().code(), ErrorCode::kTooLarge);
  EXPECT_EQ(encrypt_attachment_file(dir_.path() / "missing", ct(), rng_).status().code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(encrypt_attachment_file(out_, ct(), rng_).status().code(), ErrorCode::kInvalidArgument);
}

TEST_F(AttachmentCipherTest, NeverOverwritesAndRefusesPathNames) {
  const Bytes data(100, 9);
  auto enc = encrypt(data);
  write_file(out_ / "photo.jpg", as_bytes("precious"));
  write_file(out_ / "photo (1).jpg", as_bytes("also precious"));
  auto saved = decrypt_attachment_file(ct(), out_, "photo.jpg", expect(enc));
  ASSERT_TRUE(saved.has_value()) << saved.status().to_string();
  EXPECT_EQ(*saved, out_ / "photo (2).jpg");
  EXPECT_EQ(read_file(out_ / "photo.jpg"), to_bytes("precious"));
  EXPECT_EQ(read_file(out_ / "photo (1).jpg"), to_bytes("also precious"));
  EXPECT_EQ(read_file(*saved), data);
  auto again = decrypt_attachment_file(ct(), out_, "README", expect(enc));
  ASSERT_TRUE(again.has_value());
  auto twice = decrypt_attachment_file(ct(), out_, "README", expect(enc));
  ASSERT_TRUE(twice.has_value());
  EXPECT_EQ(*twice, out_ / "README (1)");
  for (const char* bad : {"", ".", "..", "../escape", "a/b"}) {
    EXPECT_EQ(decrypt_attachment_file(ct(), out_, bad, expect(enc)).status().code(),
              ErrorCode::kInvalidArgument)
        << bad;
  }
  EXPECT_FALSE(fs::exists(dir_.path() / "escape"));
}

TEST(SafeAttachmentFileName, StripsPathsControlsAndDots) {
  EXPECT_EQ(safe_attachment_file_name("report.pdf"), "report.pdf");
  EXPECT_EQ(safe_attachment_file_name("../../etc/passwd"), "passwd");
  EXPECT_EQ(safe_attachment_file_name("..\\..\\win.ini"), "win.ini");
  EXPECT_EQ(safe_attachment_file_name(".."), "attachment");
  EXPECT_EQ(safe_attachment_file_name("/"), "attachment");
  EXPECT_EQ(safe_attachment_file_name(""), "attachment");
  EXPECT_EQ(safe_attachment_file_name(".bashrc"), "bashrc");
  EXPECT_EQ(safe_attachment_file_name("a\nb\x7f\x01"
                                      "c.txt"),
            "abc.txt");
  EXPECT_EQ(safe_attachment_file_name(std::string("x\0y", 3)), "xy");
  EXPECT_EQ(safe_attachment_file_name("name. . "), "name");
  EXPECT_EQ(safe_attachment_file_name("d\xc3\xa9j\xc3\xa0 vu.txt"), "d\xc3\xa9j\xc3\xa0 vu.txt");
  // Long names are cut at a character boundary.
  std::string long_name;
  for (int i = 0; i < 150; ++i) long_name += "\xc3\xa9";  // 300 bytes of 2-byte characters
  const std::string cut = safe_attachment_file_name(long_name);
  EXPECT_LE(cut.size(), 200u);
  EXPECT_EQ(cut.size() % 2, 0u);
  EXPECT_EQ(cut, long_name.substr(0, cut.size()));
}

}  // namespace
}  // namespace parley::client
