// parley-demo: the main job of `scripts/run` until the server exists.
//
// Two parties, each with in-memory stores and the system CSPRNG: Bob publishes a prekey
// bundle, Alice builds a Signal v3 session from it, and they exchange a few messages (one
// delivered out of order), each side printing what it decrypted. Both then compute their
// 60-digit safety number, which must be equal. Then a three-member group exchanges Sender Key
// messages. Exits non-zero if any step fails.
#include <cstdio>
#include <string>
#include <vector>

#include "crypto/primitives.h"
#include "protocol/fingerprint.h"
#include "protocol/in_memory_stores.h"
#include "protocol/keys.h"
#include "protocol/sender_keys.h"
#include "protocol/session_builder.h"
#include "protocol/session_cipher.h"

namespace {

using namespace parley;            // NOLINT: a main() file
using namespace parley::protocol;  // NOLINT

struct Person {
  Person(std::string n, Rng& rng)
      : name(std::move(n)),
        address{name, 1},
        party(generate_identity_key_pair(rng), generate_registration_id(rng)) {}
  std::string name;
  ProtocolAddress address;
  InMemoryParty party;
};

bool fail(const std::string& what, const Status& s) {
  std::fprintf(stderr, "demo failed: %s: %s\n", what.c_str(), s.to_string().c_str());
  return false;
}

std::string spaced(const std::string& digits) {
  std::string out;
  for (std::size_t i = 0; i < digits.size(); i += 5) {
    if (!out.empty()) out += (i % 30 == 0) ? "\n                 " : " ";
    out += digits.substr(i, 5);
  }
  return out;
}

bool run() {
  crypto::SystemRng rng;
  Person alice("alice", rng), bob("bob", rng);

  // Bob publishes a bundle: identity, a signed prekey and one one-time prekey.
  auto bob_identity = bob.party.identity.identity_key_pair().value();
  SignedPreKeyRecord spk = generate_signed_pre_key(bob_identity, 1, 0, rng);
  PreKeyRecord opk = std::move(generate_pre_keys(1, 1, rng).front());
  bob.party.signed_pre_keys.store_signed_pre_key(spk).ignore();
  bob.party.pre_keys.store_pre_key(opk).ignore();
  PreKeyBundle bundle;
  bundle.registration_id = bob.party.identity.local_registration_id().value();
  bundle.pre_key_id = opk.id;
  bundle.pre_key = opk.key_pair.public_key;
  bundle.signed_pre_key_id = spk.id;
  bundle.signed_pre_key = spk.key_pair.public_key;
  bundle.signed_pre_key_signature.assign(spk.signature.begin(), spk.signature.end());
  bundle.identity_key = bob_identity.public_key;

  Status built = SessionBuilder(alice.party.stores(), bob.address, rng).process_bundle(bundle);
  if (!built.is_ok()) return fail("alice processes bob's bundle", built);
  std::printf("alice built a session from bob's bundle (signed prekey verified)\n");

  SessionCipher alice_to_bob(alice.party.stores(), bob.address, rng);
  SessionCipher bob_to_alice(bob.party.stores(), alice.address, rng);
  auto say = [&](SessionCipher& cipher, const std::string& from, const std::string& text)
      -> Result<CiphertextMessage> {
    auto c = cipher.encrypt(to_bytes(text));
    if (c) {
      std::printf("%-5s sends  %-34s as a %s (%zu bytes)\n", from.c_str(), ("\"" + text + "\"").c_str(),
                  c->type == MessageType::kPreKeyWhisper ? "PreKeyWhisperMessage" : "WhisperMessage",
                  c->serialized.size());
    }
    return c;
  };
  auto hear = [&](SessionCipher& cipher, const std::string& who, const CiphertextMessage& m) {
    auto p = cipher.decrypt(m.type, m.serialized);
    if (!p) return fail(who + " decrypts", p.error());
    std::printf("%-5s reads  \"%s\"\n", who.c_str(), std::string(as_chars(*p)).c_str());
    return true;
  };

  auto a1 = say(alice_to_bob, "alice", "Hi Bob, is this line safe?");
  auto a2 = say(alice_to_bob, "alice", "(sent second, delivered last)");
  auto a3 = say(alice_to_bob, "alice", "Only our two phones can read it.");
  if (!a1 || !a2 || !a3) return fail("alice encrypts", a1.status());
  if (!hear(bob_to_alice, "bob", *a1) || !hear(bob_to_alice, "bob", *a3)) return false;
  auto b1 = say(bob_to_alice, "bob", "Loud and clear.");
  if (!b1) return fail("bob encrypts", b1.error());
  if (!hear(alice_to_bob, "alice", *b1) || !hear(bob_to_alice, "bob", *a2)) return false;
  auto a4 = say(alice_to_bob, "alice", "Ratchet turned: new keys now.");
  if (!a4 || !hear(bob_to_alice, "bob", *a4)) return false;

  // Replaying a message is refused.
  auto replay = bob_to_alice.decrypt(a4->type, a4->serialized);
  std::printf("bob refuses a replayed message: %s\n",
              replay ? "NO (bug)" : replay.error().to_string().c_str());
  if (replay) return false;

  // Safety numbers: each side computes from its own view; they must match.
  auto alice_identity = alice.party.identity.identity_key_pair().value();
  auto fa = create_fingerprint(kFingerprintIterations, as_bytes(alice.name), alice_identity.public_key,
                               as_bytes(bob.name), bob_identity.public_key);
  auto fb = create_fingerprint(kFingerprintIterations, as_bytes(bob.name), bob_identity.public_key,
                               as_bytes(alice.name), alice_identity.public_key);
  std::printf("safety number:   %s\n", spaced(fa.display_text()).c_str());
  if (fa.display_text() != fb.display_text()) {
    std::printf("safety numbers differ (bug)\n");
    return false;
  }
  std::printf("safety numbers match on both sides\n");

  // A group of three with Sender Keys: alice distributes her sender key, bob and carol read.
  Person carol("carol", rng);
  const SenderKeyName alice_in_group{"demo-group", alice.address};
  auto skdm = create_distribution_message(alice.party.sender_keys, alice_in_group, rng);
  if (!skdm) return fail("alice creates her sender key", skdm.error());
  for (Person* member : {&bob, &carol}) {
    Status s = process_distribution_message(member->party.sender_keys, alice_in_group, *skdm);
    if (!s.is_ok()) return fail(member->name + " processes alice's sender key", s);
  }
  GroupCipher alice_group(alice.party.sender_keys, alice_in_group, rng);
  auto g = alice_group.encrypt(to_bytes(std::string("Hello group, one ciphertext for all.")));
  if (!g) return fail("alice encrypts to the group", g.error());
  for (Person* member : {&bob, &carol}) {
    auto p = GroupCipher(member->party.sender_keys, alice_in_group, rng).decrypt(*g);
    if (!p) return fail(member->name + " decrypts the group message", p.error());
    std::printf("%-5s reads  \"%s\" (group, %zu bytes)\n", member->name.c_str(),
                std::string(as_chars(*p)).c_str(), g->size());
  }
  return true;
}

}  // namespace

int main() { return run() ? 0 : 1; }
