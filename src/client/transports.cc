#include "client/transports.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <system_error>
#include <vector>

namespace parley::client {
namespace {

Status bad(const std::string& what) {
  return make_error(ErrorCode::kInvalidArgument, "transport link: " + what);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' ||
                        s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

bool host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '-';
}

// "HOST:PORT" or "[V6]:PORT".
Status parse_endpoint(std::string_view text, std::string& host, std::uint16_t& port) {
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("expected [IPv6]:PORT");
    }
    host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
    if (host.empty() || !std::all_of(host.begin(), host.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
        })) {
      return bad("bad IPv6 address");
    }
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("expected HOST:PORT");
    host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
    if (host.empty() || host.size() > 253 || !std::all_of(host.begin(), host.end(), host_char)) {
      return bad("bad host");
    }
  }
  unsigned value = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || value == 0 ||
      value > 65535) {
    return bad("bad port");
  }
  port = static_cast<std::uint16_t>(value);
  return Status::ok();
}

std::string endpoint_text(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// A bridge link: parley://BHOST:BPORT/?v=1&bridge=1&pin=BRIDGEPIN&path=BRIDGEPATH[&sni=NAME]
// (wire/invite.h parses it).
Result<TransportLink> parse_bridge_link(std::string_view link) {
  auto inv = wire::parse_invite(link);
  if (!inv) return bad(inv.error().message());
  if (!inv->is_bridge) {
    return bad("this is a server invite, not a bridge link (a bridge link has bridge=1)");
  }
  TransportLink t;
  t.kind = TransportKind::kBridge;
  t.host = inv->host;
  t.port = inv->port;
  t.bridge_pin = inv->pin_sha256;
  t.bridge_path = inv->ws_path;
  t.bridge_sni = inv->sni;
  t.text = wire::format_invite(*inv);
  return t;
}

bool userinfo_char(char c) {
  return c > ' ' && c < 127 && c != '@' && c != ':' && c != '/' && c != '%';
}

Result<TransportLink> parse_proxy(std::string_view rest, TransportKind kind) {
  TransportLink t;
  t.kind = kind;
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos || rest.find('?') != std::string_view::npos) {
    return bad("a proxy link has no path (expected HOST:PORT)");
  }
  const auto at = rest.rfind('@');
  if (at != std::string_view::npos) {
    if (kind != TransportKind::kSocks5) {
      return bad("HTTP proxy authentication is not supported (expected http://HOST:PORT)");
    }
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const auto colon = userinfo.find(':');
    if (colon == std::string_view::npos) return bad("expected socks5://USER:PASS@HOST:PORT");
    t.username = std::string(userinfo.substr(0, colon));
    t.password = std::string(userinfo.substr(colon + 1));
    if (t.username.empty() || t.username.size() > 255 || t.password.size() > 255 ||
        !std::all_of(t.username.begin(), t.username.end(), userinfo_char) ||
        !std::all_of(t.password.begin(), t.password.end(), userinfo_char)) {
      return bad("bad SOCKS5 user name or password (1-255 printable characters, no @ : / %)");
    }
  }
  PARLEY_TRY(parse_endpoint(rest, t.host, t.port));
  t.text = std::string(kind == TransportKind::kSocks5 ? "socks5://" : "http://") +
           (t.username.empty() ? "" : t.username + ":" + t.password + "@") +
           endpoint_text(t.host, t.port);
  return t;
}

// "obfs4 HOST:PORT [FINGERPRINT] cert=... iat-mode=0", optionally after torrc's "Bridge".
Result<TransportLink> parse_bridge_line(std::string_view line) {
  std::vector<std::string_view> words;
  while (!line.empty()) {
    const auto sp = line.find_first_of(" \t");
    if (sp != 0) words.push_back(line.substr(0, sp));
    if (sp == std::string_view::npos) break;
    line.remove_prefix(sp + 1);
  }
  if (!words.empty() && (words[0] == "Bridge" || words[0] == "bridge")) {
    words.erase(words.begin());
  }
  if (words.size() < 2) return bad("expected a bridge line: obfs4 HOST:PORT cert=... iat-mode=0");
  TransportLink t;
  t.kind = TransportKind::kPluggable;
  t.pt_name = std::string(words[0]);
  if (t.pt_name.size() > 32 || !std::all_of(t.pt_name.begin(), t.pt_name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
      })) {
    return bad("bad transport name in the bridge line");
  }
  PARLEY_TRY(parse_endpoint(words[1], t.host, t.port));
  std::size_t i = 2;
  // Tor bridge lines may name the relay's fingerprint; parley has no use for it.
  if (i < words.size() && words[i].size() == 40 &&
      std::all_of(words[i].begin(), words[i].end(),
                  [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; })) {
    ++i;
  }
  bool cert = false, iat = false;
  std::string canonical_args;
  for (; i < words.size(); ++i) {
    const std::string_view kv = words[i];
    const auto eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return bad("bridge line arguments are KEY=VALUE (got \"" + std::string(kv.substr(0, 40)) +
                 "\")");
    }
    if (kv.find_first_of(",;\\") != std::string_view::npos) {
      return bad("bridge line arguments may not contain , ; or \\");
    }
    const std::string_view key = kv.substr(0, eq);
    const std::string_view value = kv.substr(eq + 1);
    if (key == "cert") cert = !value.empty();
    if (key == "iat-mode") {
      iat = value == "0" || value == "1" || value == "2";
      if (!iat) return bad("iat-mode is 0, 1 or 2");
    }
    if (!t.pt_args.empty()) {
      t.pt_args += ',';
      canonical_args += ' ';
    }
    t.pt_args += kv;
    canonical_args += kv;
  }
  if (t.pt_name == "obfs4" && (!cert || !iat)) {
    return bad("an obfs4 bridge line needs cert=... and iat-mode=N");
  }
  if (t.pt_args.size() > 510) return bad("bridge line arguments too long");
  t.text = t.pt_name + " " + endpoint_text(t.host, t.port) +
           (canonical_args.empty() ? "" : " " + canonical_args);
  return t;
}

}  // namespace

std::string_view transport_kind_name(TransportKind kind) {
  switch (kind) {
    case TransportKind::kDirect: return "direct";
    case TransportKind::kSocks5: return "socks5";
    case TransportKind::kHttpConnect: return "http";
    case TransportKind::kBridge: return "bridge";
    case TransportKind::kPluggable: return "pt";
  }
  return "direct";
}

std::optional<TransportKind> transport_kind_from_name(std::string_view name) {
  for (TransportKind k : {TransportKind::kDirect, TransportKind::kSocks5,
                          TransportKind::kHttpConnect, TransportKind::kBridge,
                          TransportKind::kPluggable}) {
    if (transport_kind_name(k) == name) return k;
  }
  return std::nullopt;
}

Result<TransportLink> parse_transport_link(std::string_view link) {
  link = trim(link);
  if (link.empty()) return bad("empty");
  if (link.size() > 4096) return bad("too long");
  if (link == "direct") return bad("direct is always there (enable it with transport enable)");
  if (link.rfind("socks5://", 0) == 0) {
    return parse_proxy(link.substr(9), TransportKind::kSocks5);
  }
  if (link.rfind("http://", 0) == 0) {
    return parse_proxy(link.substr(7), TransportKind::kHttpConnect);
  }
  if (link.rfind("https://", 0) == 0) {
    return bad("an HTTPS proxy is not supported (http://HOST:PORT is an HTTP CONNECT proxy)");
  }
  if (link.rfind("parley://", 0) == 0) return parse_bridge_link(link);
  if (link.find("://") != std::string_view::npos) {
    return bad("unknown scheme (expected socks5://, http://, parley://...&bridge=1, or a bridge "
               "line \"obfs4 HOST:PORT cert=... iat-mode=0\")");
  }
  return parse_bridge_line(link);
}

std::optional<std::string> obfs4_link_of(const wire::Invite& invite) {
  if (invite.obfs4_host.empty() || invite.obfs4_port == 0) return std::nullopt;
  std::string args = invite.obfs4_args;
  std::replace(args.begin(), args.end(), ',', ' ');
  auto t = parse_bridge_line("obfs4 " + endpoint_text(invite.obfs4_host, invite.obfs4_port) + " " +
                             args);
  if (!t) return std::nullopt;
  return t->text;
}

namespace {

// A DNS name (not an IP literal): letters, digits, '-' and '.', with a dot and a letter.
bool is_dns_name(std::string_view s) {
  if (s.empty() || s.size() > 253 || s.find('.') == std::string_view::npos) return false;
  bool letter = false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalpha(u)) {
      letter = true;
    } else if (!std::isdigit(u) && c != '-' && c != '.') {
      return false;
    }
  }
  return letter && s.front() != '.' && s.back() != '.';
}

}  // namespace

transport::ClientOptions server_options(const wire::Invite& server) {
  transport::ClientOptions o;
  o.host = server.host;
  o.port = server.port;
  o.ws_path = server.ws_path;
  o.pin_sha256 = server.pin_sha256;
  if (!server.sni.empty()) {
    o.sni = server.sni;
  } else if (is_dns_name(server.server_name)) {
    o.sni = server.server_name;
  } else if (is_dns_name(server.host)) {
    o.sni = server.host;
  }
  return o;
}

Result<transport::ClientOptions> TransportPool::options_for(
    const TransportRecord& record, const transport::ClientOptions& server) {
  transport::ClientOptions o = server;
  if (record.kind == TransportKind::kDirect) return o;
  PARLEY_ASSIGN_OR_RETURN(TransportLink t, parse_transport_link(record.link));
  switch (t.kind) {
    case TransportKind::kDirect: return o;
    case TransportKind::kSocks5:
    case TransportKind::kHttpConnect:
      o.route.kind = t.kind == TransportKind::kSocks5 ? transport::Route::Kind::kSocks5
                                                      : transport::Route::Kind::kHttpConnect;
      o.route.via_host = t.host;
      o.route.via_port = t.port;
      o.route.socks_username = t.username;
      o.route.socks_password = t.password;
      return o;
    case TransportKind::kBridge:
      o.route.kind = transport::Route::Kind::kBridge;
      o.route.via_host = t.host;
      o.route.via_port = t.port;
      o.route.bridge_pin_sha256 = t.bridge_pin;
      o.route.bridge_path = t.bridge_path;
      o.route.bridge_sni = t.bridge_sni;
      return o;
    case TransportKind::kPluggable: {
      PARLEY_ASSIGN_OR_RETURN(
          o.route,
          pt_route(record.pt_binary.empty() ? std::string("obfs4proxy") : record.pt_binary,
                   t.pt_name, t.pt_args));
      o.host = t.host;
      o.port = t.port;
      return o;
    }
  }
  return o;
}

Result<transport::Route> TransportPool::pt_route(const std::string& binary,
                                                 const std::string& name,
                                                 const std::string& args) {
  std::lock_guard lock(mu_);
  const std::string key = binary + '\0' + name;
  auto it = pts_.find(key);
  if (it == pts_.end()) {
    transport::PtClientOptions po;
    po.binary = binary;
    po.transport = name;
    po.state_dir = (state_dir_ / name).string();
    PARLEY_ASSIGN_OR_RETURN(auto pt, transport::PtClient::start(po));
    it = pts_.emplace(key, std::move(pt)).first;
  }
  return it->second->route(args);
}

}  // namespace parley::client
