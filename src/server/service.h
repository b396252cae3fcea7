#pragma once
// Service: the state every connection shares — configuration, the store, the account cache,
// presence (which device is connected where), rate limits and metrics. Sessions (session.h) are
// the per-connection state machines built on it.
//
// Threading: every method is thread-safe. Store callbacks are re-posted onto an io thread (the
// session's own connection executor, or the io_context), so session logic never runs on the
// store's thread.

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "base/clock.h"
#include "base/rng.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/rate_limiter.h"
#include "store/store.h"
#include "transport/server.h"

namespace parley::server {

class Session;

// An immutable snapshot of an account and its devices (replaced, never mutated).
struct AccountInfo {
  std::int64_t id = 0;
  std::string name;
  std::vector<store::Device> devices;
  const store::Device* device(std::uint32_t device_id) const;
};
using AccountPtr = std::shared_ptr<const AccountInfo>;

// The listener's limits and website from the configuration: what a server and a bridge share.
void fill_listener_options(const ServerConfig& config, transport::ServerOptions& options);

class Service {
 public:
  Service(boost::asio::io_context& io, ServerConfig config, store::Store& store,
          const Clock& clock, Rng& rng, Metrics& metrics);
  ~Service();

  transport::WsHandlerFactory handler_factory();
  transport::HttpFiles& http_files() { return *files_; }
  // Limits the transport enforces, from the configuration.
  void fill_transport_options(transport::ServerOptions& options) const;

  const ServerConfig& config() const { return config_; }
  // queue_limits(config()), computed once.
  const store::QueueLimits& queue_limits() const { return queue_limits_; }
  store::Store& store() { return store_; }
  const Clock& clock() const { return clock_; }
  Rng& rng() { return rng_; }
  Metrics& metrics() { return metrics_; }
  RateLimiter& ip_requests() { return ip_requests_; }
  RateLimiter& account_sends() { return account_sends_; }
  // Keyed by the fetching and the fetched account ("F:T").
  RateLimiter& bundle_fetches() { return bundle_fetches_; }
  RateLimiter& registrations() { return registrations_; }
  RateLimiter& ip_connects() { return ip_connects_; }

  // Wraps a store callback `f` (of a Result<T> or a Status) so that it runs on `ex` (a
  // connection's executor, so that its session's work stays on its thread), or on the
  // io_context (on_io), when the store calls back.
  template <typename Arg>
  static std::function<void(Arg)> on_executor(boost::asio::any_io_executor ex,
                                              std::function<void(Arg)> f) {
    return [ex = std::move(ex), f = std::move(f)](Arg r) mutable {
      boost::asio::post(ex, [f = std::move(f), r = std::move(r)]() mutable { f(std::move(r)); });
    };
  }
  template <typename T>
  store::Callback<T> on_io(std::function<void(Result<T>)> f) {
    return on_executor<Result<T>>(io_.get_executor(), std::move(f));
  }
  boost::asio::any_io_executor io_executor() { return io_.get_executor(); }

  // Account cache over the store (accounts change only through this process).
  // cached_account: the cached snapshot, or null. find_account: a cached account is handed to
  // `done` at once, on the caller's thread; a miss asks the store and calls back on the
  // io_context.
  AccountPtr cached_account(const std::string& folded_name);
  void find_account(const std::string& folded_name, std::function<void(Result<AccountPtr>)> done);
  // After a write that changed the account (registration, recovery).
  void remember_account(const std::string& folded_name, AccountPtr account);
  // A device's new signed prekey, applied to the cached account as it is now, and only while the
  // cache still holds that device (same id and auth key): a session's older snapshot must never
  // be written back, least of all over a recovery that replaced the device. The new snapshot,
  // or null when nothing was cached to update.
  AccountPtr update_signed_pre_key(const std::string& folded_name, const store::Device& device,
                                   const store::SignedPreKey& spk);
  // Changes with every write of an account (remember_account, update_signed_pre_key, also
  // when that found nothing cached): an AccountPtr taken from the cache at one value is still
  // the cached one while the value stays.
  std::uint64_t accounts_generation() const {
    return accounts_generation_.load(std::memory_order_acquire);
  }

  // Presence. A device has at most one live session; a new login replaces (and closes) the old.
  // attach: `s` becomes the live session of `device` of `account`, the snapshot whose auth key
  // the login checked, unless the account cache says, looked at under the presence lock, that
  // a recovery has replaced that device since (the cache holds another key for it, or no such
  // device): then nothing changes and null is returned. Otherwise the account as it is now is
  // returned (the cached snapshot, or `account` when none is cached). A recovery updates the
  // cache, then evicts (below): either it finds this session attached and closes it, or this
  // attach finds the recovery's key and refuses: the replaced device is never left in.
  AccountPtr attach(const std::string& folded_name, AccountPtr account, std::uint32_t device,
                    const std::shared_ptr<Session>& s);
  // A recovery replaced `account`'s devices: their live sessions (the old keys') are closed and
  // forgotten at once. The recovery's own attach would replace device 1's too, but only while
  // the recovering connection is still open; one that closed before the commit was answered
  // would otherwise leave the lost device in, pushed (and acknowledging away) the new one's
  // messages. Called before the new device attaches.
  void evict(std::int64_t account);
  // The device's live session on this server, or null.
  std::shared_ptr<Session> session_of(std::int64_t account, std::uint32_t device);
  void detach(std::int64_t account, std::uint32_t device, const Session* s);
  // Tells the device's session (if connected here) that an envelope was queued for it. Called
  // from the store's callback, in commit order (Session::queued says why that matters).
  // `accepted`: when the send went to the store, for the delivery histogram.
  void notify(std::int64_t account, std::uint32_t device, std::int64_t seq,
              std::shared_ptr<const store::Envelope> envelope,
              std::chrono::steady_clock::time_point accepted);

  // Graceful drain: refuse new requests that change state (sends, registrations, key uploads,
  // bundle fetches, attachment slots).
  void set_draining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  // Requests read and not yet answered (Metrics::requests_in_flight).
  void request_started() { metrics_.requests_in_flight.fetch_add(1, std::memory_order_relaxed); }
  void requests_finished(std::int64_t n = 1) {
    metrics_.requests_in_flight.fetch_sub(n, std::memory_order_relaxed);
  }
  std::int64_t requests_in_flight() const {
    return metrics_.requests_in_flight.load(std::memory_order_relaxed);
  }
  // The time housekeeping last expired by (its ExpiryClock; 0 before its first run): an
  // attachment is served until that time passes its expiry, so a system clock set ahead
  // hides none that housekeeping keeps.
  void set_expiry_now_ms(std::int64_t ms) { expiry_now_ms_.store(ms, std::memory_order_relaxed); }
  std::int64_t expiry_now_ms() const { return expiry_now_ms_.load(std::memory_order_relaxed); }
  // The time attachments expire by, for serving them and for the account's quota alike:
  // housekeeping's once it ran, the service's clock before.
  std::int64_t attachment_now_ms() const {
    const std::int64_t expiry_now = expiry_now_ms();
    return expiry_now != 0 ? expiry_now : clock_.now_ms();
  }

 private:
  boost::asio::io_context& io_;
  const ServerConfig config_;
  const store::QueueLimits queue_limits_;
  store::Store& store_;
  const Clock& clock_;
  Rng& rng_;
  Metrics& metrics_;
  RateLimiter ip_requests_;
  RateLimiter account_sends_;
  RateLimiter bundle_fetches_;
  RateLimiter registrations_;
  RateLimiter ip_connects_;
  std::unique_ptr<transport::HttpFiles> files_;
  std::atomic<bool> draining_{false};
  std::atomic<std::int64_t> expiry_now_ms_{0};

  // A store read's account, cached only if no write changed the cache since `generation`, read
  // before the store was asked: a read can finish after a write that made it stale.
  void remember_read_account(const std::string& folded_name, AccountPtr account,
                             std::uint64_t generation);

  std::mutex accounts_mu_;
  std::unordered_map<std::string, AccountPtr> accounts_;  // guarded by accounts_mu_
  std::atomic<std::uint64_t> accounts_generation_{1};

  // Taken before accounts_mu_ when both are held (attach).
  std::mutex presence_mu_;
  std::map<std::pair<std::int64_t, std::uint32_t>, std::weak_ptr<Session>> presence_;  // guarded
};

}  // namespace parley::server
