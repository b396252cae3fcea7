#include "client/local_store.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "client/internal/test_dir.h"
#include "protocol/keys.h"

namespace parley::client {
namespace {

using protocol::ProtocolAddress;
using testing::TempDir;

class LocalStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto p = Profile::create(tmp_.profile(), std::nullopt, crypto::PasswordParams::kTesting);
    ASSERT_TRUE(p.has_value()) << p.status().to_string();
    profile_ = std::move(p).value();
    store_ = std::make_unique<LocalStore>(*profile_, clock_, rng_);
  }

  // Closes and reopens the profile, as a restart of the client would.
  void reopen() {
    store_.reset();
    profile_.reset();
    auto p = Profile::open(tmp_.profile(), std::nullopt, crypto::PasswordParams::kTesting);
    ASSERT_TRUE(p.has_value()) << p.status().to_string();
    profile_ = std::move(p).value();
    store_ = std::make_unique<LocalStore>(*profile_, clock_, rng_);
  }

  crypto::PublicKey new_key() { return crypto::KeyPair::generate(rng_).public_key; }

  Account make_account() {
    Account a;
    a.name = "alice";
    a.server_address = "parley.example:443";
    a.server_host = "parley.example";
    a.server_port = "443";
    a.server_pin = "sha256/abc";
    a.server_ws_path = "/v1/ws";
    a.device_id = 3;
    a.registration_id = 1234;
    a.identity = protocol::generate_identity_key_pair(rng_);
    a.auth = crypto::Ed25519KeyPair::generate(rng_);
    a.next_pre_key_id = 101;
    a.signed_pre_key_id = 7;
    return a;
  }

  TempDir tmp_;
  ManualClock clock_{1'700'000'000'000};
  DeterministicRng rng_{42};
  std::unique_ptr<Profile> profile_;
  std::unique_ptr<LocalStore> store_;
};

// ---- Account ----------------------------------------------------------------------------------

TEST_F(LocalStoreTest, AccountRoundTripAndPersistence) {
  EXPECT_EQ(store_->load_account().status().code(), ErrorCode::kNotRegistered);
  EXPECT_EQ(store_->identity_key_pair().status().code(), ErrorCode::kNotRegistered);
  EXPECT_EQ(store_->local_registration_id().status().code(), ErrorCode::kNotRegistered);

  Account a = make_account();
  ASSERT_TRUE(store_->save_account(a).is_ok());
  reopen();
  auto loaded = store_->load_account();
  ASSERT_TRUE(loaded.has_value()) << loaded.status().to_string();
  EXPECT_EQ(loaded->name, "alice");
  EXPECT_EQ(loaded->server_address, "parley.example:443");
  EXPECT_EQ(loaded->server_host, "parley.example");
  EXPECT_EQ(loaded->server_port, "443");
  EXPECT_EQ(loaded->server_pin, "sha256/abc");
  EXPECT_EQ(loaded->server_ws_path, "/v1/ws");
  EXPECT_EQ(loaded->device_id, 3u);
  EXPECT_EQ(loaded->registration_id, 1234u);
  EXPECT_EQ(loaded->identity.public_key, a.identity.public_key);
  EXPECT_TRUE(loaded->identity.private_key.bytes() == a.identity.private_key.bytes());
  EXPECT_EQ(loaded->auth.public_key, a.auth.public_key);
  EXPECT_TRUE(loaded->auth.secret_key == a.auth.secret_key);
  EXPECT_EQ(loaded->next_pre_key_id, 101u);
  EXPECT_EQ(loaded->signed_pre_key_id, 7u);

  EXPECT_EQ(store_->identity_key_pair()->public_key, a.identity.public_key);
  EXPECT_EQ(*store_->local_registration_id(), 1234u);

  // Saving again replaces the single row.
  loaded->next_pre_key_id = 201;
  ASSERT_TRUE(store_->save_account(*loaded).is_ok());
  EXPECT_EQ(store_->load_account()->next_pre_key_id, 201u);
}

// ---- Identity / contacts ----------------------------------------------------------------------

TEST_F(LocalStoreTest, TrustOnFirstUseAndChangedIdentity) {
  const ProtocolAddress bob{"bob", 1};
  const auto k1 = new_key();
  const auto k2 = new_key();
  using protocol::Direction;

  EXPECT_FALSE(store_->get_identity(bob)->has_value());
  EXPECT_TRUE(*store_->is_trusted_identity(bob, k1, Direction::kSending));  // first use
  EXPECT_FALSE(*store_->save_identity(bob, k1));
  EXPECT_EQ(**store_->get_identity(bob), k1);
  EXPECT_TRUE(*store_->is_trusted_identity(bob, k1, Direction::kReceiving));
  EXPECT_FALSE(*store_->save_identity(bob, k1));  // same key: not a replacement

  // A changed key is untrusted, and stays so (even across a restart) until it is saved.
  EXPECT_FALSE(*store_->is_trusted_identity(bob, k2, Direction::kReceiving));
  ASSERT_TRUE(store_->mark_identity_changed(bob).is_ok());
  reopen();
  EXPECT_FALSE(*store_->is_trusted_identity(bob, k2, Direction::kSending));
  auto contacts = store_->list_contacts();
  ASSERT_EQ(contacts->size(), 1u);
  EXPECT_TRUE((*contacts)[0].identity_changed);
  EXPECT_EQ((*contacts)[0].first_seen_ms, 1'700'000'000'000);

  EXPECT_TRUE(*store_->save_identity(bob, k2));
  EXPECT_TRUE(*store_->is_trusted_identity(bob, k2, Direction::kSending));
  EXPECT_FALSE(*store_->is_trusted_identity(bob, k1, Direction::kSending));
  EXPECT_FALSE((*store_->list_contacts())[0].identity_changed);

  // Another device of the same account is a separate identity.
  EXPECT_TRUE(*store_->is_trusted_identity({"bob", 2}, k1, Direction::kSending));
}

TEST_F(LocalStoreTest, ContactsVerificationAndChangeFlags) {
  const ProtocolAddress carol{"carol", 1};
  const ProtocolAddress bob{"bob", 2};
  const auto kc = new_key();
  const auto kb = new_key();
  EXPECT_EQ(store_->mark_identity_changed(carol).code(), ErrorCode::kNotFound);

  ASSERT_TRUE(store_->save_identity(carol, kc).has_value());
  clock_.advance_ms(5);
  ASSERT_TRUE(store_->trust_contact(bob, kb, true).is_ok());  // records an unknown contact too
  auto list = store_->list_contacts();
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].address, bob);  // ordered by address
  EXPECT_TRUE((*list)[0].verified);
  EXPECT_EQ((*list)[0].identity_key, kb);
  EXPECT_EQ((*list)[0].first_seen_ms, 1'700'000'000'005);
  EXPECT_EQ((*list)[1].address, carol);
  EXPECT_FALSE((*list)[1].verified);

  // A change clears verification; accepting a new key with trust_contact clears the flag.
  ASSERT_TRUE(store_->mark_identity_changed(bob).is_ok());
  list = store_->list_contacts();
  EXPECT_TRUE((*list)[0].identity_changed);
  EXPECT_FALSE((*list)[0].verified);
  const auto kb2 = new_key();
  ASSERT_TRUE(store_->trust_contact(bob, kb2, false).is_ok());
  list = store_->list_contacts();
  EXPECT_FALSE((*list)[0].identity_changed);
  EXPECT_FALSE((*list)[0].verified);
  EXPECT_EQ((*list)[0].identity_key, kb2);
  EXPECT_EQ((*list)[0].first_seen_ms, 1'700'000'000'005);  // first seen is not reset
}

// ---- Prekeys, sessions, sender keys -----------------------------------------------------------

TEST_F(LocalStoreTest, PreKeys) {
  auto identity = protocol::generate_identity_key_pair(rng_);
  EXPECT_EQ(store_->load_pre_key(1).status().code(), ErrorCode::kUnknownPreKey);
  for (auto& pk : protocol::generate_pre_keys(1, 3, rng_)) {
    ASSERT_TRUE(store_->store_pre_key(pk).is_ok());
  }
  auto spk = protocol::generate_signed_pre_key(identity, 9, 1234, rng_);
  EXPECT_EQ(store_->load_signed_pre_key(9).status().code(), ErrorCode::kUnknownSignedPreKey);
  ASSERT_TRUE(store_->store_signed_pre_key(spk).is_ok());
  reopen();
  auto pk2 = store_->load_pre_key(2);
  ASSERT_TRUE(pk2.has_value()) << pk2.status().to_string();
  EXPECT_EQ(pk2->id, 2u);
  auto loaded_spk = store_->load_signed_pre_key(9);
  ASSERT_TRUE(loaded_spk.has_value());
  EXPECT_EQ(loaded_spk->serialize(), spk.serialize());

  ASSERT_TRUE(store_->remove_pre_key(2).is_ok());
  EXPECT_EQ(store_->load_pre_key(2).status().code(), ErrorCode::kUnknownPreKey);
  EXPECT_TRUE(store_->load_pre_key(3).has_value());
  ASSERT_TRUE(store_->remove_pre_key(2).is_ok());  // removing an absent key is not an error
  ASSERT_TRUE(store_->remove_signed_pre_key(9).is_ok());
  EXPECT_EQ(store_->load_signed_pre_key(9).status().code(), ErrorCode::kUnknownSignedPreKey);
}

TEST_F(LocalStoreTest, SessionsAndSenderKeysRoundTrip) {
  const ProtocolAddress bob{"bob", 1};
  EXPECT_FALSE(store_->load_session(bob)->has_value());
  protocol::SessionRecord record;  // an empty record serializes and loads back as empty
  ASSERT_TRUE(store_->store_session(bob, std::move(record)).is_ok());
  auto loaded = store_->load_session(bob);
  ASSERT_TRUE(loaded.has_value()) << loaded.status().to_string();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_FALSE((*loaded)->has_current_state());

  const protocol::SenderKeyName name{"group-1", {"carol", 2}};
  EXPECT_FALSE(store_->load_sender_key(name)->has_value());
  protocol::SenderKeyRecord skr;
  auto signing = crypto::KeyPair::generate(rng_);
  SecretBytes seed(protocol::kSenderChainSeedSize);
  rng_.fill(seed.mutable_view());
  skr.set_state(protocol::SenderKeyState(77, protocol::SenderChainKey{5, std::move(seed)},
                                         signing.public_key, signing.private_key.clone()));
  ASSERT_TRUE(store_->store_sender_key(name, skr).is_ok());
  reopen();
  auto sk = store_->load_sender_key(name);
  ASSERT_TRUE(sk.has_value()) << sk.status().to_string();
  ASSERT_TRUE(sk->has_value());
  EXPECT_EQ((*sk)->serialize(), skr.serialize());
  EXPECT_EQ((*sk)->current_state()->key_id(), 77u);
  // A different sender in the same group has no record.
  EXPECT_FALSE(store_->load_sender_key({"group-1", {"carol", 3}})->has_value());
}

// ---- Transactions -----------------------------------------------------------------------------

TEST_F(LocalStoreTest, FailedTransactionLeavesNothingBehind) {
  const ProtocolAddress bob{"bob", 1};
  auto pk = protocol::generate_pre_keys(5, 1, rng_);
  Status s = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(store_->store_pre_key(pk[0]));
    PARLEY_TRY(store_->save_identity(bob, new_key()).status());
    PARLEY_TRY(store_->outbox_put("bob", as_bytes("hello")).status());
    return make_error(ErrorCode::kBadMac, "the operation failed late");
  });
  EXPECT_EQ(s.code(), ErrorCode::kBadMac);
  reopen();
  EXPECT_EQ(store_->load_pre_key(5).status().code(), ErrorCode::kUnknownPreKey);
  EXPECT_FALSE(store_->get_identity(bob)->has_value());
  EXPECT_TRUE(store_->outbox_pending(INT64_MAX)->empty());
}

TEST_F(LocalStoreTest, TransactionsCommitAndNest) {
  auto pks = protocol::generate_pre_keys(1, 3, rng_);
  Status s = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(store_->store_pre_key(pks[0]));
    // An inner failure undoes only the inner level; the outer one carries on.
    Status inner = store_->run_in_transaction([&]() -> Status {
      PARLEY_TRY(store_->store_pre_key(pks[1]));
      return make_error(ErrorCode::kInvalidMessage, "inner");
    });
    EXPECT_EQ(inner.code(), ErrorCode::kInvalidMessage);
    // An inner success is kept. save_group and set_members nest their own transactions too.
    PARLEY_TRY(store_->run_in_transaction([&] { return store_->store_pre_key(pks[2]); }));
    Group g{Bytes(kGroupIdSize, 1), "g", 1, false, 0, {}};
    PARLEY_TRY(store_->save_group(g));
    return store_->set_members(g.id, {"x", "y"});
  });
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  reopen();
  EXPECT_TRUE(store_->load_pre_key(1).has_value());
  EXPECT_EQ(store_->load_pre_key(2).status().code(), ErrorCode::kUnknownPreKey);
  EXPECT_TRUE(store_->load_pre_key(3).has_value());
  EXPECT_EQ(store_->load_group(Bytes(kGroupIdSize, 1))->members.size(), 2u);

  // A failing outer level undoes the inner levels that succeeded.
  s = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(store_->run_in_transaction([&] { return store_->remove_pre_key(1); }));
    return make_error(ErrorCode::kIo, "outer");
  });
  EXPECT_EQ(s.code(), ErrorCode::kIo);
  EXPECT_TRUE(store_->load_pre_key(1).has_value());
}

// ---- Outbox -----------------------------------------------------------------------------------

TEST_F(LocalStoreTest, Outbox) {
  auto a = store_->outbox_put("bob", as_bytes("first"));
  ASSERT_TRUE(a.has_value()) << a.status().to_string();
  clock_.advance_ms(10);
  auto b = store_->outbox_put("group:0102", as_bytes("second"));
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(a->client_message_id.size(), kClientMessageIdSize);
  EXPECT_NE(a->client_message_id, b->client_message_id);
  EXPECT_LT(a->id, b->id);

  const std::int64_t t0 = 1'700'000'000'000;
  EXPECT_EQ(store_->outbox_pending(t0 - 1)->size(), 0u);
  EXPECT_EQ(store_->outbox_pending(t0)->size(), 1u);
  auto due = store_->outbox_pending(t0 + 10);
  ASSERT_EQ(due->size(), 2u);
  EXPECT_EQ((*due)[0].payload, to_bytes("first"));
  EXPECT_EQ((*due)[0].recipient, "bob");
  EXPECT_EQ((*due)[1].recipient, "group:0102");
  EXPECT_EQ((*due)[1].created_ms, t0 + 10);

  ASSERT_TRUE(store_->outbox_bump(a->id, t0 + 1000).is_ok());
  EXPECT_EQ(store_->outbox_bump(9999, t0).code(), ErrorCode::kNotFound);
  reopen();
  due = store_->outbox_pending(t0 + 999);
  ASSERT_EQ(due->size(), 1u);
  EXPECT_EQ((*due)[0].id, b->id);
  due = store_->outbox_pending(t0 + 1000);
  ASSERT_EQ(due->size(), 2u);
  EXPECT_EQ((*due)[0].attempts, 1);
  EXPECT_EQ((*due)[0].next_attempt_ms, t0 + 1000);
  EXPECT_EQ((*due)[0].client_message_id, a->client_message_id);

  ASSERT_TRUE(store_->outbox_remove(a->id).is_ok());
  ASSERT_TRUE(store_->outbox_remove(a->id).is_ok());
  EXPECT_EQ(store_->outbox_pending(INT64_MAX)->size(), 1u);
}

// ---- History ----------------------------------------------------------------------------------

StoredMessage incoming(const std::string& body, std::uint8_t server_id, std::int64_t ts) {
  StoredMessage m;
  m.conversation = "bob";
  m.direction = MessageDirection::kIncoming;
  m.sender = {"bob", 1};
  m.server_ms = ts;
  m.local_ms = ts + 1;
  m.body = to_bytes(body);
  m.status = MessageStatus::kDelivered;
  m.server_id = Bytes(16, server_id);
  return m;
}

TEST_F(LocalStoreTest, HistoryAndDuplicateEnvelopes) {
  auto id1 = store_->append_message(incoming("one", 1, 100));
  ASSERT_TRUE(id1.has_value()) << id1.status().to_string();
  auto dup = store_->append_message(incoming("one again", 1, 100));
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code(), ErrorCode::kAlreadyExists);
  // Recognised after a reopen too, and an id rolled back with its transaction is not.
  reopen();
  EXPECT_EQ(store_->append_message(incoming("one", 1, 100)).status().code(), ErrorCode::kAlreadyExists);
  Status rolled = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(store_->append_message(incoming("two", 9, 100)).status());
    return make_error(ErrorCode::kInternal, "the step failed after logging");
  });
  EXPECT_FALSE(rolled.is_ok());
  // The same id is accepted again (this transaction reaches its own failure at the end, so
  // nothing stays behind for the checks below).
  Status again = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(store_->append_message(incoming("two", 9, 100)).status());
    return make_error(ErrorCode::kInternal, "undo");
  });
  EXPECT_EQ(again.code(), ErrorCode::kInternal) << again.to_string();

  StoredMessage out;
  out.conversation = "bob";
  out.direction = MessageDirection::kOutgoing;
  out.sender = {"alice", 3};
  out.server_ms = 200;
  out.local_ms = 200;
  out.body = to_bytes("two");
  out.status = MessageStatus::kSent;
  ASSERT_TRUE(store_->append_message(out).has_value());
  ASSERT_TRUE(store_->append_message(out).has_value());  // no server id: never a duplicate

  StoredMessage broken = incoming("", 3, 300);
  broken.status = MessageStatus::kFailed;
  broken.error = "bad_mac";
  ASSERT_TRUE(store_->append_message(broken).has_value());
  StoredMessage other = incoming("elsewhere", 4, 400);
  other.conversation = "carol";
  ASSERT_TRUE(store_->append_message(other).has_value());

  ASSERT_TRUE(store_->set_message_status(*id1, MessageStatus::kRead).is_ok());
  EXPECT_EQ(store_->set_message_status(9999, MessageStatus::kRead).code(), ErrorCode::kNotFound);
  reopen();

  auto h = store_->history("bob", 10);
  ASSERT_TRUE(h.has_value()) << h.status().to_string();
  ASSERT_EQ(h->size(), 4u);
  EXPECT_EQ((*h)[0].body, to_bytes("one"));
  EXPECT_EQ((*h)[0].status, MessageStatus::kRead);
  EXPECT_EQ((*h)[0].direction, MessageDirection::kIncoming);
  EXPECT_EQ((*h)[0].server_id, Bytes(16, 1));
  EXPECT_EQ((*h)[0].server_ms, 100);
  EXPECT_EQ((*h)[0].local_ms, 101);
  EXPECT_EQ((*h)[1].direction, MessageDirection::kOutgoing);
  EXPECT_EQ((*h)[1].sender, (ProtocolAddress{"alice", 3}));
  EXPECT_FALSE((*h)[1].server_id.has_value());
  EXPECT_EQ((*h)[3].status, MessageStatus::kFailed);
  EXPECT_EQ((*h)[3].error, "bad_mac");
  EXPECT_TRUE((*h)[3].body.empty());

  // The limit keeps the newest, still oldest first.
  auto last2 = store_->history("bob", 2);
  ASSERT_EQ(last2->size(), 2u);
  EXPECT_EQ((*last2)[0].body, to_bytes("two"));
  EXPECT_EQ((*last2)[1].error, "bad_mac");
  EXPECT_EQ(store_->history("carol", 10)->size(), 1u);
  EXPECT_TRUE(store_->history("nobody", 10)->empty());
}

// ---- Groups -----------------------------------------------------------------------------------

TEST_F(LocalStoreTest, Groups) {
  const Bytes g1(kGroupIdSize, 0xa1);
  const Bytes g2(kGroupIdSize, 0xb2);
  EXPECT_EQ(store_->load_group(g1).status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->set_members(g1, {"x"}).code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->save_group(Group{Bytes(3, 0), "bad", 0, false, 0, {}}).code(),
            ErrorCode::kInvalidArgument);

  ASSERT_TRUE(store_->save_group(Group{g1, "friends", 10, false, 0, {}}).is_ok());
  ASSERT_TRUE(store_->save_group(Group{g2, "work", 20, false, 0, {}}).is_ok());
  ASSERT_TRUE(store_->set_members(g1, {"carol", "bob", "bob"}).is_ok());
  // Updating the group keeps its members (no delete-and-insert cascade).
  ASSERT_TRUE(store_->save_group(Group{g1, "best friends", 10, true, 10, {}}).is_ok());
  reopen();

  auto g = store_->load_group(g1);
  ASSERT_TRUE(g.has_value()) << g.status().to_string();
  EXPECT_EQ(g->name, "best friends");
  EXPECT_TRUE(g->left);
  EXPECT_EQ(g->created_ms, 10);
  EXPECT_EQ(g->members, (std::vector<std::string>{"bob", "carol"}));

  ASSERT_TRUE(store_->set_members(g1, {"dave"}).is_ok());
  auto all = store_->list_groups();
  ASSERT_TRUE(all.has_value());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, g1);
  EXPECT_EQ((*all)[0].members, (std::vector<std::string>{"dave"}));
  EXPECT_EQ((*all)[1].name, "work");
  EXPECT_TRUE((*all)[1].members.empty());
}

}  // namespace
}  // namespace parley::client
