// Fuzzes PreKeyWhisperMessage::parse (Signal v3 type-3 messages that open a session).
// Invariants: parse never crashes; a parsed message keeps its bytes, re-parses to equal fields,
// and its fields re-encode (create) into a message that parses back equal.

#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "protocol/messages.h"

namespace parley::fuzz {
namespace {

using protocol::PreKeyWhisperMessage;
using protocol::WhisperMessage;

bool same_inner(const WhisperMessage& a, const WhisperMessage& b) {
  return a.ratchet_key() == b.ratchet_key() && a.counter() == b.counter() &&
         a.previous_counter() == b.previous_counter() && a.ciphertext() == b.ciphertext() &&
         a.serialized() == b.serialized();
}

bool same_fields(const PreKeyWhisperMessage& a, const PreKeyWhisperMessage& b) {
  return a.registration_id() == b.registration_id() && a.pre_key_id() == b.pre_key_id() &&
         a.signed_pre_key_id() == b.signed_pre_key_id() && a.base_key() == b.base_key() &&
         a.identity_key() == b.identity_key() && same_inner(a.message(), b.message());
}

void run(ByteView input) {
  auto parsed = PreKeyWhisperMessage::parse(input);
  if (!parsed) return;
  const PreKeyWhisperMessage& m = *parsed;
  PARLEY_FUZZ_CHECK(m.serialized() == to_bytes(input));
  // The inner message is a WhisperMessage in its own right.
  auto inner = WhisperMessage::parse(m.message().serialized());
  PARLEY_FUZZ_CHECK(inner.has_value() && same_inner(*inner, m.message()));

  auto again = PreKeyWhisperMessage::parse(m.serialized());
  PARLEY_FUZZ_CHECK(again.has_value());
  PARLEY_FUZZ_CHECK(same_fields(m, *again) && again->serialized() == m.serialized());

  auto rebuilt =
      PreKeyWhisperMessage::create(m.registration_id(), m.pre_key_id(), m.signed_pre_key_id(),
                                   m.base_key(), m.identity_key(), m.message());
  auto reparsed = PreKeyWhisperMessage::parse(rebuilt.serialized());
  if (!reparsed) {
    // Only the size bound may refuse the canonical form of a message we accepted.
    PARLEY_FUZZ_CHECK(reparsed.error().code() == ErrorCode::kTooLarge);
    return;
  }
  PARLEY_FUZZ_CHECK(same_fields(m, *reparsed));
}

}  // namespace
}  // namespace parley::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  parley::fuzz::run(parley::ByteView(data, size));
  return 0;
}
