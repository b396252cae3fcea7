#pragma once
// LatencyHistogram: durations counted into fixed buckets, for Prometheus histograms on /metrics.
// observe() is two relaxed atomic additions, so any thread may call it on a hot path;
// snapshot() reads the counts (not as one atomic whole: a snapshot taken during observe() may
// hold an observation's bucket without its duration in the sum, which Prometheus tolerates).

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace parley {

class LatencyHistogram {
 public:
  // Upper bounds of the buckets in nanoseconds, 100 µs to 5 s (the last bucket, +Inf, is
  // implicit). A duration equal to a bound counts in that bucket (Prometheus's `le`).
  static constexpr std::array<std::uint64_t, 13> kBoundsNs = {
      100'000,    250'000,    500'000,     1'000'000,   2'500'000,     5'000'000,    10'000'000,
      25'000'000, 50'000'000, 100'000'000, 250'000'000, 1'000'000'000, 5'000'000'000};
  static constexpr std::size_t kBuckets = kBoundsNs.size() + 1;

  struct Snapshot {
    std::array<std::uint64_t, kBuckets> counts{};  // per bucket, not cumulative; last is +Inf
    std::uint64_t count = 0;                       // the sum of `counts`
    double sum_seconds = 0;
  };

  void observe(std::chrono::steady_clock::duration d) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    const std::uint64_t n = ns > 0 ? static_cast<std::uint64_t>(ns) : 0;
    std::size_t i = 0;
    while (i < kBoundsNs.size() && n > kBoundsNs[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(n, std::memory_order_relaxed);
  }

  Snapshot snapshot() const {
    Snapshot s;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      s.counts[i] = counts_[i].load(std::memory_order_relaxed);
      s.count += s.counts[i];
    }
    s.sum_seconds = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
    return s;
  }

 private:
  std::array<std::atomic<std::uint64_t>, kBuckets> counts_{};
  std::atomic<std::uint64_t> sum_ns_{0};
};

}  // namespace parley
