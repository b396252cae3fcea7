#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "protocol/testing/parties.h"

namespace parley::protocol {
namespace {

using testing::Party;

Bytes text(const std::string& s) { return to_bytes(s); }

class SessionTest : public ::testing::Test {
 protected:
  DeterministicRng rng_{1234};
  Party alice_{"alice", rng_};
  Party bob_{"bob", rng_};

  void start(std::uint32_t pre_key_id) {
    ASSERT_TRUE(alice_.builder_for(bob_, rng_).process_bundle(bob_.bundle(pre_key_id)).is_ok());
  }
  CiphertextMessage send(Party& from, Party& to, const std::string& msg) {
    auto c = from.cipher_for(to, rng_).encrypt(text(msg));
    EXPECT_TRUE(c.has_value()) << c.status().to_string();
    return std::move(c).value();
  }
  Result<Bytes> receive(Party& at, Party& from, const CiphertextMessage& m) {
    return at.cipher_for(from, rng_).decrypt(m.type, m.serialized);
  }
};

TEST_F(SessionTest, WithOneTimePreKeyBothWays) {
  start(3);
  auto m1 = send(alice_, bob_, "hello bob");
  EXPECT_EQ(m1.type, MessageType::kPreKeyWhisper);
  auto p1 = receive(bob_, alice_, m1);
  ASSERT_TRUE(p1.has_value()) << p1.status().to_string();
  EXPECT_EQ(*p1, text("hello bob"));
  // The one-time prekey was consumed.
  EXPECT_EQ(bob_.store.pre_keys.load_pre_key(3).status().code(), ErrorCode::kUnknownPreKey);
  EXPECT_EQ(bob_.store.pre_keys.size(), 4u);

  auto r1 = send(bob_, alice_, "hi alice");
  EXPECT_EQ(r1.type, MessageType::kWhisper);
  ASSERT_EQ(*receive(alice_, bob_, r1), text("hi alice"));
  // After Bob's answer, Alice sends plain WhisperMessages.
  auto m2 = send(alice_, bob_, "second");
  EXPECT_EQ(m2.type, MessageType::kWhisper);
  EXPECT_EQ(*receive(bob_, alice_, m2), text("second"));
}

TEST_F(SessionTest, WithoutOneTimePreKey) {
  start(0);
  auto m1 = send(alice_, bob_, "no opk");
  auto parsed = PreKeyWhisperMessage::parse(m1.serialized);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_FALSE(parsed->pre_key_id().has_value());
  EXPECT_EQ(*receive(bob_, alice_, m1), text("no opk"));
  EXPECT_EQ(bob_.store.pre_keys.size(), 5u);
}

TEST_F(SessionTest, ManyRoundTripsAndOutOfOrder) {
  start(1);
  std::vector<CiphertextMessage> batch;
  ASSERT_TRUE(receive(bob_, alice_, send(alice_, bob_, "init")).has_value());
  for (int round = 0; round < 10; ++round) {
    Party& from = round % 2 ? alice_ : bob_;
    Party& to = round % 2 ? bob_ : alice_;
    std::vector<std::pair<std::string, CiphertextMessage>> msgs;
    for (int i = 0; i < 7; ++i) {
      std::string t = "r" + std::to_string(round) + "m" + std::to_string(i);
      msgs.emplace_back(t, send(from, to, t));
    }
    // Deliver in a scrambled order.
    std::vector<int> order = {3, 0, 6, 1, 5, 2, 4};
    for (int i : order) {
      auto p = receive(to, from, msgs[static_cast<std::size_t>(i)].second);
      ASSERT_TRUE(p.has_value()) << p.status().to_string();
      EXPECT_EQ(*p, text(msgs[static_cast<std::size_t>(i)].first));
    }
  }
}

TEST_F(SessionTest, LateMessageFromPreviousChainDecrypts) {
  start(1);
  auto a1 = send(alice_, bob_, "a1");
  auto a2 = send(alice_, bob_, "a2");  // held back
  ASSERT_TRUE(receive(bob_, alice_, a1).has_value());
  ASSERT_TRUE(receive(alice_, bob_, send(bob_, alice_, "b1")).has_value());
  ASSERT_TRUE(receive(bob_, alice_, send(alice_, bob_, "a3")).has_value());  // new chain
  auto late = receive(bob_, alice_, a2);
  ASSERT_TRUE(late.has_value()) << late.status().to_string();
  EXPECT_EQ(*late, text("a2"));
}

TEST_F(SessionTest, SimultaneousInitiation) {
  ASSERT_TRUE(alice_.builder_for(bob_, rng_).process_bundle(bob_.bundle(1)).is_ok());
  ASSERT_TRUE(bob_.builder_for(alice_, rng_).process_bundle(alice_.bundle(1)).is_ok());
  auto from_alice = send(alice_, bob_, "from alice");
  auto from_bob = send(bob_, alice_, "from bob");
  ASSERT_EQ(*receive(bob_, alice_, from_alice), text("from alice"));
  ASSERT_EQ(*receive(alice_, bob_, from_bob), text("from bob"));
  // Each side now sends on whichever session is current; both still decrypt.
  for (int i = 0; i < 3; ++i) {
    auto a = send(alice_, bob_, "a" + std::to_string(i));
    auto pa = receive(bob_, alice_, a);
    ASSERT_TRUE(pa.has_value()) << pa.status().to_string();
    auto b = send(bob_, alice_, "b" + std::to_string(i));
    auto pb = receive(alice_, bob_, b);
    ASSERT_TRUE(pb.has_value()) << pb.status().to_string();
  }
}

TEST_F(SessionTest, PeerReinstallWithSameIdentityStartsNewSession) {
  start(1);
  ASSERT_TRUE(receive(bob_, alice_, send(alice_, bob_, "before")).has_value());
  ASSERT_TRUE(receive(alice_, bob_, send(bob_, alice_, "ack")).has_value());
  // Alice loses her sessions (same identity, e.g. restored backup) and starts again.
  alice_.store.sessions = InMemorySessionStore();
  ASSERT_TRUE(alice_.builder_for(bob_, rng_).process_bundle(bob_.bundle(2)).is_ok());
  auto fresh = send(alice_, bob_, "after reinstall");
  ASSERT_EQ(*receive(bob_, alice_, fresh), text("after reinstall"));
  ASSERT_EQ(*receive(alice_, bob_, send(bob_, alice_, "welcome back")), text("welcome back"));
}

TEST_F(SessionTest, RecordSerializationRoundTrip) {
  start(1);
  ASSERT_TRUE(receive(bob_, alice_, send(alice_, bob_, "x")).has_value());
  auto rec = bob_.store.sessions.load_session(alice_.address).value();
  ASSERT_TRUE(rec.has_value());
  Bytes bytes = rec->serialize();
  auto back = SessionRecord::deserialize(bytes);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->serialize(), bytes);
  // Truncated records are refused, not misread.
  auto bad = SessionRecord::deserialize(ByteView(bytes).first(bytes.size() / 2));
  EXPECT_FALSE(bad.has_value());
}

TEST_F(SessionTest, SkippedKeysAreBoundedPerChain) {
  start(1);
  ASSERT_TRUE(receive(bob_, alice_, send(alice_, bob_, "init")).has_value());
  ASSERT_TRUE(receive(alice_, bob_, send(bob_, alice_, "ack")).has_value());
  // Skip 2000 keys in one go: allowed; they are all stored.
  std::vector<CiphertextMessage> held;
  for (int i = 0; i < 2001; ++i) held.push_back(send(alice_, bob_, "m" + std::to_string(i)));
  ASSERT_TRUE(receive(bob_, alice_, held.back()).has_value());
  auto rec = bob_.store.sessions.load_session(alice_.address).value();
  const auto& chains = rec->current_state()->receiver_chains;
  EXPECT_EQ(chains.back().skipped.size(), kMaxSkippedMessageKeys);
  EXPECT_TRUE(receive(bob_, alice_, held[0]).has_value());
  EXPECT_TRUE(receive(bob_, alice_, held[1999]).has_value());
}

TEST(Keys, PreKeyIdsWrapWithinRange) {
  DeterministicRng rng(5);
  auto keys = generate_pre_keys(kMaxPreKeyId - 1, 3, rng);
  EXPECT_EQ(keys[0].id, kMaxPreKeyId - 1);
  EXPECT_EQ(keys[1].id, kMaxPreKeyId);
  EXPECT_EQ(keys[2].id, 1u);
  for (int i = 0; i < 1000; ++i) {
    auto id = generate_registration_id(rng);
    EXPECT_GE(id, 1u);
    EXPECT_LE(id, kMaxRegistrationId);
  }
}

}  // namespace
}  // namespace parley::protocol
