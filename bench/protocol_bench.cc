// parley-bench-protocol: the cost of the Signal Protocol v3 core on one thread.
//
// Run pinned to one core, for example
//   taskset -c 1 ./build-bench/bench/parley-bench-protocol --benchmark_min_time=1
// Figures and their interpretation live in docs/benchmarks.md.
//
// Randomness: every timed operation draws from crypto::SystemRng (libsodium randombytes), which
// is what production code uses, so its cost is included. Fixtures (identities, prekeys, the
// parties of a chunk) are built with a seeded DeterministicRng outside the timed region, so the
// key material is reproducible; the timed code is constant-time and does not depend on it.
//
// Stores: the in-memory stores of protocol/in_memory_stores.h. SessionCipher loads and stores
// the session record on every message (InMemorySessionStore clones the live record both ways),
// so that cost is part of every per-message figure, as a store is part of every real message.
// A persistent store (serialization plus I/O) would cost more.
//
// Benchmarks that consume pre-generated input (decryption, session setup) refill it in chunks
// with PauseTiming/ResumeTiming once per chunk, so the pause overhead is amortized.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/rng.h"
#include "crypto/curve.h"
#include "crypto/primitives.h"
#include "protocol/in_memory_stores.h"
#include "protocol/sender_keys.h"
#include "protocol/session_builder.h"
#include "protocol/session_cipher.h"
#include "protocol/testing/parties.h"

namespace parley::protocol {
namespace {

using testing::Party;

constexpr std::size_t kMessageSize = 100;
// Messages decrypted per refill. Below kMaxForwardJump, though delivery is in order anyway.
constexpr std::size_t kDecryptChunk = 1000;
// Fresh party pairs built per refill of the session-setup benchmark.
constexpr std::size_t kSetupChunk = 64;

Bytes message_bytes() { return Bytes(kMessageSize, 0x61); }

benchmark::Counter rate(const benchmark::State& state) {
  return benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// Two parties with an established session: Alice processed Bob's bundle (one-time prekey 1),
// sent the PreKeyWhisperMessage, Bob decrypted it and answered, and Alice decrypted the answer.
// From then on both sides send plain WhisperMessages, as in a long-running conversation.
struct Conversation {
  DeterministicRng fixture_rng{20240601};
  crypto::SystemRng rng;
  Party alice{"alice", fixture_rng, 1};
  Party bob{"bob", fixture_rng, 1};
  SessionCipher alice_cipher = alice.cipher_for(bob, rng);
  SessionCipher bob_cipher = bob.cipher_for(alice, rng);

  bool establish() {
    if (!alice.builder_for(bob, rng).process_bundle(bob.bundle(1)).is_ok()) return false;
    const Bytes m = message_bytes();
    auto first = alice_cipher.encrypt(m);
    if (!first || !bob_cipher.decrypt(first->type, first->serialized)) return false;
    auto answer = bob_cipher.encrypt(m);
    return answer && alice_cipher.decrypt(answer->type, answer->serialized).has_value();
  }
};

// 1. One symmetric-chain encryption of 100 bytes, session record load and store included.
void BM_SymmetricEncrypt(benchmark::State& state) {
  Conversation c;
  if (!c.establish()) {
    state.SkipWithError("session setup failed");
    return;
  }
  const Bytes m = message_bytes();
  for (auto _ : state) {
    auto out = c.alice_cipher.encrypt(m);
    if (!out) {
      state.SkipWithError("encrypt failed");
      break;
    }
    benchmark::DoNotOptimize(out->serialized.data());
  }
  state.counters["msgs/s"] = rate(state);
}
BENCHMARK(BM_SymmetricEncrypt);

// 2. One symmetric-chain decryption of 100 bytes, in order, record load and store included.
void BM_SymmetricDecrypt(benchmark::State& state) {
  Conversation c;
  if (!c.establish()) {
    state.SkipWithError("session setup failed");
    return;
  }
  const Bytes m = message_bytes();
  std::vector<Bytes> batch;
  batch.reserve(kDecryptChunk);
  auto refill = [&] {
    batch.clear();
    for (std::size_t i = 0; i < kDecryptChunk; ++i) {
      auto out = c.alice_cipher.encrypt(m);
      if (!out) return false;
      batch.push_back(std::move(out->serialized));
    }
    return true;
  };
  if (!refill()) {
    state.SkipWithError("encrypt failed");
    return;
  }
  std::size_t next = 0;
  for (auto _ : state) {
    if (next == batch.size()) {
      state.PauseTiming();
      const bool ok = refill();
      next = 0;
      state.ResumeTiming();
      if (!ok) {
        state.SkipWithError("encrypt failed");
        break;
      }
    }
    auto plain = c.bob_cipher.decrypt_whisper(batch[next++]);
    if (!plain) {
      state.SkipWithError("decrypt failed");
      break;
    }
    benchmark::DoNotOptimize(plain->data());
  }
  state.counters["msgs/s"] = rate(state);
}
BENCHMARK(BM_SymmetricDecrypt);

// 3. A -> B, B decrypts, B -> A, A decrypts. Every message turns the conversation around, so
// each decryption performs a DH-ratchet step (2 X25519 agreements and 1 key generation):
// 4 agreements and 2 key generations per round trip.
void BM_RatchetRoundTrip(benchmark::State& state) {
  Conversation c;
  if (!c.establish()) {
    state.SkipWithError("session setup failed");
    return;
  }
  const Bytes m = message_bytes();
  for (auto _ : state) {
    auto to_bob = c.alice_cipher.encrypt(m);
    if (!to_bob || !c.bob_cipher.decrypt_whisper(to_bob->serialized)) {
      state.SkipWithError("A -> B failed");
      break;
    }
    auto to_alice = c.bob_cipher.encrypt(m);
    if (!to_alice || !c.alice_cipher.decrypt_whisper(to_alice->serialized)) {
      state.SkipWithError("B -> A failed");
      break;
    }
  }
  state.counters["round_trips/s"] = rate(state);
}
BENCHMARK(BM_RatchetRoundTrip);

// 4. A complete first contact between two fresh parties: Alice verifies and processes Bob's
// bundle (with a one-time prekey) and encrypts her first message; Bob decrypts it, which builds
// his session and consumes the one-time prekey. Curve work per setup (session_builder.cc,
// session_cipher.cc, keys.cc):
//   Alice: 1 XEdDSA verify (signed prekey), 2 key generations (base key, first ratchet key),
//          5 X25519 (4 X3DH + 1 root step);
//   Bob:   2 fixed-base multiplications re-deriving public keys when the signed prekey and
//          one-time prekey records are loaded (keys.cc key_pair_from), 4 X25519 (X3DH),
//          1 X25519 (receiving chain), 1 key generation, 1 X25519 (sending chain).
//   Total: 11 X25519, 5 fixed-base multiplications, 1 XEdDSA verify.
void BM_SessionSetup(benchmark::State& state) {
  DeterministicRng fixture_rng(7);
  crypto::SystemRng rng;
  const Bytes m = message_bytes();
  std::vector<std::unique_ptr<Party>> alices, bobs;
  std::vector<PreKeyBundle> bundles;
  auto refill = [&] {
    alices.clear();
    bobs.clear();
    bundles.clear();
    for (std::size_t i = 0; i < kSetupChunk; ++i) {
      alices.push_back(std::make_unique<Party>("alice", fixture_rng, 0));
      bobs.push_back(std::make_unique<Party>("bob", fixture_rng, 1));
      bundles.push_back(bobs.back()->bundle(1));
    }
  };
  refill();
  std::size_t next = 0;
  for (auto _ : state) {
    if (next == kSetupChunk) {
      state.PauseTiming();
      refill();
      next = 0;
      state.ResumeTiming();
    }
    Party& alice = *alices[next];
    Party& bob = *bobs[next];
    const PreKeyBundle& bundle = bundles[next];
    ++next;
    if (!alice.builder_for(bob, rng).process_bundle(bundle).is_ok()) {
      state.SkipWithError("process_bundle failed");
      break;
    }
    auto first = alice.cipher_for(bob, rng).encrypt(m);
    if (!first || !bob.cipher_for(alice, rng).decrypt(first->type, first->serialized)) {
      state.SkipWithError("first message failed");
      break;
    }
  }
  state.counters["setups/s"] = rate(state);
}
BENCHMARK(BM_SessionSetup);

// One X25519 agreement (PrivateKey::agree, including its zeroizing output buffer).
void BM_X25519(benchmark::State& state) {
  DeterministicRng fixture_rng(11);
  const crypto::KeyPair ours = crypto::KeyPair::generate(fixture_rng);
  const crypto::KeyPair theirs = crypto::KeyPair::generate(fixture_rng);
  for (auto _ : state) {
    auto shared = ours.private_key.agree(theirs.public_key);
    benchmark::DoNotOptimize(shared);
  }
  state.counters["ops/s"] = rate(state);
}
BENCHMARK(BM_X25519);

// One key-pair generation: 32 bytes from SystemRng and one fixed-base multiplication.
void BM_KeyGen(benchmark::State& state) {
  crypto::SystemRng rng;
  for (auto _ : state) {
    auto kp = crypto::KeyPair::generate(rng);
    benchmark::DoNotOptimize(kp);
  }
  state.counters["ops/s"] = rate(state);
}
BENCHMARK(BM_KeyGen);

// One XEdDSA verification of a signed prekey (33-byte message), as process_bundle does it.
void BM_XEdDSAVerifySignedPreKey(benchmark::State& state) {
  DeterministicRng fixture_rng(13);
  Party bob("bob", fixture_rng, 0);
  const PreKeyBundle bundle = bob.bundle(0);
  const Bytes signed_message = bundle.signed_pre_key.serialize();
  for (auto _ : state) {
    const bool ok = crypto::verify_signature(bundle.identity_key, signed_message,
                                             bundle.signed_pre_key_signature);
    if (!ok) {
      state.SkipWithError("signature did not verify");
      break;
    }
    benchmark::DoNotOptimize(ok);
  }
  state.counters["ops/s"] = rate(state);
}
BENCHMARK(BM_XEdDSAVerifySignedPreKey);

// A group with one sender (Alice) and one receiver (Bob) holding her distribution message.
struct Group {
  DeterministicRng fixture_rng{17};
  crypto::SystemRng rng;
  InMemorySenderKeyStore alice_store;
  InMemorySenderKeyStore bob_store;
  SenderKeyName name{"group-1", ProtocolAddress{"alice", 1}};
  GroupCipher alice_cipher{alice_store, name, rng};
  GroupCipher bob_cipher{bob_store, name, rng};
  crypto::PublicKey signing_key;

  bool establish() {
    auto dist = create_distribution_message(alice_store, name, fixture_rng);
    if (!dist) return false;
    signing_key = dist->signing_key();
    return process_distribution_message(bob_store, name, *dist).is_ok();
  }
};

// 5a. One Sender Key encryption of 100 bytes: chain step, AES-256-CBC, and one XEdDSA signature
// (64 random bytes from SystemRng). The signature dominates: compare BM_SenderKeySign.
void BM_SenderKeyEncrypt(benchmark::State& state) {
  Group g;
  if (!g.establish()) {
    state.SkipWithError("sender key setup failed");
    return;
  }
  const Bytes m = message_bytes();
  for (auto _ : state) {
    auto out = g.alice_cipher.encrypt(m);
    if (!out) {
      state.SkipWithError("encrypt failed");
      break;
    }
    benchmark::DoNotOptimize(out->data());
  }
  state.counters["msgs/s"] = rate(state);
}
BENCHMARK(BM_SenderKeyEncrypt);

// 5b. One Sender Key decryption of 100 bytes, in order: parse, XEdDSA verify, chain step,
// AES-256-CBC. The verification dominates: compare BM_SenderKeyVerify.
void BM_SenderKeyDecrypt(benchmark::State& state) {
  Group g;
  if (!g.establish()) {
    state.SkipWithError("sender key setup failed");
    return;
  }
  const Bytes m = message_bytes();
  std::vector<Bytes> batch;
  batch.reserve(kDecryptChunk);
  auto refill = [&] {
    batch.clear();
    for (std::size_t i = 0; i < kDecryptChunk; ++i) {
      auto out = g.alice_cipher.encrypt(m);
      if (!out) return false;
      batch.push_back(std::move(out).value());
    }
    return true;
  };
  if (!refill()) {
    state.SkipWithError("encrypt failed");
    return;
  }
  std::size_t next = 0;
  for (auto _ : state) {
    if (next == batch.size()) {
      state.PauseTiming();
      const bool ok = refill();
      next = 0;
      state.ResumeTiming();
      if (!ok) {
        state.SkipWithError("encrypt failed");
        break;
      }
    }
    auto plain = g.bob_cipher.decrypt(batch[next++]);
    if (!plain) {
      state.SkipWithError("decrypt failed");
      break;
    }
    benchmark::DoNotOptimize(plain->data());
  }
  state.counters["msgs/s"] = rate(state);
}
BENCHMARK(BM_SenderKeyDecrypt);

// 5c. The signature alone: one XEdDSA signature over the signed part of a real 100-byte
// SenderKeyMessage (everything before the trailing 64 bytes), with SystemRng.
void BM_SenderKeySign(benchmark::State& state) {
  Group g;
  if (!g.establish()) {
    state.SkipWithError("sender key setup failed");
    return;
  }
  auto sample = g.alice_cipher.encrypt(message_bytes());
  if (!sample) {
    state.SkipWithError("encrypt failed");
    return;
  }
  const ByteView body = ByteView(*sample).first(sample->size() - crypto::kSignatureSize);
  const crypto::KeyPair signer = crypto::KeyPair::generate(g.fixture_rng);
  for (auto _ : state) {
    auto sig = signer.private_key.sign(body, g.rng);
    benchmark::DoNotOptimize(sig);
  }
  state.counters["ops/s"] = rate(state);
  state.counters["signed_bytes"] = static_cast<double>(body.size());
}
BENCHMARK(BM_SenderKeySign);

// 5d. The verification alone: SenderKeyMessage::verify_signature on a real message.
void BM_SenderKeyVerify(benchmark::State& state) {
  Group g;
  if (!g.establish()) {
    state.SkipWithError("sender key setup failed");
    return;
  }
  auto sample = g.alice_cipher.encrypt(message_bytes());
  if (!sample) {
    state.SkipWithError("encrypt failed");
    return;
  }
  auto parsed = SenderKeyMessage::parse(*sample);
  if (!parsed) {
    state.SkipWithError("parse failed");
    return;
  }
  for (auto _ : state) {
    const bool ok = parsed->verify_signature(g.signing_key);
    if (!ok) {
      state.SkipWithError("signature did not verify");
      break;
    }
    benchmark::DoNotOptimize(ok);
  }
  state.counters["ops/s"] = rate(state);
}
BENCHMARK(BM_SenderKeyVerify);

}  // namespace
}  // namespace parley::protocol

BENCHMARK_MAIN();
