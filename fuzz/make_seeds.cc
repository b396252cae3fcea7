// Writes the seed corpora of the fuzz targets: real messages, records, bundles and interaction
// scripts made with the protocol API from fixed DeterministicRng seeds, so the output is the
// same on every run. Usage: parley_fuzz_make_seeds <corpus dir>  (fuzz/corpus in the repo).
// Creates <corpus dir>/<target>/<name> and overwrites existing files of the same name.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "crypto/primitives.h"
#include "fuzz_support.h"
#include "protocol/keys.h"
#include "protocol/sender_keys.h"
#include "session_input.h"

namespace parley::fuzz {
namespace {

namespace fs = std::filesystem;

class CorpusWriter {
 public:
  explicit CorpusWriter(fs::path root) : root_(std::move(root)) {}

  void write(const std::string& target, const std::string& name, ByteView bytes) {
    const fs::path dir = root_ / target;
    fs::create_directories(dir);
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    PARLEY_FUZZ_CHECK(out.good());
  }
  // `selector` first, then the payload (targets that multiplex decoders on the first byte).
  void write_selected(const std::string& target, const std::string& name, std::uint8_t selector,
                      ByteView bytes) {
    Bytes b{selector};
    append(b, bytes);
    write(target, name, b);
  }

 private:
  fs::path root_;
};

void message_seeds(CorpusWriter& out, EstablishedSession& w) {
  // Whisper messages: Alice's second chain and Bob's answer.
  out.write("fuzz_whisper_message", "alice_m2", w.m2.serialized);
  out.write("fuzz_whisper_message", "alice_m3_long", w.m3.serialized);
  out.write("fuzz_whisper_message", "bob_r0", w.r0.serialized);
  const crypto::PublicKey key = w.alice.store.identity.identity_key_pair()->public_key;
  auto empty = protocol::WhisperMessage::create(Bytes(32, 1), key, 7, 3, {}, key, key);
  PARLEY_FUZZ_CHECK(empty.has_value());
  out.write("fuzz_whisper_message", "empty_ciphertext", empty->serialized());

  // PreKeyWhisper messages, with and without a one-time prekey.
  out.write("fuzz_prekey_message", "with_one_time_prekey_m0", w.m0.serialized);
  out.write("fuzz_prekey_message", "with_one_time_prekey_m1", w.m1.serialized);
  DeterministicRng rng(99);
  Party a("alice", rng, 1);
  Party b("bob", rng, 1);
  PARLEY_FUZZ_CHECK(a.builder_for(b, rng).process_bundle(b.bundle(0)).is_ok());
  out.write("fuzz_prekey_message", "without_one_time_prekey",
            send_or_die(a, b, "no one-time prekey", rng).serialized);

  // Bob's decrypt target: what is still in flight to him, a replay and a wrong-way message.
  out.write("fuzz_session_decrypt", "prekey_m1_undelivered", w.m1.serialized);
  out.write("fuzz_session_decrypt", "whisper_m2_new_chain", w.m2.serialized);
  out.write("fuzz_session_decrypt", "whisper_m3_skips_m2", w.m3.serialized);
  out.write("fuzz_session_decrypt", "prekey_m0_replay", w.m0.serialized);
  out.write("fuzz_session_decrypt", "whisper_r0_wrong_direction", w.r0.serialized);
}

void group_and_record_seeds(CorpusWriter& out, EstablishedSession& w) {
  DeterministicRng rng(123);
  const protocol::SenderKeyName group{"seed-group", w.alice.address};
  auto& alice_keys = w.alice.store.sender_keys;
  auto& bob_keys = w.bob.store.sender_keys;
  auto skdm = protocol::create_distribution_message(alice_keys, group, rng);
  PARLEY_FUZZ_CHECK(skdm.has_value());
  PARLEY_FUZZ_CHECK(protocol::process_distribution_message(bob_keys, group, *skdm).is_ok());
  protocol::GroupCipher alice_cipher(alice_keys, group, rng);
  std::vector<Bytes> sent;
  for (int i = 0; i < 4; ++i) {
    auto c = alice_cipher.encrypt(to_bytes("group message " + std::to_string(i)));
    PARLEY_FUZZ_CHECK(c.has_value());
    sent.push_back(*c);
  }
  protocol::GroupCipher bob_cipher(bob_keys, group, rng);
  PARLEY_FUZZ_CHECK(bob_cipher.decrypt(sent[3]).has_value());  // leaves 3 skipped keys
  auto rotated = protocol::rotate_sender_key(alice_keys, group, rng);
  PARLEY_FUZZ_CHECK(rotated.has_value());

  const std::string skm = "fuzz_sender_key_message";
  out.write_selected(skm, "message_iteration0", 0, sent[0]);
  out.write_selected(skm, "message_iteration3", 0, sent[3]);
  out.write_selected(skm, "distribution_initial", 1, skdm->serialized());
  out.write_selected(skm, "distribution_rotated", 1, rotated->serialized());

  const std::string rec = "fuzz_records";
  auto bob_session = w.bob.store.sessions.load_session(w.alice.address);
  auto alice_session = w.alice.store.sessions.load_session(w.bob.address);
  PARLEY_FUZZ_CHECK(bob_session.has_value() && bob_session->has_value());
  PARLEY_FUZZ_CHECK(alice_session.has_value() && alice_session->has_value());
  out.write_selected(rec, "session_bob", 0, (*bob_session)->serialize());
  out.write_selected(rec, "session_alice", 0, (*alice_session)->serialize());
  auto alice_record = alice_keys.load_sender_key(group);
  auto bob_record = bob_keys.load_sender_key(group);
  PARLEY_FUZZ_CHECK(alice_record.has_value() && alice_record->has_value());
  PARLEY_FUZZ_CHECK(bob_record.has_value() && bob_record->has_value());
  out.write_selected(rec, "sender_key_own_chain", 1, (*alice_record)->serialize());
  out.write_selected(rec, "sender_key_with_skipped_keys", 1, (*bob_record)->serialize());
  auto pre_key = w.bob.store.pre_keys.load_pre_key(2);
  PARLEY_FUZZ_CHECK(pre_key.has_value());
  out.write_selected(rec, "pre_key", 2, pre_key->serialize());
  auto signed_pre_key = w.bob.store.signed_pre_keys.load_signed_pre_key(1);
  PARLEY_FUZZ_CHECK(signed_pre_key.has_value());
  out.write_selected(rec, "signed_pre_key", 3, signed_pre_key->serialize());
}

// fuzz_bundle's layout (see fuzz_bundle.cc).
struct BundleSeed {
  bool known_peer = true;
  protocol::PreKeyBundle bundle;
  std::optional<crypto::KeyPair> signer;  // flags&4: the harness signs with this identity
  std::optional<std::uint8_t> flip_bit;   // flags&8
};

Bytes encode_bundle_seed(const BundleSeed& s) {
  SeedWriter w;
  const auto& b = s.bundle;
  w.integral<std::uint8_t>(s.known_peer ? 1 : 0);
  w.integral(b.registration_id);
  w.integral(b.device_id);
  w.integral(b.signed_pre_key_id);
  std::uint8_t flags = 0;
  if (b.pre_key_id) flags |= 1;
  if (b.pre_key) flags |= 2;
  if (s.signer) flags |= 4;
  if (s.flip_bit) flags |= 8;
  w.integral(flags);
  if (b.pre_key_id) w.integral(*b.pre_key_id);
  w.bytes(b.signed_pre_key.serialize());
  if (b.pre_key) w.bytes(b.pre_key->serialize());
  if (s.signer) {
    w.bytes(s.signer->private_key.bytes().view());
    if (s.flip_bit) w.integral(*s.flip_bit);
  } else {
    w.bytes(b.identity_key.serialize());
    w.integral(static_cast<std::uint8_t>(b.signed_pre_key_signature.size()));
    w.bytes(b.signed_pre_key_signature);
  }
  return w.finish();
}

void bundle_seeds(CorpusWriter& out) {
  // A fresh world: the same Bob as the fuzz target's, before anything was sent.
  EstablishedSession w;
  const std::string t = "fuzz_bundle";
  BundleSeed real{true, w.bob.bundle(2), std::nullopt, std::nullopt};
  out.write(t, "bob_real_bundle", encode_bundle_seed(real));

  BundleSeed carol = {false, w.bob.bundle(0), std::nullopt, std::nullopt};
  out.write(t, "new_peer_without_one_time_prekey", encode_bundle_seed(carol));

  DeterministicRng rng(5);
  BundleSeed signed_by_harness{false, w.bob.bundle(2), crypto::KeyPair::generate(rng),
                               std::nullopt};
  out.write(t, "harness_signed", encode_bundle_seed(signed_by_harness));

  BundleSeed changed_identity{true, w.bob.bundle(2), crypto::KeyPair::generate(rng), std::nullopt};
  out.write(t, "known_peer_changed_identity", encode_bundle_seed(changed_identity));

  BundleSeed weak{false, w.bob.bundle(0), crypto::KeyPair::generate(rng), std::nullopt};
  Bytes zero(crypto::kSerializedPublicKeySize, 0);
  zero[0] = crypto::kDjbKeyType;
  weak.bundle.signed_pre_key = crypto::PublicKey::deserialize(zero).value();
  out.write(t, "low_order_signed_pre_key", encode_bundle_seed(weak));

  BundleSeed bad_signature{false, w.bob.bundle(2), crypto::KeyPair::generate(rng),
                           std::uint8_t{77}};
  out.write(t, "bad_signature", encode_bundle_seed(bad_signature));

  BundleSeed id_without_key{false, w.bob.bundle(2), std::nullopt, std::nullopt};
  id_without_key.bundle.pre_key.reset();
  out.write(t, "pre_key_id_without_key", encode_bundle_seed(id_without_key));
}

// fuzz_interaction scripts: a setup byte, then (op, arg) pairs (see fuzz_interaction.cc).
void interaction_seeds(CorpusWriter& out) {
  enum : std::uint8_t {
    kASend = 0,
    kBSend,
    kToB,
    kToA,
    kDropB,
    kDropA,
    kReplayB,
    kReplayA,
    kReorder,
    kGroupSend,
    kGroupDeliver,
    kGroupDrop,
    kGroupReplay,
    kRotate,
    kDistribution
  };
  const std::string t = "fuzz_interaction";
  auto script = [&](const std::string& name, std::uint8_t setup,
                    const std::vector<std::pair<std::uint8_t, std::uint8_t>>& actions) {
    Bytes b{setup};
    for (auto [op, arg] : actions) {
      b.push_back(op);
      b.push_back(arg);
    }
    out.write(t, name, b);
  };

  std::vector<std::pair<std::uint8_t, std::uint8_t>> ping_pong;
  for (int i = 0; i < 8; ++i) {
    ping_pong.insert(ping_pong.end(), {{kASend, 0}, {kToB, 0}, {kBSend, 0}, {kToA, 0}});
  }
  ping_pong.insert(ping_pong.end(), {{kReplayB, 3}, {kReplayA, 1}});
  script("ping_pong", 1, ping_pong);

  // Alice's PreKeyWhisper messages arrive out of order, some after Bob already answered.
  script("late_prekey_messages", 0,
         {{kASend, 0},
          {kASend, 0},
          {kASend, 0},
          {kASend, 0},
          {kToB, 2},
          {kBSend, 0},
          {kToA, 0},
          {kASend, 0},
          {kToB, 3},
          {kToB, 0},
          {kToB, 1},
          {kToB, 0},
          {kReplayB, 0},
          {kReplayB, 2}});

  // One message held back for many ratchet turns (its chain gets evicted).
  std::vector<std::pair<std::uint8_t, std::uint8_t>> evict = {{kASend, 0}, {kToB, 0}, {kASend, 0}};
  for (int i = 0; i < 7; ++i) {
    evict.insert(evict.end(), {{kBSend, 0}, {kToA, 0}, {kASend, 0}, {kToB, 1}});
  }
  evict.insert(evict.end(), {{kToB, 0}, {kReplayB, 0}});
  script("held_back_across_ratchet_turns", 1, evict);

  script("drops_and_reorders", 1,
         {{kASend, 0},
          {kASend, 0},
          {kASend, 0},
          {kDropB, 1},
          {kReorder, 0},
          {kToB, 0},
          {kBSend, 0},
          {kBSend, 0},
          {kBSend, 0},
          {kReorder, 1},
          {kDropA, 0},
          {kToA, 1},
          {kToA, 0},
          {kReplayA, 0},
          {kASend, 0},
          {kToB, 0},
          {kToB, 0}});

  script("group", 2,
         {{kGroupSend, 0},    {kGroupSend, 0},    {kGroupDeliver, 0}, {kDistribution, 0},
          {kGroupSend, 0},    {kGroupSend, 0},    {kGroupDeliver, 1}, {kGroupDeliver, 0},
          {kGroupReplay, 0},  {kRotate, 0},       {kGroupSend, 0},    {kGroupDeliver, 1},
          {kDistribution, 1}, {kGroupDeliver, 0}, {kDistribution, 0}, {kGroupReplay, 1},
          {kGroupSend, 0},    {kGroupDrop, 0},    {kGroupSend, 0},    {kGroupDeliver, 0}});
}

void fingerprint_seeds(CorpusWriter& out) {
  const FingerprintPair p = make_fingerprint_pair();
  const std::string t = "fuzz_fingerprint";
  out.write(t, "alice_payload", p.alice.scannable_payload());
  out.write(t, "bob_payload", p.bob.scannable_payload());
  Bytes other_version = p.bob.scannable_payload();
  PARLEY_FUZZ_CHECK(other_version.size() > 2 && other_version[0] == 0x08);  // field 1, varint
  other_version[1] = 2;
  out.write(t, "other_version", other_version);
}

// fuzz_session scripts (session_input.h): what a client does, from registration to acks, with
// two connections where it matters. Signatures and acknowledged ids are left for the harness
// to fill in.
namespace session_seeds_detail {

wire::Frame request(std::uint64_t id) {
  wire::Frame f;
  f.mutable_request()->set_id(id);
  return f;
}

void fill_keys(wire::SignedPreKey* spk, std::uint32_t id) {
  spk->set_id(id);
  spk->set_public_key(std::string(1, '\x05') + std::string(32, static_cast<char>(id)));
  spk->set_signature(std::string(64, 's'));
}

wire::Frame register_frame(std::uint64_t id, const std::string& name, std::uint32_t registration,
                           const std::string& invite = "", const std::string& recovery_hash = "",
                           const std::string& recovery_code = "") {
  wire::Frame f = request(id);
  auto* r = f.mutable_request()->mutable_register_();
  r->set_name(name);
  r->set_identity_key(std::string(1, '\x05') + std::string(32, 'i'));
  r->set_registration_id(registration);
  fill_keys(r->mutable_signed_pre_key(), 1);
  for (std::uint32_t k = 1; k <= 3; ++k) {
    auto* pk = r->add_pre_keys();
    pk->set_id(k);
    pk->set_public_key(std::string(1, '\x05') + std::string(32, static_cast<char>('a' + k)));
  }
  r->set_invite_token(invite);
  r->set_recovery_hash(recovery_hash);
  r->set_recovery_code(recovery_code);
  return f;
}

wire::Frame login_frame(std::uint64_t id, const std::string& name, bool batches) {
  wire::Frame f = request(id);
  auto* l = f.mutable_request()->mutable_login();
  l->set_name(name);
  l->set_device_id(1);
  l->set_accept_batches(batches);
  return f;
}

void fill_send(wire::SendRequest* s, const std::string& to, std::uint32_t registration,
               char message_id, const std::string& content) {
  s->set_destination(to);
  s->set_client_message_id(std::string(16, message_id));
  auto* m = s->add_messages();
  m->set_device_id(1);
  m->set_registration_id(registration);
  m->set_type(1);
  m->set_content(content);
}

wire::Frame send_frame(std::uint64_t id, const std::string& to, std::uint32_t registration,
                       char message_id, const std::string& content) {
  wire::Frame f = request(id);
  fill_send(f.mutable_request()->mutable_send(), to, registration, message_id, content);
  return f;
}

// A script that starts with alice (registration id 7) on connection 0 and bob (9) on 1.
SessionInput alice_and_bob(std::uint8_t config) {
  SessionInput in(config);
  in.message(0, register_frame(1, "alice", 7));
  in.message(1, register_frame(1, "bob", 9));
  in.settle();
  return in;
}

wire::Frame ping_frame(std::uint64_t id) {
  wire::Frame f = request(id);
  f.mutable_request()->mutable_ping();
  return f;
}

// An acknowledgement of the `k`-th pushed envelope (the harness fills in its id).
wire::Frame ack_frame(std::uint64_t id, std::uint8_t k, bool one_way) {
  wire::Frame f;
  wire::AckRequest* a = one_way ? f.mutable_ack() : f.mutable_request()->mutable_ack();
  if (!one_way) f.mutable_request()->set_id(id);
  a->add_server_ids(std::string(1, static_cast<char>(k)));
  return f;
}

}  // namespace session_seeds_detail

void session_seeds(CorpusWriter& out) {
  using namespace session_seeds_detail;
  const std::string t = "fuzz_session";
  {  // Every request: alice sends to bob, who acknowledges; keys, bundles, devices, a slot.
    SessionInput in(kSessionOpen);
    in.message(0, register_frame(1, "Alice", 7));
    in.message(1, register_frame(1, "bob", 9));
    in.settle();
    in.message(0, send_frame(2, "bob", 9, 'a', "first ciphertext"));
    in.message(0, send_frame(3, "bob", 9, 'a', "first ciphertext"));  // a resend
    in.settle();
    in.message(1, ack_frame(2, 0, false));
    wire::Frame keys = request(5);
    auto* up = keys.mutable_request()->mutable_upload_keys();
    fill_keys(up->mutable_signed_pre_key(), 2);
    auto* pk = up->add_pre_keys();
    pk->set_id(9);
    pk->set_public_key(std::string(1, '\x05') + std::string(32, 'z'));
    in.message(0, keys);
    wire::Frame count = request(6);
    count.mutable_request()->mutable_key_count();
    in.message(0, count);
    wire::Frame bundles = request(7);
    bundles.mutable_request()->mutable_fetch_bundles()->set_name("bob");
    in.message(0, bundles);
    wire::Frame devices = request(8);
    devices.mutable_request()->mutable_devices()->set_name("alice");
    in.message(1, devices);
    wire::Frame slot = request(9);
    slot.mutable_request()->mutable_attachment_slot()->set_size(1000);
    in.message(0, slot);
    wire::Frame ping = request(10);
    ping.mutable_request()->mutable_ping();
    in.message(0, ping);
    in.settle();
    out.write(t, "every_request", in.bytes());
  }
  {  // Two accounts: sends both ways, a multi-send, a reconnect that drains the queue.
    SessionInput in = alice_and_bob(kSessionOpen);
    in.message(0, send_frame(2, "bob", 9, 'b', "to bob"));
    in.settle();
    in.message(1, ack_frame(0, 0, true));
    wire::Frame multi = request(3);
    fill_send(multi.mutable_request()->mutable_multi_send()->add_sends(), "bob", 9, 'c', "multi 1");
    fill_send(multi.mutable_request()->mutable_multi_send()->add_sends(), "nobody", 1, 'c', "x");
    in.message(0, multi);
    in.message(1, send_frame(2, "alice", 7, 'c', "to alice"));
    in.settle();
    in.close(1);
    in.message(0, send_frame(4, "bob", 9, 'd', "while bob is away"));
    in.message(0, send_frame(5, "bob", 8, 'e', "a stale registration id"));
    in.settle();
    in.message(1, login_frame(1, "bob", true));
    in.settle();
    in.message(1, ack_frame(2, 0, false));
    in.message(1, ack_frame(0, 1, true));
    in.message(0, login_frame(6, "alice", false));  // already logged in
    in.settle();
    out.write(t, "two_clients", in.bytes());
  }
  {  // A second login of the same device replaces the first; a recovery replaces the device
     // while a send to it is under way.
    SessionInput in(kSessionOpen);
    const auto hash = crypto::sha256(as_bytes(std::string_view("recovery code 0123456789")));
    in.message(0, register_frame(1, "carol", 5, "", std::string(as_chars(hash))));
    in.message(1, register_frame(1, "dan", 3));
    in.settle();
    in.close(1);
    in.message(1, login_frame(1, "carol", false));
    in.settle();
    in.close(1);
    in.message(1, login_frame(1, "dan", false));
    in.message(0, ping_frame(2));  // a new connection, not logged in
    in.settle();
    in.message(0, register_frame(3, "carol", 6, "", "", "recovery code 0123456789"));
    in.message(1, send_frame(2, "carol", 5, 'b', "raced with the recovery"));
    in.settle();
    in.message(1, send_frame(3, "carol", 6, 'c', "after the recovery"));
    in.settle();
    out.write(t, "replace_and_recover", in.bytes());
  }
  {  // Invitations: a wrong one, the right one, the right one used again.
    SessionInput in(kSessionInviteOnly);
    in.message(0, register_frame(1, "dave", 3, "not the invitation"));
    in.settle();
    in.message(0, register_frame(2, "dave", 3, std::string(kSessionInvite)));
    in.settle();
    in.advance(3600);
    in.message(1, register_frame(1, "erin", 4, std::string(kSessionInvite)));
    in.message(1, register_frame(2, "erin", 4));
    in.settle();
    out.write(t, "invites", in.bytes());
  }
  {  // A queue of 4 fills; two requests in flight at most.
    SessionInput in = alice_and_bob(kSessionOpen | kSessionSmallQueues | kSessionFewInflight);
    in.close(1);
    for (char i = 0; i < 6; ++i) {
      in.message(0, send_frame(2 + static_cast<std::uint64_t>(i), "bob", 9,
                               static_cast<char>('a' + i), std::string(10, i)));
      if (i % 2 == 1) in.settle();
    }
    in.message(1, login_frame(1, "bob", false));
    in.settle();
    out.write(t, "limits", in.bytes());
  }
  {  // The server drains: sends and registrations are refused, acknowledgements still delete.
    SessionInput in = alice_and_bob(kSessionOpen);
    in.message(0, send_frame(2, "bob", 9, 'a', "before the drain"));
    in.drain_and_settle();
    in.message(1, ack_frame(2, 0, false));
    in.message(0, send_frame(3, "bob", 9, 'b', "during the drain"));
    wire::Frame bundles = request(4);
    bundles.mutable_request()->mutable_fetch_bundles()->set_name("bob");
    in.message(0, bundles);
    in.close(1);
    in.message(1, register_frame(1, "carol", 5));
    in.settle();
    out.write(t, "drain", in.bytes());
  }
  {  // Housekeeping expires what waited too long, one envelope pushed and not yet acknowledged.
    SessionInput in = alice_and_bob(kSessionOpen);
    in.message(0, send_frame(2, "bob", 9, 'a', "pushed, not acknowledged"));
    in.settle();
    in.close(1);
    in.message(0, send_frame(3, "bob", 9, 'b', "queued while bob is away"));
    in.settle();
    in.advance_and_expire(7200);
    in.message(0, send_frame(4, "bob", 9, 'c', "after the expiry"));
    in.message(1, login_frame(1, "bob", true));
    in.settle();
    in.message(1, ack_frame(2, 0, false));
    in.settle();
    out.write(t, "expiry", in.bytes());
  }
  {  // Frames the server must refuse: garbage, a push, a request before login, a rate limit.
    SessionInput in(kSessionPow | kSessionSmallBurst);
    wire::Frame count = request(1);
    count.mutable_request()->mutable_key_count();
    in.message(0, count);
    in.message(0, ack_frame(0, 0, true));  // before login: closes
    in.raw(1, std::string("\x0a\xff\xff\xff\xff\x0f", 6));
    in.settle();
    for (std::uint64_t id = 1; id <= 10; ++id) {
      wire::Frame ping = request(id);
      ping.mutable_request()->mutable_ping();
      in.message(0, ping);
    }
    in.message(0, register_frame(11, "frank", 2));  // no proof of work
    in.settle();
    out.write(t, "refusals", in.bytes());
  }
}

}  // namespace
}  // namespace parley::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  parley::fuzz::CorpusWriter out{std::filesystem::path(argv[1])};
  parley::fuzz::EstablishedSession world;
  parley::fuzz::message_seeds(out, world);
  parley::fuzz::group_and_record_seeds(out, world);
  parley::fuzz::bundle_seeds(out);
  parley::fuzz::interaction_seeds(out);
  parley::fuzz::fingerprint_seeds(out);
  parley::fuzz::session_seeds(out);
  return 0;
}
