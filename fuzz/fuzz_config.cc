// parleyd's configuration file (server/config.h): load_config_text() of the input as a TOML
// file, then validate_config(), as parleyd runs them at start.
//
// Invariants: nothing crashes; every refusal is kInvalidArgument and starts "config "; a
// configuration that passes both is one parleyd can run with: every rate finite and above 0,
// every burst finite and at least its floor, a queue that holds at least one message of the
// largest size, at least one connection, a bounded number of io threads, relays that parse.
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "server/config.h"
#include "transport/client_address.h"

using namespace parley;          // NOLINT: a fuzz target
using namespace parley::server;  // NOLINT: a fuzz target

namespace {

void check_refusal(const Status& s) {
  PARLEY_FUZZ_CHECK(s.code() == ErrorCode::kInvalidArgument);
  PARLEY_FUZZ_CHECK(s.message().rfind("config ", 0) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ServerConfig c;
  if (Status s = load_config_text(text, "fuzz.toml", c); !s.is_ok()) {
    check_refusal(s);
    return 0;
  }
  if (Status s = validate_config(c); !s.is_ok()) {
    check_refusal(s);
    return 0;
  }
  for (double rate :
       {c.ip_request_rate, c.ip_connect_rate, c.account_send_rate, c.register_rate_per_ip}) {
    PARLEY_FUZZ_CHECK(std::isfinite(rate) && rate > 0);
  }
  for (double burst : {c.ip_request_burst, c.ip_connect_burst, c.register_burst_per_ip}) {
    PARLEY_FUZZ_CHECK(std::isfinite(burst) && burst >= 1);
  }
  PARLEY_FUZZ_CHECK(std::isfinite(c.account_send_burst) &&
                    c.account_send_burst >= static_cast<double>(kMaxDevicesPerSend));
  PARLEY_FUZZ_CHECK(c.queue_max_count >= 1 && c.queue_max_age_days >= 1);
  PARLEY_FUZZ_CHECK(c.queue_max_bytes >= c.max_message_bytes && c.queue_max_bytes >= 1);
  PARLEY_FUZZ_CHECK(c.max_message_bytes <= wire::kMaxMessageContent);
  PARLEY_FUZZ_CHECK(c.queue_sender_share_percent >= 1 && c.queue_sender_share_percent <= 100);
  // A sender's share is within the queue and holds at least one message of every allowed size.
  const store::QueueLimits limits = queue_limits(c);
  PARLEY_FUZZ_CHECK(limits.max_sender_count >= 1 && limits.max_sender_count <= c.queue_max_count);
  PARLEY_FUZZ_CHECK(limits.max_sender_bytes >= c.max_message_bytes &&
                    limits.max_sender_bytes <= c.queue_max_bytes);
  PARLEY_FUZZ_CHECK(c.write_queue_bytes >= kMinWriteQueueBytes);
  PARLEY_FUZZ_CHECK(c.max_connections >= 1 && c.max_inflight_requests >= 1);
  PARLEY_FUZZ_CHECK(c.io_threads <= kMaxIoThreads);
  PARLEY_FUZZ_CHECK(c.ping_interval_s == 0 || c.idle_timeout_s == 0 ||
                    c.ping_interval_s < c.idle_timeout_s);
  PARLEY_FUZZ_CHECK(c.attachment_account_quota_bytes >= c.attachment_max_bytes);
  PARLEY_FUZZ_CHECK(c.attachment_expiry_days >= 1);
  PARLEY_FUZZ_CHECK(c.attachment_account_max_count >= 1);
  PARLEY_FUZZ_CHECK(c.attachment_min_free_disk_mb <= kMaxMinFreeDiskMb);
  PARLEY_FUZZ_CHECK(c.proxy_from.size() <= kMaxProxyFrom);
  PARLEY_FUZZ_CHECK(c.admin_from.size() <= kMaxProxyFrom);
  for (const std::string& peer : c.admin_from) {
    PARLEY_FUZZ_CHECK(transport::AddressRange::parse(peer).has_value());
  }
  for (const std::string& relay : c.proxy_from) {
    PARLEY_FUZZ_CHECK(transport::AddressRange::parse(relay).has_value());
  }
  PARLEY_FUZZ_CHECK(!c.bridge_proxy_header || !c.bridge_to.host.empty());
  // The same text gives the same configuration.
  ServerConfig again;
  PARLEY_FUZZ_CHECK(load_config_text(text, "fuzz.toml", again).is_ok());
  PARLEY_FUZZ_CHECK(again.queue_max_bytes == c.queue_max_bytes &&
                    again.listen.host == c.listen.host && again.listen.port == c.listen.port &&
                    again.proxy_from == c.proxy_from);
  return 0;
}
