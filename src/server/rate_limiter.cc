#include "server/rate_limiter.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace parley::server {

std::string rate_key_for_ip(const std::string& ip) {
  std::array<unsigned char, 16> a{};
  if (::inet_pton(AF_INET6, ip.c_str(), a.data()) != 1) return ip;
  static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char text[INET6_ADDRSTRLEN] = {};
  if (std::memcmp(a.data(), kMapped, sizeof kMapped) == 0) {
    if (::inet_ntop(AF_INET, a.data() + 12, text, sizeof text) == nullptr) return ip;
    return text;
  }
  std::fill(a.begin() + 8, a.end(), 0);
  if (::inet_ntop(AF_INET6, a.data(), text, sizeof text) == nullptr) return ip;
  return std::string(text) + "/64";
}

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
