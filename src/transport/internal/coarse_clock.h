#pragma once
// Internal to src/transport: steady_clock's time read from CLOCK_MONOTONIC_COARSE, the kernel's
// last timer tick (a few milliseconds old at most). Cheap enough to stamp every read with: the
// vDSO returns the tick's time without reading the clock source.

#include <time.h>

#include <chrono>

namespace parley::transport::internal {

// libstdc++'s steady_clock is CLOCK_MONOTONIC, whose coarse variant counts from the same
// origin; this time lags steady_clock::now() by at most one tick.
inline std::chrono::steady_clock::time_point coarse_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
}

}  // namespace parley::transport::internal
