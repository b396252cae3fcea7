// The PROXY header (transport/internal/proxy_header.h) that a relay in server.proxy_from opens
// each connection with. The input is what the relay sent, read as the server reads it:
// - version 2: the first 16 bytes, proxy_v2_rest_size() of how many follow, exactly those, and
//   parse_proxy_v2() of the whole;
// - version 1: the line up to the first CRLF within kProxyV1MaxSize bytes
//   (proxy_v1_line_size()), and parse_proxy_v1() of it.
//
// Invariants: nothing crashes; the size asked for is within kProxyV2MaxRest; a v2 header parses
// only when its first 16 bytes gave the size it has, and a v1 line only when it is one whole
// line of at most 107 bytes; a named client is a valid address in canonical form (what a relay
// writes for it parses back to the same client); an error's message starts "PROXY header: ";
// proxy_opening() says kYes only for a stream that starts with a whole signature.
#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "transport/internal/proxy_header.h"

using namespace parley;                       // NOLINT: a fuzz target
using namespace parley::transport::internal;  // NOLINT: a fuzz target

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView in(data, size);
  if (size >= kProxyV2FixedSize) {
    auto rest = proxy_v2_rest_size(in.first(kProxyV2FixedSize));
    if (rest) {
      PARLEY_FUZZ_CHECK(*rest <= kProxyV2MaxRest);
    } else {
      PARLEY_FUZZ_CHECK(rest.error().message().rfind("PROXY header: ", 0) == 0);
    }
    auto peer = parse_proxy_v2(in);
    if (peer) {
      PARLEY_FUZZ_CHECK(rest && size == kProxyV2FixedSize + *rest);
      if (peer->proxied) {
        boost::system::error_code ec;
        const auto addr = boost::asio::ip::make_address(peer->ip, ec);
        PARLEY_FUZZ_CHECK(!ec);
        PARLEY_FUZZ_CHECK(addr.to_string() == peer->ip);
        const Bytes again = make_proxy_v2(addr, peer->port, addr, 443);
        auto back = parse_proxy_v2(again);
        PARLEY_FUZZ_CHECK(back && back->proxied && back->ip == peer->ip &&
                          back->port == peer->port);
      } else {
        PARLEY_FUZZ_CHECK(peer->ip.empty());
      }
    } else {
      PARLEY_FUZZ_CHECK(peer.error().message().rfind("PROXY header: ", 0) == 0);
    }
  } else {
    PARLEY_FUZZ_CHECK(!parse_proxy_v2(in).has_value());
  }

  // Version 1, as the server reads it, and on any bytes at all.
  const std::size_t line = proxy_v1_line_size(in.first(std::min(size, kProxyV1MaxSize)));
  for (const ByteView text : {in.first(line), in}) {
    auto peer = parse_proxy_v1(text);
    if (!peer) {
      PARLEY_FUZZ_CHECK(peer.error().message().rfind("PROXY header: ", 0) == 0);
      continue;
    }
    PARLEY_FUZZ_CHECK(text.size() <= kProxyV1MaxSize && proxy_v1_line_size(text) == text.size());
    if (!peer->proxied) {
      PARLEY_FUZZ_CHECK(peer->ip.empty());
      continue;
    }
    boost::system::error_code ec;
    const auto addr = boost::asio::ip::make_address(peer->ip, ec);
    PARLEY_FUZZ_CHECK(!ec && addr.to_string() == peer->ip);
    // What a relay writes for that client parses back to it (a TCP6 line may carry an
    // IPv4-mapped client, which comes back as IPv4). A TCP4 client is taken as written: no
    // byte of its field is dropped or read differently.
    const bool tcp4 = text[9] == '4';
    if (tcp4) {
      const std::string_view written(reinterpret_cast<const char*>(text.data()), text.size());
      PARLEY_FUZZ_CHECK(written.substr(11, written.find(' ', 11) - 11) == peer->ip);
    }
    const std::string again =
        tcp4 ? "PROXY TCP4 " + peer->ip + " 192.0.2.1 " + std::to_string(peer->port) + " 443\r\n"
             : "PROXY TCP6 " + std::string(addr.is_v4() ? "::ffff:" : "") + peer->ip +
                   " 2001:db8::1 " + std::to_string(peer->port) + " 443\r\n";
    auto back =
        parse_proxy_v1(ByteView(reinterpret_cast<const std::uint8_t*>(again.data()), again.size()));
    PARLEY_FUZZ_CHECK(back && back->proxied && back->ip == peer->ip && back->port == peer->port);
  }

  // kYes: a whole signature starts the input; kMaybe: the input is a strict prefix of one;
  // kNo: neither.
  const auto starts = [&](const void* signature, std::size_t n, bool* whole) {
    *whole = size >= n;
    return std::memcmp(data, signature, std::min(size, n)) == 0;
  };
  bool v1_whole = false, v2_whole = false;
  const bool v1 = starts(kProxyV1Signature.data(), kProxyV1Signature.size(), &v1_whole);
  const bool v2 = starts(kProxyV2Signature.data(), kProxyV2Signature.size(), &v2_whole);
  const ProxyOpening expected = (v1 && v1_whole) || (v2 && v2_whole) ? ProxyOpening::kYes
                                : v1 || v2                           ? ProxyOpening::kMaybe
                                                                     : ProxyOpening::kNo;
  PARLEY_FUZZ_CHECK(proxy_opening(in) == expected);
  return 0;
}
