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

}  // namespace
}  // namespace parley::transport
