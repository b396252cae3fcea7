#pragma once
// Token buckets keyed by a string (a client's address block, transport::client_block(), or an
// account), for per-IP and per-account limits. Bounded: at most `max_keys` buckets are tracked;
// when full, the least recently seen bucket is evicted (a new key starts full, so eviction can only
// be generous). Thread-safe.

#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

#include "base/clock.h"

namespace parley::server {

class RateLimiter {
 public:
  // `rate` tokens per second, up to `burst`.
  RateLimiter(const Clock& clock, double rate, double burst, std::size_t max_keys = 100000)
      : clock_(clock), rate_(rate), burst_(burst), max_keys_(max_keys) {}

  // Takes `cost` tokens from `key`'s bucket; false (and takes nothing) when there are too few.
  bool allow(const std::string& key, double cost = 1.0);

 private:
  struct Bucket {
    double tokens;
    std::int64_t last_ms;
    std::list<std::string>::iterator lru;
  };
  const Clock& clock_;
  const double rate_;
  const double burst_;
  const std::size_t max_keys_;
  std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;  // guarded by mu_
  std::list<std::string> lru_;                       // guarded by mu_, most recent at front
};

}  // namespace parley::server
