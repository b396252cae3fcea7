#pragma once
// ProtocolAddress: who a session is with (an account name and one of its devices).
// SenderKeyName: one sender's sender-key chain within one group.
// Plain values; thread-safe to copy.

#include <compare>
#include <cstdint>
#include <string>

namespace parley::protocol {

struct ProtocolAddress {
  std::string name;
  std::uint32_t device_id = 1;

  std::string to_string() const { return name + "." + std::to_string(device_id); }
  friend auto operator<=>(const ProtocolAddress&, const ProtocolAddress&) = default;
};

struct SenderKeyName {
  std::string group_id;
  ProtocolAddress sender;

  friend auto operator<=>(const SenderKeyName&, const SenderKeyName&) = default;
};

}  // namespace parley::protocol
