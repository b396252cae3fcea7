#pragma once
// Internal to src/transport: the PROXY protocol (HAProxy's proxy-protocol.txt), versions 1 and
// 2. A bridge or a load balancer in front of parleyd opens each TCP connection it relays with
// this header, naming the client it relays for, so that parleyd's per-address limits see the
// client and not the relay (docs/protocol.md "PROXY protocol"). The first byte tells the two
// apart: 'P' for version 1, 0x0D for version 2.
//
// Version 2 (section 2.2), binary:
//   12 bytes  signature \r\n\r\n\0\r\nQUIT\n
//    1 byte   version (high nibble, 2) and command (low nibble: 0 LOCAL, 1 PROXY)
//    1 byte   address family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport
//             (low nibble: 0 UNSPEC, 1 STREAM, 2 DGRAM)
//    2 bytes  length of what follows, big-endian: the addresses, then TLVs (ignored here)
//   INET:  source address (4), destination address (4), source port (2), destination port (2)
//   INET6: source address (16), destination address (16), source port (2), destination port (2)
// Reading one without taking a byte of the TLS stream behind it: read kProxyV2FixedSize bytes,
// ask proxy_v2_rest_size() how many follow, read exactly those, then parse_proxy_v2() the whole.
//
// Version 1 (section 2.1), one line of text, at most kProxyV1MaxSize bytes with its CRLF; what
// nginx's stream proxy (`proxy_protocol on`) and HAProxy's `send-proxy` write:
//   PROXY TCP4 198.51.100.7 192.0.2.1 40123 443\r\n
//   PROXY TCP6 2001:db8::5 2001:db8::1 40123 443\r\n
//   PROXY UNKNOWN[ anything]\r\n        (the relay's own connection)
// Reading one without taking a byte of the TLS stream behind it: peek, find the CRLF with
// proxy_v1_line_size(), read exactly up to it (bytes before a CRLF are all the header's), and
// parse_proxy_v1() the line.
//
// Errors are kInvalidArgument with a message starting "PROXY header: ".

#include <boost/asio/ip/address.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "base/result.h"

namespace parley::transport::internal {

inline constexpr std::array<std::uint8_t, 12> kProxyV2Signature = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
inline constexpr std::size_t kProxyV2FixedSize = 16;
// The largest address block and TLVs accepted (HAProxy's own INET6 header with TLVs fits in a
// few hundred bytes); a longer header is refused rather than read.
inline constexpr std::size_t kProxyV2MaxRest = 1024;

// From the first kProxyV2FixedSize bytes: how many bytes of the header follow them (the length
// field, at most kProxyV2MaxRest), after checking the signature, version and command.
Result<std::size_t> proxy_v2_rest_size(ByteView fixed);

struct ProxiedPeer {
  // False for a LOCAL command (the relay's own connection, a health check) and for an UNSPEC
  // or UNIX family: the connection is then the relay's, and `ip` is empty.
  bool proxied = false;
  std::string ip;  // the client's address (an IPv4-mapped IPv6 one as IPv4), canonical text
  std::uint16_t port = 0;
};

// The whole header (kProxyV2FixedSize + proxy_v2_rest_size() bytes). A DGRAM transport, a
// family whose addresses do not fit the length, or a length that does not match is refused.
Result<ProxiedPeer> parse_proxy_v2(ByteView header);

// Version 1's first bytes, and the longest line it may send (section 2.1: 107 bytes, CRLF
// included, for UNKNOWN).
inline constexpr std::string_view kProxyV1Signature = "PROXY ";
inline constexpr std::size_t kProxyV1MaxSize = 107;

// The size of the line that starts `head`, up to and including its first CRLF; 0 when `head`
// holds no CRLF.
std::size_t proxy_v1_line_size(ByteView head);

// One whole line (proxy_v1_line_size() bytes, at most kProxyV1MaxSize). TCP4 and TCP6 need two
// addresses of their family (in their text form's characters only, no IPv6 zone), single
// spaces, and ports of 1 to 5 digits up to 65535 without a leading zero; UNKNOWN
// names no client (the rest of its line is ignored, as the specification says).
Result<ProxiedPeer> parse_proxy_v1(ByteView line);

// Whether `head`, the first bytes of a stream, opens a PROXY header of either version: kNo,
// kMaybe (a prefix of a signature, too short to tell) or kYes (a whole signature).
enum class ProxyOpening { kNo, kMaybe, kYes };
ProxyOpening proxy_opening(ByteView head);

// A PROXY command for a TCP connection from `source` to `destination` (the relay's listener):
// INET when both are IPv4, otherwise INET6 with any IPv4 address mapped.
Bytes make_proxy_v2(const boost::asio::ip::address& source, std::uint16_t source_port,
                    const boost::asio::ip::address& destination, std::uint16_t destination_port);

}  // namespace parley::transport::internal
