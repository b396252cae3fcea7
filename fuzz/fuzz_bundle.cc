// Fuzzes prekey-bundle handling: verify_bundle and SessionBuilder::process_bundle, as run by
// Alice (who already has a session with Bob) on a bundle a server handed her.
//
// Input, read with FuzzedDataProvider (make_seeds.cc writes the same layout):
//   bool known_peer; u32 registration_id, device_id, signed_pre_key_id; u8 flags;
//   [u32 pre_key_id if flags&1]; bytes[33] signed prekey; [bytes[33] one-time prekey if flags&2];
//   flags&4: bytes[32] identity private scalar, the harness signs (u8 bit to flip if flags&8);
//   else:    bytes[33] identity public key, u8 signature length, signature bytes.
// The signing mode lets the fuzzer reach past the signature check (weak keys, trust, ids).
//
// Invariants: no crash; a bundle that does not verify is refused; a refused bundle leaves
// Alice's whole store (snapshot()) unchanged; an accepted one yields PreKeyWhisper messages
// carrying the bundle's ids.

#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>

#include "fuzz_support.h"
#include "protocol/keys.h"
#include "protocol/session_builder.h"

namespace parley::fuzz {
namespace {

using protocol::PreKeyBundle;

std::optional<crypto::PublicKey> consume_public_key(FuzzedDataProvider& fdp) {
  const auto raw = fdp.ConsumeBytes<std::uint8_t>(crypto::kSerializedPublicKeySize);
  auto key = crypto::PublicKey::deserialize(raw);
  if (!key) return std::nullopt;
  return *key;
}

// Reads a bundle; nullopt when the input runs out or a key does not even deserialize.
std::optional<PreKeyBundle> consume_bundle(FuzzedDataProvider& fdp) {
  PreKeyBundle b;
  b.registration_id = fdp.ConsumeIntegral<std::uint32_t>();
  b.device_id = fdp.ConsumeIntegral<std::uint32_t>();
  b.signed_pre_key_id = fdp.ConsumeIntegral<std::uint32_t>();
  const auto flags = fdp.ConsumeIntegral<std::uint8_t>();
  if (flags & 1) b.pre_key_id = fdp.ConsumeIntegral<std::uint32_t>();
  auto spk = consume_public_key(fdp);
  if (!spk) return std::nullopt;
  b.signed_pre_key = *spk;
  if (flags & 2) {
    auto opk = consume_public_key(fdp);
    if (!opk) return std::nullopt;
    b.pre_key = *opk;
  }
  if (flags & 4) {
    auto identity =
        crypto::KeyPair::from_private(fdp.ConsumeBytes<std::uint8_t>(crypto::kCurveKeySize));
    if (!identity) return std::nullopt;
    b.identity_key = identity->public_key;
    DeterministicRng rng(1);
    const auto sig = identity->private_key.sign(b.signed_pre_key.serialize(), rng);
    b.signed_pre_key_signature.assign(sig.begin(), sig.end());
    if (flags & 8) {
      const auto bit = fdp.ConsumeIntegral<std::uint8_t>();
      b.signed_pre_key_signature[(bit / 8) % sig.size()] ^=
          static_cast<std::uint8_t>(1u << (bit % 8));
    }
  } else {
    auto identity = consume_public_key(fdp);
    if (!identity) return std::nullopt;
    b.identity_key = *identity;
    b.signed_pre_key_signature =
        fdp.ConsumeBytes<std::uint8_t>(fdp.ConsumeIntegral<std::uint8_t>());
  }
  return b;
}

// Alice, with a session with Bob (so Bob's identity is known and trusted). Rebuilt only after
// a bundle is accepted, so every input starts from the same state.
std::unique_ptr<EstablishedSession> g_world;

void run(const std::uint8_t* data, std::size_t size) {
  if (!g_world) g_world = std::make_unique<EstablishedSession>();
  Party& alice = g_world->alice;
  FuzzedDataProvider fdp(data, size);
  const bool known_peer = fdp.ConsumeBool();
  const protocol::ProtocolAddress peer{known_peer ? "bob" : "carol", 1};
  auto bundle = consume_bundle(fdp);
  if (!bundle) return;

  const Status verified = protocol::verify_bundle(*bundle);
  const std::string before = alice.store.snapshot();
  DeterministicRng rng(2);
  protocol::SessionBuilder builder(alice.store.stores(), peer, rng);
  const Status processed = builder.process_bundle(*bundle);
  if (verbose()) {
    std::fprintf(stderr, "bundle for %s: verify %s, process %s\n", peer.name.c_str(),
                 verified.to_string().c_str(), processed.to_string().c_str());
  }
  if (!verified.is_ok()) PARLEY_FUZZ_CHECK(!processed.is_ok());
  if (!processed.is_ok()) {
    PARLEY_FUZZ_CHECK(alice.store.snapshot() == before);
    return;
  }

  // Accepted: Alice now speaks first with PreKeyWhisper messages naming the bundle's prekeys.
  protocol::SessionCipher cipher(alice.store.stores(), peer, rng);
  auto sent = cipher.encrypt(to_bytes("hello"));
  PARLEY_FUZZ_CHECK(sent.has_value() && sent->type == MessageType::kPreKeyWhisper);
  auto parsed = protocol::PreKeyWhisperMessage::parse(sent->serialized);
  PARLEY_FUZZ_CHECK(parsed.has_value());
  PARLEY_FUZZ_CHECK(parsed->pre_key_id() == bundle->pre_key_id);
  PARLEY_FUZZ_CHECK(parsed->signed_pre_key_id() == bundle->signed_pre_key_id);
  PARLEY_FUZZ_CHECK(parsed->identity_key() ==
                    alice.store.identity.identity_key_pair().value().public_key);
  auto registration = cipher.remote_registration_id();
  PARLEY_FUZZ_CHECK(registration.has_value() && *registration == bundle->registration_id);
  g_world.reset();
}

}  // namespace
}  // namespace parley::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  parley::fuzz::run(data, size);
  return 0;
}
