#include "wire/invite.h"

#include <gtest/gtest.h>

namespace parley::wire {
namespace {

Invite sample() {
  Invite i;
  i.host = "chat.example.org";
  i.port = 8443;
  i.server_name = "example.org";
  i.pin_sha256 = Bytes(32, 0xab);
  i.ws_path = "/Zx9_k-2/ws";
  i.invite_token = "tok en&=";
  return i;
}

TEST(Invite, RoundTrip) {
  const std::string link = format_invite(sample());
  EXPECT_EQ(link.rfind("parley://chat.example.org:8443/?v=1&", 0), 0u) << link;
  auto back = parse_invite(link);
  ASSERT_TRUE(back.has_value()) << back.status().to_string();
  EXPECT_EQ(back->host, "chat.example.org");
  EXPECT_EQ(back->port, 8443);
  EXPECT_EQ(back->pin_sha256, Bytes(32, 0xab));
  EXPECT_EQ(back->ws_path, "/Zx9_k-2/ws");
  EXPECT_EQ(back->invite_token, "tok en&=");
}

TEST(Invite, Ipv6) {
  Invite i = sample();
  i.host = "::1";
  auto back = parse_invite(format_invite(i));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->host, "::1");
}

TEST(Invite, RefusesMalformed) {
  for (const char* bad : {"", "http://x:1/?v=1", "parley://x/?v=1", "parley://x:0/?v=1",
                          "parley://x:1", "parley://x:1/?v=2&name=a&pin=" , "parley://x:1/?v=1&pin=zz",
                          "parley://x y:1/?v=1&name=n&path=/p&pin=abababababababababababababababababababababababababababababababab",
                          "parley://x:1/?v=1&name=n&path=/p&pin=ab%",
                          "parley://x:1/?v=1&name=n&pin=abababababababababababababababababababababababababababababababab"}) {
    EXPECT_FALSE(parse_invite(bad).has_value()) << bad;
  }
}

TEST(Invite, Obfs4RoundTrip) {
  Invite i = sample();
  i.obfs4_host = "203.0.113.5";
  i.obfs4_port = 9443;
  i.obfs4_args = "cert=AbC+/x9==,iat-mode=0";
  const std::string link = format_invite(i);
  EXPECT_NE(link.find("&obfs4=203.0.113.5%3A9443&obfs4args=cert%3DAbC%2B/x9%3D%3D%2Ciat-mode%3D0"),
            std::string::npos)
      << link;
  auto back = parse_invite(link);
  ASSERT_TRUE(back.has_value()) << back.status().to_string();
  EXPECT_EQ(back->obfs4_host, "203.0.113.5");
  EXPECT_EQ(back->obfs4_port, 9443);
  EXPECT_EQ(back->obfs4_args, "cert=AbC+/x9==,iat-mode=0");
  EXPECT_FALSE(back->is_bridge);

  i.obfs4_host = "::1";
  back = parse_invite(format_invite(i));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->obfs4_host, "::1");
  // Also accepted unencoded.
  back = parse_invite("parley://h:1/?v=1&name=n&pin=" + std::string(64, 'a') +
                      "&path=/p&obfs4=[::1]:2&obfs4args=cert=x,iat-mode=1");
  ASSERT_TRUE(back.has_value()) << back.status().to_string();
  EXPECT_EQ(back->obfs4_host, "::1");
  EXPECT_EQ(back->obfs4_port, 2);
  EXPECT_EQ(back->obfs4_args, "cert=x,iat-mode=1");
}

TEST(Invite, BridgeLink) {
  Invite b;
  b.is_bridge = true;
  b.host = "198.51.100.7";
  b.port = 443;
  b.pin_sha256 = Bytes(32, 0x01);
  b.ws_path = "/bridgeSecret";
  b.sni = "cdn.example.net";
  const std::string link = format_invite(b);
  EXPECT_EQ(link, "parley://198.51.100.7:443/?v=1&bridge=1&pin=" + to_hex(Bytes(32, 0x01)) +
                      "&path=/bridgeSecret&sni=cdn.example.net");
  auto back = parse_invite(link);
  ASSERT_TRUE(back.has_value()) << back.status().to_string();
  EXPECT_TRUE(back->is_bridge);
  EXPECT_EQ(back->host, "198.51.100.7");
  EXPECT_EQ(back->port, 443);
  EXPECT_EQ(back->ws_path, "/bridgeSecret");
  EXPECT_EQ(back->sni, "cdn.example.net");
  EXPECT_TRUE(back->server_name.empty());
  // A server link still needs its name.
  EXPECT_FALSE(parse_invite("parley://h:1/?v=1&pin=" + std::string(64, 'a') + "&path=/p").has_value());
}

TEST(Invite, RefusesBadTransportParameters) {
  const std::string base = "parley://h:1/?v=1&name=n&pin=" + std::string(64, 'a') + "&path=/p";
  for (const std::string tail :
       {"&obfs4=h:2", "&obfs4args=cert=x", "&obfs4=h:0&obfs4args=c=x", "&obfs4=h&obfs4args=c=x",
        "&obfs4=h:2&obfs4args=a%20b", "&obfs4=h%20x:2&obfs4args=c=x", "&bridge=2",
        "&sni=a%20b", "&sni=a:1"}) {
    EXPECT_FALSE(parse_invite(base + tail).has_value()) << tail;
  }
  EXPECT_FALSE(parse_invite(base + "&obfs4=h:2&obfs4args=" + std::string(1025, 'a')).has_value());
}

}  // namespace
}  // namespace parley::wire
