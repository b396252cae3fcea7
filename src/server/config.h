#pragma once
// parleyd's configuration: defaults, then the TOML file (--config), then command-line flags.
// docs/operations.md lists every key. Plain value type.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "store/store.h"
#include "wire/frame.h"

namespace parley::server {

// A connection's write queue must hold a whole delivery window (kDeliveryWindowBytes in
// session.h) plus a frame and the responses beside them: with less, a device draining large
// envelopes would be cut as a slow reader at every login.
inline constexpr std::uint32_t kMinWriteQueueBytes = 832 * 1024;
// Above this many leading zero bits no phone could register (each bit doubles the work).
inline constexpr std::uint32_t kMaxPowDifficulty = 40;
// The largest attachments.min_free_disk_mb (1 EiB): in bytes it stays far from overflowing.
inline constexpr std::uint64_t kMaxMinFreeDiskMb = 1ull << 40;

// The most relays server.proxy_from may list (each connection's address is looked up in it).
inline constexpr std::size_t kMaxProxyFrom = 64;
// The most io threads (server.io_threads): far above any core count this server is for; more
// only costs memory and a failed start.
inline constexpr std::uint32_t kMaxIoThreads = 256;

// A send names at most this many devices; each costs one token of the account's send bucket, so
// limits.account_send_burst must hold this many.
inline constexpr std::size_t kMaxDevicesPerSend = 64;

// Configured ages (queue_max_age_days, attachment_expiry_days) are in days.
inline constexpr std::int64_t kDayMs = 24LL * 3600 * 1000;

enum class RegistrationPolicy { kOpen, kInvite, kPow };
// Where the keys of the TLS session tickets live (docs/operations.md): DIR/tls/ticket-keys, so
// that clients resume across a restart; in memory only; or no tickets at all.
enum class TlsTickets { kFile, kMemory, kOff };

struct HostPort {
  std::string host;
  std::uint16_t port = 0;
};
// "host:port" or "[v6]:port"; kInvalidArgument otherwise.
Result<HostPort> parse_host_port(std::string_view text);
// An address that may be left out (the admin listener, a bridge's upstream, obfs4): "" is off
// (HostPort{"", 0}); anything else must name a host ("[]:443" would silently switch it off) and,
// with `port_required`, a port above 0. The config file and the command line both use it.
Result<HostPort> parse_optional_host_port(std::string_view text, bool port_required);

struct ServerConfig {
  // [server]
  std::string data_dir;
  HostPort listen{"127.0.0.1", 8443};
  HostPort admin{"", 0};             // empty host: no admin listener
  std::string server_name;           // the server part of addresses; default: listen host
  std::string public_host;           // host in the invite link; default: listen host
  std::uint16_t public_port = 0;     // port in the invite link; default: the bound port
  std::string cert_file;             // PEM; empty: DIR/tls/cert.pem, generated on first start
  std::string key_file;
  TlsTickets tls_tickets = TlsTickets::kFile;
  std::uint32_t tls_ticket_rotation_hours = 12;  // 1..168
  std::string site_dir;              // static website; empty: the built-in one
  std::uint32_t io_threads = 0;      // threads running connections; 0: one per core; at most
                                     // kMaxIoThreads
  // Relays (a bridge, a load balancer) whose connections open with a PROXY header naming
  // the client (transport::ServerOptions::proxy_from): IP addresses or networks
  // ("10.0.0.0/8"), at most kMaxProxyFrom.
  std::vector<std::string> proxy_from;
  // Who may connect to the admin listener: IP addresses or networks, at most kMaxProxyFrom;
  // empty: loopback only. An admin listener on an address other than loopback needs this (its
  // /invite mints registration tokens, and the link names the secret path and the pin).
  std::vector<std::string> admin_from;
  // Runtime (not configurable): the secret WebSocket path, kept in DIR/ws_path.
  std::string ws_path;
  // Runtime: what the built-in website is made from, kept in DIR/site_seed (random, made on
  // first start), so that it differs from every other installation's.
  std::string site_seed;
  // [registration]
  RegistrationPolicy registration = RegistrationPolicy::kOpen;
  std::uint32_t pow_difficulty = 20;
  // [limits]
  std::uint32_t queue_max_count = 10000;
  std::uint64_t queue_max_bytes = 64ull << 20;
  std::uint32_t queue_max_age_days = 30;
  // What one sender may hold of another account's device queue, in percent of queue_max_count
  // and queue_max_bytes (at least one message of max_message_bytes), so that one sender cannot
  // fill it and have everyone else refused. 100: no share of its own.
  std::uint32_t queue_sender_share_percent = 20;
  std::uint32_t max_message_bytes = wire::kMaxMessageContent;  // at most that (frame.h)
  std::uint32_t write_queue_bytes = 1 << 20;  // per connection; kMinWriteQueueBytes or more
  std::uint32_t max_connections = 19000;
  // Connections of one IP still in their TLS handshake; one more is closed. 0: no cap.
  std::uint32_t max_handshakes_per_ip = 64;
  // Connections of one IP open at once, in any phase; one more is closed. 0: no cap.
  std::uint32_t max_connections_per_ip = 1000;
  std::uint32_t idle_timeout_s = 120;
  std::uint32_t login_timeout_s = 60;  // a WebSocket not logged in by then is closed (0: never)
  std::uint32_t ping_interval_s = 30;
  std::uint32_t max_inflight_requests = 64;       // per connection
  double ip_request_rate = 200;                   // requests/s per IP (bursts below)
  double ip_request_burst = 2000;
  double ip_connect_rate = 20;                    // new connections/s per IP
  double ip_connect_burst = 200;
  double account_send_rate = 500;                 // messages/s per account
  double account_send_burst = 5000;
  // Bundle fetches one account may make for another (each may take a one-time prekey): a
  // client fetches a contact's bundles once per session it starts, so that one account cannot
  // take all of another's one-time prekeys.
  double bundle_fetch_rate = 1.0 / 60;  // per (fetching account, fetched account), per second
  double bundle_fetch_burst = 10;
  double register_rate_per_ip = 0.2;              // registrations/s per IP
  double register_burst_per_ip = 20;
  // [attachments]
  std::uint64_t attachment_max_bytes = 100ull << 20;
  std::uint32_t attachment_expiry_days = 30;
  // The declared sizes of one account's unexpired attachments, at most; a slot beyond it gets
  // 413. At least attachment_max_bytes.
  std::uint64_t attachment_account_quota_bytes = 1ull << 30;
  // How many attachments one account may hold (until they expire); a slot beyond it gets 413.
  // Bounds the rows one account adds however small its slots (1 byte each fit the quota a
  // billion times). At least 1.
  std::uint64_t attachment_account_max_count = 10000;
  // A slot is refused (503) when the filesystem of DIR/attachments would have less than this
  // free (MiB) once the attachment is written. 0: no check. At most kMaxMinFreeDiskMb.
  std::uint64_t attachment_min_free_disk_mb = 1024;
  // [bridge] to = "HOST:PORT": run as a bridge to that parleyd (docs/operations.md); no store,
  // no accounts. Empty host: a normal server.
  HostPort bridge_to{"", 0};
  std::string bridge_sni;            // [bridge] sni: TLS name clients send (in the bridge link)
  bool bridge_proxy_header = false;  // [bridge] proxy_header: name each client to the upstream
  // [transport] obfs4 = "HOST:PORT": run obfs4proxy in server mode there, in front of this
  // listener; the printed link then carries obfs4= and obfs4args=. pt_binary: the PT binary.
  HostPort obfs4{"", 0};
  std::string pt_binary = "obfs4proxy";
};

// Applies a TOML file over `config`. Unknown keys are refused (kInvalidArgument naming the key),
// so a typo never silently falls back to a default. Each key's own bounds are checked here; the
// checks across keys are validate_config()'s, run once every source (file, then command-line
// flags) has been applied.
// A file over kMaxConfigFileBytes is refused.
Status load_config_file(const std::string& path, ServerConfig& config);
// The same for the text of such a file; `source` names it in errors.
Status load_config_text(std::string_view text, const std::string& source, ServerConfig& config);
inline constexpr std::size_t kMaxConfigFileBytes = 1024 * 1024;

// The checks that involve more than one key (or a bound a command-line flag may also set):
// kInvalidArgument naming the key and the bound.
Status validate_config(const ServerConfig& config);

// A device queue's limits as configured. A sender's share (queue_sender_share_percent of the
// count and of the bytes, rounded down) holds at least one envelope and one message of
// max_message_bytes.
store::QueueLimits queue_limits(const ServerConfig& config);

std::string_view policy_name(RegistrationPolicy p);
Result<RegistrationPolicy> parse_policy(std::string_view name);

}  // namespace parley::server
