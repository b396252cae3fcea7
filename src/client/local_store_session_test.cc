// A real X3DH + Double Ratchet conversation where Bob keeps his state in LocalStore (the
// encrypted profile database) and Alice in the protocol's in-memory stores.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "client/internal/test_dir.h"
#include "client/local_store.h"
#include "protocol/testing/parties.h"

namespace parley::client {
namespace {

using protocol::CiphertextMessage;
using protocol::ProtocolAddress;
using protocol::SessionCipher;

class PersistentSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto p = Profile::create(tmp_.profile(), "bob's passphrase", crypto::PasswordParams::kTesting);
    ASSERT_TRUE(p.has_value()) << p.status().to_string();
    profile_ = std::move(p).value();
    store_ = std::make_unique<LocalStore>(*profile_, clock_, rng_);

    Account account;
    account.name = "bob";
    account.device_id = 1;
    account.registration_id = protocol::generate_registration_id(rng_);
    account.identity = protocol::generate_identity_key_pair(rng_);
    account.auth = crypto::Ed25519KeyPair::generate(rng_);
    account.signed_pre_key_id = 1;
    account.next_pre_key_id = 6;
    ASSERT_TRUE(store_->save_account(account).is_ok());
    for (auto& pk : protocol::generate_pre_keys(1, 5, rng_)) {
      ASSERT_TRUE(store_->store_pre_key(pk).is_ok());
    }
    ASSERT_TRUE(
        store_
            ->store_signed_pre_key(protocol::generate_signed_pre_key(account.identity, 1, 0, rng_))
            .is_ok());
  }

  void reopen() {
    store_.reset();
    profile_.reset();
    auto p = Profile::open(tmp_.profile(), "bob's passphrase", crypto::PasswordParams::kTesting);
    ASSERT_TRUE(p.has_value()) << p.status().to_string();
    profile_ = std::move(p).value();
    store_ = std::make_unique<LocalStore>(*profile_, clock_, rng_);
  }

  // What the server would hand Alice for Bob, read back from Bob's store.
  protocol::PreKeyBundle bob_bundle(std::uint32_t pre_key_id) {
    protocol::PreKeyBundle b;
    b.registration_id = store_->local_registration_id().value();
    b.device_id = bob_.device_id;
    b.pre_key_id = pre_key_id;
    b.pre_key = store_->load_pre_key(pre_key_id).value().key_pair.public_key;
    auto spk = store_->load_signed_pre_key(1).value();
    b.signed_pre_key_id = spk.id;
    b.signed_pre_key = spk.key_pair.public_key;
    b.signed_pre_key_signature = Bytes(spk.signature.begin(), spk.signature.end());
    b.identity_key = store_->identity_key_pair().value().public_key;
    return b;
  }

  CiphertextMessage alice_sends(const std::string& text) {
    auto c = SessionCipher(alice_.store.stores(), bob_, rng_).encrypt(to_bytes(text));
    EXPECT_TRUE(c.has_value()) << c.status().to_string();
    return std::move(c).value();
  }

  // Bob decrypts and logs the message in one transaction, as the client does.
  Result<std::string> bob_receives(const CiphertextMessage& m, std::uint8_t server_id) {
    std::string text;
    Status s = store_->run_in_transaction([&]() -> Status {
      auto plain =
          SessionCipher(store_->stores(), alice_.address, rng_).decrypt(m.type, m.serialized);
      if (!plain.has_value()) return plain.error();
      text = std::string(as_chars(*plain));
      StoredMessage log;
      log.conversation = "alice";
      log.direction = MessageDirection::kIncoming;
      log.sender = alice_.address;
      log.body = *plain;
      log.server_id = Bytes(16, server_id);
      return store_->append_message(log).status();
    });
    if (!s.is_ok()) return s;
    return text;
  }

  CiphertextMessage bob_sends(const std::string& text) {
    auto c = SessionCipher(store_->stores(), alice_.address, rng_).encrypt(to_bytes(text));
    EXPECT_TRUE(c.has_value()) << c.status().to_string();
    return std::move(c).value();
  }

  std::string alice_receives(const CiphertextMessage& m) {
    auto p = SessionCipher(alice_.store.stores(), bob_, rng_).decrypt(m.type, m.serialized);
    EXPECT_TRUE(p.has_value()) << p.status().to_string();
    return p.has_value() ? std::string(as_chars(*p)) : std::string();
  }

  testing::TempDir tmp_;
  ManualClock clock_{1'700'000'000'000};
  DeterministicRng rng_{7};
  const ProtocolAddress bob_{"bob", 1};
  protocol::testing::Party alice_{"alice", rng_};
  std::unique_ptr<Profile> profile_;
  std::unique_ptr<LocalStore> store_;
};

TEST_F(PersistentSessionTest, ConversationSurvivesReopen) {
  ASSERT_TRUE(protocol::SessionBuilder(alice_.store.stores(), bob_, rng_)
                  .process_bundle(bob_bundle(3))
                  .is_ok());
  auto m1 = alice_sends("hello bob");
  EXPECT_EQ(m1.type, protocol::MessageType::kPreKeyWhisper);
  EXPECT_EQ(*bob_receives(m1, 1), "hello bob");
  // X3DH consumed the one-time prekey and recorded Alice's identity (trust on first use).
  EXPECT_EQ(store_->load_pre_key(3).status().code(), ErrorCode::kUnknownPreKey);
  EXPECT_EQ(**store_->get_identity(alice_.address),
            alice_.store.identity.identity_key_pair()->public_key);

  EXPECT_EQ(alice_receives(bob_sends("hi alice")), "hi alice");

  // Three messages; Bob gets the last first, then restarts before the other two arrive.
  auto a1 = alice_sends("a1");
  auto a2 = alice_sends("a2");
  auto a3 = alice_sends("a3");
  EXPECT_EQ(*bob_receives(a3, 13), "a3");
  reopen();
  EXPECT_EQ(*bob_receives(a1, 11), "a1");  // skipped message keys were persisted
  EXPECT_EQ(*bob_receives(a2, 12), "a2");
  EXPECT_EQ(bob_receives(a2, 14).status().code(), ErrorCode::kDuplicateMessage);

  // The ratchet keeps turning both ways after another restart.
  reopen();
  EXPECT_EQ(alice_receives(bob_sends("after restart")), "after restart");
  EXPECT_EQ(*bob_receives(alice_sends("and back"), 15), "and back");

  auto log = store_->history("alice", 100);
  ASSERT_TRUE(log.has_value());
  ASSERT_EQ(log->size(), 5u);
  EXPECT_EQ((*log)[0].body, to_bytes("hello bob"));
  EXPECT_EQ((*log)[4].body, to_bytes("and back"));
}

TEST_F(PersistentSessionTest, FailedLogWriteRollsBackTheRatchetStep) {
  ASSERT_TRUE(protocol::SessionBuilder(alice_.store.stores(), bob_, rng_)
                  .process_bundle(bob_bundle(2))
                  .is_ok());
  EXPECT_EQ(*bob_receives(alice_sends("first"), 1), "first");
  auto m = alice_sends("second");
  // The envelope decrypts, but logging it fails (its server id collides): the whole step is
  // undone, so the message key is not consumed and the message still decrypts afterwards.
  auto failed = bob_receives(m, 1);
  EXPECT_EQ(failed.status().code(), ErrorCode::kAlreadyExists);
  reopen();
  EXPECT_EQ(*bob_receives(m, 2), "second");
  EXPECT_EQ(store_->history("alice", 10)->size(), 2u);
}

TEST_F(PersistentSessionTest, FailedPreKeyMessageKeepsThePreKey) {
  ASSERT_TRUE(protocol::SessionBuilder(alice_.store.stores(), bob_, rng_)
                  .process_bundle(bob_bundle(4))
                  .is_ok());
  auto m = alice_sends("hello");
  CiphertextMessage tampered = m;
  tampered.serialized.back() ^= 1;  // breaks the MAC
  EXPECT_FALSE(bob_receives(tampered, 1).has_value());
  reopen();
  EXPECT_TRUE(store_->load_pre_key(4).has_value());
  EXPECT_FALSE(store_->load_session(alice_.address)->has_value());
  EXPECT_EQ(*bob_receives(m, 1), "hello");
}

}  // namespace
}  // namespace parley::client
