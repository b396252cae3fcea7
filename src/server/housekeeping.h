#pragma once
// Housekeeping: at start and then every `interval`, deletes what is old enough (store::Store::
// expire): envelopes and dedup keys older than limits.queue_max_age_days, expired invites and
// attachments, and the expired attachments' files. "Old" is measured by an ExpiryClock
// (base/clock.h) over the service's clock: a system clock set wrongly ahead deletes nothing
// early. Each run's reading is handed to the service (Service::expiry_now_ms: attachments are
// served until it passes their expiry) and its lag behind the system clock to the metrics
// (parley_expiry_clock_lag_seconds). Also warns while the system clock reads earlier than
// parleyd's floor (FlooredClock).
// Logs: event=expiry_clock once at start when expiry runs behind the system clock (time
// parleyd was down, or a clock set ahead while it was), event=clock_jumped_ahead when the system
// clock moves ahead of the time that really elapsed, event=expire_failed.
// Thread-safety: start() and stop() on the io_context's thread; the runs happen there too.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>

#include "base/clock.h"

namespace parley::server {

class Service;

class Housekeeping {
 public:
  // `elapsed`: BootClock in parleyd (ExpiryClock).
  Housekeeping(Service& service, const FlooredClock& wall, const Clock& elapsed,
               std::chrono::milliseconds interval = std::chrono::minutes(10));
  Housekeeping(const Housekeeping&) = delete;
  Housekeeping& operator=(const Housekeeping&) = delete;

  void start();  // the first run now, then every interval
  // A last run (the expiry clock's reading kept as of now), then none after it; what was
  // handed to the store completes.
  void stop();
  // Runs so far (each a call of Store::expire), and the last reading of the expiry clock.
  std::uint64_t runs() const { return runs_; }
  std::int64_t last_expiry_ms() const { return last_.now_ms; }

 private:
  void run();
  void schedule();

  Service& service_;
  const FlooredClock& wall_;
  ExpiryClock clock_;
  const std::chrono::milliseconds interval_;
  boost::asio::steady_timer timer_;
  ExpiryClock::Reading last_;
  std::uint64_t runs_ = 0;
  bool stopped_ = false;
};

}  // namespace parley::server
