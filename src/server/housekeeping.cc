#include "server/housekeeping.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <string>
#include <vector>

#include "server/service.h"

namespace parley::server {

namespace {

// A jump ahead smaller than this is ordinary clock adjustment, not worth a warning.
constexpr std::int64_t kJumpWorthLoggingMs = 60'000;

}  // namespace

Housekeeping::Housekeeping(Service& service, const FlooredClock& wall, const Clock& elapsed,
                           std::chrono::milliseconds interval)
    : service_(service),
      wall_(wall),
      clock_(wall, elapsed, service.store().expiry_clock_at_open_ms()),
      interval_(interval),
      timer_(service.io_executor()) {}

void Housekeeping::start() {
  run();
  schedule();
}

void Housekeeping::stop() {
  if (stopped_) return;
  stopped_ = true;
  timer_.cancel();
  // A last run keeps the expiry clock's reading as of now: otherwise the time since the last
  // run (up to an interval) would be added to the lag at every restart.
  run();
}

void Housekeeping::schedule() {
  timer_.expires_after(interval_);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopped_) return;
    run();
    schedule();
  });
}

void Housekeeping::run() {
  if (wall_.behind()) {
    spdlog::warn(
        "event=clock_behind system_ms={} floor_ms={} (the system clock is not set; "
        "times run on from the floor until it is)",
        SystemClock().now_ms(), wall_.floor_ms());
  }
  last_ = clock_.read();
  const std::int64_t lag = last_.wall_ms - last_.now_ms;
  if (runs_ == 0 && lag > kJumpWorthLoggingMs) {
    spdlog::info(
        "event=expiry_clock lag_s={} (expiry counts the time parleyd has run since it last "
        "expired; the system clock is ahead of that by the time it was down, or by a jump)",
        lag / 1000);
  } else if (last_.jumped_ms > kJumpWorthLoggingMs) {
    spdlog::warn(
        "event=clock_jumped_ahead by_s={} lag_s={} (the system clock moved further than the "
        "time that elapsed; expiry follows the elapsed time)",
        last_.jumped_ms / 1000, lag / 1000);
  }
  ++runs_;
  service_.set_expiry_now_ms(last_.now_ms);
  service_.metrics().expiry_clock_lag_ms.store(lag, std::memory_order_relaxed);
  const std::int64_t age = static_cast<std::int64_t>(service_.config().queue_max_age_days) * kDayMs;
  service_.store().expire(last_.now_ms, age, age,
                          [dir = std::filesystem::path(service_.config().data_dir) /
                                 "attachments"](Result<std::vector<std::string>> ids) {
                            if (!ids) {
                              spdlog::warn("event=expire_failed code={}",
                                           error_code_name(ids.error().code()));
                              return;
                            }
                            // After the commit: a crash before this leaves files the sweep at start
                            // removes.
                            for (const auto& id : *ids) {
                              std::error_code rm;
                              std::filesystem::remove(dir / id, rm);
                            }
                          });
}

}  // namespace parley::server
