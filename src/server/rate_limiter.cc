#include "server/rate_limiter.h"

namespace parley::server {

bool RateLimiter::allow(const std::string& key, double cost) {
  const std::int64_t now = clock_.now_ms();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_ && !lru_.empty()) {
      buckets_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(key);
    it = buckets_.emplace(key, Bucket{burst_, now, lru_.begin()}).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  Bucket& b = it->second;
  const double elapsed = static_cast<double>(std::max<std::int64_t>(0, now - b.last_ms)) / 1000.0;
  b.tokens = std::min(burst_, b.tokens + elapsed * rate_);
  b.last_ms = now;
  if (b.tokens < cost) return false;
  b.tokens -= cost;
  return true;
}

}  // namespace parley::server
