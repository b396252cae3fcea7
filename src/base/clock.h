#pragma once
// Clock: the injectable source of time. SystemClock reads the real clock; tests use ManualClock.
// FlooredClock never reads earlier than a floor (parleyd's: the day it was built, or its
// database's last write, whichever is later).
// ExpiryClock is the time housekeeping deletes by: it follows a clock but never runs ahead of
// the time that really elapsed.
// Thread-safety: SystemClock, SteadyClock and FlooredClock (over a thread-safe clock) are
// thread-safe; ManualClock and ExpiryClock are not.

#include <algorithm>
#include <chrono>
#include <cstdint>

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
    return floor_ms_ + std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - start_)
                           .count();
  }
  // Whether `inner` reads earlier than the floor (the floor is being used).
  bool behind() const { return inner_.now_ms() < floor_ms_; }
  std::int64_t floor_ms() const { return floor_ms_; }

 private:
  const Clock& inner_;
  const std::int64_t floor_ms_;
  const std::chrono::steady_clock::time_point start_;
};

// Milliseconds of a steady clock (CLOCK_MONOTONIC: not set, never back) from an arbitrary start.
class SteadyClock final : public Clock {
 public:
  std::int64_t now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

// The time by which what is stored becomes old enough to delete. It follows `wall`, but each
// reading moves on from the one before by no more than `steady` time elapsed since, and never
// back. So a wall clock set wrongly ahead (by hand, a bad NTP source, a fake-hwclock restored
// late) deletes nothing early: what was stored keeps its full age limit in elapsed time. The
// first reading after a restart continues from the last one kept (`last_ms`), so the time the
// process was down does not count either; a reading lags the wall clock by that much from then
// on, and things expire that much later. `last_ms` 0 (none kept): the first reading is the wall
// clock's.
class ExpiryClock {
 public:
  ExpiryClock(const Clock& wall, const Clock& steady, std::int64_t last_ms)
      : wall_(wall), steady_(steady), last_(last_ms), last_steady_(steady.now_ms()) {}

  struct Reading {
    std::int64_t now_ms = 0;   // the time to delete by
    std::int64_t wall_ms = 0;  // the wall clock's at the same moment
  };
  Reading read() {
    const std::int64_t wall = wall_.now_ms();
    const std::int64_t steady = steady_.now_ms();
    const std::int64_t elapsed = std::max<std::int64_t>(0, steady - last_steady_);
    last_ = last_ == 0 ? wall : std::max(last_, std::min(wall, last_ + elapsed));
    last_steady_ = steady;
    return {last_, wall};
  }

 private:
  const Clock& wall_;
  const Clock& steady_;
  std::int64_t last_;
  std::int64_t last_steady_;
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
