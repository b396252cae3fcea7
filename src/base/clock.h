#pragma once
// Clock: the injectable source of time. SystemClock reads the real clock; tests use ManualClock.
// FlooredClock never reads earlier than a floor (parleyd's: the day it was built or, on a
// machine whose clock reads earlier, the latest of the database's last write and its kept
// expiry clock reading).
// ExpiryClock is the time housekeeping deletes by: it follows a clock but never runs ahead of
// the time that really elapsed (BootClock's).
// Thread-safety: SystemClock, BootClock and FlooredClock (over a thread-safe clock) are
// thread-safe; ManualClock and ExpiryClock are not.

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "base/saturating.h"

namespace parley {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch.
  virtual std::int64_t now_ms() const = 0;
};

class SystemClock final : public Clock {
 public:
  std::int64_t now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// A clock that never reads earlier than a floor. A machine without a battery-backed clock can
// boot at 1970 and serve before NTP sets it: what it stored meanwhile would carry times decades
// old, and be expired as such once the clock is set. While `inner` reads earlier than the floor,
// this clock reads the floor plus the time elapsed since it was made (a steady clock's), so it
// still moves forward: rate limits refill, timeouts run, stored times stay in order.
class FlooredClock final : public Clock {
 public:
  FlooredClock(const Clock& inner, std::int64_t floor_ms)
      : inner_(inner), floor_ms_(floor_ms), start_(std::chrono::steady_clock::now()) {}
  std::int64_t now_ms() const override {
    const std::int64_t now = inner_.now_ms();
    if (now >= floor_ms_) return now;
    const std::int64_t elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now() - start_)
                                     .count();
    return saturating_add(floor_ms_, elapsed);
  }
  // Whether `inner` reads earlier than the floor (the floor is being used).
  bool behind() const { return inner_.now_ms() < floor_ms_; }
  std::int64_t floor_ms() const { return floor_ms_; }

 private:
  const Clock& inner_;
  const std::int64_t floor_ms_;
  const std::chrono::steady_clock::time_point start_;
};

// Milliseconds since the machine booted, time suspended included (CLOCK_BOOTTIME): never set,
// never back. What housekeeping counts as elapsed time.
class BootClock final : public Clock {
 public:
  std::int64_t now_ms() const override {
    timespec ts{};
    ::clock_gettime(CLOCK_BOOTTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
  }
};

// The time by which what is stored becomes old enough to delete. Each reading is the wall
// clock's, but never more than the reading before plus the `elapsed` clock's time since. So a
// wall clock set wrongly ahead (by hand, a bad NTP source) deletes nothing early: what was
// stored keeps its full age limit in elapsed time. A wall clock set back is followed back,
// which only deletes less: what is stored meanwhile is stamped with the wall clock, and is
// never older by the reading than the time that elapsed since. The first reading after a
// restart continues from the last one kept (`last_ms`), so the time the process was down does
// not count either: readings lag the wall clock by that much from then on, and things expire
// that much later. `last_ms` <= 0 (none kept): the first reading is the wall clock's.
class ExpiryClock {
 public:
  ExpiryClock(const Clock& wall, const Clock& elapsed, std::int64_t last_ms)
      : wall_(wall), elapsed_(elapsed), last_(last_ms), last_elapsed_(elapsed.now_ms()) {}

  struct Reading {
    std::int64_t now_ms = 0;   // the time to delete by
    std::int64_t wall_ms = 0;  // the wall clock's at the same moment
    // How much further the wall clock moved since the reading before than the time that
    // elapsed (a jump ahead; 0 at the first reading, negative for a step back).
    std::int64_t jumped_ms = 0;
  };
  Reading read() {
    const std::int64_t wall = wall_.now_ms();
    const std::int64_t at = elapsed_.now_ms();
    const std::int64_t elapsed = std::max<std::int64_t>(0, at - last_elapsed_);
    Reading r;
    r.wall_ms = wall;
    if (last_ <= 0) {
      r.now_ms = wall;
    } else {
      r.now_ms = std::min(wall, saturating_add(last_, elapsed));
    }
    if (read_before_) r.jumped_ms = (wall - last_wall_) - elapsed;
    read_before_ = true;
    last_ = r.now_ms;
    last_wall_ = wall;
    last_elapsed_ = std::max(last_elapsed_, at);
    return r;
  }

 private:
  const Clock& wall_;
  const Clock& elapsed_;
  std::int64_t last_;
  std::int64_t last_elapsed_;
  std::int64_t last_wall_ = 0;
  bool read_before_ = false;
};

class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::int64_t start_ms = 0) : now_(start_ms) {}
  std::int64_t now_ms() const override { return now_; }
  void advance_ms(std::int64_t d) { now_ += d; }

 private:
  std::int64_t now_;
};

}  // namespace parley
