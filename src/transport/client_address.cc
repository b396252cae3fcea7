#include "transport/client_address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace parley::transport {

std::string client_block(std::string_view ip) {
  const std::string text_ip(ip);
  std::array<unsigned char, 16> a{};
  if (::inet_pton(AF_INET6, text_ip.c_str(), a.data()) != 1) return text_ip;
  static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char text[INET6_ADDRSTRLEN] = {};
  if (std::memcmp(a.data(), kMapped, sizeof kMapped) == 0) {
    if (::inet_ntop(AF_INET, a.data() + 12, text, sizeof text) == nullptr) return text_ip;
    return text;
  }
  std::fill(a.begin() + 8, a.end(), 0);
  if (::inet_ntop(AF_INET6, a.data(), text, sizeof text) == nullptr) return text_ip;
  return std::string(text) + "/64";
}

}  // namespace parley::transport
