#include "client/profile.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <string>

#include "base/clock.h"
#include "base/rng.h"
#include "client/internal/test_dir.h"
#include "client/local_store.h"

namespace parley::client {
namespace {

namespace fs = std::filesystem;
using crypto::PasswordParams;
using testing::TempDir;

const PasswordParams kCheap = PasswordParams::kTesting;

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0);
  return static_cast<unsigned>(st.st_mode & 07777);
}

// Writes something recognizable, so that a test can look for it in the file.
void write_marker(Profile& profile, const std::string& marker) {
  ManualClock clock(1000);
  DeterministicRng rng(1);
  LocalStore store(profile, clock, rng);
  ASSERT_TRUE(store.outbox_put("bob", as_bytes(marker)).has_value());
}

bool has_marker(Profile& profile, const std::string& marker) {
  ManualClock clock(1000);
  DeterministicRng rng(1);
  LocalStore store(profile, clock, rng);
  auto items = store.outbox_pending(2000);
  EXPECT_TRUE(items.has_value()) << items.status().to_string();
  return items.has_value() && items->size() == 1 && (*items)[0].payload == to_bytes(marker);
}

TEST(Profile, CreateAndOpenWithoutPassphrase) {
  TempDir tmp;
  {
    auto p = Profile::create(tmp.profile(), std::nullopt, kCheap);
    ASSERT_TRUE(p.has_value()) << p.status().to_string();
    write_marker(**p, "persisted across reopen");
  }
  EXPECT_EQ(mode_of(tmp.profile()), 0700u);
  EXPECT_EQ(mode_of(tmp.profile() / "key"), 0600u);
  EXPECT_EQ(fs::file_size(tmp.profile() / "key"), 32u);
  EXPECT_FALSE(fs::exists(tmp.profile() / "salt"));

  auto p = Profile::open(tmp.profile(), std::nullopt, kCheap);
  ASSERT_TRUE(p.has_value()) << p.status().to_string();
  EXPECT_TRUE(has_marker(**p, "persisted across reopen"));
}

TEST(Profile, CreateAndOpenWithPassphrase) {
  TempDir tmp;
  {
    auto p = Profile::create(tmp.profile(), "hunter2 but longer", kCheap);
    ASSERT_TRUE(p.has_value()) << p.status().to_string();
    write_marker(**p, "with a passphrase");
  }
  EXPECT_FALSE(fs::exists(tmp.profile() / "key"));
  const std::string salt = read_all(tmp.profile() / "salt");
  EXPECT_EQ(salt.rfind("parley-kdf 1 argon2id13 ops=1 mem=8192 salt=", 0), 0u) << salt;

  auto p = Profile::open(tmp.profile(), "hunter2 but longer", kCheap);
  ASSERT_TRUE(p.has_value()) << p.status().to_string();
  EXPECT_TRUE(has_marker(**p, "with a passphrase"));
}

TEST(Profile, WrongPassphraseIsRefusedAndLeavesTheFileAlone) {
  TempDir tmp;
  {
    auto p = Profile::create(tmp.profile(), "right", kCheap);
    ASSERT_TRUE(p.has_value());
    write_marker(**p, "x");
  }
  const std::string before = read_all(tmp.profile() / "profile.db");
  auto bad = Profile::open(tmp.profile(), "wrong", kCheap);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), ErrorCode::kWrongPassphrase);
  EXPECT_NE(bad.error().message().find("wrong passphrase"), std::string::npos);
  EXPECT_EQ(read_all(tmp.profile() / "profile.db"), before);

  auto none = Profile::open(tmp.profile(), std::nullopt, kCheap);
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), ErrorCode::kWrongPassphrase);

  EXPECT_TRUE(Profile::open(tmp.profile(), "right", kCheap).has_value());
}

TEST(Profile, PassphraseForAKeyFileProfileIsRefused) {
  TempDir tmp;
  ASSERT_TRUE(Profile::create(tmp.profile(), std::nullopt, kCheap).has_value());
  EXPECT_EQ(Profile::open(tmp.profile(), "pw", kCheap).status().code(),
            ErrorCode::kInvalidArgument);
}

TEST(Profile, LooseKeyFileIsRefused) {
  TempDir tmp;
  ASSERT_TRUE(Profile::create(tmp.profile(), std::nullopt, kCheap).has_value());
  fs::permissions(tmp.profile() / "key", fs::perms(0644), fs::perm_options::replace);
  auto p = Profile::open(tmp.profile(), std::nullopt, kCheap);
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(p.error().message().find("0644"), std::string::npos) << p.error().message();
  fs::permissions(tmp.profile() / "key", fs::perms(0600), fs::perm_options::replace);
  EXPECT_TRUE(Profile::open(tmp.profile(), std::nullopt, kCheap).has_value());
}

TEST(Profile, AnotherKeyFileIsAWrongKey) {
  TempDir tmp;
  ASSERT_TRUE(Profile::create(tmp.profile(), std::nullopt, kCheap).has_value());
  std::string key = read_all(tmp.profile() / "key");
  key[0] = static_cast<char>(key[0] ^ 1);
  fs::remove(tmp.profile() / "key");
  {
    std::ofstream out(tmp.profile() / "key", std::ios::binary);
    out << key;
  }
  fs::permissions(tmp.profile() / "key", fs::perms(0600), fs::perm_options::replace);
  EXPECT_EQ(Profile::open(tmp.profile(), std::nullopt, kCheap).status().code(),
            ErrorCode::kWrongPassphrase);
}

TEST(Profile, MissingAndExisting) {
  TempDir tmp;
  auto missing = Profile::open(tmp.profile(), std::nullopt, kCheap);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(missing.error().message(), "no profile at " + tmp.profile().string());

  ASSERT_TRUE(Profile::create(tmp.profile(), std::nullopt, kCheap).has_value());
  EXPECT_EQ(Profile::create(tmp.profile(), std::nullopt, kCheap).status().code(),
            ErrorCode::kAlreadyExists);
  EXPECT_EQ(Profile::create(tmp.profile(), "pw", kCheap).status().code(),
            ErrorCode::kAlreadyExists);
}

TEST(Profile, DatabaseIsNotPlaintext) {
  TempDir tmp;
  const std::string marker = "a very recognizable plaintext marker 0123456789";
  {
    auto p = Profile::create(tmp.profile(), "pw", kCheap);
    ASSERT_TRUE(p.has_value());
    write_marker(**p, marker);
  }
  // Closing checkpointed the WAL into the main file; check every file the database left.
  for (const auto& entry : fs::directory_iterator(tmp.profile())) {
    const std::string bytes = read_all(entry.path());
    EXPECT_EQ(bytes.find("SQLite format 3"), std::string::npos) << entry.path();
    EXPECT_EQ(bytes.find(marker), std::string::npos) << entry.path();
  }
  EXPECT_GT(fs::file_size(tmp.profile() / "profile.db"), 0u);
}

TEST(Profile, ChangedCostReKeysUnderAFreshSalt) {
  TempDir tmp;
  {
    auto p = Profile::create(tmp.profile(), "pw", kCheap);
    ASSERT_TRUE(p.has_value());
    write_marker(**p, "survives a re-key");
  }
  const std::string old_salt = read_all(tmp.profile() / "salt");
  const PasswordParams stronger{2, 16 << 10};
  {
    auto p = Profile::open(tmp.profile(), "pw", stronger);
    ASSERT_TRUE(p.has_value()) << p.status().to_string();
    EXPECT_TRUE(has_marker(**p, "survives a re-key"));
  }
  const std::string new_salt = read_all(tmp.profile() / "salt");
  EXPECT_NE(new_salt, old_salt);
  EXPECT_EQ(new_salt.rfind("parley-kdf 1 argon2id13 ops=2 mem=16384 salt=", 0), 0u) << new_salt;
  EXPECT_FALSE(fs::exists(tmp.profile() / "salt.next"));
  // Opening at the recorded cost does not re-key again; the old record no longer opens it.
  auto p = Profile::open(tmp.profile(), "pw", stronger);
  ASSERT_TRUE(p.has_value()) << p.status().to_string();
  EXPECT_TRUE(has_marker(**p, "survives a re-key"));
  EXPECT_EQ(read_all(tmp.profile() / "salt"), new_salt);
}

TEST(Profile, InterruptedReKeyIsFinishedOnOpen) {
  TempDir tmp;
  {
    auto p = Profile::create(tmp.profile(), "pw", kCheap);
    ASSERT_TRUE(p.has_value());
    write_marker(**p, "m");
  }
  const std::string old_salt = read_all(tmp.profile() / "salt");
  ASSERT_TRUE(Profile::open(tmp.profile(), "pw", PasswordParams{2, 16 << 10}).has_value());
  // Simulate a crash after the re-key committed but before salt.next replaced salt.
  const std::string new_salt = read_all(tmp.profile() / "salt");
  {
    std::ofstream out(tmp.profile() / "salt.next");
    out << new_salt;
  }
  fs::permissions(tmp.profile() / "salt.next", fs::perms(0600), fs::perm_options::replace);
  {
    std::ofstream out(tmp.profile() / "salt", std::ios::trunc);
    out << old_salt;
  }
  auto p = Profile::open(tmp.profile(), "pw", PasswordParams{2, 16 << 10});
  ASSERT_TRUE(p.has_value()) << p.status().to_string();
  EXPECT_TRUE(has_marker(**p, "m"));
  EXPECT_EQ(read_all(tmp.profile() / "salt"), new_salt);
  EXPECT_FALSE(fs::exists(tmp.profile() / "salt.next"));
}

// A salt file is read as untrusted: one asking for a cost no profile records (hours of work, or
// terabytes of memory) is refused as malformed before any work is done; and no profile is
// made or re-keyed at such a cost.
TEST(Profile, ASaltFileAskingForAnExtremeCostIsRefused) {
  TempDir tmp;
  {
    auto p = Profile::create(tmp.profile(), "pw", kCheap);
    ASSERT_TRUE(p.has_value());
  }
  const std::string salt = read_all(tmp.profile() / "salt");
  const std::string hex = salt.substr(salt.find("salt="));
  for (const std::string& cost :
       {std::string("ops=4294967295 mem=8192"), std::string("ops=1 mem=4398046511104"),
        std::string("ops=17 mem=8192")}) {
    {
      std::ofstream out(tmp.profile() / "salt", std::ios::trunc);
      out << "parley-kdf 1 argon2id13 " << cost << " " << hex;
    }
    auto p = Profile::open(tmp.profile(), "pw", kCheap);
    ASSERT_FALSE(p.has_value()) << cost;
    EXPECT_EQ(p.status().code(), ErrorCode::kMalformed) << cost;
  }
  TempDir other;
  auto costly = Profile::create(other.profile(), "pw", PasswordParams{kMaxKdfOps + 1, 8 << 10});
  ASSERT_FALSE(costly.has_value());
  EXPECT_EQ(costly.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(other.profile() / "salt"));
}

}  // namespace
}  // namespace parley::client
