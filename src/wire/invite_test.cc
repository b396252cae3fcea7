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

}  // namespace
}  // namespace parley::wire
