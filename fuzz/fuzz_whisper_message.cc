// Fuzzes WhisperMessage::parse (Signal v3 type-1 ciphertext messages from an untrusted peer).
// Invariants: parse never crashes; a parsed message keeps its bytes, re-parses to equal fields,
// and its fields re-encode (create) into a message that parses back equal and verifies.

#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "protocol/messages.h"

namespace parley::fuzz {
namespace {

using protocol::WhisperMessage;

bool same_fields(const WhisperMessage& a, const WhisperMessage& b) {
  return a.ratchet_key() == b.ratchet_key() && a.counter() == b.counter() &&
         a.previous_counter() == b.previous_counter() && a.ciphertext() == b.ciphertext();
}

void run(ByteView input) {
  auto parsed = WhisperMessage::parse(input);
  if (!parsed) return;
  const WhisperMessage& m = *parsed;
  PARLEY_FUZZ_CHECK(m.serialized() == to_bytes(input));

  auto again = WhisperMessage::parse(m.serialized());
  PARLEY_FUZZ_CHECK(again.has_value());
  PARLEY_FUZZ_CHECK(same_fields(m, *again) && again->serialized() == m.serialized());

  // The MAC check runs over arbitrary bytes without crashing (it cannot succeed here).
  const auto identity = m.ratchet_key();
  const Bytes mac_key(32, 0x42);
  m.verify_mac(identity, identity, mac_key).ignore();

  // Re-encode the fields: the canonical form parses back to the same fields and verifies.
  auto rebuilt = WhisperMessage::create(mac_key, m.ratchet_key(), m.counter(), m.previous_counter(),
                                        m.ciphertext(), identity, identity);
  if (!rebuilt) return;  // kTooLarge: the canonical form can be longer than the input
  auto reparsed = WhisperMessage::parse(rebuilt->serialized());
  PARLEY_FUZZ_CHECK(reparsed.has_value());
  PARLEY_FUZZ_CHECK(same_fields(m, *reparsed));
  PARLEY_FUZZ_CHECK(reparsed->verify_mac(identity, identity, mac_key).is_ok());
}

}  // namespace
}  // namespace parley::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  parley::fuzz::run(parley::ByteView(data, size));
  return 0;
}
