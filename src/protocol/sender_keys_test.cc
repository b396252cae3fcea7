// Sender Keys (libsignal-c format): group round trips, refusals, rotation and record persistence.

#include "protocol/sender_keys.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/rng.h"
#include "signal/storage.pb.h"
#include "signal/wire.pb.h"

namespace parley::protocol {
namespace {

// A minimal in-memory SenderKeyStore: load returns a copy, as the store contract requires.
class TestSenderKeyStore final : public SenderKeyStore {
 public:
  Result<std::optional<SenderKeyRecord>> load_sender_key(const SenderKeyName& name) override {
    auto it = records_.find(name);
    if (it == records_.end()) return std::optional<SenderKeyRecord>();
    return std::optional<SenderKeyRecord>(it->second);
  }
  Status store_sender_key(const SenderKeyName& name, const SenderKeyRecord& record) override {
    records_.insert_or_assign(name, record);
    ++writes_;
    return Status::ok();
  }

  // The serialized record for `name` (empty when absent): equal snapshots mean equal state.
  Bytes snapshot(const SenderKeyName& name) const {
    auto it = records_.find(name);
    return it == records_.end() ? Bytes() : it->second.serialize();
  }
  int writes() const { return writes_; }

 private:
  std::map<SenderKeyName, SenderKeyRecord> records_;
  int writes_ = 0;
};

Bytes text(std::string_view s) { return to_bytes(s); }

// Alice sends to a group; Bob and Carol receive. Each has their own store.
class SenderKeysTest : public ::testing::Test {
 protected:
  SenderKeysTest()
      : rng_(42),
        name_{"group-1", ProtocolAddress{"alice", 1}},
        alice_cipher_(alice_, name_, rng_),
        bob_cipher_(bob_, name_, rng_),
        carol_cipher_(carol_, name_, rng_) {}

  void SetUp() override {
    auto skdm = create_distribution_message(alice_, name_, rng_);
    ASSERT_TRUE(skdm.has_value());
    // Over the wire (inside 1:1 sessions), then parsed by each receiver.
    auto parsed = SenderKeyDistributionMessage::parse(skdm->serialized());
    ASSERT_TRUE(parsed.has_value()) << parsed.error().to_string();
    ASSERT_TRUE(process_distribution_message(bob_, name_, *parsed).is_ok());
    ASSERT_TRUE(process_distribution_message(carol_, name_, *parsed).is_ok());
  }

  Bytes encrypt(std::string_view plaintext) {
    auto ct = alice_cipher_.encrypt(text(plaintext));
    EXPECT_TRUE(ct.has_value());
    return ct.has_value() ? *ct : Bytes();
  }

  DeterministicRng rng_;
  SenderKeyName name_;
  TestSenderKeyStore alice_, bob_, carol_;
  GroupCipher alice_cipher_, bob_cipher_, carol_cipher_;
};

TEST_F(SenderKeysTest, GroupOfThreeRoundTrip) {
  for (int i = 0; i < 5; ++i) {
    std::string msg = "hello group " + std::to_string(i);
    Bytes ct = encrypt(msg);
    ASSERT_EQ(ct[0], 0x33);
    auto at_bob = bob_cipher_.decrypt(ct);
    auto at_carol = carol_cipher_.decrypt(ct);
    ASSERT_TRUE(at_bob.has_value()) << at_bob.error().to_string();
    ASSERT_TRUE(at_carol.has_value()) << at_carol.error().to_string();
    EXPECT_EQ(*at_bob, text(msg));
    EXPECT_EQ(*at_carol, text(msg));
  }
  // The empty plaintext is a valid message too.
  Bytes ct = encrypt("");
  auto empty = bob_cipher_.decrypt(ct);
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->empty());
}

TEST_F(SenderKeysTest, DistributionMessageFormat) {
  auto skdm = create_distribution_message(alice_, name_, rng_);
  ASSERT_TRUE(skdm.has_value());
  EXPECT_EQ(skdm->serialized()[0], 0x33);
  EXPECT_LE(skdm->key_id(), 0x7FFFFFFFu);
  EXPECT_EQ(skdm->iteration(), 0u);
  EXPECT_EQ(skdm->chain_key().size(), 32u);
  signal::wire::SenderKeyDistributionMessage p;
  ByteView body = skdm->serialized().subspan(1);
  ASSERT_TRUE(p.ParseFromArray(body.data(), static_cast<int>(body.size())));
  EXPECT_EQ(p.id(), skdm->key_id());
  EXPECT_EQ(p.signing_key().size(), 33u);
  EXPECT_EQ(p.chain_key().size(), 32u);

  // Asking again returns the same chain at its current iteration.
  encrypt("advance");
  auto again = create_distribution_message(alice_, name_, rng_);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->key_id(), skdm->key_id());
  EXPECT_EQ(again->iteration(), 1u);
  EXPECT_EQ(again->signing_key(), skdm->signing_key());
}

TEST_F(SenderKeysTest, MessageFormatAndSignature) {
  Bytes ct = encrypt("signed");
  auto m = SenderKeyMessage::parse(ct);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->version(), 3);
  EXPECT_EQ(m->iteration(), 0u);
  EXPECT_EQ(m->ciphertext().size() % 16, 0u);
  auto record = alice_.load_sender_key(name_);
  ASSERT_TRUE(record.has_value() && record->has_value());
  const SenderKeyState* state = (*record)->current_state();
  ASSERT_NE(state, nullptr);
  EXPECT_EQ(m->key_id(), state->key_id());
  EXPECT_TRUE(m->verify_signature(state->signing_public()));
  DeterministicRng other_rng(7);
  EXPECT_FALSE(m->verify_signature(crypto::KeyPair::generate(other_rng).public_key));
}

TEST_F(SenderKeysTest, OutOfOrderDelivery) {
  std::vector<Bytes> cts;
  for (int i = 0; i < 6; ++i) cts.push_back(encrypt("m" + std::to_string(i)));
  for (int i : {3, 0, 5, 1, 4, 2}) {
    auto pt = bob_cipher_.decrypt(cts[i]);
    ASSERT_TRUE(pt.has_value()) << i << ": " << pt.error().to_string();
    EXPECT_EQ(*pt, text("m" + std::to_string(i)));
  }
  // Every skipped key was consumed.
  auto record = bob_.load_sender_key(name_);
  ASSERT_TRUE(record.has_value() && record->has_value());
  EXPECT_TRUE((*record)->current_state()->message_keys().empty());
  EXPECT_EQ((*record)->current_state()->chain_key().iteration, 6u);
}

TEST_F(SenderKeysTest, DuplicateRefusedAndStoreUnchanged) {
  Bytes c0 = encrypt("zero");
  Bytes c1 = encrypt("one");
  Bytes c2 = encrypt("two");
  ASSERT_TRUE(bob_cipher_.decrypt(c2).has_value());  // skips 0 and 1
  ASSERT_TRUE(bob_cipher_.decrypt(c0).has_value());  // uses the stored key

  for (const Bytes& replay : {c0, c2}) {
    Bytes before = bob_.snapshot(name_);
    int writes = bob_.writes();
    auto again = bob_cipher_.decrypt(replay);
    ASSERT_FALSE(again.has_value());
    EXPECT_EQ(again.error().code(), ErrorCode::kDuplicateMessage);
    EXPECT_EQ(bob_.snapshot(name_), before);
    EXPECT_EQ(bob_.writes(), writes);
  }
  auto one = bob_cipher_.decrypt(c1);
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(*one, text("one"));
}

TEST_F(SenderKeysTest, TooFarAheadRefused) {
  Bytes first = encrypt("first");
  std::vector<Bytes> cts;
  for (std::uint32_t i = 1; i <= kMaxSenderKeyForwardJump + 1; ++i) cts.push_back(encrypt("x"));
  // Iteration 2001 with Bob's chain at 0: more than 2000 ahead.
  Bytes before = bob_.snapshot(name_);
  auto far = bob_cipher_.decrypt(cts.back());
  ASSERT_FALSE(far.has_value());
  EXPECT_EQ(far.error().code(), ErrorCode::kTooFarAhead);
  EXPECT_EQ(bob_.snapshot(name_), before);

  // Iteration 2000 is exactly at the limit and accepted; it keeps 2000 skipped keys.
  auto at_limit = carol_cipher_.decrypt(cts[cts.size() - 2]);
  ASSERT_TRUE(at_limit.has_value()) << at_limit.error().to_string();
  auto record = carol_.load_sender_key(name_);
  ASSERT_TRUE(record.has_value() && record->has_value());
  EXPECT_EQ((*record)->current_state()->message_keys().size(), kMaxSenderMessageKeys);
  auto old = carol_cipher_.decrypt(first);
  ASSERT_TRUE(old.has_value());
  EXPECT_EQ(*old, text("first"));
}

TEST_F(SenderKeysTest, SkippedKeysAreCapped) {
  std::vector<Bytes> cts;
  for (std::uint32_t i = 0; i <= 2 * kMaxSenderKeyForwardJump; ++i) cts.push_back(encrypt("y"));
  ASSERT_TRUE(bob_cipher_.decrypt(cts[kMaxSenderKeyForwardJump]).has_value());
  ASSERT_TRUE(bob_cipher_.decrypt(cts[2 * kMaxSenderKeyForwardJump]).has_value());
  auto record = bob_.load_sender_key(name_);
  ASSERT_TRUE(record.has_value() && record->has_value());
  const auto& keys = (*record)->current_state()->message_keys();
  ASSERT_EQ(keys.size(), kMaxSenderMessageKeys);
  // Skipped 0..1999 then 2001..3999: only the newest 2000 (1999, 2001..3999) are kept.
  EXPECT_EQ(keys.front().iteration, kMaxSenderKeyForwardJump - 1);
  EXPECT_EQ(keys.back().iteration, 2 * kMaxSenderKeyForwardJump - 1);
  auto dropped = bob_cipher_.decrypt(cts[5]);
  ASSERT_FALSE(dropped.has_value());
  EXPECT_EQ(dropped.error().code(), ErrorCode::kDuplicateMessage);
  EXPECT_TRUE(bob_cipher_.decrypt(cts[kMaxSenderKeyForwardJump + 1]).has_value());
}

TEST_F(SenderKeysTest, TamperingRefusedAndStoreUnchanged) {
  Bytes ct = encrypt("do not touch");
  const std::size_t sig_start = ct.size() - crypto::kSignatureSize;
  std::vector<Bytes> tampered;
  Bytes body = ct;
  body[sig_start - 1] ^= 0x01;  // last ciphertext byte
  tampered.push_back(body);
  Bytes sig = ct;
  sig[sig_start + 10] ^= 0x80;
  tampered.push_back(sig);
  Bytes sig_last = ct;
  sig_last.back() ^= 0x01;
  tampered.push_back(sig_last);

  for (const Bytes& t : tampered) {
    Bytes before = bob_.snapshot(name_);
    auto r = bob_cipher_.decrypt(t);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), ErrorCode::kBadSignature);
    EXPECT_EQ(bob_.snapshot(name_), before);
  }
  auto ok = bob_cipher_.decrypt(ct);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(*ok, text("do not touch"));
}

TEST_F(SenderKeysTest, ForgedBySomeoneElseRefused) {
  // A message under Alice's key id but signed by another key.
  Bytes ct = encrypt("real");
  auto m = SenderKeyMessage::parse(ct);
  ASSERT_TRUE(m.has_value());
  DeterministicRng mallory_rng(99);
  crypto::KeyPair mallory = crypto::KeyPair::generate(mallory_rng);
  SenderKeyMessage forged = SenderKeyMessage::create(m->key_id(), m->iteration(), m->ciphertext(),
                                                     mallory.private_key, mallory_rng);
  auto r = bob_cipher_.decrypt(forged.serialized());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kBadSignature);
}

TEST_F(SenderKeysTest, UnknownSenderOrKeyId) {
  Bytes ct = encrypt("hi");
  // Dave never received a distribution message.
  TestSenderKeyStore dave;
  GroupCipher dave_cipher(dave, name_, rng_);
  auto none = dave_cipher.decrypt(ct);
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), ErrorCode::kNoSenderKey);
  EXPECT_EQ(dave.writes(), 0);

  // A well-signed message with a key id Bob does not hold.
  auto record = alice_.load_sender_key(name_);
  ASSERT_TRUE(record.has_value() && record->has_value());
  const SenderKeyState* state = (*record)->current_state();
  SenderKeyMessage other = SenderKeyMessage::create(state->key_id() ^ 1u, 0, Bytes(16, 0),
                                                    *state->signing_private(), rng_);
  auto unknown = bob_cipher_.decrypt(other.serialized());
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code(), ErrorCode::kNoSenderKey);

  // A receiver cannot send on someone else's chain, and nobody can send without a chain.
  auto bob_sends = bob_cipher_.encrypt(text("no"));
  ASSERT_FALSE(bob_sends.has_value());
  EXPECT_EQ(bob_sends.error().code(), ErrorCode::kNoSenderKey);
  auto dave_sends = dave_cipher.encrypt(text("no"));
  ASSERT_FALSE(dave_sends.has_value());
  EXPECT_EQ(dave_sends.error().code(), ErrorCode::kNoSenderKey);
}

TEST_F(SenderKeysTest, WrongVersionRefused) {
  Bytes ct = encrypt("v");
  for (std::uint8_t v : {0x23, 0x43, 0x03, 0xF3}) {
    Bytes bad = ct;
    bad[0] = v;
    auto r = bob_cipher_.decrypt(bad);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), ErrorCode::kBadVersion) << int{v};
  }
  auto skdm = create_distribution_message(alice_, name_, rng_);
  ASSERT_TRUE(skdm.has_value());
  Bytes bad = to_bytes(skdm->serialized());
  bad[0] = 0x22;
  auto parsed = SenderKeyDistributionMessage::parse(bad);
  ASSERT_FALSE(parsed.has_value());
  EXPECT_EQ(parsed.error().code(), ErrorCode::kBadVersion);
}

TEST_F(SenderKeysTest, TruncatedAndOversizeRefused) {
  Bytes ct = encrypt("size");
  for (std::size_t len : {std::size_t{0}, std::size_t{1}, std::size_t{65}}) {
    auto r = bob_cipher_.decrypt(ByteView(ct).first(len));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), ErrorCode::kMalformed) << len;
  }
  // A cut in the middle leaves a body that no longer parses (or a bad signature).
  auto cut = bob_cipher_.decrypt(ByteView(ct).first(ct.size() - 1));
  ASSERT_FALSE(cut.has_value());
  EXPECT_TRUE(cut.error().code() == ErrorCode::kMalformed ||
              cut.error().code() == ErrorCode::kBadSignature);

  Bytes huge(kMaxSenderKeyMessageSize + 1, 0x33);
  auto big = bob_cipher_.decrypt(huge);
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().code(), ErrorCode::kTooLarge);

  // Missing fields: a protobuf with only an id.
  signal::wire::SenderKeyMessage partial;
  partial.set_id(1);
  Bytes incomplete = {0x33};
  append(incomplete, as_bytes(partial.SerializeAsString()));
  incomplete.resize(incomplete.size() + crypto::kSignatureSize, 0);
  auto inc = SenderKeyMessage::parse(incomplete);
  ASSERT_FALSE(inc.has_value());
  EXPECT_EQ(inc.error().code(), ErrorCode::kMalformed);

  auto skdm = create_distribution_message(alice_, name_, rng_);
  ASSERT_TRUE(skdm.has_value());
  for (std::size_t len : {std::size_t{0}, std::size_t{1}, skdm->serialized().size() - 1}) {
    auto r = SenderKeyDistributionMessage::parse(skdm->serialized().first(len));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), ErrorCode::kMalformed) << len;
  }
  Bytes big_skdm(kMaxSenderKeyDistributionMessageSize + 1, 0x33);
  auto r = SenderKeyDistributionMessage::parse(big_skdm);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kTooLarge);

  // A chain key of the wrong size.
  signal::wire::SenderKeyDistributionMessage p;
  p.set_id(1);
  p.set_iteration(0);
  p.set_chain_key(std::string(31, 'k'));
  p.set_signing_key(std::string(as_chars(skdm->signing_key().serialize())));
  Bytes short_key = {0x33};
  append(short_key, as_bytes(p.SerializeAsString()));
  auto sk = SenderKeyDistributionMessage::parse(short_key);
  ASSERT_FALSE(sk.has_value());
  EXPECT_EQ(sk.error().code(), ErrorCode::kMalformed);
}

TEST_F(SenderKeysTest, RotationLocksOutOldReceivers) {
  Bytes before_rotation = encrypt("before");
  auto old_skdm = create_distribution_message(alice_, name_, rng_);
  ASSERT_TRUE(old_skdm.has_value());

  // Carol is removed: Alice rotates and sends the new key to Bob only.
  auto new_skdm = rotate_sender_key(alice_, name_, rng_);
  ASSERT_TRUE(new_skdm.has_value());
  EXPECT_NE(new_skdm->key_id(), old_skdm->key_id());
  EXPECT_NE(new_skdm->signing_key(), old_skdm->signing_key());
  EXPECT_EQ(new_skdm->iteration(), 0u);
  ASSERT_TRUE(process_distribution_message(bob_, name_, *new_skdm).is_ok());

  Bytes after = encrypt("after");
  auto at_bob = bob_cipher_.decrypt(after);
  ASSERT_TRUE(at_bob.has_value()) << at_bob.error().to_string();
  EXPECT_EQ(*at_bob, text("after"));
  Bytes carol_before = carol_.snapshot(name_);
  auto at_carol = carol_cipher_.decrypt(after);
  ASSERT_FALSE(at_carol.has_value());
  EXPECT_EQ(at_carol.error().code(), ErrorCode::kNoSenderKey);
  EXPECT_EQ(carol_.snapshot(name_), carol_before);

  // Bob still holds the old chain for messages sent before the rotation.
  auto old_at_bob = bob_cipher_.decrypt(before_rotation);
  ASSERT_TRUE(old_at_bob.has_value());
  EXPECT_EQ(*old_at_bob, text("before"));

  // Alice's record holds only the new chain.
  auto record = alice_.load_sender_key(name_);
  ASSERT_TRUE(record.has_value() && record->has_value());
  EXPECT_EQ((*record)->states().size(), 1u);
  EXPECT_EQ((*record)->current_state()->key_id(), new_skdm->key_id());
}

TEST_F(SenderKeysTest, ReplayedDistributionMessageDoesNotRewind) {
  auto skdm = create_distribution_message(alice_, name_, rng_);  // iteration 0
  ASSERT_TRUE(skdm.has_value());
  Bytes c0 = encrypt("zero");
  ASSERT_TRUE(bob_cipher_.decrypt(c0).has_value());
  ASSERT_TRUE(process_distribution_message(bob_, name_, *skdm).is_ok());
  auto replay = bob_cipher_.decrypt(c0);
  ASSERT_FALSE(replay.has_value());
  EXPECT_EQ(replay.error().code(), ErrorCode::kDuplicateMessage);
  auto record = bob_.load_sender_key(name_);
  ASSERT_TRUE(record.has_value() && record->has_value());
  EXPECT_EQ((*record)->states().size(), 1u);
}

TEST_F(SenderKeysTest, AtMostFiveStates) {
  TestSenderKeyStore store;
  std::vector<std::uint32_t> ids;
  for (int i = 0; i < 7; ++i) {
    TestSenderKeyStore sender;
    auto skdm = create_distribution_message(sender, name_, rng_);
    ASSERT_TRUE(skdm.has_value());
    ids.push_back(skdm->key_id());
    ASSERT_TRUE(process_distribution_message(store, name_, *skdm).is_ok());
  }
  auto record = store.load_sender_key(name_);
  ASSERT_TRUE(record.has_value() && record->has_value());
  const auto& states = (*record)->states();
  ASSERT_EQ(states.size(), kMaxSenderKeyStates);
  for (std::size_t i = 0; i < states.size(); ++i) {
    EXPECT_EQ(states[i].key_id(), ids[ids.size() - 1 - i]);  // newest first
    EXPECT_FALSE(states[i].signing_private().has_value());
  }
}

TEST_F(SenderKeysTest, RecordSerializationRoundTrip) {
  // Give Bob skipped keys so every field is exercised; Alice's record has a private key.
  std::vector<Bytes> cts;
  for (int i = 0; i < 4; ++i) cts.push_back(encrypt("r" + std::to_string(i)));
  ASSERT_TRUE(bob_cipher_.decrypt(cts[3]).has_value());

  for (TestSenderKeyStore* store : {&alice_, &bob_}) {
    auto loaded = store->load_sender_key(name_);
    ASSERT_TRUE(loaded.has_value() && loaded->has_value());
    const SenderKeyRecord& record = **loaded;
    Bytes bytes = record.serialize();
    auto back = SenderKeyRecord::deserialize(bytes);
    ASSERT_TRUE(back.has_value()) << back.error().to_string();
    EXPECT_EQ(back->serialize(), bytes);
    const SenderKeyState& a = *record.current_state();
    const SenderKeyState& b = *back->current_state();
    EXPECT_EQ(a.key_id(), b.key_id());
    EXPECT_EQ(a.chain_key().iteration, b.chain_key().iteration);
    EXPECT_TRUE(a.chain_key().seed == b.chain_key().seed);
    EXPECT_EQ(a.signing_public(), b.signing_public());
    EXPECT_EQ(a.signing_private().has_value(), b.signing_private().has_value());
    ASSERT_EQ(a.message_keys().size(), b.message_keys().size());
    for (std::size_t i = 0; i < a.message_keys().size(); ++i) {
      EXPECT_EQ(a.message_keys()[i].iteration, b.message_keys()[i].iteration);
      EXPECT_TRUE(a.message_keys()[i].seed == b.message_keys()[i].seed);
    }
  }
  auto bob_record = bob_.load_sender_key(name_);
  ASSERT_TRUE(bob_record.has_value() && bob_record->has_value());
  EXPECT_EQ((*bob_record)->current_state()->message_keys().size(), 3u);

  // A record restored from bytes keeps working.
  auto restored = SenderKeyRecord::deserialize(bob_.snapshot(name_));
  ASSERT_TRUE(restored.has_value());
  TestSenderKeyStore restored_store;
  ASSERT_TRUE(restored_store.store_sender_key(name_, *restored).is_ok());
  GroupCipher restored_cipher(restored_store, name_, rng_);
  auto pt = restored_cipher.decrypt(cts[1]);
  ASSERT_TRUE(pt.has_value());
  EXPECT_EQ(*pt, text("r1"));

  // An empty record round-trips too.
  auto empty = SenderKeyRecord::deserialize(SenderKeyRecord().serialize());
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->empty());
}

TEST_F(SenderKeysTest, RecordRefusesUnknownFormatAndGarbage) {
  Bytes good = alice_.snapshot(name_);
  signal::storage::SenderKeyRecordStructure p;
  ASSERT_TRUE(p.ParseFromArray(good.data(), static_cast<int>(good.size())));
  for (std::uint32_t v : {0u, 2u}) {
    p.set_format_version(v);
    auto r = SenderKeyRecord::deserialize(as_bytes(p.SerializeAsString()));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), ErrorCode::kMalformed);
  }
  p.clear_format_version();
  EXPECT_FALSE(SenderKeyRecord::deserialize(as_bytes(p.SerializeAsString())).has_value());

  // A private signing key that does not match the public key.
  p.set_format_version(kSenderKeyRecordFormatVersion);
  p.mutable_sender_key_states(0)->mutable_sender_signing_key()->set_private_(std::string(32, 'x'));
  auto mismatch = SenderKeyRecord::deserialize(as_bytes(p.SerializeAsString()));
  ASSERT_FALSE(mismatch.has_value());
  EXPECT_EQ(mismatch.error().code(), ErrorCode::kMalformed);

  Bytes garbage = {0xff, 0xff, 0xff};
  auto g = SenderKeyRecord::deserialize(garbage);
  ASSERT_FALSE(g.has_value());
  EXPECT_EQ(g.error().code(), ErrorCode::kMalformed);
}

TEST_F(SenderKeysTest, RecordCopiesAreIndependent) {
  auto loaded = alice_.load_sender_key(name_);
  ASSERT_TRUE(loaded.has_value() && loaded->has_value());
  SenderKeyRecord copy = **loaded;
  Bytes original = copy.serialize();
  encrypt("advance the stored chain");
  EXPECT_EQ(copy.serialize(), original);
  EXPECT_NE(alice_.snapshot(name_), original);
  SenderKeyRecord assigned;
  assigned = copy;
  EXPECT_EQ(assigned.serialize(), original);
}

}  // namespace
}  // namespace parley::protocol
