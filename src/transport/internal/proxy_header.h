#pragma once
// Internal to src/transport: the PROXY protocol, version 2 (HAProxy's proxy-protocol.txt,
// section 2.2), binary form only. A bridge or a load balancer in front of parleyd opens each
// TCP connection it relays with this header, naming the client it relays for, so that parleyd's
// per-address limits see the client and not the relay (docs/protocol.md "PROXY protocol").
//
//   12 bytes  signature \r\n\r\n\0\r\nQUIT\n
//    1 byte   version (high nibble, 2) and command (low nibble: 0 LOCAL, 1 PROXY)
//    1 byte   address family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport
//             (low nibble: 0 UNSPEC, 1 STREAM, 2 DGRAM)
//    2 bytes  length of what follows, big-endian: the addresses, then TLVs (ignored here)
//   INET:  source address (4), destination address (4), source port (2), destination port (2)
//   INET6: source address (16), destination address (16), source port (2), destination port (2)
//
// Reading one without taking a byte of the TLS stream behind it: read kProxyV2FixedSize bytes,
// ask proxy_v2_rest_size() how many follow, read exactly those, then parse_proxy_v2() the whole.
// Errors are kInvalidArgument with a message starting "PROXY header: ".
//
// Version 1 (the text form "PROXY TCP4 ...\r\n") is not accepted: every relay that speaks
// version 1 also speaks version 2, and the binary form is read without guessing at lengths.

#include <boost/asio/ip/address.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

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

// A PROXY command for a TCP connection from `source` to `destination` (the relay's listener):
// INET when both are IPv4, otherwise INET6 with any IPv4 address mapped.
Bytes make_proxy_v2(const boost::asio::ip::address& source, std::uint16_t source_port,
                    const boost::asio::ip::address& destination, std::uint16_t destination_port);

}  // namespace parley::transport::internal
