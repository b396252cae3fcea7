// Fuzzes the Sender Keys wire decoders. The first input byte selects the decoder (even:
// SenderKeyMessage, odd: SenderKeyDistributionMessage); the rest is the message.
// Invariants: parse never crashes; a parsed message keeps its bytes, re-parses to equal fields,
// and its fields re-encode (create) into a message that parses back equal.

#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "protocol/sender_keys.h"

namespace parley::fuzz {
namespace {

using protocol::SenderKeyDistributionMessage;
using protocol::SenderKeyMessage;

void run_message(ByteView input) {
  auto parsed = SenderKeyMessage::parse(input);
  if (!parsed) return;
  const SenderKeyMessage& m = *parsed;
  PARLEY_FUZZ_CHECK(m.serialized() == to_bytes(input));
  // Signature verification over arbitrary bytes must not crash.
  static const crypto::KeyPair kSigner = [] {
    DeterministicRng rng(7);
    return crypto::KeyPair::generate(rng);
  }();
  m.verify_signature(kSigner.public_key);

  auto again = SenderKeyMessage::parse(m.serialized());
  PARLEY_FUZZ_CHECK(again.has_value());
  PARLEY_FUZZ_CHECK(again->version() == m.version() && again->key_id() == m.key_id() &&
                    again->iteration() == m.iteration() && again->ciphertext() == m.ciphertext());

  DeterministicRng rng(m.iteration());
  const SenderKeyMessage rebuilt =
      SenderKeyMessage::create(m.key_id(), m.iteration(), m.ciphertext(), kSigner.private_key, rng);
  auto reparsed = SenderKeyMessage::parse(rebuilt.serialized());
  if (!reparsed) {
    PARLEY_FUZZ_CHECK(reparsed.error().code() == ErrorCode::kTooLarge);
    return;
  }
  PARLEY_FUZZ_CHECK(reparsed->key_id() == m.key_id() && reparsed->iteration() == m.iteration() &&
                    reparsed->ciphertext() == m.ciphertext());
  PARLEY_FUZZ_CHECK(reparsed->verify_signature(kSigner.public_key));
}

void run_distribution(ByteView input) {
  auto parsed = SenderKeyDistributionMessage::parse(input);
  if (!parsed) return;
  const SenderKeyDistributionMessage& m = *parsed;
  PARLEY_FUZZ_CHECK(to_bytes(m.serialized()) == to_bytes(input));
  PARLEY_FUZZ_CHECK(m.chain_key().size() == 32);

  auto again = SenderKeyDistributionMessage::parse(m.serialized());
  PARLEY_FUZZ_CHECK(again.has_value());
  PARLEY_FUZZ_CHECK(again->key_id() == m.key_id() && again->iteration() == m.iteration() &&
                    again->chain_key() == m.chain_key() && again->signing_key() == m.signing_key());
  const SenderKeyDistributionMessage copy = m.clone();
  PARLEY_FUZZ_CHECK(to_bytes(copy.serialized()) == to_bytes(m.serialized()));

  const SenderKeyDistributionMessage rebuilt = SenderKeyDistributionMessage::create(
      m.key_id(), m.iteration(), m.chain_key().view(), m.signing_key());
  auto reparsed = SenderKeyDistributionMessage::parse(rebuilt.serialized());
  if (!reparsed) {
    PARLEY_FUZZ_CHECK(reparsed.error().code() == ErrorCode::kTooLarge);
    return;
  }
  PARLEY_FUZZ_CHECK(reparsed->key_id() == m.key_id() && reparsed->iteration() == m.iteration() &&
                    reparsed->chain_key() == m.chain_key() &&
                    reparsed->signing_key() == m.signing_key());
}

}  // namespace
}  // namespace parley::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const parley::ByteView message(data + 1, size - 1);
  if (data[0] % 2 == 0) {
    parley::fuzz::run_message(message);
  } else {
    parley::fuzz::run_distribution(message);
  }
  return 0;
}
