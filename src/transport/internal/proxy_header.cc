#include "transport/internal/proxy_header.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

namespace parley::transport::internal {
namespace {

namespace ip = boost::asio::ip;

constexpr std::uint8_t kLocal = 0x20;  // version 2, command LOCAL
constexpr std::uint8_t kProxy = 0x21;  // version 2, command PROXY
constexpr std::uint8_t kTcp4 = 0x11;   // INET, STREAM
constexpr std::uint8_t kTcp6 = 0x21;   // INET6, STREAM
constexpr std::size_t kInetBlock = 12;
constexpr std::size_t kInet6Block = 36;

Status bad(std::string what) {
  return make_error(ErrorCode::kInvalidArgument, "PROXY header: " + std::move(what));
}

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }

void put16(Bytes& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v & 0xFF));
}

std::string canonical(const ip::address_v6& v6) {
  if (v6.is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, v6).to_string();
  return v6.to_string();
}

}  // namespace

Result<std::size_t> proxy_v2_rest_size(ByteView fixed) {
  if (fixed.size() != kProxyV2FixedSize) return bad("short");
  if (std::memcmp(fixed.data(), kProxyV2Signature.data(), kProxyV2Signature.size()) != 0) {
    return bad("no signature");
  }
  const std::uint8_t vc = fixed[12];
  if ((vc >> 4) != 2) return bad("version " + std::to_string(vc >> 4) + ", not 2");
  if (vc != kLocal && vc != kProxy) return bad("unknown command " + std::to_string(vc & 0x0F));
  const std::size_t rest = be16(fixed.data() + 14);
  if (rest > kProxyV2MaxRest) {
    return bad(std::to_string(rest) + " bytes, over " + std::to_string(kProxyV2MaxRest));
  }
  return rest;
}

Result<ProxiedPeer> parse_proxy_v2(ByteView header) {
  if (header.size() < kProxyV2FixedSize) return bad("short");
  auto rest = proxy_v2_rest_size(header.first(kProxyV2FixedSize));
  if (!rest) return rest.status();
  if (header.size() != kProxyV2FixedSize + *rest) return bad("length does not match");
  const std::uint8_t command = header[12];
  const std::uint8_t family = header[13];
  const std::uint8_t* block = header.data() + kProxyV2FixedSize;
  ProxiedPeer peer;
  if (command == kLocal) return peer;  // the relay's own connection: addresses ignored
  if ((family & 0x0F) == 0x2) return bad("datagram transport");
  if (family == kTcp4) {
    if (*rest < kInetBlock) return bad("INET addresses do not fit");
    ip::address_v4::bytes_type a;
    std::memcpy(a.data(), block, a.size());
    peer.ip = ip::address_v4(a).to_string();
    peer.port = be16(block + 8);
  } else if (family == kTcp6) {
    if (*rest < kInet6Block) return bad("INET6 addresses do not fit");
    ip::address_v6::bytes_type a;
    std::memcpy(a.data(), block, a.size());
    peer.ip = canonical(ip::address_v6(a));
    peer.port = be16(block + 32);
  } else if ((family >> 4) == 0x0 || (family >> 4) == 0x3) {
    return peer;  // UNSPEC or UNIX: nothing to say about the client
  } else {
    return bad("unknown address family " + std::to_string(family >> 4));
  }
  peer.proxied = true;
  return peer;
}

std::size_t proxy_v1_line_size(ByteView head) {
  for (std::size_t i = 0; i + 1 < head.size(); ++i) {
    if (head[i] == '\r' && head[i + 1] == '\n') return i + 2;
  }
  return 0;
}

Result<ProxiedPeer> parse_proxy_v1(ByteView line) {
  if (line.size() > kProxyV1MaxSize) return bad("a version 1 line over 107 bytes");
  if (proxy_v1_line_size(line) != line.size() || line.size() < kProxyV1Signature.size() + 2) {
    return bad("not one version 1 line");
  }
  const std::string_view text(reinterpret_cast<const char*>(line.data()), line.size() - 2);
  if (!text.starts_with(kProxyV1Signature)) return bad("no signature");
  std::string_view rest = text.substr(kProxyV1Signature.size());
  // Fields separated by single spaces; UNKNOWN's rest is the relay's business.
  const auto next = [&rest]() {
    const std::size_t sp = rest.find(' ');
    const std::string_view field = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
    return field;
  };
  const std::string_view protocol = next();
  ProxiedPeer peer;
  if (protocol == "UNKNOWN") return peer;
  if (protocol != "TCP4" && protocol != "TCP6") return bad("unknown protocol in version 1");
  const std::string_view source = next(), destination = next(), source_port = next();
  const std::string_view destination_port = rest;
  // Decimal, no leading zero (section 2.1: "heading zeroes are not permitted").
  const auto port = [](std::string_view digits) -> std::optional<std::uint16_t> {
    if (digits.empty() || digits.size() > 5) return std::nullopt;
    if (digits.size() > 1 && digits[0] == '0') return std::nullopt;
    std::uint32_t v = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (v > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(v);
  };
  const auto sport = port(source_port);
  if (!sport || !port(destination_port)) return bad("a bad port in version 1");
  // Only the characters of the address's text form (for TCP6 no zone, "%eth0", which names an
  // interface of the relay): inet_pton would stop at a NUL and take what came before it.
  const bool v4 = protocol == "TCP4";
  const std::string_view allowed = v4 ? "0123456789." : "0123456789abcdefABCDEF:.";
  const auto parse = [&](std::string_view field) -> std::optional<ip::address> {
    if (field.find_first_not_of(allowed) != std::string_view::npos) return std::nullopt;
    boost::system::error_code ec;
    const ip::address a = v4 ? ip::address(ip::make_address_v4(field, ec))
                             : ip::address(ip::make_address_v6(field, ec));
    if (ec) return std::nullopt;
    return a;
  };
  const auto client = parse(source);
  if (!client || !parse(destination)) {
    return bad(v4 ? "a bad TCP4 address in version 1" : "a bad TCP6 address in version 1");
  }
  peer.ip = v4 ? client->to_string() : canonical(client->to_v6());
  peer.port = *sport;
  peer.proxied = true;
  return peer;
}

ProxyOpening proxy_opening(ByteView head) {
  const auto against = [&head](ByteView signature) {
    const std::size_t n = std::min(head.size(), signature.size());
    if (std::memcmp(head.data(), signature.data(), n) != 0) return ProxyOpening::kNo;
    return n == signature.size() ? ProxyOpening::kYes : ProxyOpening::kMaybe;
  };
  const ProxyOpening v1 = against(ByteView(
      reinterpret_cast<const std::uint8_t*>(kProxyV1Signature.data()), kProxyV1Signature.size()));
  const ProxyOpening v2 = against(ByteView(kProxyV2Signature.data(), kProxyV2Signature.size()));
  return std::max(v1, v2);
}

Bytes make_proxy_v2(const ip::address& source, std::uint16_t source_port,
                    const ip::address& destination, std::uint16_t destination_port) {
  Bytes out(kProxyV2Signature.begin(), kProxyV2Signature.end());
  out.push_back(kProxy);
  if (source.is_v4() && destination.is_v4()) {
    out.push_back(kTcp4);
    put16(out, kInetBlock);
    for (auto b : source.to_v4().to_bytes()) out.push_back(b);
    for (auto b : destination.to_v4().to_bytes()) out.push_back(b);
  } else {
    auto v6 = [](const ip::address& a) {
      return a.is_v6() ? a.to_v6() : ip::make_address_v6(ip::v4_mapped, a.to_v4());
    };
    out.push_back(kTcp6);
    put16(out, kInet6Block);
    for (auto b : v6(source).to_bytes()) out.push_back(b);
    for (auto b : v6(destination).to_bytes()) out.push_back(b);
  }
  put16(out, source_port);
  put16(out, destination_port);
  return out;
}

}  // namespace parley::transport::internal
