#include "server/config.h"

#define TOML_EXCEPTIONS 0
#define TOML_HEADER_ONLY 1
#include <toml++/toml.h>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "transport/client_address.h"

namespace parley::server {

Result<HostPort> parse_host_port(std::string_view text) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
    return make_error(ErrorCode::kInvalidArgument, "expected HOST:PORT");
  }
  std::string_view host = text.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port > 65535) {
    return make_error(ErrorCode::kInvalidArgument, "bad port in HOST:PORT");
  }
  return HostPort{std::string(host), static_cast<std::uint16_t>(port)};
}

Result<HostPort> parse_optional_host_port(std::string_view text, bool port_required) {
  if (text.empty()) return HostPort{"", 0};
  auto hp = parse_host_port(text);
  if (!hp) return hp;
  if (hp->host.empty()) return make_error(ErrorCode::kInvalidArgument, "expected HOST:PORT");
  if (port_required && hp->port == 0) {
    return make_error(ErrorCode::kInvalidArgument, "expected HOST:PORT, PORT above 0");
  }
  return hp;
}

store::QueueLimits queue_limits(const ServerConfig& config) {
  store::QueueLimits l;
  l.max_count = config.queue_max_count;
  l.max_bytes = config.queue_max_bytes;
  l.max_age_ms = static_cast<std::int64_t>(config.queue_max_age_days) * kDayMs;
  const std::uint64_t share = config.queue_sender_share_percent;
  const std::uint64_t count = std::uint64_t{config.queue_max_count} * share / 100;
  l.max_sender_count = static_cast<std::uint32_t>(std::max<std::uint64_t>(1, count));
  // In two parts, so that no product overflows.
  const std::uint64_t bytes =
      config.queue_max_bytes / 100 * share + config.queue_max_bytes % 100 * share / 100;
  l.max_sender_bytes = std::max<std::uint64_t>(config.max_message_bytes, bytes);
  return l;
}

std::string_view policy_name(RegistrationPolicy p) {
  switch (p) {
    case RegistrationPolicy::kOpen: return "open";
    case RegistrationPolicy::kInvite: return "invite";
    case RegistrationPolicy::kPow: return "pow";
  }
  return "open";
}

Result<RegistrationPolicy> parse_policy(std::string_view name) {
  if (name == "open") return RegistrationPolicy::kOpen;
  if (name == "invite") return RegistrationPolicy::kInvite;
  if (name == "pow") return RegistrationPolicy::kPow;
  return make_error(ErrorCode::kInvalidArgument, "registration policy must be open, invite or pow");
}

namespace {

Status bad_key(const std::string& key, std::string_view why) {
  return make_error(ErrorCode::kInvalidArgument, "config " + key + ": " + std::string(why));
}

template <typename T>
Status read_uint(const toml::node& n, const std::string& key, T& out) {
  // Not value<std::int64_t>(): Debian's toml++ (3.3) converts a float to it unchecked, which is
  // undefined for 1e300. A count is written as an integer.
  const auto* v = n.as_integer();
  if (v == nullptr || v->get() < 0 ||
      static_cast<std::uint64_t>(v->get()) > std::numeric_limits<T>::max()) {
    return bad_key(key, "expected a non-negative integer in range");
  }
  out = static_cast<T>(v->get());
  return Status::ok();
}

Status read_double(const toml::node& n, const std::string& key, double& out) {
  auto v = n.value<double>();
  // nan would pass every comparison with a floor (a bucket of nan tokens refuses nothing); inf
  // is no limit.
  if (!v || !std::isfinite(*v) || *v < 0) return bad_key(key, "expected a non-negative number");
  out = *v;
  return Status::ok();
}

Status read_string(const toml::node& n, const std::string& key, std::string& out) {
  auto v = n.value<std::string>();
  if (!v) return bad_key(key, "expected a string");
  out = *v;
  return Status::ok();
}

Status read_bool(const toml::node& n, const std::string& key, bool& out) {
  const auto* v = n.as_boolean();  // value<bool>() would take 1 for true
  if (v == nullptr) return bad_key(key, "expected true or false");
  out = v->get();
  return Status::ok();
}

// An array of strings (what they must be is validate_config()'s: a flag may set them too).
Status read_strings(const toml::node& n, const std::string& key, std::vector<std::string>& out) {
  const toml::array* list = n.as_array();
  if (list == nullptr) return bad_key(key, "expected an array of strings");
  std::vector<std::string> addresses;
  for (const toml::node& item : *list) {
    auto v = item.value<std::string>();
    if (!v) return bad_key(key, "expected an array of strings");
    addresses.push_back(*v);
  }
  out = std::move(addresses);
  return Status::ok();
}

Status read_host_port(const toml::node& n, const std::string& key, HostPort& out) {
  std::string s;
  PARLEY_TRY(read_string(n, key, s));
  auto hp = parse_host_port(s);
  if (!hp) return bad_key(key, "expected HOST:PORT");
  out = *hp;
  return Status::ok();
}

// parse_optional_host_port's rules.
Status read_optional_host_port(const toml::node& n, const std::string& key, HostPort& out,
                               bool port_required) {
  std::string s;
  PARLEY_TRY(read_string(n, key, s));
  auto hp = parse_optional_host_port(s, port_required);
  if (!hp) return bad_key(key, hp.error().message());
  out = *hp;
  return Status::ok();
}

Status apply(const std::string& key, const toml::node& n, ServerConfig& c) {
  if (key == "server.data") return read_string(n, key, c.data_dir);
  if (key == "server.listen") return read_host_port(n, key, c.listen);
  if (key == "server.admin") return read_optional_host_port(n, key, c.admin, false);
  if (key == "server.name") return read_string(n, key, c.server_name);
  if (key == "server.public_host") return read_string(n, key, c.public_host);
  if (key == "server.public_port") return read_uint(n, key, c.public_port);
  if (key == "server.cert") return read_string(n, key, c.cert_file);
  if (key == "server.key") return read_string(n, key, c.key_file);
  if (key == "server.tls_tickets") {
    std::string s;
    PARLEY_TRY(read_string(n, key, s));
    if (s == "file") {
      c.tls_tickets = TlsTickets::kFile;
    } else if (s == "memory") {
      c.tls_tickets = TlsTickets::kMemory;
    } else if (s == "off") {
      c.tls_tickets = TlsTickets::kOff;
    } else {
      return bad_key(key, "expected file, memory or off");
    }
    return Status::ok();
  }
  if (key == "server.tls_ticket_rotation_hours") {
    std::uint32_t hours = 0;
    PARLEY_TRY(read_uint(n, key, hours));
    if (hours < 1 || hours > 168) return bad_key(key, "expected 1 to 168 (hours)");
    c.tls_ticket_rotation_hours = hours;
    return Status::ok();
  }
  if (key == "server.site") return read_string(n, key, c.site_dir);
  if (key == "server.io_threads") return read_uint(n, key, c.io_threads);
  if (key == "server.proxy_from") return read_strings(n, key, c.proxy_from);
  if (key == "server.admin_from") return read_strings(n, key, c.admin_from);
  if (key == "registration.policy") {
    std::string s;
    PARLEY_TRY(read_string(n, key, s));
    auto p = parse_policy(s);
    if (!p) return bad_key(key, "expected open, invite or pow");
    c.registration = *p;
    return Status::ok();
  }
  if (key == "registration.pow_difficulty") {
    std::uint32_t bits = 0;
    PARLEY_TRY(read_uint(n, key, bits));
    if (bits > kMaxPowDifficulty) {
      return bad_key(key, "expected 0 to " + std::to_string(kMaxPowDifficulty) + " (bits)");
    }
    c.pow_difficulty = bits;
    return Status::ok();
  }
  if (key == "limits.queue_max_count") return read_uint(n, key, c.queue_max_count);
  if (key == "limits.queue_max_bytes") return read_uint(n, key, c.queue_max_bytes);
  if (key == "limits.queue_max_age_days") return read_uint(n, key, c.queue_max_age_days);
  if (key == "limits.queue_sender_share_percent") {
    return read_uint(n, key, c.queue_sender_share_percent);  // bounded by validate_config()
  }
  if (key == "limits.max_message_bytes") return read_uint(n, key, c.max_message_bytes);
  if (key == "limits.write_queue_bytes") return read_uint(n, key, c.write_queue_bytes);
  if (key == "limits.max_connections") return read_uint(n, key, c.max_connections);
  if (key == "limits.max_handshakes_per_ip") return read_uint(n, key, c.max_handshakes_per_ip);
  if (key == "limits.max_connections_per_ip") return read_uint(n, key, c.max_connections_per_ip);
  if (key == "limits.idle_timeout_s") return read_uint(n, key, c.idle_timeout_s);
  if (key == "limits.login_timeout_s") return read_uint(n, key, c.login_timeout_s);
  if (key == "limits.ping_interval_s") return read_uint(n, key, c.ping_interval_s);
  if (key == "limits.max_inflight_requests") return read_uint(n, key, c.max_inflight_requests);
  if (key == "limits.ip_request_rate") return read_double(n, key, c.ip_request_rate);
  if (key == "limits.ip_request_burst") return read_double(n, key, c.ip_request_burst);
  if (key == "limits.ip_connect_rate") return read_double(n, key, c.ip_connect_rate);
  if (key == "limits.ip_connect_burst") return read_double(n, key, c.ip_connect_burst);
  if (key == "limits.account_send_rate") return read_double(n, key, c.account_send_rate);
  if (key == "limits.account_send_burst") return read_double(n, key, c.account_send_burst);
  if (key == "limits.bundle_fetch_rate") return read_double(n, key, c.bundle_fetch_rate);
  if (key == "limits.bundle_fetch_burst") return read_double(n, key, c.bundle_fetch_burst);
  if (key == "limits.register_rate_per_ip") return read_double(n, key, c.register_rate_per_ip);
  if (key == "limits.register_burst_per_ip") return read_double(n, key, c.register_burst_per_ip);
  if (key == "attachments.max_bytes") return read_uint(n, key, c.attachment_max_bytes);
  if (key == "attachments.expiry_days") return read_uint(n, key, c.attachment_expiry_days);
  if (key == "attachments.account_quota_bytes") {
    return read_uint(n, key, c.attachment_account_quota_bytes);
  }
  if (key == "attachments.account_max_count") {
    return read_uint(n, key, c.attachment_account_max_count);
  }
  if (key == "attachments.min_free_disk_mb") {
    return read_uint(n, key, c.attachment_min_free_disk_mb);  // bounded by validate_config()
  }
  if (key == "bridge.to") return read_optional_host_port(n, key, c.bridge_to, true);
  if (key == "bridge.sni") return read_string(n, key, c.bridge_sni);
  if (key == "bridge.proxy_header") return read_bool(n, key, c.bridge_proxy_header);
  if (key == "transport.obfs4") return read_optional_host_port(n, key, c.obfs4, false);
  if (key == "transport.pt_binary") return read_string(n, key, c.pt_binary);
  return bad_key(key, "unknown key");
}

// A list of IP addresses or networks: at most kMaxProxyFrom, each one that parses.
Status check_address_list(const std::string& key, const std::vector<std::string>& list) {
  if (list.size() > kMaxProxyFrom) {
    return bad_key(key, "at most " + std::to_string(kMaxProxyFrom) + " addresses");
  }
  for (const std::string& entry : list) {
    if (!transport::AddressRange::parse(entry)) {
      return bad_key(key, "\"" + entry + "\" is not an IP address or network (ADDR/BITS)");
    }
  }
  return Status::ok();
}

}  // namespace

Status load_config_text(std::string_view text, const std::string& source, ServerConfig& config) {
  if (text.size() > kMaxConfigFileBytes) {
    return make_error(
        ErrorCode::kInvalidArgument,
        "config " + source + ": larger than " + std::to_string(kMaxConfigFileBytes) + " bytes");
  }
  // An editor's byte order mark is not part of the text.
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  // toml++ 3.3.0 (Debian 12) reaches undefined behaviour on some non-ASCII characters where it
  // looks for whitespace (tomlplusplus issues 190 and 295): a file is ASCII, and a string that
  // needs other characters spells them as \uXXXX escapes.
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (static_cast<unsigned char>(text[i]) >= 0x80) {
      const auto line =
          1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(i), '\n');
      return make_error(ErrorCode::kInvalidArgument,
                        "config " + source + ": line " + std::to_string(line) +
                            ": a character that is not ASCII (write it as \\uXXXX in a string)");
    }
  }
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    return make_error(ErrorCode::kInvalidArgument,
                      "config " + source + ": " + std::string(parsed.error().description()));
  }
  for (auto&& [section, node] : parsed.table()) {
    const toml::table* t = node.as_table();
    if (t == nullptr) return bad_key(std::string(section.str()), "expected a [section]");
    for (auto&& [key, value] : *t) {
      PARLEY_TRY(apply(std::string(section.str()) + "." + std::string(key.str()), value, config));
    }
  }
  return Status::ok();
}

Status load_config_file(const std::string& path, ServerConfig& config) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) {
    const int err = errno;
    return make_error(ErrorCode::kInvalidArgument,
                      "config " + path + ": cannot open (" + std::strerror(err) + ")");
  }
  // One byte more than allowed, so that a file too large is told from one exactly at the cap.
  std::string text(kMaxConfigFileBytes + 1, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), f.get()));
  if (std::ferror(f.get())) {
    const int err = errno;
    return make_error(ErrorCode::kInvalidArgument,
                      "config " + path + ": cannot read (" + std::strerror(err) + ")");
  }
  return load_config_text(text, path, config);
}

Status validate_config(const ServerConfig& config) {
  if (config.bridge_proxy_header && config.bridge_to.host.empty()) {
    return bad_key("bridge.proxy_header", "only for a bridge (bridge.to)");
  }
  PARLEY_TRY(check_address_list("server.proxy_from", config.proxy_from));
  PARLEY_TRY(check_address_list("server.admin_from", config.admin_from));
  // A listener beyond loopback serves no one unless told whom: say so rather than start one
  // that refuses every scraper (or, before the allow-list, served anyone who reached it).
  if (!config.admin.host.empty() && config.admin_from.empty()) {
    if (!transport::is_loopback_address(config.admin.host)) {
      return bad_key("server.admin_from",
                     "name who may connect to an admin listener on " + config.admin.host +
                         " (it has no authentication; only loopback is served without it)");
    }
  }
  if (config.max_message_bytes > wire::kMaxMessageContent) {
    return bad_key("limits.max_message_bytes", "at most " +
                                                   std::to_string(wire::kMaxMessageContent) +
                                                   " (an envelope must fit in a 256 KiB frame)");
  }
  if (config.write_queue_bytes < kMinWriteQueueBytes) {
    return bad_key("limits.write_queue_bytes", "at least " + std::to_string(kMinWriteQueueBytes) +
                                                   " (a delivery window and a frame)");
  }
  // A ping only keeps a quiet client if it goes out before the client counts as idle.
  if (config.ping_interval_s != 0 && config.idle_timeout_s != 0 &&
      config.ping_interval_s >= config.idle_timeout_s) {
    return bad_key("limits.ping_interval_s", "must be below limits.idle_timeout_s (" +
                                                 std::to_string(config.idle_timeout_s) + ")");
  }
  // Below the largest attachment, a slot the size bound allows could never be had.
  if (config.attachment_account_quota_bytes < config.attachment_max_bytes) {
    return bad_key("attachments.account_quota_bytes",
                   "must be at least attachments.max_bytes (" +
                       std::to_string(config.attachment_max_bytes) + ")");
  }
  // Every message up to the size limit must fit in an empty queue: a 429 for one that cannot
  // would have its sender retry for ever.
  if (config.queue_max_bytes < config.max_message_bytes) {
    return bad_key("limits.queue_max_bytes", "must be at least limits.max_message_bytes (" +
                                                 std::to_string(config.max_message_bytes) + ")");
  }
  if (config.queue_sender_share_percent < 1 || config.queue_sender_share_percent > 100) {
    return bad_key("limits.queue_sender_share_percent", "expected 1 to 100 (percent)");
  }
  if (config.io_threads > kMaxIoThreads) {
    return bad_key("server.io_threads", "at most " + std::to_string(kMaxIoThreads));
  }
  // Values that would refuse or drop everything instead of limiting it.
  struct Floor {
    const char* key;
    double value;
    double least;
    const char* why;
  };
  const Floor floors[] = {
      {"limits.max_message_bytes", static_cast<double>(config.max_message_bytes), 1,
       "0 would refuse every message"},
      {"limits.queue_max_count", static_cast<double>(config.queue_max_count), 1,
       "a queue that holds nothing refuses every send"},
      {"limits.queue_max_bytes", static_cast<double>(config.queue_max_bytes), 1,
       "a queue that holds nothing refuses every send"},
      {"limits.queue_max_age_days", static_cast<double>(config.queue_max_age_days), 1,
       "0 would delete every queued envelope before its device could fetch it"},
      {"limits.max_inflight_requests", static_cast<double>(config.max_inflight_requests), 1,
       "0 would refuse every request"},
      {"limits.max_connections", static_cast<double>(config.max_connections), 1,
       "0 would refuse every connection"},
      {"limits.ip_request_burst", config.ip_request_burst, 1, "below 1 no request gets through"},
      {"limits.ip_connect_burst", config.ip_connect_burst, 1, "below 1 no connection gets through"},
      {"limits.account_send_burst", config.account_send_burst,
       static_cast<double>(kMaxDevicesPerSend), "a send to that many devices would never pass"},
      {"limits.register_burst_per_ip", config.register_burst_per_ip, 1,
       "below 1 no registration gets through"},
      {"limits.bundle_fetch_burst", config.bundle_fetch_burst, 1,
       "below 1 no bundle fetch gets through"},
      {"attachments.expiry_days", static_cast<double>(config.attachment_expiry_days), 1,
       "0 would delete every attachment as it is uploaded"},
      {"attachments.account_max_count", static_cast<double>(config.attachment_account_max_count), 1,
       "0 would refuse every attachment"},
  };
  for (const Floor& f : floors) {
    if (!(f.value >= f.least)) {
      return bad_key(f.key, "at least " + std::to_string(static_cast<std::uint64_t>(f.least)) +
                                " (" + f.why + ")");
    }
  }
  // A bucket that never refills lets its burst through once, then refuses for good.
  for (const auto& [key, rate] :
       {std::pair{"limits.ip_request_rate", config.ip_request_rate},
        std::pair{"limits.ip_connect_rate", config.ip_connect_rate},
        std::pair{"limits.account_send_rate", config.account_send_rate},
        std::pair{"limits.bundle_fetch_rate", config.bundle_fetch_rate},
        std::pair{"limits.register_rate_per_ip", config.register_rate_per_ip}}) {
    if (!(rate > 0)) return bad_key(key, "must be above 0 (a bucket that never refills)");
  }
  if (config.attachment_min_free_disk_mb > kMaxMinFreeDiskMb) {
    return bad_key("attachments.min_free_disk_mb",
                   "at most " + std::to_string(kMaxMinFreeDiskMb) + " (MiB)");
  }
  return Status::ok();
}

}  // namespace parley::server
