#pragma once
// Internal to src/client: small helpers shared by the Client's translation units.

#include <string>
#include <string_view>

#include "base/status.h"
#include "wire/frame.h"

namespace parley::client {

// Outbox recipients of group messages: this prefix, then the group id in hex.
inline constexpr std::string_view kGroupRecipientPrefix = "group:";
// History rows of control messages (sender keys, receipts): never shown, they only record that
// the envelope was processed (a re-delivery is then recognised). '#' is not valid in addresses.
inline constexpr std::string_view kControlConversation = "#control";
// Envelope type of a group message: group id (16 bytes) || SenderKeyMessage (libsignal's
// CiphertextMessageType.SenderKey is 7).
inline constexpr std::uint32_t kSenderKeyEnvelopeType = 7;

// "bob@server" -> "bob".
std::string name_part(const std::string& address);
// Worth retrying later: the network or the server was unavailable.
bool transient(const Status& s);

// Whether a send's 429 says the recipient's queue on the server is full (its `limit` is "count"
// or "bytes"), as opposed to the sender's own rate ("rate").
bool queue_full(const wire::SendResult& r);

// Crash injection for tests: when PARLEY_FAILPOINT names this point, the process kills itself
// (SIGKILL, like a power cut) right here. Unset in normal use: one getenv per call.
void failpoint(const char* name);

inline std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace parley::client
