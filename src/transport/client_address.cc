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

namespace {

// `text` as 16 bytes (an IPv4 address in the first 4, `v6` false), unmapping IPv4-mapped IPv6.
bool address_bytes(const std::string& text, std::array<std::uint8_t, 16>& out, bool& v6) {
  out.fill(0);
  if (::inet_pton(AF_INET, text.c_str(), out.data()) == 1) {
    v6 = false;
    return true;
  }
  if (::inet_pton(AF_INET6, text.c_str(), out.data()) != 1) return false;
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  v6 = std::memcmp(out.data(), kMapped, sizeof kMapped) != 0;
  if (!v6) {
    std::memmove(out.data(), out.data() + 12, 4);
    std::fill(out.begin() + 4, out.end(), 0);
  }
  return true;
}

}  // namespace

std::optional<AddressRange> AddressRange::parse(std::string_view text) {
  const auto slash = text.find('/');
  AddressRange r;
  if (!address_bytes(std::string(text.substr(0, slash)), r.bytes_, r.v6_)) return std::nullopt;
  const unsigned width = r.v6_ ? 128 : 32;
  r.prefix_ = width;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    unsigned prefix = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      prefix = prefix * 10 + static_cast<unsigned>(c - '0');
    }
    if (prefix > width) return std::nullopt;
    r.prefix_ = prefix;
  }
  return r;
}

bool AddressRange::contains(std::string_view ip) const {
  const auto host = parse(ip);
  return host && host->prefix_ == (host->v6_ ? 128u : 32u) && contains(*host);
}

bool AddressRange::contains(const AddressRange& other) const {
  if (other.v6_ != v6_ || other.prefix_ < prefix_) return false;
  const unsigned whole = prefix_ / 8;
  if (std::memcmp(other.bytes_.data(), bytes_.data(), whole) != 0) return false;
  const unsigned rest = prefix_ % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xFF << (8 - rest));
  return (other.bytes_[whole] & mask) == (bytes_[whole] & mask);
}

std::vector<AddressRange> loopback_ranges() {
  return {*AddressRange::parse("127.0.0.0/8"), *AddressRange::parse("::1")};
}

bool is_loopback_address(std::string_view host) {
  for (const AddressRange& range : loopback_ranges()) {
    if (range.contains(host)) return true;
  }
  return false;
}

}  // namespace parley::transport
