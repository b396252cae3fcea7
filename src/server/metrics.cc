#include "server/metrics.h"

#include <cstdio>

namespace parley::server {

namespace {
constexpr std::uint32_t kStatusBuckets[] = {0, 400, 401, 403, 404, 409, 413, 429, 500, 503};

// A Prometheus histogram: cumulative `le` buckets in seconds, then _sum and _count.
void append_histogram(std::string& out, std::string_view name, std::string_view help,
                      const LatencyHistogram::Snapshot& h) {
  const std::string n(name);
  out += "# HELP " + n + " " + std::string(help) + "\n# TYPE " + n + " histogram\n";
  std::uint64_t cumulative = 0;
  char le[32];
  for (std::size_t i = 0; i < LatencyHistogram::kBuckets; ++i) {
    cumulative += h.counts[i];
    if (i < LatencyHistogram::kBoundsNs.size()) {
      std::snprintf(le, sizeof le, "%g", static_cast<double>(LatencyHistogram::kBoundsNs[i]) / 1e9);
    } else {
      std::snprintf(le, sizeof le, "+Inf");
    }
    out += n + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  char sum[32];
  std::snprintf(sum, sizeof sum, "%.9g", h.sum_seconds);
  out += n + "_sum " + sum + "\n" + n + "_count " + std::to_string(h.count) + "\n";
}
}  // namespace

std::string_view request_kind_name(RequestKind k) {
  switch (k) {
    case RequestKind::kRegister: return "register";
    case RequestKind::kLogin: return "login";
    case RequestKind::kUploadKeys: return "upload_keys";
    case RequestKind::kKeyCount: return "key_count";
    case RequestKind::kFetchBundles: return "fetch_bundles";
    case RequestKind::kSend: return "send";
    case RequestKind::kMultiSend: return "multi_send";
    case RequestKind::kAck: return "ack";
    case RequestKind::kAttachmentSlot: return "attachment_slot";
    case RequestKind::kPing: return "ping";
    case RequestKind::kDevices: return "devices";
    case RequestKind::kUnknown: return "unknown";
    case RequestKind::kCount: break;
  }
  return "unknown";
}

namespace {
// The index of `status` in kStatusBuckets; anything else counts as 500.
std::size_t status_bucket(std::uint32_t status) {
  for (std::size_t i = 0; i < std::size(kStatusBuckets); ++i) {
    if (kStatusBuckets[i] == status) return i;
  }
  return 8;
}
}  // namespace

void Metrics::count_response(std::uint32_t status) {
  responses[status_bucket(status)].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::count_multi_send_result(std::uint32_t status) {
  multi_send_results[status_bucket(status)].fetch_add(1, std::memory_order_relaxed);
}

std::string Metrics::render_prometheus(const store::Stats& s,
                                       const transport::Server::TlsHandshakes& tls,
                                       const transport::Server::KeepAliveCounts& keepalive,
                                       const transport::Server::Refusals& refusals,
                                       const transport::Server::Relayed& relayed) const {
  std::string out;
  auto line = [&out](std::string_view name, std::string_view type, std::string_view help,
                     auto value) {
    out += "# HELP " + std::string(name) + " " + std::string(help) + "\n";
    out += "# TYPE " + std::string(name) + " " + std::string(type) + "\n";
    out += std::string(name) + " " + std::to_string(value) + "\n";
  };
  line("parley_connections", "gauge", "Open WebSocket connections.", connections.load());
  line("parley_connections_authenticated", "gauge", "Logged-in connections.", authenticated.load());
  line("parley_requests_in_flight", "gauge",
       "Requests read and not yet answered (a drain waits for none).",
       requests_in_flight.load(std::memory_order_relaxed));
  line("parley_connections_total", "counter", "WebSocket connections accepted.",
       connections_total.load());
  line("parley_messages_stored_total", "counter", "Envelopes durably committed.",
       messages_stored.load());
  line("parley_messages_pushed_total", "counter", "Envelopes pushed to devices.",
       messages_pushed.load());
  line("parley_messages_acked_total", "counter", "Envelopes deleted after a device ack.",
       messages_acked.load());
  line("parley_messages_duplicate_total", "counter", "Resends refused as already stored.",
       duplicates.load());
  line("parley_bad_frames_total", "counter", "Frames that did not decode.", bad_frames.load());
  line("parley_attachment_quota_refusals_total", "counter",
       "Attachment slots refused: the account's attachments would exceed its quota.",
       attachment_quota_refusals.load());
  line("parley_attachment_disk_refusals_total", "counter",
       "Attachment slots and upload parts refused: the disk would keep less than "
       "attachments.min_free_disk_mb free.",
       attachment_disk_refusals.load());
  line("parley_expiry_clock_lag_seconds", "gauge",
       "How far expiry's clock ran behind parleyd's clock (the system clock, floored) at its "
       "last run: time parleyd was down, a clock set ahead.",
       expiry_clock_lag_ms.load() / 1000);
  line("parley_queue_envelopes", "gauge", "Envelopes waiting in device queues.", s.queued_envelopes);
  line("parley_queue_bytes", "gauge", "Bytes waiting in device queues.", s.queued_bytes);
  line("parley_accounts", "gauge", "Registered accounts.", s.accounts);
  line("parley_store_commits_total", "counter", "Store transactions committed.", s.commits);
  line("parley_store_unsynced_commits_total", "counter",
       "Of them, those committed without an fsync: acknowledgements and reads alone, and "
       "deletions of acknowledged envelopes.",
       s.unsynced_commits);
  line("parley_store_fetched_envelopes_total", "counter",
       "Envelopes read from queues for delivery.", s.fetched_envelopes);
  line("parley_store_fetched_bytes_total", "counter",
       "Bytes of the envelopes read from queues for delivery.", s.fetched_bytes);
  line("parley_store_acked_pending", "gauge",
       "Acknowledged envelopes logged whose rows wait to be deleted together.", s.acked_pending);
  line("parley_store_failed_ack_flushes_total", "counter",
       "Deletions of acknowledged envelopes that failed (retried; done at the next start).",
       s.failed_ack_flushes);
  line("parley_store_failed_commits_total", "counter",
       "Group commits that failed as a whole (I/O errors, a full disk): nothing of them was "
       "stored, and their sends were refused with 503.",
       s.failed_commits);
  line("parley_store_rerun_commits_total", "counter",
       "Group commits run again an operation at a time because one operation in them failed.",
       s.rerun_commits);
  line("parley_store_checkpoints_total", "counter",
       "WAL checkpoints done beside the writer, on their own thread.", s.checkpoints);
  line("parley_store_failed_checkpoints_total", "counter",
       "WAL checkpoints on that thread that failed (busy: another checkpoint, or a backup).",
       s.failed_checkpoints);
  line("parley_store_writer_checkpoints_total", "counter",
       "Checkpoints the store thread ran itself, holding up its operations, once the WAL "
       "reached its bound: under steady writes, how the WAL starts over.",
       s.writer_checkpoints);
  line("parley_store_wal_gathered_writes_total", "counter",
       "SQLite's writes to the WAL, gathered so that each commit's frames go in one write.",
       s.wal_gathered_writes);
  line("parley_store_wal_writes_total", "counter", "Writes made to the WAL of those.",
       s.wal_writes);
  line("parley_store_wal_late_writes_total", "counter",
       "Commits whose WAL bytes were still gathered when published (written then): zero unless "
       "the SQLite in use writes WAL frames in a way parleyd does not expect.",
       s.wal_late_writes);
  line("parley_store_committed_ops_total", "counter", "Operations in committed transactions.",
       s.committed_ops);
  line("parley_store_last_batch_size", "gauge", "Operations in the last committed transaction.",
       s.last_batch_size);
  append_histogram(out, "parley_store_queue_wait_seconds",
                   "Time each store operation waited for its group commit to start.", s.queue_wait);
  append_histogram(out, "parley_store_synced_commit_seconds",
                   "Duration of each group commit that syncs (sends and other writes), from BEGIN "
                   "through running its operations to the end of the fsync.",
                   s.synced_commit);
  append_histogram(out, "parley_live_delivery_seconds",
                   "Envelopes pushed to a connected device as they were committed: time from the "
                   "send's hand-over to the store to the push (group commit, hop to the device's "
                   "connection, framing).",
                   live_delivery.snapshot());
  out += "# HELP parley_requests_total Requests by kind.\n# TYPE parley_requests_total counter\n";
  for (std::size_t i = 0; i < requests.size(); ++i) {
    out += "parley_requests_total{kind=\"" +
           std::string(request_kind_name(static_cast<RequestKind>(i))) + "\"} " +
           std::to_string(requests[i].load()) + "\n";
  }
  const auto by_code = [&out](std::string_view name, std::string_view help,
                              const std::array<std::atomic<std::uint64_t>, 10>& counts) {
    const std::string n(name);
    out += "# HELP " + n + " " + std::string(help) + "\n# TYPE " + n + " counter\n";
    for (std::size_t i = 0; i < counts.size(); ++i) {
      out += n + "{code=\"" + std::to_string(kStatusBuckets[i]) + "\"} " +
             std::to_string(counts[i].load()) + "\n";
    }
  };
  by_code("parley_responses_total", "Responses by status code.", responses);
  by_code("parley_multi_send_results_total", "The sends of multi-sends by their own status code.",
          multi_send_results);
  out +=
      "# HELP parley_tls_handshakes_total TLS handshakes by outcome (resumed: a client's "
      "session ticket).\n# TYPE parley_tls_handshakes_total counter\n";
  for (const auto& [outcome, n] : {std::pair<const char*, std::uint64_t>{"full", tls.full},
                                   {"resumed", tls.resumed},
                                   {"failed", tls.failed}}) {
    out += std::string("parley_tls_handshakes_total{outcome=\"") + outcome + "\"} " +
           std::to_string(n) + "\n";
  }
  line("parley_ws_pings_total", "counter",
       "Pings sent to WebSocket peers silent for ping_interval_s.", keepalive.pings);
  line("parley_ws_idle_closes_total", "counter",
       "WebSocket connections cut after idle_timeout_s without a byte from the peer.",
       keepalive.idle_closes);
  out += render_front(refusals, relayed);
  return out;
}

std::string render_front(const transport::Server::Refusals& refusals,
                         const transport::Server::Relayed& relayed) {
  return "# HELP parley_connections_refused_total Connections closed before their TLS "
         "handshake: no connection slot free (max_connections), too many of the address's "
         "connections in their TLS handshake (max_handshakes_per_ip) or open "
         "(max_connections_per_ip), or a relay's connection "
         "(server.proxy_from) without a valid PROXY header, or an Extended ORPort connection "
         "(obfs4) that failed its handshake.\n"
         "# TYPE parley_connections_refused_total counter\n"
         "parley_connections_refused_total{reason=\"max_connections\"} " +
         std::to_string(refusals.max_connections) +
         "\n"
         "parley_connections_refused_total{reason=\"handshakes_per_ip\"} " +
         std::to_string(refusals.handshakes_per_ip) +
         "\n"
         "parley_connections_refused_total{reason=\"proxy_header\"} " +
         std::to_string(refusals.proxy_header) +
         "\n"
         "parley_connections_refused_total{reason=\"ext_orport\"} " +
         std::to_string(refusals.ext_orport) +
         "\n"
         "parley_connections_refused_total{reason=\"connections_per_ip\"} " +
         std::to_string(refusals.connections_per_ip) +
         "\n"
         "# HELP parley_connections_relayed_total Connections whose client a relay named: a "
         "bridge or load balancer in a PROXY header (server.proxy_from), obfs4proxy on the "
         "Extended ORPort.\n"
         "# TYPE parley_connections_relayed_total counter\n"
         "parley_connections_relayed_total{via=\"proxy_header\"} " +
         std::to_string(relayed.proxy_header) +
         "\n"
         "parley_connections_relayed_total{via=\"ext_orport\"} " +
         std::to_string(relayed.ext_orport) + "\n";
}

}  // namespace parley::server
