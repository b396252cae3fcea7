#pragma once
// Clock: the injectable source of time. SystemClock reads the real clock; tests use ManualClock.
// FlooredClock never reads earlier than a floor (parleyd's: the day it was built, or its
// database's last write, whichever is later).
// Thread-safety: SystemClock and FlooredClock (over a thread-safe clock) are thread-safe;
// ManualClock is not.

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

class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::int64_t start_ms = 0) : now_(start_ms) {}
  std::int64_t now_ms() const override { return now_; }
  void advance_ms(std::int64_t d) { now_ += d; }

 private:
  std::int64_t now_;
};

}  // namespace parley
