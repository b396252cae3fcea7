#include "wire/invite.h"

#include <charconv>

namespace parley::wire {
namespace {

bool unreserved(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~' || c == '/';
}

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (unreserved(static_cast<char>(c))) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Result<std::string> percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) {
      return make_error(ErrorCode::kInvalidArgument, "invite: bad percent-encoding");
    }
    auto b = from_hex(s.substr(i + 1, 2));
    if (!b) return make_error(ErrorCode::kInvalidArgument, "invite: bad percent-encoding");
    out.push_back(static_cast<char>((*b)[0]));
    i += 2;
  }
  return out;
}

Status bad(const char* what) {
  return make_error(ErrorCode::kInvalidArgument, std::string("invite: ") + what);
}

bool host_ok(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == ':';
    if (!ok) return false;
  }
  return true;
}

std::string host_port(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// "HOST:PORT" or "[V6]:PORT", port 1..65535.
bool split_host_port(std::string_view text, std::string& host, std::uint16_t& port) {
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return false;
    }
    host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  unsigned p = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), p);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || p == 0 || p > 65535) {
    return false;
  }
  port = static_cast<std::uint16_t>(p);
  return host_ok(host);
}

// Transport arguments: printable ASCII without spaces, bounded.
bool args_ok(std::string_view args) {
  if (args.empty() || args.size() > 1024) return false;
  for (char c : args) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

}  // namespace

std::string format_invite(const Invite& i) {
  std::string out = "parley://" + host_port(i.host, i.port) + "/?v=1";
  if (i.is_bridge) {
    out += "&bridge=1";
    if (!i.server_name.empty()) out += "&name=" + percent_encode(i.server_name);
  } else {
    out += "&name=" + percent_encode(i.server_name);
  }
  out += "&pin=" + to_hex(i.pin_sha256) + "&path=" + percent_encode(i.ws_path);
  if (!i.sni.empty()) out += "&sni=" + percent_encode(i.sni);
  if (!i.invite_token.empty()) out += "&invite=" + percent_encode(i.invite_token);
  if (!i.obfs4_host.empty()) {
    out += "&obfs4=" + percent_encode(host_port(i.obfs4_host, i.obfs4_port)) +
           "&obfs4args=" + percent_encode(i.obfs4_args);
  }
  return out;
}

Result<Invite> parse_invite(std::string_view link) {
  constexpr std::string_view kScheme = "parley://";
  if (link.size() > 4096) return bad("link too long");
  if (link.substr(0, kScheme.size()) != kScheme) return bad("must start with parley://");
  std::string_view rest = link.substr(kScheme.size());
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos) return bad("missing /? after host:port");
  std::string_view authority = rest.substr(0, slash);
  std::string_view tail = rest.substr(slash + 1);
  if (tail.empty() || tail.front() != '?') return bad("missing query");
  tail.remove_prefix(1);

  Invite inv;
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos || close + 1 >= authority.size() ||
        authority[close + 1] != ':') {
      return bad("bad [IPv6]:port");
    }
    inv.host = std::string(authority.substr(1, close - 1));
    port_text = authority.substr(close + 2);
  } else {
    const auto colon = authority.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return bad("missing host:port");
    inv.host = std::string(authority.substr(0, colon));
    port_text = authority.substr(colon + 1);
  }
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || port == 0 || port > 65535) {
    return bad("bad port");
  }
  inv.port = static_cast<std::uint16_t>(port);
  if (!host_ok(inv.host)) return bad("bad host");

  bool have_version = false;
  while (!tail.empty()) {
    const auto amp = tail.find('&');
    std::string_view kv = tail.substr(0, amp);
    tail = amp == std::string_view::npos ? std::string_view() : tail.substr(amp + 1);
    const auto eq = kv.find('=');
    if (eq == std::string_view::npos) return bad("bad query parameter");
    std::string_view key = kv.substr(0, eq);
    PARLEY_ASSIGN_OR_RETURN(std::string value, percent_decode(kv.substr(eq + 1)));
    if (key == "v") {
      if (value != "1") return bad("unsupported version");
      have_version = true;
    } else if (key == "name") {
      inv.server_name = value;
    } else if (key == "pin") {
      auto pin = from_hex(value);
      if (!pin || pin->size() != 32) return bad("pin must be 64 hex characters");
      inv.pin_sha256 = *pin;
    } else if (key == "path") {
      if (value.empty() || value.front() != '/' || value.size() > 256) return bad("bad path");
      inv.ws_path = value;
    } else if (key == "invite") {
      if (value.size() > 256) return bad("invite token too long");
      inv.invite_token = value;
    } else if (key == "bridge") {
      if (value != "1") return bad("bridge must be 1");
      inv.is_bridge = true;
    } else if (key == "sni") {
      if (!host_ok(value) || value.find(':') != std::string::npos) return bad("bad sni");
      inv.sni = value;
    } else if (key == "obfs4") {
      if (!split_host_port(value, inv.obfs4_host, inv.obfs4_port)) return bad("bad obfs4 address");
    } else if (key == "obfs4args") {
      if (!args_ok(value)) return bad("bad obfs4args");
      inv.obfs4_args = value;
    }
  }
  if (inv.obfs4_host.empty() != inv.obfs4_args.empty()) {
    return bad("obfs4 and obfs4args go together");
  }
  if (!have_version) return bad("missing v=1");
  if (inv.pin_sha256.empty()) return bad("missing pin");
  if (inv.ws_path.empty()) return bad("missing path");
  if (inv.server_name.empty() && !inv.is_bridge) return bad("missing name");
  return inv;
}

}  // namespace parley::wire
