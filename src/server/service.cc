#include "server/service.h"

#include <vector>

#include "crypto/primitives.h"
#include "server/attachments.h"
#include "server/session.h"
#include "transport/client_address.h"
#include "wire/frame.h"

namespace parley::server {

const store::Device* AccountInfo::device(std::uint32_t device_id) const {
  for (const auto& d : devices) {
    if (d.device_id == device_id) return &d;
  }
  return nullptr;
}

Service::Service(boost::asio::io_context& io, ServerConfig config, store::Store& store,
                 const Clock& clock, Rng& rng, Metrics& metrics)
    : io_(io),
      config_(std::move(config)),
      queue_limits_(server::queue_limits(config_)),
      store_(store),
      clock_(clock),
      rng_(rng),
      metrics_(metrics),
      ip_requests_(clock, config_.ip_request_rate, config_.ip_request_burst),
      account_sends_(clock, config_.account_send_rate, config_.account_send_burst),
      bundle_fetches_(clock, config_.bundle_fetch_rate, config_.bundle_fetch_burst),
      registrations_(clock, config_.register_rate_per_ip, config_.register_burst_per_ip),
      ip_connects_(clock, config_.ip_connect_rate, config_.ip_connect_burst),
      files_(make_attachment_files(*this)) {}

Service::~Service() = default;

transport::WsHandlerFactory Service::handler_factory() {
  return [this](const std::string& remote_ip) -> std::unique_ptr<transport::WsHandler> {
    // Every per-IP limit counts by this key (an IPv6 client by its /64).
    const std::string key = transport::client_block(remote_ip);
    // Over its connection rate, an IP gets "try again later" (the transport closes with 1013).
    if (!ip_connects_.allow(key)) return nullptr;
    return make_session_handler(*this, key);
  };
}

void fill_listener_options(const ServerConfig& c, transport::ServerOptions& o) {
  o.ws_path = c.ws_path;
  o.site_dir = c.site_dir;
  o.site_seed = c.site_seed;
  // Not from limits.max_message_bytes: every request the protocol allows (a registration with
  // 100 prekeys, an upload of 200, padded to 16 KiB) must reach decode_frame, which caps frames
  // at kMaxFrameSize with a reason; a content limit set low cut them with 1009.
  o.max_message_size = wire::kMaxFrameSize + 4096;
  o.max_http_body = 16 * 1024 * 1024;
  o.write_queue_limit = c.write_queue_bytes;
  o.max_connections = c.max_connections;
  o.max_handshakes_per_ip = c.max_handshakes_per_ip;
  o.max_connections_per_ip = c.max_connections_per_ip;
  o.idle_timeout = std::chrono::seconds(c.idle_timeout_s);
  o.ping_interval = std::chrono::seconds(c.ping_interval_s);
  o.proxy_from = c.proxy_from;
}

void Service::fill_transport_options(transport::ServerOptions& o) const {
  fill_listener_options(config_, o);
}

AccountPtr Service::cached_account(const std::string& folded_name) {
  std::lock_guard<std::mutex> lock(accounts_mu_);
  auto it = accounts_.find(folded_name);
  return it == accounts_.end() ? nullptr : it->second;
}

void Service::find_account(const std::string& folded_name,
                           std::function<void(Result<AccountPtr>)> done) {
  if (AccountPtr cached = cached_account(folded_name)) return done(std::move(cached));
  const std::uint64_t generation = accounts_generation();
  store_.find_account(
      folded_name,
      on_io<std::optional<store::Account>>([this, folded_name, generation, done = std::move(done)](
                                               Result<std::optional<store::Account>> r) {
        if (!r) return done(r.error());
        if (!*r) return done(make_error(ErrorCode::kNotFound, "no such account"));
        auto info = std::make_shared<AccountInfo>();
        info->id = (*r)->id;
        info->name = (*r)->name;
        info->devices = std::move((*r)->devices);
        remember_read_account(folded_name, info, generation);
        done(AccountPtr(std::move(info)));
      }));
}

void Service::remember_read_account(const std::string& folded_name, AccountPtr account,
                                    std::uint64_t generation) {
  std::lock_guard<std::mutex> lock(accounts_mu_);
  // A write's callback may have run first, and a write whose cache update found nothing to
  // update (a new signed prekey) has only the generation to say it happened.
  if (accounts_generation_.load(std::memory_order_acquire) != generation) return;
  // Filling a free slot changes no snapshot anyone holds: the generation stays.
  accounts_.try_emplace(folded_name, std::move(account));
}

void Service::remember_account(const std::string& folded_name, AccountPtr account) {
  std::lock_guard<std::mutex> lock(accounts_mu_);
  accounts_[folded_name] = std::move(account);
  accounts_generation_.fetch_add(1, std::memory_order_acq_rel);
}

AccountPtr Service::update_signed_pre_key(const std::string& folded_name,
                                          const store::Device& device,
                                          const store::SignedPreKey& spk) {
  std::lock_guard<std::mutex> lock(accounts_mu_);
  // The store changed even when the cache has nothing to update: a read under way must not
  // cache what it saw before (remember_read_account).
  accounts_generation_.fetch_add(1, std::memory_order_acq_rel);
  auto it = accounts_.find(folded_name);
  if (it == accounts_.end() || !it->second) return nullptr;
  const store::Device* now = it->second->device(device.device_id);
  if (now == nullptr || now->auth_public_key != device.auth_public_key) return nullptr;
  auto updated = std::make_shared<AccountInfo>(*it->second);
  for (auto& d : updated->devices) {
    if (d.device_id == device.device_id) d.signed_pre_key = spk;
  }
  it->second = updated;
  return updated;
}

AccountPtr Service::attach(const std::string& folded_name, AccountPtr account, std::uint32_t device,
                           const std::shared_ptr<Session>& s) {
  const store::Device* checked = account->device(device);
  if (checked == nullptr) return nullptr;
  std::shared_ptr<Session> previous;
  {
    std::lock_guard<std::mutex> lock(presence_mu_);
    if (AccountPtr now = cached_account(folded_name)) {
      const store::Device* d = now->device(device);
      if (now->id != account->id || d == nullptr ||
          d->auth_public_key != checked->auth_public_key) {
        return nullptr;
      }
      account = std::move(now);
    }
    auto& slot = presence_[{account->id, device}];
    previous = slot.lock();
    slot = s;
  }
  if (previous && previous != s) previous->replaced();
  return account;
}

void Service::evict(std::int64_t account) {
  std::vector<std::shared_ptr<Session>> previous;
  {
    std::lock_guard<std::mutex> lock(presence_mu_);
    auto it = presence_.lower_bound({account, 0});
    while (it != presence_.end() && it->first.first == account) {
      if (auto s = it->second.lock()) previous.push_back(std::move(s));
      it = presence_.erase(it);
    }
  }
  for (const auto& s : previous) s->replaced();
}

std::shared_ptr<Session> Service::session_of(std::int64_t account, std::uint32_t device) {
  std::lock_guard<std::mutex> lock(presence_mu_);
  auto it = presence_.find({account, device});
  return it == presence_.end() ? nullptr : it->second.lock();
}

void Service::detach(std::int64_t account, std::uint32_t device, const Session* s) {
  std::lock_guard<std::mutex> lock(presence_mu_);
  auto it = presence_.find({account, device});
  if (it == presence_.end()) return;
  auto current = it->second.lock();
  if (!current || current.get() == s) presence_.erase(it);
}

void Service::notify(std::int64_t account, std::uint32_t device, std::int64_t seq,
                     std::shared_ptr<const store::Envelope> envelope,
                     std::chrono::steady_clock::time_point accepted) {
  if (auto s = session_of(account, device)) s->queued(seq, std::move(envelope), accepted);
}

}  // namespace parley::server
