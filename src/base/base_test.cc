#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <thread>

#include "base/bytes.h"
#include "base/clock.h"
#include "base/histogram.h"
#include "base/private_file.h"
#include "base/result.h"
#include "base/rng.h"
#include "base/saturating.h"
#include "base/secret_bytes.h"
#include "base/utf8.h"

namespace parley {
namespace {

// A clock behind its floor reads the floor and moves on from it with the time that passes (so
// rate limits over it still refill); one past the floor reads itself, also going back (as long
// as it stays past the floor).
TEST(FlooredClock, ReadsFromTheFloorWhileTheClockIsBehindIt) {
  ManualClock system(0);  // a machine booted at 1970, NTP not yet done
  const FlooredClock clock(system, 1'780'000'000'000);
  EXPECT_TRUE(clock.behind());
  const std::int64_t first = clock.now_ms();
  EXPECT_GE(first, 1'780'000'000'000);
  EXPECT_LT(first, 1'780'000'000'000 + 60'000);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_GE(clock.now_ms(), first + 30);
  system.advance_ms(1'790'000'000'000);  // NTP sets it
  EXPECT_FALSE(clock.behind());
  EXPECT_EQ(clock.now_ms(), 1'790'000'000'000);
  system.advance_ms(-5'000);
  EXPECT_EQ(clock.now_ms(), 1'789'999'995'000);
}

// Sums and differences stop at the type's bounds, for signed and unsigned types alike.
TEST(Saturating, StopsAtTheBoundsInsteadOfWrapping) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
  EXPECT_EQ(saturating_add<std::int64_t>(40, 2), 42);
  EXPECT_EQ(saturating_add<std::int64_t>(kMax - 1, 1), kMax);
  EXPECT_EQ(saturating_add<std::int64_t>(kMax - 1, 2), kMax);
  EXPECT_EQ(saturating_add<std::int64_t>(kMin + 1, -2), kMin);
  EXPECT_EQ(saturating_add<std::int64_t>(kMax, kMin), -1);
  EXPECT_EQ(saturating_sub<std::int64_t>(kMin + 5, 5), kMin);
  EXPECT_EQ(saturating_sub<std::int64_t>(kMin + 5, 6), kMin);
  EXPECT_EQ(saturating_sub<std::int64_t>(kMax - 1, -2), kMax);
  EXPECT_EQ(saturating_sub<std::int64_t>(0, kMin), kMax);
  EXPECT_EQ(saturating_sub<std::int64_t>(-1, kMin), kMax);
  EXPECT_EQ(saturating_add<std::size_t>(SIZE_MAX - 3, 3), SIZE_MAX);
  EXPECT_EQ(saturating_add<std::size_t>(SIZE_MAX - 3, 4), SIZE_MAX);
  EXPECT_EQ(saturating_sub<std::size_t>(3, 4), 0u);
  static_assert(saturating_add<int>(std::numeric_limits<int>::max(), 1) ==
                std::numeric_limits<int>::max());
}

// Housekeeping's clock follows the wall clock while the two agree, moves on by no more than the
// elapsed time when the wall clock jumps ahead, follows it back, and after a restart continues
// from the reading kept, not counting the time it was down.
TEST(ExpiryClock, MovesOnByTheElapsedTimeAtMost) {
  constexpr std::int64_t kDay = 24 * 3600 * 1000;
  constexpr std::int64_t kT0 = 1'790'000'000'000;
  ManualClock wall(kT0);
  ManualClock elapsed(5'000);
  for (std::int64_t none : {std::int64_t{0}, std::int64_t{-5}}) {
    ExpiryClock first_start(wall, elapsed, none);  // none kept: the wall clock's, once
    EXPECT_EQ(first_start.read().now_ms, kT0);
  }
  ExpiryClock clock(wall, elapsed, kT0);
  wall.advance_ms(600'000);
  elapsed.advance_ms(600'000);
  auto r = clock.read();
  EXPECT_EQ(r.now_ms, kT0 + 600'000);
  EXPECT_EQ(r.wall_ms, kT0 + 600'000);
  EXPECT_EQ(r.jumped_ms, 0);

  wall.advance_ms(400 * kDay + 600'000);  // set wrongly ahead by 400 days
  elapsed.advance_ms(600'000);
  r = clock.read();
  EXPECT_EQ(r.now_ms, kT0 + 1'200'000);
  EXPECT_EQ(r.wall_ms - r.now_ms, 400 * kDay);
  EXPECT_EQ(r.jumped_ms, 400 * kDay);
  elapsed.advance_ms(600'000);
  wall.advance_ms(600'000);
  r = clock.read();
  EXPECT_EQ(r.now_ms, kT0 + 1'800'000);
  EXPECT_EQ(r.jumped_ms, 0) << "a lag that stays is no new jump";

  wall.advance_ms(-400 * kDay - 3'600'000);  // corrected, and set back an hour too far
  elapsed.advance_ms(600'000);
  r = clock.read();
  EXPECT_EQ(r.now_ms, kT0 - 1'800'000) << "followed back: what is stored now is not old";
  EXPECT_EQ(r.jumped_ms, -400 * kDay - 3'600'000 - 600'000);
  wall.advance_ms(4'200'000);
  elapsed.advance_ms(4'200'000);
  r = clock.read();
  EXPECT_EQ(r.now_ms, kT0 + 2'400'000);
  EXPECT_EQ(r.jumped_ms, 0) << "a wall clock behind the reading before is no jump";

  // A restart after 10 days down: the reading continues from the one kept.
  const std::int64_t kept = clock.read().now_ms;
  wall.advance_ms(10 * kDay);
  ManualClock elapsed_after_boot(0);
  ExpiryClock restarted(wall, elapsed_after_boot, kept);
  EXPECT_EQ(restarted.read().now_ms, kept);
  elapsed_after_boot.advance_ms(60'000);
  wall.advance_ms(60'000);
  EXPECT_EQ(restarted.read().now_ms, kept + 60'000);
  // An elapsed clock never steps back; if it did, the time would not be counted twice.
  elapsed_after_boot.advance_ms(-1'000);
  EXPECT_EQ(restarted.read().now_ms, kept + 60'000);
  elapsed_after_boot.advance_ms(1'000);
  EXPECT_EQ(restarted.read().now_ms, kept + 60'000);

  // A kept reading far ahead (a clock set ahead when it was kept, or a damaged row) is not
  // believed past the wall clock, and does not overflow.
  ExpiryClock damaged(wall, elapsed, std::numeric_limits<std::int64_t>::max());
  elapsed.advance_ms(1'000);
  EXPECT_EQ(damaged.read().now_ms, wall.now_ms());
}

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

TEST(PrivateFile, IsWrittenForTheOwnerOnlyAndReplacedWhole) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("base_test_private_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "secret").string();
  const mode_t old_mask = ::umask(0);  // even a umask that lets everyone read
  ASSERT_TRUE(write_private_file(path, "first").is_ok());
  ASSERT_TRUE(write_private_file(path, "second").is_ok());
  ::umask(old_mask);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::ifstream in(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "second");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  Status missing = write_private_file((dir / "no" / "such" / "dir").string(), "x");
  EXPECT_EQ(missing.code(), ErrorCode::kIo);
  EXPECT_NE(missing.message().find("no/such/dir.tmp"), std::string::npos) << missing.message();
  std::filesystem::remove_all(dir);
}

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

TEST(LatencyHistogram, CountsEachDurationInTheFirstBucketThatHoldsIt) {
  using namespace std::chrono_literals;
  LatencyHistogram h;
  h.observe(0ns);    // 0 s: the first bucket
  h.observe(100us);  // exactly a bound: that bucket (le is "less than or equal")
  h.observe(101us);  // just over it: the next
  h.observe(3ms);    // (2.5 ms, 5 ms]
  h.observe(10s);    // over every bound: +Inf
  h.observe(-5ms);   // a clock that went back counts as 0
  const auto s = h.snapshot();
  EXPECT_EQ(s.count, 6u);
  EXPECT_EQ(s.counts[0], 3u);
  EXPECT_EQ(s.counts[1], 1u);
  EXPECT_EQ(s.counts[5], 1u);
  EXPECT_EQ(s.counts[LatencyHistogram::kBuckets - 1], 1u);
  EXPECT_NEAR(s.sum_seconds, 0.0001 + 0.000101 + 0.003 + 10.0, 1e-9);
}

// UTF-8 as proto3 string fields need it: shortest form only, no surrogates, nothing above
// U+10FFFF, no truncated sequence.
TEST(Utf8, ValidAndInvalidSequences) {
  char32_t cp = 0;
  EXPECT_EQ(utf8_sequence("A", cp), 1u);
  EXPECT_EQ(cp, U'A');
  EXPECT_EQ(utf8_sequence("\xc2\x9b", cp), 2u);
  EXPECT_EQ(cp, 0x9Bu);
  EXPECT_EQ(utf8_sequence("\xe2\x80\xae", cp), 3u);
  EXPECT_EQ(cp, 0x202Eu);
  EXPECT_EQ(utf8_sequence("\xf0\x9f\x98\x80", cp), 4u);
  EXPECT_EQ(cp, 0x1F600u);
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("caf\xc3\xa9 \xf4\x8f\xbf\xbf"));  // U+10FFFF, the last
  for (const char* bad :
       {"\x80", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80", "\xe2\x80", "\xc3", "ok\xff", "\xc3\x28"}) {
    EXPECT_FALSE(valid_utf8(bad)) << bad;
  }
  EXPECT_EQ(utf8_sequence("", cp), 0u);
}

}  // namespace
}  // namespace parley
