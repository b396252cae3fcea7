#pragma once
// The block a client's address belongs to, the unit of every per-address limit (the transport's
// cap on handshakes under way, the server's per-IP token buckets).

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace parley::transport {

// An IPv6 address by its /64, the block one subscriber usually gets (keyed by the whole
// address, each of a /64's 2^64 addresses would count apart); an IPv4 address, or an
// IPv4-mapped IPv6 one, as the IPv4 address. Anything that does not parse as an address is its
// own block.
std::string client_block(std::string_view ip);

// An address or a network of them, as ServerOptions::proxy_from lists relays: "192.0.2.7",
// "2001:db8::1" (that address alone), "10.0.0.0/8", "2001:db8::/32". An IPv4 range also holds
// the IPv4-mapped IPv6 form of its addresses.
class AddressRange {
 public:
  // nullopt unless `text` is an address, or an address, "/" and a prefix length in decimal
  // (0-32 for IPv4, 0-128 for IPv6); host bits past the prefix are ignored.
  static std::optional<AddressRange> parse(std::string_view text);
  // Whether `ip` (text, as the transport gives a peer's) lies in the range; false for anything
  // that is not an address.
  bool contains(std::string_view ip) const;
  // Whether all of `other` (a single address: parse() of one) lies in this range.
  bool contains(const AddressRange& other) const;

 private:
  bool v6_ = false;
  std::array<std::uint8_t, 16> bytes_{};  // IPv4: the first 4
  unsigned prefix_ = 0;                   // bits
};

// 127.0.0.0/8 and ::1: whom a listener without an allow-list serves (the admin listener).
std::vector<AddressRange> loopback_ranges();
// Whether `host` is an address (not a name) within loopback_ranges().
bool is_loopback_address(std::string_view host);

}  // namespace parley::transport
