#pragma once
// Server metrics, rendered in the Prometheus text format on the admin listener. Counters are
// atomics: updated from any thread without locks. No user data ever appears in a label.

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "base/histogram.h"
#include "store/store.h"
#include "transport/server.h"

namespace parley::server {

// Request kinds, for per-kind counters.
enum class RequestKind : std::size_t {
  kRegister, kLogin, kUploadKeys, kKeyCount, kFetchBundles, kSend, kMultiSend, kAck,
  kAttachmentSlot, kPing, kDevices, kUnknown, kCount
};
std::string_view request_kind_name(RequestKind k);

struct Metrics {
  std::atomic<std::int64_t> connections{0};         // open WebSocket connections
  std::atomic<std::int64_t> authenticated{0};       // of which logged in
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> messages_stored{0};    // envelopes committed
  std::atomic<std::uint64_t> messages_pushed{0};    // envelopes sent to devices
  std::atomic<std::uint64_t> messages_acked{0};     // envelopes deleted after a device ack
  std::atomic<std::uint64_t> duplicates{0};         // sends refused as already stored
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(RequestKind::kCount)> requests{};
  // Responses by status code bucket: 0, 400, 401, 403, 404, 409, 413, 429, 500, 503.
  std::array<std::atomic<std::uint64_t>, 10> responses{};
  std::atomic<std::uint64_t> bad_frames{0};         // frames that did not decode
  // Attachment slots refused for the account's quota; slots and upload parts refused for the
  // disk reserve (attachments.min_free_disk_mb).
  std::atomic<std::uint64_t> attachment_quota_refusals{0};
  std::atomic<std::uint64_t> attachment_disk_refusals{0};
  // Envelopes pushed to a connected device as they were committed (not drained from its
  // queue): from the send's hand-over to the store (its checks done) to the push, which spans
  // the group commit, the hop to the device's connection and the push's framing.
  LatencyHistogram live_delivery;
  // How far housekeeping's expiry clock ran behind the system clock at its last run, in ms
  // (time parleyd was down, a clock set ahead; server/housekeeping.h).
  std::atomic<std::int64_t> expiry_clock_lag_ms{0};
  // Requests read and not yet answered, on every connection (a one-way ack until its deletion
  // is done): the drain waits for none before it closes the connections (Service).
  std::atomic<std::int64_t> requests_in_flight{0};

  void count_response(std::uint32_t status);
  // Each send of a multi-send by its own status (its response's status is 0 whatever they were).
  std::array<std::atomic<std::uint64_t>, 10> multi_send_results{};
  void count_multi_send_result(std::uint32_t status);
  std::string render_prometheus(const store::Stats& store,
                                const transport::Server::TlsHandshakes& tls,
                                const transport::Server::KeepAliveCounts& keepalive,
                                const transport::Server::Refusals& refusals,
                                const transport::Server::Relayed& relayed) const;
};

// The parley_connections_refused_total and parley_connections_relayed_total counters, also on
// a bridge's /metrics.
std::string render_front(const transport::Server::Refusals& refusals,
                         const transport::Server::Relayed& relayed);

}  // namespace parley::server
