#pragma once
// The block a client's address belongs to, the unit of every per-address limit (the transport's
// cap on handshakes under way, the server's per-IP token buckets).

#include <string>
#include <string_view>

namespace parley::transport {

// An IPv6 address by its /64, the block one subscriber usually gets (keyed by the whole
// address, each of a /64's 2^64 addresses would count apart); an IPv4 address, or an
// IPv4-mapped IPv6 one, as the IPv4 address. Anything that does not parse as an address is its
// own block.
std::string client_block(std::string_view ip);

}  // namespace parley::transport
