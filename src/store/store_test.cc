// Tests of the SQLite store against real database files in the test's temp directory.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/internal/sqlite_db.h"
#include "store/internal/sqlite_ops.h"
#include "store/internal/sqlite_store.h"
#include "store/migrations.h"
#include "store/store.h"

namespace parley::store {
namespace {

constexpr auto kTimeout = std::chrono::seconds(60);
// An attachment quota no test reaches.
constexpr std::uint64_t kNoQuota = std::numeric_limits<std::uint64_t>::max();

// Runs `start(callback)` and waits for the callback's result.
template <typename T, typename F>
Result<T> call(F&& start) {
  auto p = std::make_shared<std::promise<Result<T>>>();
  auto f = p->get_future();
  start([p](Result<T> r) { p->set_value(std::move(r)); });
  if (f.wait_for(kTimeout) != std::future_status::ready) {
    ADD_FAILURE() << "callback not invoked in time";
    std::abort();
  }
  return f.get();
}

template <typename F>
Status call_status(F&& start) {
  auto p = std::make_shared<std::promise<Status>>();
  auto f = p->get_future();
  start([p](Status s) { p->set_value(std::move(s)); });
  if (f.wait_for(kTimeout) != std::future_status::ready) {
    ADD_FAILURE() << "callback not invoked in time";
    std::abort();
  }
  return f.get();
}

// Holds the backend thread inside a callback until released, so that everything submitted
// meanwhile is queued and must go into the following batches.
class Gate {
 public:
  explicit Gate(Store& store) {
    auto entered = std::make_shared<std::promise<void>>();
    auto f = entered->get_future();
    auto release = release_.get_future().share();
    store.pre_key_count(0, 0, [entered, release](Result<std::uint32_t>) {
      entered->set_value();
      release.wait();
    });
    f.wait();
  }
  ~Gate() { release(); }
  void release() {
    if (!released_) release_.set_value();
    released_ = true;
  }

 private:
  std::promise<void> release_;
  bool released_ = false;
};

// The caller's part of a server id is its last 8 bytes (the store writes the seq before them).
Bytes server_id(std::uint32_t n, std::uint8_t tag = 0) {
  Bytes id(16, tag);
  std::memcpy(id.data() + 8, &n, sizeof n);
  return id;
}
Bytes tail(const Bytes& id) { return Bytes(id.begin() + 8, id.end()); }

Device make_device(std::uint32_t device_id) {
  Device d;
  d.device_id = device_id;
  d.registration_id = 1000 + device_id;
  d.auth_public_key = Bytes(32, 0xa0);
  d.identity_key = Bytes(33, 0x05);
  d.signed_pre_key = SignedPreKey{7, Bytes(33, 0x05), Bytes(64, 0x5e)};
  return d;
}

std::vector<PreKey> make_pre_keys(std::uint32_t first, std::uint32_t n) {
  std::vector<PreKey> keys;
  for (std::uint32_t i = 0; i < n; ++i) keys.push_back(PreKey{first + i, Bytes(33, 0x05)});
  return keys;
}

NewAccount make_account(const std::string& name, std::uint32_t pre_keys = 0) {
  NewAccount a;
  a.name = name;
  a.folded_name = name;
  std::transform(a.folded_name.begin(), a.folded_name.end(), a.folded_name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  a.device = make_device(1);
  a.pre_keys = make_pre_keys(1, pre_keys);
  a.now_ms = 1000;
  return a;
}

Delivery make_delivery(std::int64_t account, std::uint32_t device, std::uint32_t n,
                       std::size_t size = 10) {
  Delivery d;
  d.account_id = account;
  d.device_id = device;
  d.registration_id = 1000 + device;  // as make_device registers it
  d.envelope.server_id = server_id(n, static_cast<std::uint8_t>(device));
  d.envelope.timestamp_ms = 5000 + n;
  d.envelope.source = "sender";
  d.envelope.source_device = 1;
  d.envelope.type = 1;
  d.envelope.content = Bytes(size, static_cast<std::uint8_t>(n));
  return d;
}

SendBatch make_send(std::int64_t dest, std::vector<Delivery> deliveries, std::string cmid = "",
                    std::int64_t now_ms = 1000) {
  SendBatch b;
  b.sender_account = 99;
  b.sender_device = 1;
  b.client_message_id = to_bytes(cmid);
  b.destination_account = dest;
  b.deliveries = std::move(deliveries);
  b.now_ms = now_ms;
  return b;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("parley_store_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "parley.db").string();
    open();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void open(const internal::SqliteOptions& options = {}) {
    store_.reset();
    auto r = internal::open_sqlite_store(path_, options);
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    store_ = std::move(r).value();
  }

  Account create(const std::string& name, std::uint32_t pre_keys = 0) {
    auto r = call<Account>([&](auto cb) { store_->create_account(make_account(name, pre_keys), cb); });
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r.has_value() ? *r : Account{};
  }

  // Replaces the database with one at schema version `version` holding `rows` (SQL) and leaves
  // the store closed: open() then migrates it.
  void recreate_at(std::int32_t version, const char* rows) {
    store_->close();
    store_.reset();
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path_ + suffix);
    auto db = internal::Db::open(path_);
    ASSERT_TRUE(db.has_value());
    for (const Migration& m : migrations()) {
      if (m.version > version) break;
      ASSERT_TRUE((*db)->exec(m.sql, "test").is_ok());
    }
    const std::string set = "PRAGMA user_version = " + std::to_string(version);
    ASSERT_TRUE((*db)->exec(set.c_str(), "test").is_ok());
    ASSERT_TRUE((*db)->exec(rows, "test").is_ok());
  }
  void recreate_at_v2(const char* rows) { recreate_at(2, rows); }

  Result<SendOutcome> send(SendBatch batch) {
    return call<SendOutcome>([&](auto cb) { store_->store_messages(std::move(batch), cb); });
  }

  std::vector<QueuedEnvelope> fetch(std::int64_t account, std::uint32_t device,
                                    std::int64_t after = 0, std::size_t limit = 1000000) {
    auto r = call<std::vector<QueuedEnvelope>>(
        [&](auto cb) { store_->fetch_queue(account, device, after, limit, kNoByteLimit, cb); });
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r.has_value() ? *r : std::vector<QueuedEnvelope>{};
  }

  // The last 8 bytes of the server id of every envelope queued for the device.
  std::set<Bytes> queued_tails(std::int64_t account, std::uint32_t device) {
    std::set<Bytes> out;
    for (const QueuedEnvelope& q : fetch(account, device)) out.insert(tail(q.envelope.server_id));
    return out;
  }

  Result<std::uint32_t> ack(std::int64_t account, std::uint32_t device, std::vector<Bytes> ids) {
    return call<std::uint32_t>([&](auto cb) { store_->ack(account, device, std::move(ids), cb); });
  }

  // The outcome as a Status: kOverQuota as kTooLarge, kTooMany as kResourceExhausted. Expiry
  // is judged at `now_ms` (default: the attachment's creation).
  Status create_attachment(const Attachment& a, std::uint64_t quota_bytes = kNoQuota,
                           std::uint64_t quota_count = kNoQuota,
                           std::optional<std::int64_t> now_ms = std::nullopt) {
    const AttachmentQuota quota{quota_bytes, quota_count, now_ms.value_or(a.created_ms)};
    auto r = call<AttachmentOutcome>([&](auto cb) { store_->create_attachment(a, quota, cb); });
    if (!r) return r.error();
    if (*r == AttachmentOutcome::kOverQuota) return make_error(ErrorCode::kTooLarge, "over quota");
    if (*r == AttachmentOutcome::kTooMany) {
      return make_error(ErrorCode::kResourceExhausted, "too many attachments");
    }
    return Status::ok();
  }

  Status add_device(std::int64_t account, std::uint32_t device_id) {
    // No Store call adds a device yet; tests insert the row directly.
    auto db = internal::Db::open(path_);
    if (!db.has_value()) return db.error();
    std::string sql = "INSERT INTO devices VALUES (" + std::to_string(account) + ", " +
                      std::to_string(device_id) + ", " + std::to_string(1000 + device_id) +
                      ", x'00', x'05', 1, x'05', x'00', 1000)";  // as make_device registers it
    return (*db)->exec(sql.c_str(), "add device");
  }

  std::filesystem::path dir_;
  std::string path_;
  std::unique_ptr<Store> store_;
};

// ---- accounts and invites -----------------------------------------------------------------------

TEST_F(StoreTest, CreateAndFindAccount) {
  Account a = create("Alice", 3);
  EXPECT_GT(a.id, 0);
  EXPECT_EQ(a.name, "Alice");
  ASSERT_EQ(a.devices.size(), 1u);
  EXPECT_EQ(a.devices[0].created_ms, 1000);

  auto found = call<std::optional<Account>>([&](auto cb) { store_->find_account("alice", cb); });
  ASSERT_TRUE(found.has_value());
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id, a.id);
  EXPECT_EQ((*found)->name, "Alice");
  ASSERT_EQ((*found)->devices.size(), 1u);
  EXPECT_EQ((*found)->devices[0].registration_id, 1001u);
  EXPECT_EQ((*found)->devices[0].identity_key, Bytes(33, 0x05));
  EXPECT_EQ((*found)->devices[0].signed_pre_key.signature, Bytes(64, 0x5e));

  auto missing = call<std::optional<Account>>([&](auto cb) { store_->find_account("bob", cb); });
  ASSERT_TRUE(missing.has_value());
  EXPECT_FALSE(missing->has_value());
  EXPECT_EQ(store_->stats().accounts, 1u);
}

TEST_F(StoreTest, NameTakenIsAlreadyExistsAndConsumesNoInvite) {
  create("Alice");
  ASSERT_TRUE(call_status([&](auto cb) { store_->create_invite("tok", 5000, cb); }).is_ok());
  NewAccount again = make_account("ALICE");
  again.invite_token = "tok";
  auto r = call<Account>([&](auto cb) { store_->create_account(again, cb); });
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(r.error().message().find("alice"), std::string::npos);  // no user data

  // The failed create was rolled back, so the invite is still usable.
  NewAccount bob = make_account("bob");
  bob.invite_token = "tok";
  EXPECT_TRUE(call<Account>([&](auto cb) { store_->create_account(bob, cb); }).has_value());
}

TEST_F(StoreTest, RecoveryReplacesTheDeviceOnlyWithTheRightCode) {
  NewAccount first = make_account("alice", 3);
  first.recovery_hash = Bytes(32, 0xaa);
  auto a = call<Account>([&](auto cb) { store_->create_account(first, cb); });
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->pre_key_count, 3u);  // what a login would count, returned with the account
  for (std::uint32_t i = 0; i < 4; ++i) ASSERT_TRUE(send(make_send(a->id, {make_delivery(a->id, 1, i)})).has_value());

  NewAccount wrong = make_account("alice", 2);
  wrong.recover_with_hash = Bytes(32, 0xab);
  auto refused = call<Account>([&](auto cb) { store_->create_account(wrong, cb); });
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(fetch(a->id, 1).size(), 4u);

  NewAccount again = make_account("alice", 2);
  again.device.registration_id = 4242;
  again.device.identity_key = Bytes(33, 0x07);
  again.recover_with_hash = Bytes(32, 0xaa);
  again.recovery_hash = Bytes(32, 0xbb);
  auto recovered = call<Account>([&](auto cb) { store_->create_account(again, cb); });
  ASSERT_TRUE(recovered.has_value()) << recovered.error().to_string();
  EXPECT_TRUE(recovered->recovered);
  EXPECT_EQ(recovered->id, a->id);
  EXPECT_EQ(recovered->pre_key_count, 2u);  // the old device's three are gone
  auto found = call<std::optional<Account>>([&](auto cb) { store_->find_account("alice", cb); });
  ASSERT_TRUE(found.has_value() && found->has_value());
  ASSERT_EQ((*found)->devices.size(), 1u);
  EXPECT_EQ((*found)->devices[0].registration_id, 4242u);
  EXPECT_EQ((*found)->devices[0].identity_key, Bytes(33, 0x07));
  // The old device's queue (encrypted to keys that are gone) and prekeys are dropped.
  EXPECT_TRUE(fetch(a->id, 1).empty());
  EXPECT_EQ(store_->stats().queued_envelopes, 0u);
  auto count = call<std::uint32_t>([&](auto cb) { store_->pre_key_count(a->id, 1, cb); });
  ASSERT_TRUE(count.has_value());
  EXPECT_EQ(*count, 2u);
  EXPECT_EQ(store_->stats().accounts, 1u);
  // The code was rotated: the old one no longer works.
  NewAccount replay = make_account("alice");
  replay.recover_with_hash = Bytes(32, 0xaa);
  EXPECT_FALSE(call<Account>([&](auto cb) { store_->create_account(replay, cb); }).has_value());
}

// A recovery code never creates an account: the server asks for no invitation or proof of work
// with one, so a recovery of a free name would have been an open door.
TEST_F(StoreTest, ARecoveryOfAFreeNameCreatesNothing) {
  NewAccount sneaky = make_account("mallory", 1);
  sneaky.recover_with_hash = Bytes(32, 0xaa);
  auto r = call<Account>([&](auto cb) { store_->create_account(sneaky, cb); });
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->stats().accounts, 0u);
  auto found = call<std::optional<Account>>([&](auto cb) { store_->find_account("mallory", cb); });
  ASSERT_TRUE(found.has_value());
  EXPECT_FALSE(found->has_value());
}

// After a recovery replaced device 1, a session of the old device (a stolen phone still
// connected) can no longer put its keys on the new one.
TEST_F(StoreTest, KeysFromAReplacedDeviceAreRefused) {
  NewAccount first = make_account("alice", 1);
  first.recovery_hash = Bytes(32, 0xaa);
  auto a = call<Account>([&](auto cb) { store_->create_account(first, cb); });
  ASSERT_TRUE(a.has_value());
  const Bytes old_key = a->devices[0].auth_public_key;
  NewAccount again = make_account("alice", 1);
  again.device.auth_public_key = Bytes(32, 0x5e);
  again.recover_with_hash = Bytes(32, 0xaa);
  ASSERT_TRUE(call<Account>([&](auto cb) { store_->create_account(again, cb); }).has_value());
  SignedPreKey stolen{9, Bytes(33, 0x66), Bytes(64, 0x66)};
  auto up = call<std::uint32_t>(
      [&](auto cb) { store_->upload_keys(a->id, 1, old_key, stolen, make_pre_keys(50, 3), cb); });
  ASSERT_FALSE(up.has_value());
  EXPECT_EQ(up.error().code(), ErrorCode::kNotFound);
  auto bundles = call<std::vector<Bundle>>([&](auto cb) { store_->take_bundles(a->id, 1, cb); });
  ASSERT_TRUE(bundles.has_value());
  ASSERT_EQ(bundles->size(), 1u);
  EXPECT_EQ((*bundles)[0].signed_pre_key.public_key, again.device.signed_pre_key.public_key);
  ASSERT_TRUE((*bundles)[0].pre_key.has_value());
  EXPECT_EQ((*bundles)[0].pre_key->id, 1u);  // the new device's own, none of the old one's
  auto mine = call<std::uint32_t>([&](auto cb) {
    store_->upload_keys(a->id, 1, again.device.auth_public_key, std::nullopt, make_pre_keys(2, 1),
                        cb);
  });
  ASSERT_TRUE(mine.has_value()) << mine.error().to_string();
}

TEST_F(StoreTest, InviteIsConsumedOnce) {
  ASSERT_TRUE(call_status([&](auto cb) { store_->create_invite("tok", 5000, cb); }).is_ok());
  EXPECT_EQ(call_status([&](auto cb) { store_->create_invite("tok", 5000, cb); }).code(),
            ErrorCode::kAlreadyExists);

  NewAccount a = make_account("alice");
  a.invite_token = "tok";
  ASSERT_TRUE(call<Account>([&](auto cb) { store_->create_account(a, cb); }).has_value());

  NewAccount b = make_account("bob");
  b.invite_token = "tok";
  auto second = call<Account>([&](auto cb) { store_->create_account(b, cb); });
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), ErrorCode::kPermissionDenied);

  b.invite_token = "unknown";
  EXPECT_EQ(call<Account>([&](auto cb) { store_->create_account(b, cb); }).error().code(),
            ErrorCode::kPermissionDenied);

  ASSERT_TRUE(call_status([&](auto cb) { store_->create_invite("old", 1000, cb); }).is_ok());
  b.invite_token = "old";  // expires_ms == now_ms: expired
  EXPECT_EQ(call<Account>([&](auto cb) { store_->create_account(b, cb); }).error().code(),
            ErrorCode::kPermissionDenied);
}

// ---- keys -------------------------------------------------------------------------------------

// A device keeps at most kMaxStoredPreKeys one-time prekeys: an upload past it changes nothing.
TEST_F(StoreTest, OneTimePreKeysAreBounded) {
  Account a = create("alice", 0);
  const Bytes& key = a.devices[0].auth_public_key;
  auto upload = [&](std::uint32_t first, std::uint32_t n) {
    return call<std::uint32_t>([&](auto cb) {
      store_->upload_keys(a.id, 1, key, std::nullopt, make_pre_keys(first, n), cb);
    });
  };
  auto full = upload(1, kMaxStoredPreKeys);
  ASSERT_TRUE(full.has_value()) << full.error().to_string();
  EXPECT_EQ(*full, kMaxStoredPreKeys);
  auto over = upload(kMaxStoredPreKeys + 1, 1);
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code(), ErrorCode::kTooLarge);
  auto count = call<std::uint32_t>([&](auto cb) { store_->pre_key_count(a.id, 1, cb); });
  ASSERT_TRUE(count.has_value());
  EXPECT_EQ(*count, kMaxStoredPreKeys);
  auto replaced = upload(1, 1);  // an id already there replaces its key: still room
  ASSERT_TRUE(replaced.has_value()) << replaced.error().to_string();
}

// An upload past the cap is refused as a result, not an error: it undoes only its own writes,
// and the batch it is in commits once (an error made the store run the whole batch again, for
// every upload a client at its cap repeats; from a review: 15-30 % of the store's throughput).
TEST_F(StoreTest, AnUploadPastTheCapDoesNotRunItsBatchAgain) {
  Account a = create("alice", 0);
  const Bytes& key = a.devices[0].auth_public_key;
  auto full = call<std::uint32_t>([&](auto cb) {
    store_->upload_keys(a.id, 1, key, std::nullopt, make_pre_keys(1, kMaxStoredPreKeys), cb);
  });
  ASSERT_TRUE(full.has_value()) << full.error().to_string();
  auto gate = std::make_unique<Gate>(*store_);
  auto sent = std::make_shared<std::promise<Result<SendOutcome>>>();
  auto over = std::make_shared<std::promise<Result<std::uint32_t>>>();
  store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, 1)}, "m1"),
                         [sent](Result<SendOutcome> r) { sent->set_value(r); });
  SignedPreKey spk{9, Bytes(33, 0x09), Bytes(64, 0x19)};
  store_->upload_keys(a.id, 1, key, spk, make_pre_keys(kMaxStoredPreKeys + 1, 1),
                      [over](Result<std::uint32_t> r) { over->set_value(r); });
  gate.reset();
  auto refused = over->get_future().get();
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), ErrorCode::kTooLarge);
  auto stored = sent->get_future().get();
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(stored->kind, SendOutcome::Kind::kStored);
  EXPECT_EQ(store_->stats().last_batch_size, 2u);
  EXPECT_EQ(store_->stats().rerun_commits, 0u);
  // Nothing of the refused upload stayed: neither the key nor the signed prekey it carried.
  auto count = call<std::uint32_t>([&](auto cb) { store_->pre_key_count(a.id, 1, cb); });
  ASSERT_TRUE(count.has_value());
  EXPECT_EQ(*count, kMaxStoredPreKeys);
  auto found = call<std::optional<Account>>([&](auto cb) { store_->find_account("alice", cb); });
  ASSERT_TRUE(found.has_value() && found->has_value());
  EXPECT_NE((*found)->devices[0].signed_pre_key.id, 9u);
}

TEST_F(StoreTest, UploadKeysAndCount) {
  Account a = create("alice", 2);
  auto count = call<std::uint32_t>([&](auto cb) { store_->pre_key_count(a.id, 1, cb); });
  ASSERT_TRUE(count.has_value());
  EXPECT_EQ(*count, 2u);

  // Ids 2..6: id 2 is replaced, so 6 keys in all.
  SignedPreKey spk{8, Bytes(33, 0x07), Bytes(64, 0x11)};
  auto up = call<std::uint32_t>([&](auto cb) {
    store_->upload_keys(a.id, 1, a.devices[0].auth_public_key, spk, make_pre_keys(2, 5), cb);
  });
  ASSERT_TRUE(up.has_value()) << up.error().to_string();
  EXPECT_EQ(*up, 6u);

  auto bundles = call<std::vector<Bundle>>([&](auto cb) { store_->take_bundles(a.id, 1, cb); });
  ASSERT_TRUE(bundles.has_value());
  ASSERT_EQ(bundles->size(), 1u);
  EXPECT_EQ((*bundles)[0].signed_pre_key.id, 8u);
  EXPECT_EQ((*bundles)[0].signed_pre_key.signature, Bytes(64, 0x11));
  ASSERT_TRUE((*bundles)[0].pre_key.has_value());
  EXPECT_EQ((*bundles)[0].pre_key->id, 1u);  // lowest id first

  auto unknown = call<std::uint32_t>([&](auto cb) {
    store_->upload_keys(a.id, 9, a.devices[0].auth_public_key, std::nullopt, make_pre_keys(1, 1),
                        cb);
  });
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(call<std::uint32_t>([&](auto cb) { store_->pre_key_count(a.id, 9, cb); })
                .error()
                .code(),
            ErrorCode::kNotFound);
}

TEST_F(StoreTest, TakeBundlesHandsEachPreKeyOutOnceUnderConcurrency) {
  constexpr std::uint32_t kKeys = 2000;
  constexpr int kThreads = 8;
  constexpr int kCallsPerThread = 300;  // 2400 calls: 400 must come back without a key
  Account a = create("alice", kKeys);

  std::mutex mu;
  std::vector<std::uint32_t> handed;
  int without = 0;
  int failures = 0;
  std::atomic<int> remaining{kThreads * kCallsPerThread};
  std::promise<void> all_done;

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        store_->take_bundles(a.id, 0, [&](Result<std::vector<Bundle>> r) {
          {
            std::lock_guard<std::mutex> lock(mu);
            if (!r.has_value() || r->size() != 1) {
              ++failures;
            } else if ((*r)[0].pre_key.has_value()) {
              handed.push_back((*r)[0].pre_key->id);
            } else {
              ++without;
            }
          }
          if (remaining.fetch_sub(1) == 1) all_done.set_value();
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(all_done.get_future().wait_for(kTimeout), std::future_status::ready);

  EXPECT_EQ(failures, 0);
  EXPECT_EQ(handed.size(), kKeys);
  EXPECT_EQ(without, kThreads * kCallsPerThread - static_cast<int>(kKeys));
  std::set<std::uint32_t> unique(handed.begin(), handed.end());
  EXPECT_EQ(unique.size(), handed.size()) << "a prekey was handed out twice";
  EXPECT_EQ(*call<std::uint32_t>([&](auto cb) { store_->pre_key_count(a.id, 1, cb); }), 0u);
}

TEST_F(StoreTest, BundlesWithoutPreKeysCarryNone) {
  Account a = create("alice", 1);
  ASSERT_TRUE(add_device(a.id, 2).is_ok());
  auto first = call<std::vector<Bundle>>([&](auto cb) { store_->take_bundles(a.id, 0, cb); });
  ASSERT_TRUE(first.has_value());
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].device_id, 1u);
  EXPECT_TRUE((*first)[0].pre_key.has_value());
  EXPECT_EQ((*first)[1].device_id, 2u);
  EXPECT_FALSE((*first)[1].pre_key.has_value());

  auto second = call<std::vector<Bundle>>([&](auto cb) { store_->take_bundles(a.id, 1, cb); });
  ASSERT_TRUE(second.has_value());
  ASSERT_EQ(second->size(), 1u);
  EXPECT_FALSE((*second)[0].pre_key.has_value());
  EXPECT_EQ((*second)[0].identity_key, Bytes(33, 0x05));

  EXPECT_EQ(call<std::vector<Bundle>>([&](auto cb) { store_->take_bundles(a.id + 7, 0, cb); })
                .error()
                .code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(call<std::vector<Bundle>>([&](auto cb) { store_->take_bundles(a.id, 3, cb); })
                .error()
                .code(),
            ErrorCode::kNotFound);
}

// ---- queues -----------------------------------------------------------------------------------

TEST_F(StoreTest, StoreAndFetchInOrder) {
  Account a = create("alice");
  std::vector<std::int64_t> seqs;
  for (std::uint32_t i = 0; i < 10; ++i) {
    auto r = send(make_send(a.id, {make_delivery(a.id, 1, i)}));
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    EXPECT_EQ(r->kind, SendOutcome::Kind::kStored);
    ASSERT_EQ(r->seqs.size(), 1u);
    seqs.push_back(r->seqs[0]);
  }
  auto all = fetch(a.id, 1);
  ASSERT_EQ(all.size(), 10u);
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].seq, seqs[i]);
  for (std::uint32_t i = 0; i < 10; ++i) {
    EXPECT_EQ(tail(all[i].envelope.server_id), tail(server_id(i, 1)));
    EXPECT_EQ(all[i].envelope.content, Bytes(10, static_cast<std::uint8_t>(i)));
    EXPECT_EQ(all[i].envelope.source, "sender");
    EXPECT_EQ(all[i].envelope.timestamp_ms, 5000 + i);
    if (i > 0) {
      EXPECT_GT(all[i].seq, all[i - 1].seq);
    }
  }
  auto page = fetch(a.id, 1, all[4].seq, 3);
  ASSERT_EQ(page.size(), 3u);
  EXPECT_EQ(page[0].seq, all[5].seq);
  EXPECT_EQ(page[2].seq, all[7].seq);
  EXPECT_TRUE(fetch(a.id, 2).empty());
  EXPECT_EQ(store_->stats().queued_envelopes, 10u);
  EXPECT_EQ(store_->stats().queued_bytes, 100u);
}

// One sender may hold only its share of a device queue (of another account): past it the send
// is refused naming "sender_count" or "sender_bytes", while other senders still get through;
// acknowledgements free the share, the shares are rebuilt at open, and an account's sends to
// its own devices have none.
TEST_F(StoreTest, OneSenderHoldsOnlyItsShareOfAQueue) {
  Account a = create("alice");
  QueueLimits limits;
  limits.max_count = 10;
  limits.max_bytes = 1000;
  limits.max_sender_count = 3;
  limits.max_sender_bytes = 35;
  auto from = [&](const std::string& sender, std::uint32_t n, std::size_t size = 10) {
    Delivery d = make_delivery(a.id, 1, n, size);
    d.envelope.source = sender;
    SendBatch b = make_send(a.id, {std::move(d)});
    b.limits = limits;
    return send(b);
  };
  std::vector<Bytes> mallorys;
  for (std::uint32_t n = 0; n < 3; ++n) {
    auto r = from("mallory", n);
    ASSERT_EQ(r->kind, SendOutcome::Kind::kStored);
    mallorys.push_back(r->server_ids.front());
  }
  auto over = from("mallory", 3);
  ASSERT_TRUE(over.has_value());
  EXPECT_EQ(over->kind, SendOutcome::Kind::kQueueFull);
  EXPECT_EQ(over->limit, "sender_count");
  EXPECT_EQ(over->device_id, 1u);
  EXPECT_EQ(from("bob", 4)->kind, SendOutcome::Kind::kStored);
  EXPECT_EQ(from("carol", 5)->kind, SendOutcome::Kind::kStored);

  // Bytes: bob holds 10, and 30 more would pass 35.
  auto big = from("bob", 6, 30);
  EXPECT_EQ(big->kind, SendOutcome::Kind::kQueueFull);
  EXPECT_EQ(big->limit, "sender_bytes");
  EXPECT_EQ(from("bob", 7, 25)->kind, SendOutcome::Kind::kStored);  // exactly 35

  // The shares hold across a restart: the index is rebuilt from the envelopes' sources.
  open();
  EXPECT_EQ(from("mallory", 8)->limit, "sender_count");
  EXPECT_EQ(from("bob", 9, 1)->limit, "sender_bytes");

  // An acknowledged envelope frees its sender's share.
  auto acked = ack(a.id, 1, {mallorys.front()});
  ASSERT_TRUE(acked.has_value());
  EXPECT_EQ(*acked, 1u);
  EXPECT_EQ(from("mallory", 10)->kind, SendOutcome::Kind::kStored);
  EXPECT_EQ(from("mallory", 11)->limit, "sender_count");

  // The account's own sends (from another of its devices) have no share, only the queue's
  // limits.
  Delivery own = make_delivery(a.id, 1, 12);
  own.envelope.source = "alice";
  SendBatch mine = make_send(a.id, {own, make_delivery(a.id, 1, 13)});
  mine.sender_account = a.id;
  mine.limits = limits;
  mine.deliveries[1].envelope.source = "alice";
  mine.deliveries[1].envelope.server_id = server_id(13, 1);
  mine.deliveries[0].envelope.content = Bytes(40, 1);  // over the bytes share
  EXPECT_EQ(send(mine)->kind, SendOutcome::Kind::kStored);

  // A send whose envelopes name two sources is refused and stores nothing.
  SendBatch mixed = make_send(a.id, {make_delivery(a.id, 1, 14), make_delivery(a.id, 1, 15)});
  mixed.deliveries[1].envelope.source = "someone else";
  auto refused = send(mixed);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(fetch(a.id, 1).size(), 8u);  // mallory 3, bob 2, carol 1, alice 2
}

TEST_F(StoreTest, DuplicateClientMessageIdStoresNothing) {
  Account a = create("alice");
  Account b = create("bob");
  auto first = send(make_send(a.id, {make_delivery(a.id, 1, 1)}, "m1"));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->kind, SendOutcome::Kind::kStored);
  auto again = send(make_send(a.id, {make_delivery(a.id, 1, 2)}, "m1"));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->kind, SendOutcome::Kind::kDuplicate);
  EXPECT_EQ(fetch(a.id, 1).size(), 1u);

  // The key includes the destination; an empty id never deduplicates.
  EXPECT_EQ(send(make_send(b.id, {make_delivery(b.id, 1, 3)}, "m1"))->kind,
            SendOutcome::Kind::kStored);
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 4)}))->kind, SendOutcome::Kind::kStored);
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 5)}))->kind, SendOutcome::Kind::kStored);
  EXPECT_EQ(fetch(a.id, 1).size(), 3u);
}

TEST_F(StoreTest, QueueLimitsNameTheLimitAndDevice) {
  Account a = create("alice");
  ASSERT_TRUE(add_device(a.id, 2).is_ok());

  QueueLimits limits;
  limits.max_count = 2;
  limits.max_bytes = 1000;
  for (std::uint32_t i = 0; i < 2; ++i) {
    SendBatch b = make_send(a.id, {make_delivery(a.id, 2, i)});
    b.limits = limits;
    ASSERT_EQ(send(b)->kind, SendOutcome::Kind::kStored);
  }
  // Device 1 has room, device 2 does not: nothing is stored, not even for device 1, and the
  // dedup key is not taken (a retry after the queue drains is not a duplicate).
  SendBatch full = make_send(a.id, {make_delivery(a.id, 1, 9), make_delivery(a.id, 2, 9)}, "m9");
  full.limits = limits;
  auto r = send(full);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->kind, SendOutcome::Kind::kQueueFull);
  EXPECT_EQ(r->limit, "count");
  EXPECT_EQ(r->device_id, 2u);
  EXPECT_TRUE(fetch(a.id, 1).empty());

  limits.max_count = 100;
  limits.max_bytes = 25;  // device 2 holds 20 bytes
  full.limits = limits;
  r = send(full);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->kind, SendOutcome::Kind::kQueueFull);
  EXPECT_EQ(r->limit, "bytes");
  EXPECT_EQ(r->device_id, 2u);

  limits.max_bytes = 30;  // exactly full is allowed
  full.limits = limits;
  EXPECT_EQ(send(full)->kind, SendOutcome::Kind::kStored);

  // Unknown devices are refused as a whole.
  auto unknown = send(make_send(a.id, {make_delivery(a.id, 1, 20), make_delivery(a.id, 5, 20)}));
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ(unknown->kind, SendOutcome::Kind::kDeviceChanged);
  EXPECT_TRUE(unknown->device_gone);
  EXPECT_EQ(unknown->device_id, 5u);
  EXPECT_EQ(fetch(a.id, 1).size(), 1u);
}

// A send is checked against the devices the server had cached; a recovery can commit between
// that check and the store. The store refuses a delivery whose registration id is no longer its
// device's (stale), whether the new device's queue is empty or already holds envelopes, and
// after a restart; nothing of such a send is stored.
TEST_F(StoreTest, ASendCheckedAgainstAReplacedDeviceIsRefused) {
  NewAccount first = make_account("alice");
  first.recovery_hash = Bytes(32, 0xaa);
  auto a = call<Account>([&](auto cb) { store_->create_account(first, cb); });
  ASSERT_TRUE(a.has_value());
  ASSERT_EQ(send(make_send(a->id, {make_delivery(a->id, 1, 1)}))->kind,
            SendOutcome::Kind::kStored);  // the index now knows device 1's registration id

  NewAccount again = make_account("alice");
  again.device.registration_id = 4242;
  again.recover_with_hash = Bytes(32, 0xaa);
  ASSERT_TRUE(call<Account>([&](auto cb) { store_->create_account(again, cb); }).has_value());

  const auto stale = [&](std::uint32_t n) {
    auto r = send(make_send(a->id, {make_delivery(a->id, 1, n)}));  // registration id 1001
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    EXPECT_EQ(r->kind, SendOutcome::Kind::kDeviceChanged);
    EXPECT_EQ(r->device_id, 1u);
    EXPECT_FALSE(r->device_gone);
  };
  stale(2);  // the new device's queue is empty
  EXPECT_TRUE(fetch(a->id, 1).empty());

  Delivery fresh = make_delivery(a->id, 1, 3);
  fresh.registration_id = 4242;
  ASSERT_EQ(send(make_send(a->id, {fresh}))->kind, SendOutcome::Kind::kStored);
  stale(4);  // the queue holds an envelope for the new device
  open();    // the index is rebuilt without registration ids
  stale(5);
  fresh.envelope.server_id = server_id(6, 1);
  EXPECT_EQ(send(make_send(a->id, {fresh}))->kind, SendOutcome::Kind::kStored);
  EXPECT_EQ(fetch(a->id, 1).size(), 2u);

  // Deliveries to one device must agree on its registration id.
  Delivery other = make_delivery(a->id, 1, 7);
  auto two = send(make_send(a->id, {fresh, other}));
  ASSERT_FALSE(two.has_value());
  EXPECT_EQ(two.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(fetch(a->id, 1).size(), 2u);
}

TEST_F(StoreTest, AckDeletesOnlyTheNamedIdsOfThatDevice) {
  Account a = create("alice");
  ASSERT_TRUE(add_device(a.id, 2).is_ok());
  for (std::uint32_t i = 0; i < 5; ++i) {
    ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, i), make_delivery(a.id, 2, i)}))->kind,
              SendOutcome::Kind::kStored);
  }
  EXPECT_EQ(store_->stats().queued_envelopes, 10u);
  // The ids the store assigned, by the caller's part.
  std::map<Bytes, Bytes> id;
  for (std::uint32_t device : {1u, 2u}) {
    for (const QueuedEnvelope& q : fetch(a.id, device)) {
      EXPECT_EQ(q.envelope.server_id.size(), 16u);
      id[tail(q.envelope.server_id)] = q.envelope.server_id;
    }
  }
  ASSERT_EQ(id.size(), 10u);
  Bytes unknown = id[tail(server_id(1, 1))];
  unknown[15] ^= 1;  // the seq of a queued envelope, with other random bytes
  // Ids 0 and 3 of device 1, id 4 of device 2 (not this device's), an unknown id, a short one.
  auto n = ack(a.id, 1, {id[tail(server_id(0, 1))], id[tail(server_id(3, 1))],
                         id[tail(server_id(4, 2))], server_id(77, 1), unknown, Bytes(5, 1)});
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 2u);
  auto left = fetch(a.id, 1);
  ASSERT_EQ(left.size(), 3u);
  EXPECT_EQ(tail(left[0].envelope.server_id), tail(server_id(1, 1)));
  EXPECT_EQ(tail(left[1].envelope.server_id), tail(server_id(2, 1)));
  EXPECT_EQ(tail(left[2].envelope.server_id), tail(server_id(4, 1)));
  EXPECT_EQ(fetch(a.id, 2).size(), 5u);
  EXPECT_EQ(*ack(a.id, 1, {id[tail(server_id(0, 1))]}), 0u);  // already gone
  EXPECT_EQ(store_->stats().queued_envelopes, 8u);
  EXPECT_EQ(store_->stats().queued_bytes, 80u);

  // Freed room counts again for the limit.
  QueueLimits limits;
  limits.max_count = 4;
  SendBatch b = make_send(a.id, {make_delivery(a.id, 1, 50)});
  b.limits = limits;
  EXPECT_EQ(send(b)->kind, SendOutcome::Kind::kStored);
  EXPECT_EQ(send(b)->kind, SendOutcome::Kind::kQueueFull);
}

// A delivered envelope leaves nothing behind in the files (secure_delete): not the ciphertext,
// not who sent it. The store is closed, so SQLite has checkpointed the WAL into the database.
TEST_F(StoreTest, ADeliveredEnvelopeLeavesNothingInTheFiles) {
  Account a = create("alice");
  const std::string ciphertext = "ciphertext-that-must-not-outlive-its-delivery-0123456789";
  const std::string sender = "sender-that-must-not-be-kept";
  Delivery d = make_delivery(a.id, 1, 1);
  d.envelope.content = to_bytes(ciphertext);
  d.envelope.source = sender;
  ASSERT_EQ(send(make_send(a.id, {d}))->kind, SendOutcome::Kind::kStored);
  const auto queued = fetch(a.id, 1);
  ASSERT_EQ(queued.size(), 1u);
  ASSERT_EQ(*ack(a.id, 1, {queued[0].envelope.server_id}), 1u);
  store_.reset();  // deletes the acknowledged row and checkpoints
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ++files;
    EXPECT_EQ(bytes.find(ciphertext), std::string::npos) << entry.path();
    EXPECT_EQ(bytes.find(sender), std::string::npos) << entry.path();
  }
  EXPECT_GE(files, 1u);
}

TEST_F(StoreTest, ExpireRemovesOldEnvelopesDedupInvitesAndAttachments) {
  Account a = create("alice");
  ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 1)}, "old", 1000))->kind,
            SendOutcome::Kind::kStored);
  ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 2)}, "new", 5000))->kind,
            SendOutcome::Kind::kStored);
  ASSERT_TRUE(call_status([&](auto cb) { store_->create_invite("soon", 6000, cb); }).is_ok());
  ASSERT_TRUE(call_status([&](auto cb) { store_->create_invite("later", 9000, cb); }).is_ok());
  Attachment att{"aa", Bytes(32, 1), a.id, 100, 0, 1000, 6000};
  ASSERT_TRUE(create_attachment(att).is_ok());
  att.id = "bb";
  att.expires_ms = 9000;
  ASSERT_TRUE(create_attachment(att).is_ok());

  // now 6000: envelopes stored before 4000 and dedup keys before 3000 go.
  auto r = call<std::vector<std::string>>(
      [&](auto cb) { store_->expire(6000, 2000, 3000, cb); });
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(*r, std::vector<std::string>{"aa"});

  auto left = fetch(a.id, 1);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(tail(left[0].envelope.server_id), tail(server_id(2, 1)));
  EXPECT_EQ(store_->stats().queued_envelopes, 1u);
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 3)}, "old", 6000))->kind,
            SendOutcome::Kind::kStored);
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 4)}, "new", 6000))->kind,
            SendOutcome::Kind::kDuplicate);

  NewAccount b = make_account("bob");
  b.now_ms = 100;  // even before its expiry, an expired-and-removed invite is unknown
  b.invite_token = "soon";
  EXPECT_EQ(call<Account>([&](auto cb) { store_->create_account(b, cb); }).error().code(),
            ErrorCode::kPermissionDenied);
  b.invite_token = "later";
  EXPECT_TRUE(call<Account>([&](auto cb) { store_->create_account(b, cb); }).has_value());
  auto aa = call<std::optional<Attachment>>([&](auto cb) { store_->find_attachment("aa", cb); });
  EXPECT_FALSE(aa->has_value());
  auto bb = call<std::optional<Attachment>>([&](auto cb) { store_->find_attachment("bb", cb); });
  EXPECT_TRUE(bb->has_value());
}

// Expiry deletes a prefix of the dedup log, and the index in memory forgets the same prefix: a
// key stored while the clock was set back stays (a resend of it is a duplicate) until the
// younger keys before it expire too (docs/storage.md, "Write volume").
TEST_F(StoreTest, AKeyStoredWithTheClockSetBackStaysUntilTheKeysBeforeItExpire) {
  Account a = create("alice");
  ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 1)}, "young", 10000))->kind,
            SendOutcome::Kind::kStored);
  ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 2)}, "old", 1000))->kind,
            SendOutcome::Kind::kStored);
  auto expire = [&](std::int64_t now_ms) {  // dedup keys older than a second go
    return call<std::vector<std::string>>(
        [&](auto cb) { store_->expire(now_ms, 1000000, 1000, cb); });
  };
  // Cutoff 5000: "old" is out of the window, but "young" before it is not.
  ASSERT_TRUE(expire(6000).has_value());
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 3)}, "old", 6000))->kind,
            SendOutcome::Kind::kDuplicate);
  // Cutoff 11000: both go.
  ASSERT_TRUE(expire(12000).has_value());
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 4)}, "old", 12000))->kind,
            SendOutcome::Kind::kStored);
}

// A reading at the bottom of the clock's range (a damaged clock) deletes nothing: the cutoff
// does not wrap round to the top, where everything would be older than it.
TEST_F(StoreTest, AnExpiryAtTheBottomOfTheClocksRangeDeletesNothing) {
  Account a = create("alice");
  ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 1)}, "kept", 1000))->kind,
            SendOutcome::Kind::kStored);
  const std::int64_t bottom = std::numeric_limits<std::int64_t>::min() + 1000;
  ASSERT_TRUE(call<std::vector<std::string>>([&](auto cb) {
                store_->expire(bottom, 30 * 86'400'000LL, 30 * 86'400'000LL, cb);
              }).has_value());
  EXPECT_EQ(fetch(a.id, 1).size(), 1u);
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 2)}, "kept", 1000))->kind,
            SendOutcome::Kind::kDuplicate);
}

// The time an expiry ran to is kept with what it deleted, for the next start's housekeeping
// clock; a store that never expired anything reports none.
TEST_F(StoreTest, TheExpiryClockIsKeptAcrossAReopen) {
  EXPECT_EQ(store_->expiry_clock_at_open_ms(), 0);
  ASSERT_TRUE(call<std::vector<std::string>>([&](auto cb) {
                store_->expire(7000, 1000, 1000, cb);
              }).has_value());
  ASSERT_TRUE(call<std::vector<std::string>>([&](auto cb) {
                store_->expire(9000, 1000, 1000, cb);
              }).has_value());
  EXPECT_EQ(store_->expiry_clock_at_open_ms(), 0) << "the figure at open, not the latest";
  open();
  EXPECT_EQ(store_->expiry_clock_at_open_ms(), 9000);
}

// ---- attachments ------------------------------------------------------------------------------

TEST_F(StoreTest, AttachmentsCrud) {
  Attachment att{"0123456789abcdef0123456789abcdef", Bytes(32, 9), 4, 1000, 0, 10, 20};
  ASSERT_TRUE(create_attachment(att).is_ok());
  EXPECT_EQ(create_attachment(att).code(), ErrorCode::kAlreadyExists);

  auto recorded =
      call<std::uint64_t>([&](auto cb) { store_->set_attachment_progress(att.id, 400, cb); });
  ASSERT_TRUE(recorded.has_value()) << recorded.error().to_string();
  EXPECT_EQ(*recorded, 400u);
  auto found = call<std::optional<Attachment>>([&](auto cb) { store_->find_attachment(att.id, cb); });
  ASSERT_TRUE(found.has_value());
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->have, 400u);
  EXPECT_EQ((*found)->size, 1000u);
  EXPECT_EQ((*found)->upload_token_hash, Bytes(32, 9));
  EXPECT_EQ((*found)->account_id, 4);
  EXPECT_EQ((*found)->created_ms, 10);
  EXPECT_EQ((*found)->expires_ms, 20);

  auto beyond =
      call<std::uint64_t>([&](auto cb) { store_->set_attachment_progress(att.id, 1001, cb); });
  EXPECT_EQ(beyond.error().code(), ErrorCode::kInvalidArgument);
  auto nope = call<std::uint64_t>([&](auto cb) { store_->set_attachment_progress("nope", 1, cb); });
  EXPECT_EQ(nope.error().code(), ErrorCode::kNotFound);
  auto none = call<std::optional<Attachment>>([&](auto cb) { store_->find_attachment("nope", cb); });
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());
}

// Progress only moves forward: a connection cut late, after another finished the upload,
// records less than is stored; that succeeds and changes nothing, so a complete attachment
// never becomes incomplete again (its downloads would fail for good).
TEST_F(StoreTest, AttachmentProgressOnlyMovesForward) {
  Attachment att{"0123456789abcdef0123456789abcdef", Bytes(32, 9), 4, 2000, 0, 10, 20};
  ASSERT_TRUE(create_attachment(att).is_ok());
  auto have = [&]() -> std::uint64_t {
    auto found =
        call<std::optional<Attachment>>([&](auto cb) { store_->find_attachment(att.id, cb); });
    EXPECT_TRUE(found.has_value() && found->has_value());
    return found.has_value() && found->has_value() ? (*found)->have : 0;
  };
  auto progress = [&](std::uint64_t n) {
    auto r = call<std::uint64_t>([&](auto cb) { store_->set_attachment_progress(att.id, n, cb); });
    return r.has_value() ? *r : 0;  // 0: refused
  };
  // Each answer is what is recorded after it, also when that is more than was reported.
  ASSERT_EQ(progress(1000), 1000u);
  EXPECT_EQ(progress(300), 1000u);
  EXPECT_EQ(have(), 1000u);
  ASSERT_EQ(progress(2000), 2000u);
  EXPECT_EQ(progress(300), 2000u);
  EXPECT_EQ(have(), 2000u);  // still complete
  EXPECT_EQ(progress(2001), 0u);  // beyond the size: refused (kInvalidArgument, above)
  EXPECT_EQ(have(), 2000u);
}

// An account's unexpired attachments, by their declared sizes and by number, stay within the
// quota passed with each creation; one that would exceed it is refused and stores nothing.
// Expired ones (even before expire() deletes them) and other accounts' do not count.
TEST_F(StoreTest, AttachmentsStayWithinTheAccountQuota) {
  constexpr std::uint64_t kQuota = 1000;
  auto make = [](const char* id, std::int64_t account, std::uint64_t size, std::int64_t created_ms,
                 std::int64_t expires_ms) {
    return Attachment{id, Bytes(32, 1), account, size, 0, created_ms, expires_ms};
  };
  auto stored = [&](const char* id) {
    auto found = call<std::optional<Attachment>>([&](auto cb) { store_->find_attachment(id, cb); });
    EXPECT_TRUE(found.has_value());
    return found.has_value() && found->has_value();
  };
  ASSERT_TRUE(create_attachment(make("a1", 4, 400, 10, 50), kQuota).is_ok());
  ASSERT_TRUE(create_attachment(make("a2", 4, 600, 10, 100), kQuota).is_ok());  // exactly full
  EXPECT_EQ(create_attachment(make("a3", 4, 1, 10, 100), kQuota).code(), ErrorCode::kTooLarge);
  EXPECT_FALSE(stored("a3"));

  // Another account has a quota of its own; one attachment larger than the quota never fits.
  EXPECT_TRUE(create_attachment(make("b1", 5, 1000, 10, 100), kQuota).is_ok());
  EXPECT_EQ(create_attachment(make("c1", 6, 1001, 10, 100), kQuota).code(), ErrorCode::kTooLarge);
  EXPECT_FALSE(stored("c1"));

  // At 50 a1 has expired (not yet deleted): only a2's 600 bytes, and one attachment, count.
  EXPECT_EQ(create_attachment(make("a4", 4, 401, 50, 100), kQuota).code(), ErrorCode::kTooLarge);
  EXPECT_EQ(create_attachment(make("a4", 4, 1, 50, 100), kQuota, 1).code(),
            ErrorCode::kResourceExhausted);
  EXPECT_TRUE(create_attachment(make("a5", 4, 400, 50, 100), kQuota, 2).is_ok());
  EXPECT_TRUE(stored("a1"));
  EXPECT_TRUE(stored("a5"));
  // Deleted by expiry, it leaves the account's usage too: a5 and a2 fill it.
  auto expired =
      call<std::vector<std::string>>([&](auto cb) { store_->expire(50, 1000, 1000, cb); });
  ASSERT_TRUE(expired.has_value()) << expired.error().to_string();
  EXPECT_EQ(*expired, std::vector<std::string>{"a1"});
  EXPECT_EQ(create_attachment(make("a6", 4, 1, 50, 100), kQuota).code(), ErrorCode::kTooLarge);
  EXPECT_EQ(create_attachment(make("a6", 4, 1, 50, 100), kNoQuota, 2).code(),
            ErrorCode::kResourceExhausted);

  // By number: account 7 may hold two, however small.
  EXPECT_TRUE(create_attachment(make("d1", 7, 1, 50, 100), kQuota, 2).is_ok());
  EXPECT_TRUE(create_attachment(make("d2", 7, 1, 50, 100), kQuota, 2).is_ok());
  EXPECT_EQ(create_attachment(make("d3", 7, 1, 50, 100), kQuota, 2).code(),
            ErrorCode::kResourceExhausted);
  EXPECT_FALSE(stored("d3"));
  // A taken id stores nothing and counts nothing.
  EXPECT_EQ(create_attachment(make("d1", 8, 1, 50, 100), kQuota, 1).code(),
            ErrorCode::kAlreadyExists);
  EXPECT_TRUE(create_attachment(make("e1", 8, 1, 50, 100), kQuota, 1).is_ok());

  // Expiry is judged by the clock passed with the quota (the server's expiry clock, by which
  // attachments are served and deleted), not by the new attachment's creation: while that
  // clock lags, f1 is still served and still counts.
  ASSERT_TRUE(create_attachment(make("f1", 9, 1000, 10, 50), kQuota).is_ok());
  EXPECT_EQ(create_attachment(make("f2", 9, 1000, 60, 100), kQuota, kNoQuota, 49).code(),
            ErrorCode::kTooLarge);
  EXPECT_EQ(create_attachment(make("f2", 9, 1, 60, 100), kNoQuota, 1, 49).code(),
            ErrorCode::kResourceExhausted);
  EXPECT_TRUE(create_attachment(make("f2", 9, 1000, 60, 100), kQuota, 1, 50).is_ok());
}

// Creations queued together run in one batch: the second sees the first, so two that each fit
// alone but not together cannot both pass.
TEST_F(StoreTest, ConcurrentAttachmentsCannotBothPassTheQuota) {
  using Outcome = Result<AttachmentOutcome>;
  auto first = std::make_shared<std::promise<Outcome>>();
  auto second = std::make_shared<std::promise<Outcome>>();
  {
    Gate gate(*store_);
    store_->create_attachment(Attachment{"x1", Bytes(32, 1), 4, 600, 0, 10, 100}, {1000, 10},
                              [first](Outcome r) { first->set_value(std::move(r)); });
    store_->create_attachment(Attachment{"x2", Bytes(32, 1), 4, 600, 0, 10, 100}, {1000, 10},
                              [second](Outcome r) { second->set_value(std::move(r)); });
  }
  EXPECT_EQ(first->get_future().get().value(), AttachmentOutcome::kCreated);
  EXPECT_EQ(second->get_future().get().value(), AttachmentOutcome::kOverQuota);
}

// ---- durability, migrations, lifecycle ------------------------------------------------------------

TEST_F(StoreTest, ReopenSeesEverything) {
  Account a = create("alice", 5);
  ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 1, 30)}, "m"))->kind,
            SendOutcome::Kind::kStored);
  ASSERT_TRUE(call_status([&](auto cb) { store_->create_invite("tok", 9000, cb); }).is_ok());
  Attachment att{"aa", Bytes(32, 1), a.id, 100, 50, 1000, 6000};
  ASSERT_TRUE(create_attachment(att).is_ok());
  store_->close();

  open();
  auto found = call<std::optional<Account>>([&](auto cb) { store_->find_account("alice", cb); });
  ASSERT_TRUE(found.has_value() && found->has_value());
  EXPECT_EQ((*found)->id, a.id);
  EXPECT_EQ(*call<std::uint32_t>([&](auto cb) { store_->pre_key_count(a.id, 1, cb); }), 5u);
  auto q = fetch(a.id, 1);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].envelope.content.size(), 30u);
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 2)}, "m"))->kind,
            SendOutcome::Kind::kDuplicate);
  EXPECT_EQ(call_status([&](auto cb) { store_->create_invite("tok", 9000, cb); }).code(),
            ErrorCode::kAlreadyExists);
  auto f = call<std::optional<Attachment>>([&](auto cb) { store_->find_attachment("aa", cb); });
  ASSERT_TRUE(f.has_value() && f->has_value());
  EXPECT_EQ((*f)->have, 50u);

  Stats s = store_->stats();
  EXPECT_EQ(s.accounts, 1u);
  EXPECT_EQ(s.queued_envelopes, 1u);
  EXPECT_EQ(s.queued_bytes, 30u);

  // A new account after reopening never reuses an id.
  EXPECT_GT(create("bob").id, a.id);
}

TEST_F(StoreTest, ReopeningAMigratedDatabaseDoesNotMigrateAgain) {
  create("alice");
  store_->close();
  store_.reset();
  {
    auto db = internal::Db::open(path_);
    ASSERT_TRUE(db.has_value());
    {
      auto v = (*db)->prepare("PRAGMA user_version", "test");
      ASSERT_TRUE(v.has_value());
      ASSERT_TRUE(*v->step());
      EXPECT_EQ(v->column_int(0), latest_schema_version());
    }
    // Applying migrations again is a no-op (a re-run of CREATE TABLE would fail).
    EXPECT_TRUE(migrate(**db).is_ok());
  }
  open();
  auto found = call<std::optional<Account>>([&](auto cb) { store_->find_account("alice", cb); });
  ASSERT_TRUE(found.has_value());
  EXPECT_TRUE(found->has_value());
  ASSERT_FALSE(migrations().empty());
  for (std::size_t i = 0; i < migrations().size(); ++i) {
    EXPECT_EQ(migrations()[i].version, static_cast<std::int32_t>(i + 1));
  }
}

TEST_F(StoreTest, ServerIdsCarryTheSeqWhichIsNeverReused) {
  Account a = create("alice");
  auto r = send(make_send(a.id, {make_delivery(a.id, 1, 1), make_delivery(a.id, 1, 2)}));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  ASSERT_EQ(r->server_ids.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    std::uint64_t prefix = 0;
    for (std::size_t b = 0; b < 8; ++b) prefix = (prefix << 8) | r->server_ids[i][b];
    EXPECT_EQ(static_cast<std::int64_t>(prefix), r->seqs[i]);
    EXPECT_EQ(tail(r->server_ids[i]), tail(server_id(static_cast<std::uint32_t>(i + 1), 1)));
  }
  auto q = fetch(a.id, 1);
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[0].envelope.server_id, r->server_ids[0]);
  // Acknowledge everything, reopen: the next seq is still higher (an id is never handed out
  // twice, even though the table is empty and SQLite would reuse the rowid).
  EXPECT_EQ(*ack(a.id, 1, r->server_ids), 2u);
  store_->close();
  open();
  auto next = send(make_send(a.id, {make_delivery(a.id, 1, 3)}));
  ASSERT_TRUE(next.has_value());
  ASSERT_EQ(next->seqs.size(), 1u);
  EXPECT_GT(next->seqs[0], r->seqs[1]);

  // A server id that is not 16 bytes is refused and stores nothing.
  SendBatch bad = make_send(a.id, {make_delivery(a.id, 1, 4)});
  bad.deliveries[0].envelope.server_id = Bytes(8, 1);
  auto refused = send(bad);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(fetch(a.id, 1).size(), 1u);
}

TEST_F(StoreTest, DedupIndexKeepsTheNewestKeysWithinItsCapacity) {
  store_->close();
  internal::SqliteOptions small;
  small.dedup_entries = 2;
  open(small);
  Account a = create("alice");
  for (const char* id : {"k1", "k2", "k3"}) {
    ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 1)}, id))->kind,
              SendOutcome::Kind::kStored);
  }
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 1)}, "k3"))->kind,
            SendOutcome::Kind::kDuplicate);
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 1)}, "k2"))->kind,
            SendOutcome::Kind::kDuplicate);
  // k1 fell out of the index: documented, a resend that old is stored again.
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 1)}, "k1"))->kind,
            SendOutcome::Kind::kStored);
  // The index is rebuilt from the table at open, newest keys first.
  store_->close();
  open(small);
  EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 1)}, "k1"))->kind,
            SendOutcome::Kind::kDuplicate);
}

TEST_F(StoreTest, MigrationToV3KeepsQueuedEnvelopesAndDedupKeysOfV2) {
  const Bytes legacy_id(16, 0xab);  // a v2 server id: random, no seq in it
  ASSERT_NO_FATAL_FAILURE(recreate_at_v2(
      "INSERT INTO accounts (id, name, folded_name, created_ms) VALUES (7, 'a', 'a', 1);"
      "INSERT INTO devices VALUES (7, 1, 1001, zeroblob(32), zeroblob(33), 1, zeroblob(33), "
      "  zeroblob(64), 1);"
      "INSERT INTO queue_counters VALUES (7, 1, 1, 3);"
      "INSERT INTO envelopes (seq, account_id, device_id, server_id, timestamp_ms, source, "
      "  source_device, type, content, size, stored_ms) "
      "  VALUES (41, 7, 1, x'abababababababababababababababab', 1, 's', 1, 1, x'010203', 3, 1);"
      "INSERT INTO dedup VALUES (99, 1, 7, CAST('old' AS BLOB), 1);"));
  open();
  auto q = fetch(7, 1);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].seq, 41);
  EXPECT_EQ(q[0].envelope.server_id, legacy_id);
  SendBatch again = make_send(7, {make_delivery(7, 1, 1)}, "old");
  again.sender_account = 99;
  EXPECT_EQ(send(again)->kind, SendOutcome::Kind::kDuplicate);
  auto fresh = send(make_send(7, {make_delivery(7, 1, 2)}));
  ASSERT_TRUE(fresh.has_value());
  EXPECT_GT(fresh->seqs[0], 41);
  // The legacy id is still acknowledged (found within the device's queue).
  EXPECT_EQ(*ack(7, 1, {legacy_id}), 1u);
  EXPECT_EQ(*ack(7, 1, fresh->server_ids), 1u);
  EXPECT_TRUE(fetch(7, 1).empty());
  EXPECT_EQ(store_->stats().queued_envelopes, 0u);
}

// An expire that finds no legacy envelope left (stored before schema v3) stops acks from
// looking for them, but only once it commits: an expire that rolls back, alone or in a batch
// run again with savepoints, must leave the legacy envelopes acknowledgeable (and keep no
// expiry clock reading).
TEST_F(StoreTest, ARolledBackExpireLeavesLegacyEnvelopesAcknowledgeable) {
  ASSERT_NO_FATAL_FAILURE(recreate_at_v2(
      "INSERT INTO accounts (id, name, folded_name, created_ms) VALUES (7, 'a', 'a', 1);"
      "INSERT INTO devices VALUES (7, 1, 1001, zeroblob(32), zeroblob(33), 1, zeroblob(33), "
      "  zeroblob(64), 1);"
      "INSERT INTO queue_counters VALUES (7, 1, 2, 2);"
      "INSERT INTO envelopes (seq, account_id, device_id, server_id, timestamp_ms, source, "
      "  source_device, type, content, size, stored_ms) VALUES "
      "  (41, 7, 1, x'abababababababababababababababab', 1, 's', 1, 1, x'01', 1, 1),"
      "  (42, 7, 1, x'cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd', 1, 's', 1, 1, x'02', 1, 1);"));
  open();
  // Each expire below deletes both (old) legacy envelopes, finds none left, then fails
  // deleting an expired attachment (as on a full disk) and is rolled back.
  Attachment att{"0123456789abcdef0123456789abcdef", Bytes(32, 1), 7, 1, 0, 1, 10};
  ASSERT_TRUE(create_attachment(att).is_ok());
  {
    auto db = internal::Db::open(path_);
    ASSERT_TRUE(db.has_value());
    const char* fail =
        "CREATE TRIGGER fail_expiry BEFORE DELETE ON attachments BEGIN "
        "SELECT RAISE(ABORT, 'expiry fails'); END";
    ASSERT_TRUE((*db)->exec(fail, "test").is_ok());
  }
  using Expired = Result<std::vector<std::string>>;

  // Alone: the batch's transaction rolls back.
  auto alone =
      call<std::vector<std::string>>([&](auto cb) { store_->expire(1000000, 1000, 1000, cb); });
  ASSERT_FALSE(alone.has_value());
  ASSERT_EQ(fetch(7, 1).size(), 2u);
  EXPECT_EQ(*ack(7, 1, {Bytes(16, 0xab)}), 1u);

  // Beside a send: the batch runs again with savepoints, the expire's is rolled back and the
  // send commits.
  auto sent = std::make_shared<std::promise<Result<SendOutcome>>>();
  auto expired = std::make_shared<std::promise<Expired>>();
  {
    Gate gate(*store_);
    store_->expire(1000000, 1000, 1000, [expired](Expired r) { expired->set_value(r); });
    store_->store_messages(make_send(7, {make_delivery(7, 1, 1)}, "", 1000000),
                           [sent](Result<SendOutcome> r) { sent->set_value(r); });
  }
  ASSERT_FALSE(expired->get_future().get().has_value());
  ASSERT_TRUE(sent->get_future().get().has_value());
  ASSERT_EQ(fetch(7, 1).size(), 2u);
  EXPECT_EQ(*ack(7, 1, {Bytes(16, 0xcd)}), 1u);
  open();
  EXPECT_EQ(store_->expiry_clock_at_open_ms(), 0) << "a rolled-back expiry keeps no reading";
}

// Migration 7 keeps each account's attachment usage in a table (triggers on insert, update and
// delete): a version-6 database's attachments count against the quota from the start (those
// expired not), and the quota's check reads one row (and, near the quota, the expired ones).
TEST_F(StoreTest, MigrationToV7CountsEachAccountsAttachments) {
  ASSERT_NO_FATAL_FAILURE(recreate_at(
      6,
      "INSERT INTO attachments VALUES ('aa', zeroblob(32), 7, 600, 0, 1, 100);"
      "INSERT INTO attachments VALUES ('ab', zeroblob(32), 7, 300, 0, 1, 5);"  // expired at 5
      "INSERT INTO attachments VALUES ('ac', zeroblob(32), 8, 50, 0, 1, 100);"));
  open();
  auto db = internal::Db::open(path_);
  ASSERT_TRUE(db.has_value());
  auto usage = [&] {
    std::string out;
    auto s = (*db)->prepare(
        "SELECT account_id, bytes, slots FROM attachment_usage ORDER BY account_id", "test");
    EXPECT_TRUE(s.has_value());
    for (int i = 0; s.has_value() && i < 100; ++i) {
      auto row = s->step();
      if (!row.has_value() || !*row) break;
      out += std::to_string(s->column_int(0)) + ":" + std::to_string(s->column_int(1)) + "/" +
             std::to_string(s->column_int(2)) + " ";
    }
    return out;
  };
  {
    auto version = (*db)->prepare("PRAGMA user_version", "test");
    ASSERT_TRUE(version.has_value());
    ASSERT_TRUE(*version->step());
    EXPECT_EQ(version->column_int(0), 7);
  }
  EXPECT_EQ(usage(), "7:900/2 8:50/1 ");
  // At 10 'ab' has expired: 600 bytes and one attachment count.
  EXPECT_EQ(create_attachment(Attachment{"bb", Bytes(32, 1), 7, 401, 0, 10, 100}, 1000).code(),
            ErrorCode::kTooLarge);
  EXPECT_EQ(create_attachment(Attachment{"bb", Bytes(32, 1), 7, 100, 0, 10, 100}, 1000, 1).code(),
            ErrorCode::kResourceExhausted);
  EXPECT_TRUE(create_attachment(Attachment{"bb", Bytes(32, 1), 7, 400, 0, 10, 100}, 1000).is_ok());
  EXPECT_EQ(usage(), "7:1300/3 8:50/1 ");
  auto expired =
      call<std::vector<std::string>>([&](auto cb) { store_->expire(50, 1000, 1000, cb); });
  ASSERT_TRUE(expired.has_value()) << expired.error().to_string();
  EXPECT_EQ(usage(), "7:1000/2 8:50/1 ");
  // An account whose attachments are all gone has no row; a change of size or owner moves it.
  ASSERT_TRUE((*db)->exec("DELETE FROM attachments WHERE account_id = 8", "test").is_ok());
  ASSERT_TRUE((*db)
                  ->exec("UPDATE attachments SET account_id = 9, size = 5 WHERE id = 'aa'", "test")
                  .is_ok());
  EXPECT_EQ(usage(), "7:400/1 9:5/1 ");
}

TEST_F(StoreTest, RefusesADatabaseNewerThanTheCode) {
  store_->close();
  store_.reset();
  {
    auto db = internal::Db::open(path_);
    ASSERT_TRUE(db.has_value());
    std::string sql = "PRAGMA user_version = " + std::to_string(latest_schema_version() + 1);
    ASSERT_TRUE((*db)->exec(sql.c_str(), "test").is_ok());
  }
  auto r = open_sqlite_store(path_);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kUnimplemented);
  EXPECT_NE(r.error().message().find("newer"), std::string::npos) << r.error().message();
}

TEST_F(StoreTest, OpenFailsCleanlyOnAnUnusablePath) {
  auto r = open_sqlite_store((dir_ / "missing" / "dir" / "x.db").string());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kIo);
}

TEST_F(StoreTest, CloseDrainsThenRefuses) {
  Account a = create("alice");
  std::atomic<int> stored{0};
  for (std::uint32_t i = 0; i < 500; ++i) {
    store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, i)}),
                           [&](Result<SendOutcome> r) {
                             if (r.has_value() && r->kind == SendOutcome::Kind::kStored) ++stored;
                           });
  }
  store_->close();
  EXPECT_EQ(stored.load(), 500);
  store_->close();  // idempotent

  auto r = call<std::vector<QueuedEnvelope>>(
      [&](auto cb) { store_->fetch_queue(a.id, 1, 0, 10, kNoByteLimit, cb); });
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(call_status([&](auto cb) { store_->create_invite("t", 1, cb); }).code(),
            ErrorCode::kUnavailable);
}

TEST_F(StoreTest, OneFailingOperationDoesNotAffectItsBatch) {
  create("alice");
  auto gate = std::make_unique<Gate>(*store_);
  std::vector<std::future<Result<Account>>> results;
  for (const char* name : {"bob", "alice", "carol"}) {  // "alice" fails, in the same batch
    auto p = std::make_shared<std::promise<Result<Account>>>();
    results.push_back(p->get_future());
    store_->create_account(make_account(name), [p](Result<Account> r) { p->set_value(r); });
  }
  const std::uint64_t commits_before = store_->stats().commits;
  gate.reset();
  EXPECT_TRUE(results[0].get().has_value());
  EXPECT_EQ(results[1].get().error().code(), ErrorCode::kAlreadyExists);
  EXPECT_TRUE(results[2].get().has_value());
  // The gate's batch had committed before its callback held the thread: one more commit.
  EXPECT_EQ(store_->stats().commits, commits_before + 1);
  EXPECT_EQ(store_->stats().last_batch_size, 3u);
  EXPECT_EQ(store_->stats().accounts, 3u);
}

// A batch first runs without savepoints; an operation that fails makes the store roll the
// whole batch back and run it again with a savepoint per operation. The rerun must leave
// exactly what one run would: one envelope per send, dedup keys that still match, and seqs
// that keep growing.
TEST_F(StoreTest, ABatchRerunAfterAFailureStoresEachSendOnce) {
  Account a = create("alice");
  auto gate = std::make_unique<Gate>(*store_);
  auto sent = std::make_shared<std::promise<Result<SendOutcome>>>();
  auto taken = std::make_shared<std::promise<Result<Account>>>();
  auto after = std::make_shared<std::promise<Result<SendOutcome>>>();
  store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, 1)}, "m1"),
                         [sent](Result<SendOutcome> r) { sent->set_value(r); });
  store_->create_account(make_account("alice"), [taken](Result<Account> r) { taken->set_value(r); });
  store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, 2)}, "m2"),
                         [after](Result<SendOutcome> r) { after->set_value(r); });
  gate.reset();
  auto first = sent->get_future().get();
  auto second = after->get_future().get();
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(first->kind, SendOutcome::Kind::kStored);
  EXPECT_EQ(second->kind, SendOutcome::Kind::kStored);
  EXPECT_EQ(taken->get_future().get().error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(store_->stats().last_batch_size, 3u);
  EXPECT_EQ(store_->stats().rerun_commits, 1u);
  ASSERT_EQ(first->seqs.size(), 1u);
  ASSERT_EQ(second->seqs.size(), 1u);
  EXPECT_LT(first->seqs[0], second->seqs[0]);
  const auto queued = fetch(a.id, 1);
  ASSERT_EQ(queued.size(), 2u);
  EXPECT_EQ(queued[0].seq, first->seqs[0]);
  EXPECT_EQ(queued[1].seq, second->seqs[0]);
  // The dedup keys recorded by the rerun are in force; those of the rolled-back run are gone
  // without a trace (no false duplicate, no second copy).
  auto again = send(make_send(a.id, {make_delivery(a.id, 1, 3)}, "m1"));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->kind, SendOutcome::Kind::kDuplicate);
  auto fresh = send(make_send(a.id, {make_delivery(a.id, 1, 4)}, "m3"));
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(fresh->kind, SendOutcome::Kind::kStored);
  EXPECT_EQ(fetch(a.id, 1).size(), 3u);
  EXPECT_EQ(store_->stats().queued_envelopes, 3u);
}

// After a rollback SQLite hands out the same dedup row ids again, so a re-run records the same
// (key, row) pairs in memory. The rolled-back ones must leave nothing behind in the index's
// eviction order: a stale copy evicted later would take the re-run's live key with it, and a
// resend within dedup_entries would be stored twice.
TEST_F(StoreTest, KeysOfARolledBackRunDoNotEvictTheirRerunEarly) {
  internal::SqliteOptions small;
  small.dedup_entries = 3;
  open(small);
  Account a = create("alice");
  std::vector<std::future<Result<SendOutcome>>> sends;
  auto taken = std::make_shared<std::promise<Result<Account>>>();
  {
    Gate gate(*store_);
    for (const char* id : {"k1", "k2"}) {
      auto p = std::make_shared<std::promise<Result<SendOutcome>>>();
      sends.push_back(p->get_future());
      store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, 1)}, id),
                             [p](Result<SendOutcome> r) { p->set_value(r); });
    }
    // Fails in the same batch: the batch runs again with savepoints.
    store_->create_account(make_account("alice"),
                           [taken](Result<Account> r) { taken->set_value(r); });
  }
  for (auto& f : sends) ASSERT_EQ(f.get()->kind, SendOutcome::Kind::kStored);
  ASSERT_EQ(taken->get_future().get().error().code(), ErrorCode::kAlreadyExists);
  // A third key: three in all, within the capacity.
  ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 2)}, "k3"))->kind,
            SendOutcome::Kind::kStored);
  for (const char* id : {"k1", "k2", "k3"}) {
    EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 3)}, id))->kind,
              SendOutcome::Kind::kDuplicate)
        << id;
  }
}

// A key recorded by an operation that rolls back must not evict an older key either (eviction
// waits for the commit), or a failed send would make the index forget a key it should keep.
TEST_F(StoreTest, AKeyThatIsRolledBackEvictsNoOtherKey) {
  internal::SqliteOptions small;
  small.dedup_entries = 2;
  open(small);
  Account a = create("alice");
  for (const char* id : {"k1", "k2"}) {
    ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 1)}, id))->kind,
              SendOutcome::Kind::kStored);
  }
  auto db = internal::Db::open(path_);
  ASSERT_TRUE(db.has_value());
  // The send records its key, then fails storing its envelope (as on a full disk).
  const char* fail =
      "CREATE TRIGGER fail_send BEFORE INSERT ON envelopes BEGIN "
      "SELECT RAISE(ABORT, 'send fails'); END";
  ASSERT_TRUE((*db)->exec(fail, "test").is_ok());
  ASSERT_FALSE(send(make_send(a.id, {make_delivery(a.id, 1, 2)}, "k3")).has_value());
  ASSERT_TRUE((*db)->exec("DROP TRIGGER fail_send", "test").is_ok());
  for (const char* id : {"k1", "k2"}) {
    EXPECT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, 3)}, id))->kind,
              SendOutcome::Kind::kDuplicate)
        << id;
  }
}

// The queues live in memory (schema v4): they must follow rolled-back operations, acks in any
// order, and be rebuilt with the same contents and totals when the store opens again.
TEST_F(StoreTest, QueuesFollowRollbacksAcksAndReopen) {
  Account a = create("alice");
  auto limited = [&](std::uint8_t n) {
    SendBatch b = make_send(a.id, {make_delivery(a.id, 1, n)});
    b.limits.max_count = 2;
    return b;
  };
  auto first = send(limited(1));
  ASSERT_TRUE(first.has_value());
  auto gate = std::make_unique<Gate>(*store_);
  auto stored = std::make_shared<std::promise<Result<SendOutcome>>>();
  auto refused = std::make_shared<std::promise<Result<SendOutcome>>>();
  auto acked = std::make_shared<std::promise<Result<std::uint32_t>>>();
  store_->store_messages(limited(2), [stored](Result<SendOutcome> r) { stored->set_value(r); });
  store_->store_messages(limited(3), [refused](Result<SendOutcome> r) { refused->set_value(r); });
  store_->ack(a.id, 1, first->server_ids,
              [acked](Result<std::uint32_t> r) { acked->set_value(r); });
  gate.reset();
  auto second = stored->get_future().get();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->kind, SendOutcome::Kind::kStored);
  auto full = refused->get_future().get();
  ASSERT_TRUE(full.has_value());
  EXPECT_EQ(full->kind, SendOutcome::Kind::kQueueFull);
  EXPECT_EQ(*acked->get_future().get(), 1u);
  EXPECT_EQ(store_->stats().last_batch_size, 3u);

  auto third = send(limited(4));
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->kind, SendOutcome::Kind::kStored);
  auto seqs = [&] {
    std::vector<std::int64_t> out;
    for (const auto& q : fetch(a.id, 1)) out.push_back(q.seq);
    return out;
  };
  const std::vector<std::int64_t> expected{second->seqs[0], third->seqs[0]};
  EXPECT_EQ(seqs(), expected);
  EXPECT_EQ(fetch(a.id, 1, second->seqs[0]).size(), 1u);
  EXPECT_EQ(store_->stats().queued_envelopes, 2u);

  open();
  EXPECT_EQ(seqs(), expected);
  EXPECT_EQ(store_->stats().queued_envelopes, 2u);
  EXPECT_EQ(store_->stats().queued_bytes, 2u * make_delivery(a.id, 1, 2).envelope.content.size());
  auto over = send(limited(5));  // the rebuilt totals still count two
  ASSERT_TRUE(over.has_value());
  EXPECT_EQ(over->kind, SendOutcome::Kind::kQueueFull);
  // Newest first, then the oldest: both go, and the queue is empty before and after a reopen.
  EXPECT_EQ(*ack(a.id, 1, third->server_ids), 1u);
  EXPECT_EQ(*ack(a.id, 1, third->server_ids), 0u);
  EXPECT_EQ(*ack(a.id, 1, second->server_ids), 1u);
  EXPECT_TRUE(fetch(a.id, 1).empty());
  EXPECT_EQ(store_->stats().queued_envelopes, 0u);
  open();
  EXPECT_TRUE(fetch(a.id, 1).empty());
  EXPECT_EQ(store_->stats().queued_envelopes, 0u);
  EXPECT_EQ(store_->stats().queued_bytes, 0u);
}

// The queue index is the store's own; an envelope another process deleted from the file is
// skipped and forgotten, not reported as an error for ever.
TEST_F(StoreTest, AnEnvelopeDeletedBehindTheStoresBackIsForgotten) {
  Account a = create("alice");
  auto first = send(make_send(a.id, {make_delivery(a.id, 1, 1)}));
  auto second = send(make_send(a.id, {make_delivery(a.id, 1, 2)}));
  ASSERT_TRUE(first.has_value() && second.has_value());
  {
    auto db = internal::Db::open(path_);
    ASSERT_TRUE(db.has_value());
    const std::string sql = "DELETE FROM envelopes WHERE seq = " + std::to_string(first->seqs[0]);
    ASSERT_TRUE((*db)->exec(sql.c_str(), "test").is_ok());
  }
  const auto queued = fetch(a.id, 1);
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].seq, second->seqs[0]);
  EXPECT_EQ(store_->stats().queued_envelopes, 1u);
  EXPECT_EQ(*ack(a.id, 1, first->server_ids), 0u);
  EXPECT_EQ(*ack(a.id, 1, second->server_ids), 1u);
  EXPECT_EQ(store_->stats().queued_envelopes, 0u);
}

TEST_F(StoreTest, GroupCommitSharesTransactions) {
  Account a = create("alice");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  const Stats before = store_->stats();

  std::atomic<int> remaining{kThreads * kPerThread};
  std::atomic<int> stored{0};
  std::promise<void> all_done;
  auto gate = std::make_unique<Gate>(*store_);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto n = static_cast<std::uint32_t>(t * kPerThread + i);
        store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, n)}),
                               [&](Result<SendOutcome> r) {
                                 if (r.has_value() && r->kind == SendOutcome::Kind::kStored) {
                                   ++stored;
                                 }
                                 if (remaining.fetch_sub(1) == 1) all_done.set_value();
                               });
      }
    });
  }
  for (auto& t : threads) t.join();
  gate.reset();  // 2000 operations are now queued behind the gate
  ASSERT_EQ(all_done.get_future().wait_for(kTimeout), std::future_status::ready);

  const Stats after = store_->stats();
  EXPECT_EQ(stored.load(), kThreads * kPerThread);
  // The gate's own operation (a key count for a device that does not exist) fails alone and
  // commits nothing.
  EXPECT_EQ(after.committed_ops - before.committed_ops,
            static_cast<std::uint64_t>(kThreads * kPerThread));
  // 2000 queued operations, at most 1024 per batch: two commits.
  EXPECT_EQ(after.commits - before.commits, 2u);
  EXPECT_EQ(fetch(a.id, 1).size(), static_cast<std::size_t>(kThreads * kPerThread));
}

TEST_F(StoreTest, PendingOperationsAreBounded) {
  internal::SqliteOptions options;
  options.max_pending = 10;
  open(options);
  auto gate = std::make_unique<Gate>(*store_);
  std::atomic<int> ok{0};
  for (int i = 0; i < 10; ++i) {
    store_->create_invite("t" + std::to_string(i), 100, [&](Status s) {
      if (s.is_ok()) ++ok;
    });
  }
  // The 11th is refused at once, on this thread.
  Status refused = Status::ok();
  bool called = false;
  store_->create_invite("t10", 100, [&](Status s) {
    refused = s;
    called = true;
  });
  EXPECT_TRUE(called);
  EXPECT_EQ(refused.code(), ErrorCode::kResourceExhausted);
  gate.reset();
  store_->close();
  EXPECT_EQ(ok.load(), 10);
}

// kill -9 at an arbitrary instant loses nothing that was acknowledged (DESIGN.md promise 2).
// Forks a child that runs `child(out)` against the database at `path`: it opens its own store
// and writes to the pipe `out` the number of each of its `total` operations whose callback
// reported success. The parent reads the reports and SIGKILLs the child once `kill_after` have
// come (reports already in the pipe are still read). Returns them all, or nullopt when the
// child was not killed mid-stream (it died otherwise, or finished first).
std::optional<std::vector<std::uint32_t>> run_then_kill9(
    const std::string& path, std::size_t kill_after, std::size_t total,
    const std::function<void(Store&, int out)>& child,
    const internal::SqliteOptions& options = {}) {
  int fds[2];
  if (::pipe(fds) != 0) return std::nullopt;
  const pid_t pid = ::fork();
  if (pid < 0) return std::nullopt;
  if (pid == 0) {
    ::close(fds[0]);
    auto opened = internal::open_sqlite_store(path, options);
    if (!opened.has_value()) ::_exit(2);
    std::unique_ptr<Store> store = std::move(opened).value();
    child(*store, fds[1]);
    store->close();
    ::_exit(0);
  }
  ::close(fds[1]);
  std::vector<std::uint32_t> reported;
  std::vector<std::uint8_t> buf;
  bool sent_kill = false;
  std::uint8_t chunk[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], chunk, sizeof chunk);
    if (n <= 0) break;
    buf.insert(buf.end(), chunk, chunk + n);
    const std::size_t whole = buf.size() / 4 * 4;
    for (std::size_t off = 0; off < whole; off += 4) {
      std::uint32_t v;
      std::memcpy(&v, buf.data() + off, 4);
      reported.push_back(v);
    }
    buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(whole));
    if (!sent_kill && reported.size() >= kill_after) {
      ::kill(pid, SIGKILL);
      sent_kill = true;
    }
  }
  ::close(fds[0]);
  int status = 0;
  const bool killed =
      ::waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  if (!killed || reported.size() < kill_after || reported.size() >= total) return std::nullopt;
  return reported;
}

// Reports operation `i` on `out` (for run_then_kill9's children).
void report(int out, std::uint32_t i) {
  const ssize_t n = ::write(out, &i, sizeof i);
  static_cast<void>(n);
}

// Devices draining their queues after an outage queue many fetches at once. A send queued
// behind them runs first, in the next batch, and commits on its own before the fetches of its
// batch (they ask for more than max_rows_beside_writes rows); the fetches follow in batches
// whose pages add up to at most max_batch_rows. Writes do not starve reads either: when both
// wait, a batch takes at least one read.
TEST_F(StoreTest, SendsGoBeforeQueuedFetchesAndFetchesAreNotStarved) {
  internal::SqliteOptions rows;
  rows.max_batch_rows = 4096;         // 16 fetches of 256
  rows.max_rows_beside_writes = 256;  // one fetch rides with the send; two do not
  open(rows);
  Account a = create("alice");
  std::mutex mu;
  std::vector<char> order;  // 's' a send, 'f' a fetch, in the order their callbacks ran
  std::atomic<int> left{0};
  std::promise<void> all_done;
  auto note = [&](char what) {
    {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(what);
    }
    if (--left == 0) all_done.set_value();
  };
  const Stats s0 = store_->stats();
  left = 41;
  {
    Gate gate(*store_);
    for (int i = 0; i < 40; ++i) {
      store_->fetch_queue(a.id, 1, 0, 256, kNoByteLimit,
                          [&](Result<std::vector<QueuedEnvelope>> r) {
                            EXPECT_TRUE(r.has_value());
                            note('f');
                          });
    }
    store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, 1)}),
                           [&](Result<SendOutcome> r) {
                             EXPECT_EQ(r.value().kind, SendOutcome::Kind::kStored);
                             note('s');
                           });
  }
  ASSERT_EQ(all_done.get_future().wait_for(kTimeout), std::future_status::ready);
  ASSERT_EQ(order.size(), 41u);
  EXPECT_EQ(order.front(), 's');
  // Four commits: the send alone, the 16 fetches of 256 rows taken with it, 16 more, then 8
  // (the gate's own operation, for no device, fails and commits nothing).
  const Stats s1 = store_->stats();
  EXPECT_EQ(s1.commits - s0.commits, 4u);
  EXPECT_EQ(s1.committed_ops - s0.committed_ops, 41u);
  EXPECT_EQ(s1.last_batch_size, 8u);

  // Small batches: 20 sends queued before a fetch. The first batch after the gate takes 7 sends
  // and the fetch, which asks for few rows and so commits with them.
  internal::SqliteOptions small;
  small.max_batch = 8;
  open(small);
  const Stats t0 = store_->stats();
  order.clear();
  left = 21;
  std::promise<void> done_small;
  all_done = std::move(done_small);
  {
    Gate gate(*store_);
    for (std::uint32_t i = 0; i < 20; ++i) {
      store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, 10 + i)}),
                             [&](Result<SendOutcome> r) {
                               EXPECT_TRUE(r.has_value());
                               note('s');
                             });
    }
    store_->fetch_queue(a.id, 1, 0, 10, kNoByteLimit, [&](Result<std::vector<QueuedEnvelope>> r) {
      EXPECT_TRUE(r.has_value());
      note('f');
    });
  }
  ASSERT_EQ(all_done.get_future().wait_for(kTimeout), std::future_status::ready);
  ASSERT_EQ(order.size(), 21u);
  EXPECT_EQ(std::string(order.begin(), order.end()), "sssssssf" + std::string(13, 's'));
  EXPECT_EQ(store_->stats().commits - t0.commits, 3u);  // 7 and the fetch, 8, 5
}

// A page stops at the envelope whose contents bring it to max_bytes (and so holds at least one
// envelope), so that a device whose delivery window takes a few large envelopes does not have
// a page of them read each time. Its count bound still holds.
TEST_F(StoreTest, AFetchStopsAtTheEnvelopeThatReachesItsBytes) {
  Account a = create("alice");
  for (std::uint32_t i = 1; i <= 5; ++i) {
    ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, i, 100)}))->kind,
              SendOutcome::Kind::kStored);
  }
  auto page = [&](std::size_t limit, std::size_t max_bytes, std::int64_t after = 0) {
    auto r = call<std::vector<QueuedEnvelope>>(
        [&](auto cb) { store_->fetch_queue(a.id, 1, after, limit, max_bytes, cb); });
    std::string firsts;  // each envelope's first content byte: its number
    if (!r.has_value()) return "failed: " + r.error().to_string();
    for (const auto& q : *r) {
      firsts += static_cast<char>('0' + q.envelope.content.at(0));
    }
    return firsts;
  };
  EXPECT_EQ(page(10, 250), "123");  // 300 bytes: the third reaches 250
  EXPECT_EQ(page(10, 300), "123");
  EXPECT_EQ(page(10, 301), "1234");
  EXPECT_EQ(page(10, 1), "1");  // one at least
  EXPECT_EQ(page(10, 0), "");   // (a caller with no room asks for none)
  EXPECT_EQ(page(2, 1000), "12");
  EXPECT_EQ(page(10, kNoByteLimit), "12345");
  const auto all = fetch(a.id, 1);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(page(10, 150, all[2].seq), "45");
  const Stats st = store_->stats();
  EXPECT_EQ(st.fetched_envelopes, 3u + 3 + 4 + 1 + 0 + 2 + 5 + 5 + 2);
  EXPECT_EQ(st.fetched_bytes, 100 * st.fetched_envelopes);
}

// A fetch counts its page size as rows, and the page size is the caller's: sums of rows must
// saturate, not wrap, or a huge page would look small enough to ride along.
TEST_F(StoreTest, HugeFetchLimitsDoNotWrapTheBatchRowCount) {
  Account a = create("alice");
  auto fetch_async = [&](std::size_t limit) {
    auto p = std::make_shared<std::promise<Result<std::vector<QueuedEnvelope>>>>();
    store_->fetch_queue(a.id, 1, 0, limit, kNoByteLimit,
                        [p](Result<std::vector<QueuedEnvelope>> r) { p->set_value(r); });
    return p->get_future();
  };
  // take_batch: a page of SIZE_MAX does not fit beside a page of 1 (max_batch_rows).
  {
    const Stats s0 = store_->stats();
    std::future<Result<std::vector<QueuedEnvelope>>> small, huge;
    {
      Gate gate(*store_);  // its own operation fails and commits nothing
      small = fetch_async(1);
      huge = fetch_async(SIZE_MAX);
    }
    ASSERT_TRUE(small.get().has_value());
    ASSERT_TRUE(huge.get().has_value());
    EXPECT_EQ(store_->stats().commits - s0.commits, 2u);
  }
  // split_reads: beside a send they ask for more than max_rows_beside_writes rows, so the send
  // commits on its own.
  internal::SqliteOptions unbounded;
  unbounded.max_batch_rows = SIZE_MAX;
  open(unbounded);
  {
    const Stats s0 = store_->stats();
    auto sent = std::make_shared<std::promise<Result<SendOutcome>>>();
    std::future<Result<std::vector<QueuedEnvelope>>> small, huge;
    {
      Gate gate(*store_);
      store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, 1)}),
                             [sent](Result<SendOutcome> r) { sent->set_value(r); });
      small = fetch_async(1);
      huge = fetch_async(SIZE_MAX);
    }
    ASSERT_TRUE(sent->get_future().get().has_value());
    ASSERT_TRUE(small.get().has_value());
    ASSERT_TRUE(huge.get().has_value());
    EXPECT_EQ(store_->stats().commits - s0.commits, 2u);
  }
}

// WAL checkpoints run on their own thread and connection once the WAL reaches
// checkpoint_frames; the writer checkpoints itself only past writer_checkpoint_frames. Either
// way every envelope is still there after a reopen.
TEST_F(StoreTest, CheckpointsRunBesideTheWriterAndTheWriterStepsInOnlyPastItsBound) {
  auto send_many = [&](const Account& a, std::uint32_t first) {
    for (std::uint32_t i = first; i < first + 200; ++i) {
      ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, i, 2000)}))->kind,
                SendOutcome::Kind::kStored);
    }
  };
  auto wait_until = [](const std::function<bool()>& done) {
    for (int i = 0; i < 1000 && !done(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
  };
  internal::SqliteOptions beside;
  beside.checkpoint_frames = 64;
  beside.writer_checkpoint_frames = 1 << 30;
  open(beside);
  Account a = create("alice");
  send_many(a, 0);  // 200 commits of a page or more each
  EXPECT_TRUE(wait_until([&] { return store_->stats().checkpoints >= 1; }));
  EXPECT_EQ(store_->stats().writer_checkpoints, 0u);

  internal::SqliteOptions writer;
  writer.checkpoint_frames = 1 << 30;
  writer.writer_checkpoint_frames = 64;
  open(writer);
  send_many(a, 200);
  EXPECT_GE(store_->stats().writer_checkpoints, 1u);
  EXPECT_EQ(store_->stats().checkpoints, 0u);

  open();
  EXPECT_EQ(store_->stats().queued_envelopes, 400u);
  EXPECT_EQ(fetch(a.id, 1, 0, 1000).size(), 400u);
}

// The writer's WAL keeps its size when it starts over: SQLite would cut it back to the
// connection's journal_size_limit, a truncation that stalled every store operation (25–33 ms
// at 10,000 messages/s), so the limit is above the size the writer's own checkpoints bound it
// to.
TEST_F(StoreTest, TheWalIsNotCutBackWhenItStartsOver) {
  const internal::SqliteOptions shipped;
  EXPECT_GE(internal::wal_size_limit(shipped),
            static_cast<std::int64_t>(shipped.writer_checkpoint_frames) * (4096 + 24));
  internal::SqliteOptions writer;
  writer.checkpoint_frames = 1 << 30;
  writer.writer_checkpoint_frames = 64;
  open(writer);
  Account a = create("alice");
  std::uintmax_t high = 0;
  std::uintmax_t lowest_after_high = std::numeric_limits<std::uintmax_t>::max();
  for (std::uint32_t i = 0; i < 300; ++i) {
    ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, i, 2000)}))->kind,
              SendOutcome::Kind::kStored);
    const std::uintmax_t size = std::filesystem::file_size(path_ + "-wal");
    if (size < high) lowest_after_high = std::min(lowest_after_high, size);
    high = std::max(high, size);
  }
  EXPECT_GE(store_->stats().writer_checkpoints, 2u);  // the WAL started over at least twice
  EXPECT_EQ(lowest_after_high, std::numeric_limits<std::uintmax_t>::max()) << "cut back";
  EXPECT_GE(high, 64u * (4096 + 24));
  EXPECT_LE(high, static_cast<std::uintmax_t>(internal::wal_size_limit(writer)));
}

TEST_F(StoreTest, AcksAndReadsAloneCommitWithoutAnFsyncAndOthersWithOne) {
  Account a = create("alice");
  for (std::uint32_t i = 0; i < 4; ++i) {
    ASSERT_EQ(send(make_send(a.id, {make_delivery(a.id, 1, i)}))->kind, SendOutcome::Kind::kStored);
  }
  const Stats sent = store_->stats();
  EXPECT_EQ(sent.unsynced_commits, 0u);  // account creation and sends are synced
  std::vector<Bytes> ids;
  for (const QueuedEnvelope& q : fetch(a.id, 1)) ids.push_back(q.envelope.server_id);
  ASSERT_EQ(ids.size(), 4u);
  const Stats s0 = store_->stats();
  EXPECT_EQ(s0.unsynced_commits - sent.unsynced_commits, 1u);  // a read is not
  EXPECT_EQ(*ack(a.id, 1, {ids[0]}), 1u);
  const Stats s1 = store_->stats();
  EXPECT_EQ(s1.commits - s0.commits, 1u);
  EXPECT_EQ(s1.unsynced_commits - s0.unsynced_commits, 1u);

  // Queued together (the store thread held by the gate), an ack and a read form one batch, and
  // it is not synced either: what a device draining its queue sends.
  std::promise<void> acked_with_read, read;
  {
    Gate gate(*store_);
    store_->ack(a.id, 1, {ids[1]}, [&](Result<std::uint32_t> r) {
      EXPECT_EQ(r.value(), 1u);
      acked_with_read.set_value();
    });
    store_->fetch_queue(a.id, 1, 0, 10, kNoByteLimit, [&](Result<std::vector<QueuedEnvelope>> r) {
      EXPECT_TRUE(r.has_value());
      read.set_value();
    });
  }
  ASSERT_EQ(acked_with_read.get_future().wait_for(kTimeout), std::future_status::ready);
  ASSERT_EQ(read.get_future().wait_for(kTimeout), std::future_status::ready);
  const Stats s2 = store_->stats();
  EXPECT_EQ(s2.committed_ops - s1.committed_ops, 2u);
  EXPECT_EQ(s2.commits - s1.commits, 1u);
  EXPECT_EQ(s2.unsynced_commits - s1.unsynced_commits, 1u);
  EXPECT_EQ(s2.synced_commit.count, s1.synced_commit.count);

  // An ack that shares its batch with a send is synced with it.
  std::promise<void> acked, stored;
  {
    Gate gate(*store_);
    store_->ack(a.id, 1, {ids[2]}, [&](Result<std::uint32_t> r) {
      EXPECT_EQ(r.value(), 1u);
      acked.set_value();
    });
    store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, 9)}),
                           [&](Result<SendOutcome> r) {
                             EXPECT_EQ(r.value().kind, SendOutcome::Kind::kStored);
                             stored.set_value();
                           });
  }
  ASSERT_EQ(acked.get_future().wait_for(kTimeout), std::future_status::ready);
  ASSERT_EQ(stored.get_future().wait_for(kTimeout), std::future_status::ready);
  const Stats s3 = store_->stats();
  EXPECT_EQ(s3.committed_ops - s2.committed_ops, 2u);
  EXPECT_EQ(s3.unsynced_commits, s2.unsynced_commits);
  EXPECT_EQ(s3.synced_commit.count - s2.synced_commit.count, 1u);

  // Every kind of commit is in the database after a reopen.
  open();
  std::vector<Bytes> left;
  for (const QueuedEnvelope& q : fetch(a.id, 1)) left.push_back(tail(q.envelope.server_id));
  EXPECT_EQ(left, (std::vector<Bytes>{tail(ids[3]), tail(server_id(9, 1))}));
}

TEST_F(StoreTest, UnsyncedAcksSurviveKill9) {
  Account a = create("alice");
  constexpr std::uint32_t kMessages = 8000;  // within the default queue limit (10,000)
  {
    std::atomic<std::uint32_t> stored{0}, done{0};
    std::promise<void> all;
    for (std::uint32_t i = 0; i < kMessages; ++i) {
      store_->store_messages(make_send(a.id, {make_delivery(a.id, 1, i, 64)}),
                             [&](Result<SendOutcome> r) {
                               if (r.has_value() && r->kind == SendOutcome::Kind::kStored) ++stored;
                               if (++done == kMessages) all.set_value();
                             });
    }
    ASSERT_EQ(all.get_future().wait_for(kTimeout), std::future_status::ready);
    ASSERT_EQ(stored.load(), kMessages);
  }
  std::vector<Bytes> ids;
  for (const QueuedEnvelope& q : fetch(a.id, 1)) ids.push_back(q.envelope.server_id);
  ASSERT_EQ(ids.size(), kMessages);
  store_->close();
  store_.reset();

  // The child acknowledges one envelope at a time (64 in flight) and reports each whose
  // callback said it was deleted.
  const auto acked =
      run_then_kill9(path_, /*kill_after=*/1000, kMessages, [&](Store& store, int out) {
        std::atomic<int> in_flight{0};
        for (std::uint32_t i = 0; i < kMessages; ++i) {
          while (in_flight.load() > 64) std::this_thread::sleep_for(std::chrono::microseconds(50));
          ++in_flight;
          store.ack(a.id, 1, {ids[i]}, [out, i, &in_flight](Result<std::uint32_t> r) {
            if (r.has_value() && *r == 1) report(out, i);
            --in_flight;
          });
        }
      });
  ASSERT_TRUE(acked.has_value()) << "the child was not killed mid-stream";

  open();
  const std::set<Bytes> present = queued_tails(a.id, 1);
  std::size_t back = 0;
  for (std::uint32_t i : *acked) back += present.count(tail(ids[i]));
  EXPECT_EQ(back, 0u) << "of " << acked->size() << " acknowledged deletes";
  EXPECT_LE(present.size(), kMessages - acked->size());
  EXPECT_EQ(store_->stats().queued_envelopes, present.size());
}

// Also with checkpoints every 64 KiB of WAL and a longer run, so that the kill lands among the
// checkpointer's passes and the writer's own checkpoints, not only among commits.
TEST_F(StoreTest, AcknowledgedMessagesSurviveKill9) {
  Account a = create("alice");
  store_->close();
  store_.reset();

  internal::SqliteOptions checkpointing;
  checkpointing.checkpoint_frames = 16;
  checkpointing.writer_checkpoint_frames = 64;
  std::uint32_t first = 0;  // each round stores messages of its own
  for (const internal::SqliteOptions& options : {internal::SqliteOptions{}, checkpointing}) {
    constexpr std::uint32_t kMessages = 200000;
    const std::size_t kill_after = options.checkpoint_frames == 16 ? 30000 : 3000;
    // The child stores messages and reports each one whose callback said "stored".
    const auto acked = run_then_kill9(
        path_, kill_after, kMessages,
        [&](Store& store, int out) {
          std::atomic<int> in_flight{0};
          for (std::uint32_t i = 0; i < kMessages; ++i) {
            while (in_flight.load() > 4096) {
              std::this_thread::sleep_for(std::chrono::microseconds(100));
            }
            ++in_flight;
            SendBatch batch = make_send(a.id, {make_delivery(a.id, 1, first + i, 64)});
            batch.limits.max_count = kMessages;  // the default 10,000 would refuse the rest
            store.store_messages(std::move(batch), [out, i, &in_flight](Result<SendOutcome> r) {
              if (r.has_value() && r->kind == SendOutcome::Kind::kStored) {
                report(out, i);
              }
              --in_flight;
            });
          }
        },
        options);
    ASSERT_TRUE(acked.has_value()) << "the child was not killed mid-stream";

    open();
    const std::set<Bytes> present = queued_tails(a.id, 1);
    std::size_t lost = 0;
    for (std::uint32_t i : *acked) {
      if (present.count(tail(server_id(first + i, 1))) == 0) ++lost;
    }
    EXPECT_EQ(lost, 0u) << "of " << acked->size() << " acknowledged messages";
    EXPECT_GE(present.size(), acked->size());
    // The counters were committed with the envelopes: they agree after the crash.
    EXPECT_EQ(store_->stats().queued_envelopes, present.size());
    std::printf(
        "kill -9 after %zu acknowledged messages (checkpoint every %d frames): %zu "
        "stored, none lost\n",
        acked->size(), options.checkpoint_frames, present.size());
    // The next round starts from an empty queue.
    std::vector<Bytes> ids;
    for (const QueuedEnvelope& q : fetch(a.id, 1)) ids.push_back(q.envelope.server_id);
    for (std::size_t k = 0; k < ids.size(); k += 1000) {
      const std::size_t end = std::min(ids.size(), k + 1000);
      ASSERT_TRUE(ack(a.id, 1,
                      std::vector<Bytes>(ids.begin() + static_cast<std::ptrdiff_t>(k),
                                         ids.begin() + static_cast<std::ptrdiff_t>(end)))
                      .has_value());
    }
    store_->close();
    store_.reset();
    first += kMessages;
  }
}

// ---- acknowledged rows deleted in runs (schema v5) --------------------------------------------

// Whether the statement produced a row (false on an error too).
bool next_row(internal::Stmt& s) {
  auto r = s.step();
  return r.has_value() && *r;
}

// Rows of `table`, read through a second connection (the store's own is busy on its thread).
std::int64_t count_rows(const std::string& path, const std::string& table) {
  auto db = internal::Db::open(path);
  if (!db.has_value()) return -1;
  const std::string sql = "SELECT COUNT(*) FROM " + table;
  auto s = (*db)->prepare(sql.c_str(), "test");
  if (!s.has_value() || !next_row(*s)) return -1;
  return s->column_int(0);
}

// Small runs (two seqs; one after a batch once four wait) and no idle deletion, so that a test
// sees each run; then `n` envelopes stored for one account's device, their server ids in `ids`
// and their seqs in `seqs`.
struct Sent {
  Account account;
  std::vector<Bytes> ids;
  std::vector<std::int64_t> seqs;
};

class AckRunsTest : public StoreTest {
 protected:
  Sent open_and_send(std::uint32_t n) {
    internal::SqliteOptions o;
    o.ack_flush_count = 4;
    o.ack_flush_run = 2;
    o.ack_flush_delay = std::chrono::hours(1);
    open(o);
    Sent out{create("alice"), {}, {}};
    for (std::uint32_t i = 0; i < n; ++i) {
      auto r = send(make_send(out.account.id, {make_delivery(out.account.id, 1, i)}));
      EXPECT_TRUE(r.has_value() && r->server_ids.size() == 1);
      if (!r.has_value() || r->server_ids.size() != 1) break;
      out.ids.push_back(r->server_ids[0]);
      out.seqs.push_back(r->seqs[0]);
    }
    return out;
  }
};

TEST_F(AckRunsTest, AcknowledgedRowsAreDeletedInRunsOfTheOldestAndAtClose) {
  const auto [a, ids, seqs] = open_and_send(10);
  ASSERT_EQ(ids.size(), 10u);
  // Three acknowledged: recorded, gone from the queue, their rows still there.
  EXPECT_EQ(*ack(a.id, 1, {ids[5], ids[1], ids[3]}), 3u);
  EXPECT_EQ(*ack(a.id, 1, {ids[1]}), 0u);  // once only, though its row is still there
  EXPECT_EQ(store_->stats().acked_pending, 3u);
  EXPECT_EQ(store_->stats().queued_envelopes, 7u);
  EXPECT_EQ(fetch(a.id, 1).size(), 7u);
  EXPECT_EQ(count_rows(path_, "envelopes"), 10);
  EXPECT_EQ(count_rows(path_, "acked"), 3);
  // Four or more waiting: after that batch the oldest two by seq (envelopes 0 and 1) are
  // deleted, before the store takes its next batch (the fetch).
  EXPECT_EQ(*ack(a.id, 1, {ids[0]}), 1u);
  EXPECT_EQ(fetch(a.id, 1).size(), 6u);
  EXPECT_EQ(store_->stats().acked_pending, 2u);
  EXPECT_EQ(count_rows(path_, "envelopes"), 8);
  EXPECT_EQ(count_rows(path_, "acked"), 2);
  {
    auto db = internal::Db::open(path_);
    ASSERT_TRUE(db.has_value());
    auto s = (*db)->prepare("SELECT seq FROM acked ORDER BY seq", "test");
    ASSERT_TRUE(s.has_value());
    std::vector<std::int64_t> left;
    while (next_row(*s)) left.push_back(s->column_int(0));
    EXPECT_EQ(left, (std::vector<std::int64_t>{seqs[3], seqs[5]})) << "the oldest went first";
  }
  // Closing deletes the rest.
  store_->close();
  EXPECT_EQ(count_rows(path_, "envelopes"), 6);
  EXPECT_EQ(count_rows(path_, "acked"), 0);
  open();
  EXPECT_EQ(fetch(a.id, 1).size(), 6u);
}

TEST_F(AckRunsTest, AcknowledgementsFasterThanRunsLeaveNoMoreThanTheCountWaiting) {
  const auto [a, ids, seqs] = open_and_send(12);
  ASSERT_EQ(ids.size(), 12u);
  // Ten in one acknowledgement: the run after it takes six, not two, leaving four; the run
  // after the fetch's batch takes two more (four still wait). Runs of two alone would leave six.
  // (A run follows its batch's callbacks: the second fetch waits for the run after the first.)
  EXPECT_EQ(*ack(a.id, 1, std::vector<Bytes>(ids.begin(), ids.begin() + 10)), 10u);
  EXPECT_EQ(fetch(a.id, 1).size(), 2u);
  EXPECT_EQ(fetch(a.id, 1).size(), 2u);
  EXPECT_EQ(store_->stats().acked_pending, 2u);
  EXPECT_EQ(count_rows(path_, "envelopes"), 4);
  EXPECT_EQ(count_rows(path_, "acked"), 2);
}

// One acknowledgement of many ids (the table takes them sixteen rows a statement, the rest
// one by one): each counts once, a repeated one not again.
TEST_F(AckRunsTest, AnAcknowledgementOfManyIdsRecordsEachOnce) {
  const auto [a, ids, seqs] = open_and_send(40);
  ASSERT_EQ(ids.size(), 40u);
  std::vector<Bytes> some(ids.begin(), ids.begin() + 34);
  some.push_back(ids[5]);
  EXPECT_EQ(*ack(a.id, 1, some), 34u);
  // The run after the ack's batch leaves four (ack_flush_count), the one after the first
  // fetch's two (the second fetch waits for it).
  ASSERT_EQ(fetch(a.id, 1).size(), 6u);
  const auto queued = fetch(a.id, 1);
  ASSERT_EQ(queued.size(), 6u);
  EXPECT_EQ(queued[0].seq, seqs[34]);
  EXPECT_EQ(store_->stats().acked_pending, 2u);
  EXPECT_EQ(count_rows(path_, "acked"), 2);
  EXPECT_EQ(count_rows(path_, "envelopes"), 8);
  store_->close();
  EXPECT_EQ(count_rows(path_, "envelopes"), 6);
  open();
  EXPECT_EQ(fetch(a.id, 1).size(), 6u);
}

// A run deletes envelope rows by the acked table's range. A seq in that range that the store
// never acknowledged (written behind its back) fails the run and deletes nothing: the envelope
// it names is still queued and is still delivered.
// A seq in the acked table that memory does not hold (put there behind the store's back) makes
// a run by range delete more than it should: the run is rolled back and its own seqs deleted
// one by one. It used to fail, and every later run with it, while the list of seqs waiting
// grew until a restart; the envelope's own acknowledgement failed on the table's key.
TEST_F(AckRunsTest, ARunDeletesOnlyItsOwnSeqsWhenTheAckedTableHoldsOthers) {
  const auto [a, ids, seqs] = open_and_send(10);
  ASSERT_EQ(ids.size(), 10u);
  {
    auto db = internal::Db::open(path_);
    ASSERT_TRUE(db.has_value());
    const std::string sql = "INSERT INTO acked (seq) VALUES (" + std::to_string(seqs[1]) + ")";
    ASSERT_TRUE((*db)->exec(sql.c_str(), "test").is_ok());
  }
  // Four acknowledged: the run after that batch takes seqs 0 and 2, and the table's range up
  // to seq 2 also holds seq 1, which stays, with its envelope.
  EXPECT_EQ(*ack(a.id, 1, {ids[0], ids[2], ids[3], ids[4]}), 4u);
  const auto queued = fetch(a.id, 1);
  EXPECT_EQ(store_->stats().failed_ack_flushes, 0u);
  EXPECT_EQ(store_->stats().acked_pending, 2u);
  EXPECT_EQ(count_rows(path_, "envelopes"), 8);
  EXPECT_EQ(count_rows(path_, "acked"), 3);
  ASSERT_EQ(queued.size(), 6u);
  EXPECT_EQ(queued[0].seq, seqs[1]);
  // Its device acknowledges it, and the rest: each run succeeds, none waits beyond the count.
  EXPECT_EQ(*ack(a.id, 1, {ids[1]}), 1u);
  for (std::size_t i = 5; i < 10; ++i) EXPECT_EQ(*ack(a.id, 1, {ids[i]}), 1u);
  EXPECT_TRUE(fetch(a.id, 1).empty());
  EXPECT_EQ(store_->stats().failed_ack_flushes, 0u);
  EXPECT_LE(store_->stats().acked_pending, 4u);
  store_->close();
  EXPECT_EQ(count_rows(path_, "envelopes"), 0);
  EXPECT_EQ(count_rows(path_, "acked"), 0);
}

TEST_F(StoreTest, AnIdleStoreDeletesAcknowledgedRowsAfterTheDelay) {
  internal::SqliteOptions o;
  o.ack_flush_delay = std::chrono::milliseconds(50);
  open(o);
  Account a = create("alice");
  auto r = send(make_send(a.id, {make_delivery(a.id, 1, 1), make_delivery(a.id, 1, 2)}));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*ack(a.id, 1, r->server_ids), 2u);
  // (The gauge is set just after the deletion commits: poll both.)
  std::int64_t rows = -1;
  for (int i = 0; i < 200 && (rows != 0 || store_->stats().acked_pending != 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // at most 10 s in all
    rows = count_rows(path_, "envelopes");
  }
  EXPECT_EQ(rows, 0);
  EXPECT_EQ(count_rows(path_, "acked"), 0);
  EXPECT_EQ(store_->stats().acked_pending, 0u);
}

// Each operation's wait for its group commit, and each commit that syncs, are timed
// (/metrics: parley_store_queue_wait_seconds, parley_store_synced_commit_seconds).
TEST_F(StoreTest, OperationsAndSyncedCommitsAreTimed) {
  const Stats before = store_->stats();
  Account a = create("alice");
  auto r = send(make_send(a.id, {make_delivery(a.id, 1, 1)}));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*ack(a.id, 1, r->server_ids), 1u);
  const Stats s = store_->stats();
  // Three operations, one at a time: three batches. The account and the send sync; the
  // acknowledgement alone does not.
  EXPECT_EQ(s.queue_wait.count - before.queue_wait.count, 3u);
  EXPECT_EQ(s.synced_commit.count - before.synced_commit.count, 2u);
  EXPECT_EQ(s.commits - s.unsynced_commits, s.synced_commit.count);
  EXPECT_GT(s.synced_commit.sum_seconds, before.synced_commit.sum_seconds);
}

TEST_F(StoreTest, AcknowledgementsLeftInTheTableAreFinishedAtOpen) {
  Account a = create("alice");
  auto r = send(make_send(a.id, {make_delivery(a.id, 1, 1), make_delivery(a.id, 1, 2)}));
  ASSERT_TRUE(r.has_value());
  store_->close();
  {
    // What a crash leaves: the acknowledgement recorded, the row not yet deleted.
    auto db = internal::Db::open(path_);
    ASSERT_TRUE(db.has_value());
    const std::string sql = "INSERT INTO acked (seq) VALUES (" + std::to_string(r->seqs[0]) + ")";
    ASSERT_TRUE((*db)->exec(sql.c_str(), "test").is_ok());
  }
  open();
  EXPECT_EQ(count_rows(path_, "envelopes"), 1);
  EXPECT_EQ(count_rows(path_, "acked"), 0);
  const auto queued = fetch(a.id, 1);
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].seq, r->seqs[1]);
  EXPECT_EQ(store_->stats().queued_envelopes, 1u);
}

TEST_F(StoreTest, TheSeqBoundIsWrittenAheadAndARestartSkipsPastIt) {
  Account a = create("alice");
  auto first = send(make_send(a.id, {make_delivery(a.id, 1, 1)}));
  ASSERT_TRUE(first.has_value());
  auto bound = [&] {
    auto db = internal::Db::open(path_);
    if (!db.has_value()) return std::int64_t{-1};
    auto s = (*db)->prepare("SELECT value FROM meta WHERE key = 'next_seq'", "test");
    if (!s.has_value() || !next_row(*s)) return std::int64_t{-1};
    return s->column_int(0);
  };
  const std::int64_t written = bound();
  EXPECT_EQ(written, first->seqs[0] + 1 + internal::kSeqReserve);
  auto second = send(make_send(a.id, {make_delivery(a.id, 1, 2)}));
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->seqs[0], first->seqs[0] + 1);
  EXPECT_EQ(bound(), written) << "a send within the reserve leaves the meta row alone";
  store_->close();
  open();
  auto third = send(make_send(a.id, {make_delivery(a.id, 1, 3)}));
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->seqs[0], written) << "after a restart, seqs start at the bound";
}

}  // namespace
}  // namespace parley::store
