#pragma once
// Clock: the injectable source of time. SystemClock reads the real clock; tests use ManualClock.
// FlooredClock never reads earlier than a floor (parleyd's: the day it was built).
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

// A clock that reads `floor_ms` whenever `inner` reads earlier. A machine without a battery-backed
// clock can boot at 1970 and serve before NTP sets it: what it stored meanwhile would carry
// times decades old, and be expired as such once the clock is set. With a floor that is surely
// in the past (a build date), those times are merely early by the time the clock was wrong.
class FlooredClock final : public Clock {
 public:
  FlooredClock(const Clock& inner, std::int64_t floor_ms) : inner_(inner), floor_ms_(floor_ms) {}
  std::int64_t now_ms() const override {
    const std::int64_t now = inner_.now_ms();
    return now < floor_ms_ ? floor_ms_ : now;
  }
  // Whether `inner` reads earlier than the floor (the floor is being used).
  bool behind() const { return inner_.now_ms() < floor_ms_; }
  std::int64_t floor_ms() const { return floor_ms_; }

 private:
  const Clock& inner_;
  const std::int64_t floor_ms_;
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
