#include "transport/client_address.h"

#include <gtest/gtest.h>

namespace parley::transport {
namespace {

TEST(ClientBlock, IsTheIPv4AddressOrTheIPv6Slash64) {
  EXPECT_EQ(client_block("2001:db8::1"), "2001:db8::/64");
  EXPECT_EQ(client_block("2001:db8::1"), client_block("2001:db8::ffff:2"));
  EXPECT_EQ(client_block("2001:db8:0:0:1:2:3:4"), "2001:db8::/64");
  EXPECT_NE(client_block("2001:db8::1"), client_block("2001:db8:0:1::1"));
  EXPECT_EQ(client_block("::ffff:192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(client_block("192.0.2.7"), "192.0.2.7");
  EXPECT_NE(client_block("192.0.2.7"), client_block("192.0.2.8"));
  EXPECT_EQ(client_block("::1"), "::/64");
  EXPECT_EQ(client_block("not an address"), "not an address");
  EXPECT_EQ(client_block(""), "");
}

// proxy_from's entries: an address alone, or a network; IPv4 ranges hold mapped addresses.
TEST(AddressRange, HoldsItsAddressesOnly) {
  auto one = AddressRange::parse("192.0.2.7");
  ASSERT_TRUE(one.has_value());
  EXPECT_TRUE(one->contains("192.0.2.7"));
  EXPECT_TRUE(one->contains("::ffff:192.0.2.7"));
  EXPECT_FALSE(one->contains("192.0.2.8"));
  auto net = AddressRange::parse("10.1.0.0/15");
  ASSERT_TRUE(net.has_value());
  EXPECT_TRUE(net->contains("10.0.0.1"));
  EXPECT_TRUE(net->contains("10.1.255.255"));
  EXPECT_FALSE(net->contains("10.2.0.0"));
  EXPECT_FALSE(net->contains("::a00:1"));  // an IPv6 address is not in an IPv4 range
  auto v6 = AddressRange::parse("2001:db8:ab00::/40");
  ASSERT_TRUE(v6.has_value());
  EXPECT_TRUE(v6->contains("2001:db8:abff::1"));
  EXPECT_FALSE(v6->contains("2001:db8:ac00::1"));
  EXPECT_FALSE(v6->contains("10.0.0.1"));
  EXPECT_FALSE(v6->contains("not an address"));
  auto all = AddressRange::parse("0.0.0.0/0");
  ASSERT_TRUE(all.has_value());
  EXPECT_TRUE(all->contains("203.0.113.9"));
  EXPECT_TRUE(AddressRange::parse("::1/128").has_value());
  for (const char* bad : {"", "host.example", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/8x",
                          "10.0.0.0/-1", "2001:db8::/129", "10.0.0.0/0008", "/8"}) {
    EXPECT_FALSE(AddressRange::parse(bad).has_value()) << bad;
  }
}

// What an admin listener serves without an allow-list, and what its address may be without one.
TEST(AddressRange, LoopbackIsAnAddressIn127Slash8OrIPv6One) {
  for (const char* yes : {"127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(is_loopback_address(yes)) << yes;
  }
  for (const char* no :
       {"0.0.0.0", "::", "128.0.0.1", "10.0.0.1", "::2", "localhost", "127.0.0.0/8", ""}) {
    EXPECT_FALSE(is_loopback_address(no)) << no;
  }
  EXPECT_EQ(loopback_ranges().size(), 2u);
}

}  // namespace
}  // namespace parley::transport
