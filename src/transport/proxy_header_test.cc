// The PROXY v2 header (internal/proxy_header.h): what a relay writes is what the server reads,
// and every malformed header is refused with a reason. The server's use of it is in
// transport_test.cc (ARelay...).
#include "transport/internal/proxy_header.h"

#include <gtest/gtest.h>

namespace parley::transport::internal {
namespace {

namespace ip = boost::asio::ip;

Result<ProxiedPeer> read_back(const Bytes& header) {
  auto rest = proxy_v2_rest_size(ByteView(header).first(kProxyV2FixedSize));
  if (!rest) return rest.status();
  EXPECT_EQ(header.size(), kProxyV2FixedSize + *rest);
  return parse_proxy_v2(header);
}

TEST(ProxyHeader, AnIpv4ClientRoundTrips) {
  const Bytes h =
      make_proxy_v2(ip::make_address("198.51.100.7"), 40123, ip::make_address("192.0.2.1"), 443);
  EXPECT_EQ(h.size(), 28u);  // 16 + 12: what HAProxy writes for TCP4
  EXPECT_EQ(h[12], 0x21);
  EXPECT_EQ(h[13], 0x11);
  auto peer = read_back(h);
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  EXPECT_TRUE(peer->proxied);
  EXPECT_EQ(peer->ip, "198.51.100.7");
  EXPECT_EQ(peer->port, 40123);
}

TEST(ProxyHeader, AnIpv6ClientRoundTripsAndAMappedOneComesBackAsIpv4) {
  const Bytes h6 = make_proxy_v2(ip::make_address("2001:db8::5"), 1, ip::make_address("::1"), 2);
  EXPECT_EQ(h6.size(), 52u);  // 16 + 36
  EXPECT_EQ(h6[13], 0x21);
  auto peer = read_back(h6);
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  EXPECT_EQ(peer->ip, "2001:db8::5");
  // A v4 client on a v6 listener: both sent as IPv6, the client read back as IPv4.
  const Bytes mixed = make_proxy_v2(ip::make_address("203.0.113.9"), 7, ip::make_address("::1"), 8);
  EXPECT_EQ(mixed[13], 0x21);
  peer = read_back(mixed);
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  EXPECT_EQ(peer->ip, "203.0.113.9");
  EXPECT_EQ(peer->port, 7);
}

TEST(ProxyHeader, TlvsAfterTheAddressesAreSkipped) {
  Bytes h = make_proxy_v2(ip::make_address("198.51.100.7"), 1, ip::make_address("192.0.2.1"), 2);
  const Bytes tlv = {0x04, 0x00, 0x03, 'a', 'b', 'c'};  // PP2_TYPE_NOOP
  h.insert(h.end(), tlv.begin(), tlv.end());
  h[15] = static_cast<std::uint8_t>(12 + tlv.size());
  auto peer = read_back(h);
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  EXPECT_EQ(peer->ip, "198.51.100.7");
}

TEST(ProxyHeader, LocalAndUnspecifiedNameNoClient) {
  Bytes local =
      make_proxy_v2(ip::make_address("198.51.100.7"), 1, ip::make_address("192.0.2.1"), 2);
  local[12] = 0x20;  // LOCAL: a health check; the addresses are ignored
  auto peer = read_back(local);
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  EXPECT_FALSE(peer->proxied);
  EXPECT_TRUE(peer->ip.empty());
  Bytes unspec(local.begin(), local.begin() + 16);
  unspec[12] = 0x21;
  unspec[13] = 0x00;
  unspec[14] = unspec[15] = 0;
  peer = read_back(unspec);
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  EXPECT_FALSE(peer->proxied);
}

TEST(ProxyHeader, MalformedHeadersAreRefusedWithAReason) {
  const Bytes good =
      make_proxy_v2(ip::make_address("198.51.100.7"), 1, ip::make_address("192.0.2.1"), 2);
  auto refused = [](Bytes h, const std::string& reason) {
    auto rest = proxy_v2_rest_size(ByteView(h).first(std::min(h.size(), kProxyV2FixedSize)));
    auto peer = parse_proxy_v2(h);
    ASSERT_FALSE(peer.has_value()) << reason;
    EXPECT_EQ(peer.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(peer.error().message().find(reason), std::string::npos)
        << peer.error().message() << " / " << reason;
    if (!rest) {
      EXPECT_EQ(rest.error().message(), peer.error().message());
    }
  };
  Bytes h = good;
  h[0] = 'G';  // a TLS or HTTP client where a relay should be
  refused(h, "no signature");
  const std::string v1 = "PROXY TCP4 198.51.100.7 192.0.2.1 1 2\r\n";
  refused(Bytes(v1.begin(), v1.end()), "no signature");
  h = good;
  h[12] = 0x11;
  refused(h, "version 1, not 2");
  h = good;
  h[12] = 0x22;
  refused(h, "unknown command 2");
  h = good;
  h[13] = 0x12;  // UDP over IPv4
  refused(h, "datagram");
  h = good;
  h[13] = 0x41;
  refused(h, "unknown address family 4");
  h = good;
  h[15] = 8;  // the length says 8, the INET addresses need 12
  h.resize(24);
  refused(h, "INET addresses do not fit");
  h = good;
  h[13] = 0x21;  // INET6 in 12 bytes
  refused(h, "INET6 addresses do not fit");
  h = good;
  h.pop_back();
  refused(h, "length does not match");
  h = good;
  h[14] = 0x04;
  h[15] = 0x01;  // 1025 bytes to follow
  refused(h, "1025 bytes, over 1024");
  refused(Bytes(good.begin(), good.begin() + 10), "short");
}

}  // namespace
}  // namespace parley::transport::internal
