// Fuzzes Bob's SessionCipher::decrypt on an established session (EstablishedSession), with the
// input tried as a Whisper and as a PreKeyWhisper message.
// Invariants: no crash; a failed decrypt leaves Bob's whole store (snapshot()) unchanged; a
// message that decrypts once is refused on replay with kDuplicateMessage, again changing
// nothing. Bob is rebuilt (deterministically) only after a successful decrypt, so every input
// starts from the same state.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz_support.h"

namespace parley::fuzz {
namespace {

std::unique_ptr<EstablishedSession> g_world;

// Returns true when the message decrypted (Bob's state moved on).
bool try_decrypt(MessageType type, ByteView input) {
  Party& bob = g_world->bob;
  // A fresh rng per attempt: the ratchet key Bob draws must not depend on earlier inputs.
  DeterministicRng rng(static_cast<std::uint64_t>(type) * 1000003u + input.size());
  protocol::SessionCipher cipher = bob.cipher_for(g_world->alice, rng);
  const std::string before = bob.store.snapshot();
  auto plaintext = cipher.decrypt(type, input);
  if (!plaintext) {
    PARLEY_FUZZ_CHECK(bob.store.snapshot() == before);
    return false;
  }
  const std::string after = bob.store.snapshot();
  PARLEY_FUZZ_CHECK(after != before);
  auto replay = cipher.decrypt(type, input);
  PARLEY_FUZZ_CHECK(!replay.has_value());
  PARLEY_FUZZ_CHECK(replay.error().code() == ErrorCode::kDuplicateMessage);
  PARLEY_FUZZ_CHECK(bob.store.snapshot() == after);
  return true;
}

void run(ByteView input) {
  if (!g_world) g_world = std::make_unique<EstablishedSession>();
  bool changed = try_decrypt(MessageType::kWhisper, input);
  changed = try_decrypt(MessageType::kPreKeyWhisper, input) || changed;
  if (changed) g_world.reset();
}

}  // namespace
}  // namespace parley::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  parley::fuzz::run(parley::ByteView(data, size));
  return 0;
}
