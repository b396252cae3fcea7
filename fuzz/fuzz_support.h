#pragma once
// Shared helpers for the libFuzzer targets in fuzz/ and for make_seeds.cc (test-only code).
//
// - check(): the fuzzers' invariant assert. A violated invariant is a bug in src/, so it prints
//   what failed and traps (libFuzzer records the input as a crash).
// - EstablishedSession: Alice and Bob with a Signal v3 session, built from a fixed
//   DeterministicRng seed, so every construction yields byte-identical state. make_seeds.cc
//   writes its undelivered messages as the seed corpus of fuzz_session_decrypt.
// - make_fingerprint_pair(): both parties' safety numbers, from fixed identities.
// - SeedWriter: builds inputs in FuzzedDataProvider's layout (bytes from the front, integers
//   from the back), so seeds for FDP-driven targets are real, meaningful inputs.
// Nothing here is thread-safe; libFuzzer runs one input at a time.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "base/rng.h"
#include "protocol/fingerprint.h"
#include "protocol/in_memory_stores.h"
#include "protocol/messages.h"
#include "protocol/testing/parties.h"

namespace parley::fuzz {

using protocol::CiphertextMessage;
using protocol::MessageType;
using protocol::testing::Party;

[[noreturn]] inline void invariant_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz invariant violated at %s:%d: %s\n", file, line, what);
  std::fflush(stderr);
  __builtin_trap();
}

#define PARLEY_FUZZ_CHECK(cond) \
  ((cond) ? static_cast<void>(0) : ::parley::fuzz::invariant_failed(#cond, __FILE__, __LINE__))

// PARLEY_FUZZ_VERBOSE=1 in the environment makes the harnesses narrate (to debug a reproducer).
inline bool verbose() {
  static const bool on = std::getenv("PARLEY_FUZZ_VERBOSE") != nullptr;
  return on;
}

// Encrypts `text` from `from` to `to`; setup code only (a failure is a harness bug).
inline CiphertextMessage send_or_die(Party& from, const Party& to, const std::string& text,
                                     Rng& rng) {
  auto c = from.cipher_for(to, rng).encrypt(to_bytes(text));
  PARLEY_FUZZ_CHECK(c.has_value());
  return std::move(c).value();
}

inline void receive_or_die(Party& at, const Party& from, const CiphertextMessage& m, Rng& rng) {
  auto p = at.cipher_for(from, rng).decrypt(m.type, m.serialized);
  PARLEY_FUZZ_CHECK(p.has_value());
}

// Alice built a session from Bob's bundle (one-time prekey 1) and sent m0, m1 (PreKeyWhisper);
// Bob received m0 and answered r0; Alice received r0 and sent m2, m3 (Whisper, new chain).
// Bob still has m1, m2 and m3 to receive; m0 is a replay for him.
struct EstablishedSession {
  static constexpr std::uint64_t kSeed = 0x5eed0001;

  DeterministicRng rng{kSeed};
  Party alice{"alice", rng, 2};
  Party bob{"bob", rng, 2};
  CiphertextMessage m0, m1, r0, m2, m3;

  EstablishedSession() {
    PARLEY_FUZZ_CHECK(alice.builder_for(bob, rng).process_bundle(bob.bundle(1)).is_ok());
    m0 = send_or_die(alice, bob, "m0: hello bob", rng);
    m1 = send_or_die(alice, bob, "m1: are you there?", rng);
    receive_or_die(bob, alice, m0, rng);
    r0 = send_or_die(bob, alice, "r0: hi alice", rng);
    receive_or_die(alice, bob, r0, rng);
    m2 = send_or_die(alice, bob, "m2: a whisper message on the second chain", rng);
    m3 = send_or_die(alice, bob, std::string(100, 'x'), rng);
  }
};

// Alice's and Bob's safety numbers for each other (identities from a fixed seed).
struct FingerprintPair {
  protocol::NumericFingerprint alice;
  protocol::NumericFingerprint bob;
};

inline FingerprintPair make_fingerprint_pair() {
  DeterministicRng rng(0xf1a9e4);
  const auto alice = protocol::generate_identity_key_pair(rng).public_key;
  const auto bob = protocol::generate_identity_key_pair(rng).public_key;
  const Bytes alice_id = to_bytes("+14155550100");
  const Bytes bob_id = to_bytes("+14155550111");
  return FingerprintPair{
      protocol::create_fingerprint(protocol::kFingerprintIterations, alice_id, alice, bob_id, bob),
      protocol::create_fingerprint(protocol::kFingerprintIterations, bob_id, bob, alice_id, alice)};
}

// Produces bytes that FuzzedDataProvider reads back as the given sequence of calls.
class SeedWriter {
 public:
  // ConsumeBytes<uint8_t>(b.size()).
  void bytes(ByteView b) { append(front_, b); }
  // ConsumeIntegral<T>() / ConsumeBool() (bool: T = uint8_t).
  template <typename T>
  void integral(T value) {
    const auto v = static_cast<std::uint64_t>(value);
    // FDP reads the most significant consumed byte first, from the end of the data.
    for (std::size_t i = sizeof(T); i-- > 0;) {
      back_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
  }
  Bytes finish() const {
    Bytes out = front_;
    out.insert(out.end(), back_.rbegin(), back_.rend());
    return out;
  }

 private:
  Bytes front_;
  Bytes back_;  // in FDP read order
};

}  // namespace parley::fuzz
