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

}  // namespace

std::string format_invite(const Invite& i) {
  const bool v6 = i.host.find(':') != std::string::npos;
  std::string out = "parley://" + (v6 ? "[" + i.host + "]" : i.host) + ":" +
                    std::to_string(i.port) + "/?v=1&name=" + percent_encode(i.server_name) +
                    "&pin=" + to_hex(i.pin_sha256) + "&path=" + percent_encode(i.ws_path);
  if (!i.invite_token.empty()) out += "&invite=" + percent_encode(i.invite_token);
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
  for (char c : inv.host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == ':';
    if (!ok || inv.host.size() > 253) return bad("bad host");
  }

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
    }
  }
  if (!have_version) return bad("missing v=1");
  if (inv.pin_sha256.empty()) return bad("missing pin");
  if (inv.ws_path.empty()) return bad("missing path");
  if (inv.server_name.empty()) return bad("missing name");
  return inv;
}

}  // namespace parley::wire
