// The PROXY protocol v2 header (transport/internal/proxy_header.h) that a relay in
// server.proxy_from opens each connection with: the server reads the first 16 bytes, asks
// proxy_v2_rest_size() how many follow, reads exactly those and parses the whole. The input is
// what the relay sent.
//
// Invariants: nothing crashes; the size asked for is within kProxyV2MaxRest; a header parses
// only when its first 16 bytes gave the size it has; a named client is a valid address in
// canonical form (what make_proxy_v2 writes for it parses back to the same client); an error's
// message starts "PROXY header: ".
#include <boost/asio/ip/address.hpp>

#include <cstdint>
#include <string>

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
  return 0;
}
