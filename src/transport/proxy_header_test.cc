// The PROXY header (internal/proxy_header.h), both versions: what a relay writes is what the
// server reads, and every malformed header is refused with a reason. The server's use of it is in
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

// Version 1 -----------------------------------------------------------------------------------

Result<ProxiedPeer> parse_v1(std::string_view line) {
  return parse_proxy_v1(ByteView(reinterpret_cast<const std::uint8_t*>(line.data()), line.size()));
}

TEST(ProxyHeaderV1, TcpLinesNameTheClient) {
  auto v4 = parse_v1("PROXY TCP4 198.51.100.7 192.0.2.1 40123 443\r\n");
  ASSERT_TRUE(v4.has_value()) << v4.error().to_string();
  EXPECT_TRUE(v4->proxied);
  EXPECT_EQ(v4->ip, "198.51.100.7");
  EXPECT_EQ(v4->port, 40123);
  auto v6 = parse_v1("PROXY TCP6 2001:DB8:0:0:0:0:0:5 2001:db8::1 0 65535\r\n");
  ASSERT_TRUE(v6.has_value()) << v6.error().to_string();
  EXPECT_EQ(v6->ip, "2001:db8::5");  // canonical
  EXPECT_EQ(v6->port, 0);
  auto mapped = parse_v1("PROXY TCP6 ::ffff:198.51.100.8 ::1 1 2\r\n");
  ASSERT_TRUE(mapped.has_value()) << mapped.error().to_string();
  EXPECT_EQ(mapped->ip, "198.51.100.8");
}

TEST(ProxyHeaderV1, UnknownIsTheRelaysOwnConnectionWhateverFollows) {
  for (const std::string& line :
       {std::string("PROXY UNKNOWN\r\n"), std::string("PROXY UNKNOWN ffff:f::1 ::1 9 9\r\n"),
        "PROXY UNKNOWN " + std::string(91, 'x') + "\r\n"}) {
    SCOPED_TRACE(line);
    auto peer = parse_v1(line);
    ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
    EXPECT_FALSE(peer->proxied);
    EXPECT_EQ(peer->ip, "");
  }
  EXPECT_EQ(parse_v1("PROXY UNKNOWN " + std::string(92, 'x') + "\r\n").error().message(),
            "PROXY header: a version 1 line over 107 bytes");
}

TEST(ProxyHeaderV1, EveryMalformedLineIsRefusedWithAReason) {
  struct Case {
    const char* line;
    const char* reason;
  };
  const Case cases[] = {
      {"PROXY TCP4 198.51.100.7 192.0.2.1 1 2", "not one version 1 line"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 1 2\n", "not one version 1 line"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 1 2\r\n\r\n", "not one version 1 line"},
      {"PROXY\r\n", "not one version 1 line"},
      {"proxy TCP4 198.51.100.7 192.0.2.1 1 2\r\n", "no signature"},
      {"PROXY  TCP4 198.51.100.7 192.0.2.1 1 2\r\n", "unknown protocol"},
      {"PROXY TCP5 198.51.100.7 192.0.2.1 1 2\r\n", "unknown protocol"},
      {"PROXY UDP4 198.51.100.7 192.0.2.1 1 2\r\n", "unknown protocol"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 65536 2\r\n", "bad port"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 1 \r\n", "bad port"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 1 2 \r\n", "bad port"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 1 2 3\r\n", "bad port"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 0x10 2\r\n", "bad port"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 -1 2\r\n", "bad port"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 0443 2\r\n", "bad port"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 1 00\r\n", "bad port"},
      {"PROXY TCP4 198.51.100.7 192.0.2.1 1\r\n", "bad port"},
      {"PROXY TCP4 198.51.100.7  192.0.2.1 1 2\r\n", "bad port"},
      {"PROXY TCP4 198.51.100.300 192.0.2.1 1 2\r\n", "bad TCP4 address"},
      {"PROXY TCP4 2001:db8::5 192.0.2.1 1 2\r\n", "bad TCP4 address"},
      {"PROXY TCP4 198.51.100.7 ::1 1 2\r\n", "bad TCP4 address"},
      {"PROXY TCP4 localhost 192.0.2.1 1 2\r\n", "bad TCP4 address"},
      {"PROXY TCP6 198.51.100.7 ::1 1 2\r\n", "bad TCP6 address"},
      {"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad TCP6 address"},
      {"PROXY TCP6 2001:db8::5 ::1%1 1 2\r\n", "bad TCP6 address"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.line);
    auto peer = parse_v1(c.line);
    ASSERT_FALSE(peer.has_value());
    EXPECT_EQ(peer.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(peer.error().message().rfind("PROXY header: ", 0), 0u) << peer.error().message();
    EXPECT_NE(peer.error().message().find(c.reason), std::string::npos) << peer.error().message();
  }
}

// inet_pton stops at a NUL and would take what comes before it: such a field is refused.
TEST(ProxyHeaderV1, AnAddressWithANulOrAnotherStrayByteIsRefused) {
  using namespace std::string_literals;
  for (const std::string& line :
       {"PROXY TCP4 198.51.100.7\0junk 192.0.2.1 1 2\r\n"s,
        "PROXY TCP4 198.51.100.7 192.0.2.1\0 1 2\r\n"s, "PROXY TCP6 2001:db8::5\0x ::1 1 2\r\n"s,
        "PROXY TCP6 2001:db8::5 ::1\t 1 2\r\n"s}) {
    SCOPED_TRACE(line);
    auto peer = parse_v1(line);
    ASSERT_FALSE(peer.has_value());
    EXPECT_NE(peer.error().message().find("bad TCP"), std::string::npos) << peer.error().message();
  }
}

TEST(ProxyHeaderV1, TheLineEndsAtItsFirstCrlf) {
  const auto size = [](std::string_view s) {
    return proxy_v1_line_size(ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()));
  };
  EXPECT_EQ(size("PROXY UNKNOWN\r\n\x16\x03\x01"), 15u);  // the ClientHello is not the line's
  EXPECT_EQ(size("PROXY UNKNOWN\r"), 0u);
  EXPECT_EQ(size("PROXY UNKNOWN\n\r\n"), 16u);
  EXPECT_EQ(size(""), 0u);
}

TEST(ProxyHeader, AStreamOpeningLikeAHeaderIsToldApart) {
  const auto opening = [](std::string_view s) {
    return proxy_opening(ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()));
  };
  EXPECT_EQ(opening(""), ProxyOpening::kMaybe);
  EXPECT_EQ(opening("PROX"), ProxyOpening::kMaybe);
  EXPECT_EQ(opening("PROXY "), ProxyOpening::kYes);
  EXPECT_EQ(opening("PROXY TCP4"), ProxyOpening::kYes);
  EXPECT_EQ(opening("PROXIMITY"), ProxyOpening::kNo);
  EXPECT_EQ(opening("\x16\x03\x01"), ProxyOpening::kNo);
  EXPECT_EQ(opening("\r\n\r\n"), ProxyOpening::kMaybe);
  EXPECT_EQ(opening("\r\n\r\nx"), ProxyOpening::kNo);
  const std::string v2(reinterpret_cast<const char*>(kProxyV2Signature.data()),
                       kProxyV2Signature.size());
  EXPECT_EQ(opening(v2.substr(0, 11)), ProxyOpening::kMaybe);
  EXPECT_EQ(opening(v2), ProxyOpening::kYes);
}

}  // namespace
}  // namespace parley::transport::internal
