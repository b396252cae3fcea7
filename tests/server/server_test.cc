// parleyd end to end: real parleyd processes on 127.0.0.1, driven by the test client.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <optional>
#include <set>
#include <thread>

#include "base/clock.h"
#include "tests/server/harness.h"
#include "transport/testing/support.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;

// The integer just after the first `prefix` in `text`, if there is one.
std::optional<std::int64_t> number_after(const std::string& text, const std::string& prefix) {
  const std::size_t at = text.find(prefix);
  if (at == std::string::npos) return std::nullopt;
  const char* first = text.data() + at + prefix.size();
  std::int64_t value = 0;
  if (std::from_chars(first, text.data() + text.size(), value).ec != std::errc{}) {
    return std::nullopt;
  }
  return value;
}

class ServerTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> args = {}) {
    auto d = Parleyd::start(dir_.path(), std::move(args));
    ASSERT_TRUE(d.has_value()) << d.status().to_string();
    server_ = std::move(*d);
  }
  // The body of the admin listener's /health, or "" when it did not answer.
  std::string health() {
    auto r = admin_get(server_->admin_port(), "/health");
    return r ? *r : "";
  }
  std::unique_ptr<TestClient> client(std::uint64_t seed) {
    auto c = std::make_unique<TestClient>(server_->client_options(), seed);
    EXPECT_TRUE(c->connect().is_ok());
    return c;
  }
  std::unique_ptr<TestClient> registered(const std::string& name, std::uint64_t seed,
                                         std::uint32_t pre_keys = 10) {
    auto c = client(seed);
    auto r = c->register_account(name, "", pre_keys);
    EXPECT_TRUE(r.has_value() && r->status() == 0)
        << (r ? r->message() : r.status().to_string());
    return c;
  }
  // The recovery hash a registration carries for recovery code `code` (its SHA-256).
  static std::string recovery_hash_of(const std::string& code) {
    const auto hash = crypto::sha256(as_bytes(code));
    return std::string(as_chars(ByteView(hash.data(), hash.size())));
  }
  // Drains pushes until QueueEmpty; returns the envelopes seen. With `ack`, acknowledges them
  // as they arrive (the server keeps at most 256 unacknowledged envelopes in flight).
  std::vector<wire::Envelope> drain(TestClient& c, bool ack = false) {
    std::vector<wire::Envelope> out;
    std::vector<std::string> pending;
    auto flush = [&] {
      if (pending.empty()) return;
      auto r = c.ack(pending);
      EXPECT_TRUE(r.has_value() && r->status() == 0);
      pending.clear();
    };
    for (int i = 0; i < 1000000; ++i) {
      auto p = c.next_push(ack ? 300ms : 10s);
      if (!p && ack) {
        flush();  // the window is full until we acknowledge
        p = c.next_push(10s);
      }
      if (!p) {
        ADD_FAILURE() << "no QueueEmpty: " << p.status().to_string();
        break;
      }
      if (p->has_queue_empty()) break;
      if (p->has_envelope()) {
        out.push_back(p->envelope());
        if (ack) pending.push_back(p->envelope().server_id());
        if (pending.size() >= 100) flush();
      }
    }
    if (ack) flush();
    return out;
  }

  // A blob of `size` patterned bytes, and an upload slot for it.
  static std::string patterned(std::size_t size) {
    std::string blob(size, '\0');
    for (std::size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>((i * 131) >> 3);
    return blob;
  }
  // The response to a request for a slot of `size` bytes.
  static wire::Response slot_response(TestClient& c, std::uint64_t size) {
    wire::Request r;
    r.mutable_attachment_slot()->set_size(size);
    auto resp = c.call(r);
    EXPECT_TRUE(resp.has_value()) << resp.status().to_string();
    return resp.has_value() ? *resp : wire::Response{};
  }
  // Writes `text` to parleyd.toml in the test's directory; returns its path.
  std::string write_config(const std::string& text) {
    const std::string conf = dir_.path() + "/parleyd.toml";
    std::FILE* f = std::fopen(conf.c_str(), "w");
    EXPECT_NE(f, nullptr);
    if (f != nullptr) {
      std::fputs(text.c_str(), f);
      std::fclose(f);
    }
    return conf;
  }
  // PUTs `part` at `offset` of slot `s` (of `total` bytes) on a fresh connection: the HTTP
  // status, or 0 when the request failed.
  unsigned put_part(const wire::AttachmentSlotResult& s, std::uint64_t offset,
                    std::string_view part, std::uint64_t total) {
    transport::HttpsClient http(server_->client_options());
    auto put = http.put_range(s.path(), s.upload_token(), offset, as_bytes(part), total);
    EXPECT_TRUE(put.has_value()) << put.status().to_string();
    return put.has_value() ? put->status : 0;
  }
  static wire::AttachmentSlotResult upload_slot(TestClient& c, std::uint64_t size) {
    const wire::Response slot = slot_response(c, size);
    EXPECT_EQ(slot.status(), 0u) << slot.message();
    return slot.attachment_slot();
  }
  // A slot for `blob`, uploaded whole in one part.
  wire::AttachmentSlotResult uploaded(TestClient& c, const std::string& blob) {
    const auto s = upload_slot(c, blob.size());
    EXPECT_EQ(put_part(s, 0, blob, blob.size()), 200u);
    return s;
  }

  // A registration of `name` built by hand (for requests register_account() would not make:
  // no proof of work, a recovery code, a pipelined frame), signed over `c`'s challenge with a
  // key drawn from `seed`, which is returned in `key`.
  static wire::Request hand_registration(const TestClient& c, const std::string& name,
                                         std::uint64_t seed,
                                         crypto::Ed25519KeyPair* key = nullptr) {
    wire::Request r;
    auto* reg = r.mutable_register_();
    reg->set_name(name);
    DeterministicRng rng(seed);
    auto k = crypto::Ed25519KeyPair::generate(rng);
    reg->set_auth_public_key(std::string(as_chars(k.public_key)));
    reg->set_challenge_signature(std::string(
        as_chars(k.sign(wire::auth_transcript(as_bytes(c.challenge().nonce()), name, 1)))));
    reg->set_identity_key(fake_key(rng));
    reg->set_registration_id(5);
    reg->mutable_signed_pre_key()->set_public_key(fake_key(rng));
    reg->mutable_signed_pre_key()->set_signature(std::string(64, 's'));
    if (key != nullptr) *key = std::move(k);
    return r;
  }

  TempDir dir_;
  // /metrics once it holds `wanted` (polled for up to 5 s), or as last read.
  std::string metrics_with(const std::string& wanted) {
    std::string metrics;
    for (int i = 0; i < 500 && metrics.find(wanted) == std::string::npos; ++i) {
      if (i > 0) std::this_thread::sleep_for(10ms);
      auto m = admin_get(server_->admin_port(), "/metrics");
      metrics = m ? *m : "";
    }
    return metrics;
  }

  // Another process's connection to parleyd's database (WAL: it may write beside parleyd),
  // waiting up to 5 s for a lock. Close it with sqlite3_close (also after a failed open).
  sqlite3* open_db() {
    sqlite3* db = nullptr;
    if (sqlite3_open((dir_.path() + "/d/parley.db").c_str(), &db) == SQLITE_OK) {
      sqlite3_busy_timeout(db, 5000);
    }
    return db;
  }
  // Another process's SQL on parleyd's database.
  void sql(const std::string& statement) {
    sqlite3* db = open_db();
    const int rc = sqlite3_exec(db, statement.c_str(), nullptr, nullptr, nullptr);
    EXPECT_EQ(rc, SQLITE_OK) << statement << ": " << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  // The integer in the first column of the first row of `query` (-1 if there is none).
  std::int64_t sql_int(const std::string& query) {
    sqlite3* db = open_db();
    sqlite3_stmt* stmt = nullptr;
    std::int64_t value = -1;
    if (sqlite3_prepare_v2(db, query.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      value = sqlite3_column_int64(stmt, 0);
    }
    EXPECT_NE(value, -1) << query << ": " << sqlite3_errmsg(db);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
  }

  std::unique_ptr<Parleyd> server_;
};

TEST_F(ServerTest, OpenRegistrationLoginAndNameRules) {
  start();
  auto alice = registered("Alice", 1);
  // Case-folded uniqueness.
  auto other = client(2);
  auto taken = other->register_account("aLiCe");
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->status(), 409u);
  auto bad = client(3);
  auto invalid = bad->register_account("a b");
  ASSERT_TRUE(invalid.has_value());
  EXPECT_EQ(invalid->status(), 400u);
  // Log in again on a new connection with the same device key.
  alice->disconnect();
  ASSERT_TRUE(alice->connect().is_ok());
  auto login = alice->login();
  ASSERT_TRUE(login.has_value());
  EXPECT_EQ(login->status(), 0u);
  EXPECT_EQ(login->login().address(), "Alice@127.0.0.1");
  EXPECT_EQ(login->login().pre_key_count(), 10u);
}

// A wrong key, an unknown account and a name that is not a valid name all get the same 401;
// requests before authentication are refused; the third failed login closes the connection
// (a name that is not valid was not counted, and a connection could try without end); the
// account itself is not locked.
TEST_F(ServerTest, LoginWithAWrongKeyIsRefused) {
  start();
  auto alice = registered("alice", 1);
  auto mallory = client(9);
  DeterministicRng rng(77);
  auto wrong = crypto::Ed25519KeyPair::generate(rng);
  auto r = mallory->login_as("alice", 1, wrong);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status(), 401u);
  // Unknown account and unknown device give the same answer.
  EXPECT_EQ(mallory->login_as("nobody", 1, wrong)->status(), 401u);
  // Requests before authentication are refused.
  wire::Request req;
  req.mutable_key_count();
  EXPECT_EQ(mallory->call(req)->status(), 401u);
  wire::Request invalid;
  invalid.mutable_login()->set_name("!!");
  invalid.mutable_login()->set_device_id(1);
  invalid.mutable_login()->set_challenge_signature(std::string(64, 'x'));
  auto third = mallory->call(invalid);
  ASSERT_TRUE(third.has_value()) << third.status().to_string();
  EXPECT_EQ(third->status(), 401u);
  auto fourth = mallory->call(invalid, 2s);
  EXPECT_FALSE(fourth.has_value()) << "still answered after three failed logins";
  // The right key still works.
  auto good = client(1);
  EXPECT_EQ(good->login_as("alice", 1, alice->auth_key())->status(), 0u);
}

// A low limit on message content (here 4,000 bytes) limits messages only: a registration with
// the client's 100 prekeys and an upload of the 200 a request may carry (padded to 16 KiB
// frames) still get through. The WebSocket's limit was derived from it, and they were cut.
TEST_F(ServerTest, ALowMessageLimitStillTakesRegistrationsAndKeyUploads) {
  start({"--config", write_config("[limits]\nmax_message_bytes = 4000\n")});
  auto c = client(1);
  auto r = c->register_account("alice", "", 100);
  ASSERT_TRUE(r.has_value()) << r.status().to_string();
  EXPECT_EQ(r->status(), 0u) << r->message();
  DeterministicRng rng(9);
  wire::Request up;
  for (std::uint32_t i = 100; i < 300; ++i) {
    auto* k = up.mutable_upload_keys()->add_pre_keys();
    k->set_id(i);
    k->set_public_key(fake_key(rng));
  }
  auto uploaded = c->call(up);
  ASSERT_TRUE(uploaded.has_value()) << uploaded.status().to_string();
  EXPECT_EQ(uploaded->status(), 0u) << uploaded->message();
  auto bob = registered("bob", 2);
  auto big = c->call(c->make_send("bob", {{1, bob->registration_id()}}, std::string(4001, 'x')));
  ASSERT_TRUE(big.has_value()) << big.status().to_string();
  EXPECT_EQ(big->status(), 413u) << big->message();
}

TEST_F(ServerTest, InviteRegistration) {
  start({"--registration", "invite"});
  const std::string token = server_->invite().invite_token;
  ASSERT_FALSE(token.empty());
  auto without = client(1);
  EXPECT_EQ(without->register_account("alice", "")->status(), 403u);
  auto wrong = client(2);
  EXPECT_EQ(wrong->register_account("alice", "not-a-token")->status(), 403u);
  auto ok = client(3);
  EXPECT_EQ(ok->register_account("alice", token)->status(), 0u);
  auto reuse = client(4);
  EXPECT_EQ(reuse->register_account("bob", token)->status(), 403u);
  // The admin listener mints fresh invites.
  auto link = admin_get(server_->admin_port(), "/invite", "POST");
  ASSERT_TRUE(link.has_value());
  auto inv = wire::parse_invite(link->substr(0, link->find('\n')));
  ASSERT_TRUE(inv.has_value()) << *link;
  auto bob = client(5);
  EXPECT_EQ(bob->register_account("bob", inv->invite_token)->status(), 0u);
}

TEST_F(ServerTest, ProofOfWorkRegistration) {
  start({"--registration", "pow", "--pow-difficulty", "10"});
  auto c = client(1);
  EXPECT_EQ(c->challenge().registration(), "pow");
  EXPECT_EQ(c->challenge().pow_difficulty(), 10u);
  EXPECT_EQ(c->register_account("alice")->status(), 0u);  // the client solves the puzzle
  // A nonce that does not meet the difficulty is refused.
  auto lazy = client(2);
  wire::Request r = hand_registration(*lazy, "bob", 3);
  auto* reg = r.mutable_register_();
  std::uint32_t refused = 0;
  for (std::uint64_t n = 0; n < 8 && refused == 0; ++n) {
    reg->set_pow_nonce(n);
    auto resp = lazy->call(r);
    ASSERT_TRUE(resp.has_value());
    if (resp->status() == 403u) refused = 1;
  }
  EXPECT_EQ(refused, 1u);
}

// A recovery code proves ownership of an existing name; it never stands in for an invitation
// or proof of work to create one (it did: any 16 bytes registered a new name on an invite-only
// or proof-of-work server).
TEST_F(ServerTest, ARecoveryCodeCreatesNoAccount) {
  for (const std::vector<std::string>& policy :
       {std::vector<std::string>{"--registration", "invite"},
        std::vector<std::string>{"--registration", "pow", "--pow-difficulty", "30"},
        std::vector<std::string>{}}) {
    SCOPED_TRACE(policy.empty() ? "open" : policy[1]);
    TempDir dir;
    auto d = Parleyd::start(dir.path(), policy);
    ASSERT_TRUE(d.has_value()) << d.status().to_string();
    server_ = std::move(*d);
    auto sneaky = client(2);
    crypto::Ed25519KeyPair key;
    wire::Request r = hand_registration(*sneaky, "mallory", 3, &key);
    r.mutable_register_()->set_recovery_code(std::string(16, 'x'));  // no invitation, no work
    auto resp = sneaky->call(r);
    ASSERT_TRUE(resp.has_value()) << resp.status().to_string();
    EXPECT_EQ(resp->status(), 404u) << resp->message();
    auto login = client(4)->login_as("mallory", 1, key);
    ASSERT_TRUE(login.has_value());
    EXPECT_EQ(login->status(), 401u) << "the name exists after all";
    server_.reset();  // before its directory goes
  }
}

// Each installation's built-in website is its own (made from DIR/site_seed, written on first
// start), and the same after a restart: one GET / cannot find every parleyd.
TEST_F(ServerTest, EachInstallationShowsItsOwnWebsite) {
  auto home = [](const Parleyd& d) {
    transport::HttpsClient http(d.client_options());
    auto r = http.request("GET", "/");
    EXPECT_TRUE(r.has_value() && r->status == 200u);
    return r.has_value() ? r->body + r->header("ETag") + r->header("Last-Modified") : "";
  };
  start();
  const std::string first = home(*server_);
  ASSERT_FALSE(first.empty());
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(dir_.path()) / "d" / "site_seed"));
  {
    TempDir other_dir;
    auto other = Parleyd::start(other_dir.path(), {});
    ASSERT_TRUE(other.has_value()) << other.status().to_string();
    EXPECT_NE(home(**other), first);
  }
  server_.reset();
  start();
  EXPECT_EQ(home(*server_), first);
}

TEST_F(ServerTest, OneTimePreKeysAreHandedOutOnceUnderConcurrentFetches) {
  start();
  auto bob = registered("bob", 1, 40);
  constexpr int kFetchers = 8, kEach = 8;
  std::vector<std::unique_ptr<TestClient>> fetchers;
  for (int i = 0; i < kFetchers; ++i) fetchers.push_back(registered("f" + std::to_string(i) + "xx", 100 + i));
  std::mutex mu;
  std::vector<std::uint32_t> ids;
  int without = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < kFetchers; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < kEach; ++j) {
        wire::Request r;
        r.mutable_fetch_bundles()->set_name("bob");
        auto resp = fetchers[static_cast<std::size_t>(i)]->call(r);
        std::lock_guard<std::mutex> lock(mu);
        if (!resp || resp->status() != 0 || resp->bundles().bundles_size() != 1) {
          ADD_FAILURE() << "fetch failed";
          continue;
        }
        const auto& b = resp->bundles().bundles(0);
        if (b.has_pre_key()) ids.push_back(b.pre_key().id()); else ++without;
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::uint32_t> unique(ids.begin(), ids.end());
  EXPECT_EQ(unique.size(), ids.size()) << "a one-time prekey was handed out twice";
  EXPECT_EQ(ids.size(), 40u);
  EXPECT_EQ(without, kFetchers * kEach - 40);
  wire::Request count;
  count.mutable_key_count();
  EXPECT_EQ(bob->call(count)->key_count().count(), 0u);
}

// One account cannot take all of another's one-time prekeys: its bundle fetches for that
// account are limited (limits.bundle_fetch_burst, then bundle_fetch_rate). The fetch refused
// takes no prekey; other accounts, and fetches for other accounts, are not held up; a name that
// is no account costs nothing.
TEST_F(ServerTest, BundleFetchesForOneAccountAreLimited) {
  start(
      {"--config", write_config("[limits]\nbundle_fetch_burst = 3\nbundle_fetch_rate = 0.001\n")});
  auto bob = registered("bob", 1, 20);
  auto carol = registered("carol", 2, 20);
  auto mallory = registered("mallory", 3);
  auto fetch = [](TestClient& c, const std::string& name) {
    wire::Request r;
    r.mutable_fetch_bundles()->set_name(name);
    auto resp = c.call(r);
    return resp ? resp->status() : 0xFFFFFFFFu;
  };
  auto remaining = [](TestClient& c) {
    wire::Request count;
    count.mutable_key_count();
    auto resp = c.call(count);
    return resp ? resp->key_count().count() : 0xFFFFFFFFu;
  };
  EXPECT_EQ(fetch(*mallory, "nobody"), wire::kStatusNotFound);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(fetch(*mallory, "bob"), 0u) << i;
  EXPECT_EQ(fetch(*mallory, "bob"), wire::kStatusRateLimited);
  EXPECT_EQ(remaining(*bob), 17u);
  EXPECT_EQ(fetch(*mallory, "carol"), 0u);
  EXPECT_EQ(fetch(*carol, "bob"), 0u);
  EXPECT_EQ(remaining(*bob), 16u);
}

TEST_F(ServerTest, MismatchedAndStaleDevicesAreNamed) {
  start();
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  // Missing device 1, extra device 2.
  auto r1 = alice->call(alice->make_send("bob", {{2, 5}}, "x"));
  ASSERT_TRUE(r1.has_value());
  EXPECT_EQ(r1->status(), 409u);
  ASSERT_EQ(r1->send().mismatch().missing_devices_size(), 1);
  EXPECT_EQ(r1->send().mismatch().missing_devices(0), 1u);
  ASSERT_EQ(r1->send().mismatch().extra_devices_size(), 1);
  EXPECT_EQ(r1->send().mismatch().extra_devices(0), 2u);
  // Stale registration id.
  auto r2 = alice->call(alice->make_send("bob", {{1, bob->registration_id() + 1}}, "x"));
  EXPECT_EQ(r2->status(), 409u);
  ASSERT_EQ(r2->send().mismatch().stale_devices_size(), 1);
  EXPECT_EQ(r2->send().mismatch().stale_devices(0), 1u);
  // Unknown destination.
  EXPECT_EQ(alice->call(alice->make_send("carol", {{1, 1}}, "x"))->status(), 404u);
  // Correct.
  EXPECT_EQ(alice->call(alice->make_send("bob", {{1, bob->registration_id()}}, "x"))->status(), 0u);
}

// A session remembers the account it last sent to, but never past a change of the server's
// account cache: after the destination is recovered on a new device, the old registration id
// is stale at once.
TEST_F(ServerTest, ASendSeesTheDevicesOfAnAccountRecoveredSinceTheLastSend) {
  start();
  auto alice = registered("alice", 1);
  const std::string code = "correct horse battery staple";
  const std::string recovery_hash = recovery_hash_of(code);
  auto bob = client(2);
  ASSERT_EQ(bob->register_account("bob", "", 10, recovery_hash)->status(), 0u);
  const std::map<std::uint32_t, std::uint32_t> old_device = {{1, bob->registration_id()}};
  ASSERT_EQ(alice->call(alice->make_send("bob", old_device, "one"))->status(), 0u);
  auto new_bob = client(3);
  ASSERT_NE(new_bob->registration_id(), bob->registration_id());
  ASSERT_EQ(new_bob->register_account("bob", "", 10, "", code)->status(), 0u);
  auto stale = alice->call(alice->make_send("bob", old_device, "two"));
  ASSERT_TRUE(stale.has_value());
  EXPECT_EQ(stale->status(), 409u);
  ASSERT_EQ(stale->send().mismatch().stale_devices_size(), 1);
  EXPECT_EQ(
      alice->call(alice->make_send("bob", {{1, new_bob->registration_id()}}, "three"))->status(),
      0u);
}

// A recovery whose own connection closed before its answer still closes the replaced device's
// session. It did not: the lost device stayed in, was pushed what was sent to the new one, and
// its acknowledgements deleted it (a review reproduced it 5 times in 5, this test 3 in 3).
TEST_F(ServerTest, ARecoveryClosesTheReplacedDeviceAlsoWhenItsOwnConnectionIsGone) {
  start();
  auto alice = registered("alice", 1);
  const std::string code = "correct horse battery staple";
  const std::string recovery_hash = recovery_hash_of(code);
  auto old_bob = client(2);  // the lost device, still connected
  ASSERT_EQ(old_bob->register_account("bob", "", 10, recovery_hash)->status(), 0u);
  ASSERT_NE(old_bob->registration_id(), 5u);

  // The owner recovers on a new device (registration id 5) and its connection drops at once.
  auto new_bob = client(3);
  crypto::Ed25519KeyPair new_key;
  wire::Request r = hand_registration(*new_bob, "bob", 77, &new_key);
  r.mutable_register_()->set_recovery_code(code);
  r.set_id(1);
  wire::Frame f;
  *f.mutable_request() = r;
  ASSERT_TRUE(new_bob->send_raw(as_bytes(*wire::encode_frame(f))).is_ok());
  new_bob->disconnect();
  bool recovered = false;
  for (int i = 0; i < 50 && !recovered; ++i) {
    auto old_login = client(9)->login_as("bob", 1, old_bob->auth_key());
    ASSERT_TRUE(old_login.has_value());
    recovered = old_login->status() == 401u;
    if (!recovered) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(recovered);

  // The old device's session is closed, and what alice sends to the new one waits for it.
  auto after = old_bob->call(old_bob->make_send("alice", {{1, alice->registration_id()}}, "x"), 2s);
  EXPECT_FALSE(after.has_value());
  ASSERT_EQ(alice->call(alice->make_send("bob", {{1, 5}}, "for the new device"))->status(), 0u);
  auto nb = client(4);
  ASSERT_EQ(nb->login_as("bob", 1, new_key)->status(), 0u);
  auto queued = drain(*nb);
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].content(), "for the new device");
}

TEST_F(ServerTest, DeliveryOnlineOfflineAckAndDedup) {
  start();
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  EXPECT_TRUE(drain(*bob).empty());
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  // Online: pushed live.
  auto sent = alice->call(alice->make_send("bob", to_bob, "live one"));
  ASSERT_EQ(sent->status(), 0u);
  auto p = bob->next_push(5s);
  ASSERT_TRUE(p.has_value() && p->has_envelope());
  EXPECT_EQ(p->envelope().content(), "live one");
  EXPECT_EQ(p->envelope().source(), "alice");
  EXPECT_EQ(bob->ack({p->envelope().server_id()})->ack().deleted(), 1u);
  // The live push is in the delivery histogram (the metric is pushed before it is observed:
  // poll briefly); what waits in a queue is not.
  const auto live_deliveries = [&]() -> std::string {
    auto m = admin_get(server_->admin_port(), "/metrics");
    if (!m) return "no metrics";
    const std::string key = "parley_live_delivery_seconds_count ";
    const auto at = m->find(key);
    if (at == std::string::npos) return "no histogram";
    return m->substr(at + key.size(), m->find('\n', at) - at - key.size());
  };
  for (int i = 0; i < 100 && live_deliveries() != "1"; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(live_deliveries(), "1");
  // Offline: queued, delivered in order on the next login, resends stored once.
  bob->disconnect();
  Bytes cid(16, 0x42);
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(alice->call(alice->make_send("bob", to_bob, "m" + std::to_string(i)))->status(), 0u);
  }
  EXPECT_EQ(live_deliveries(), "1");
  auto first = alice->call(alice->make_send("bob", to_bob, "once", cid));
  auto again = alice->call(alice->make_send("bob", to_bob, "once", cid));
  EXPECT_FALSE(first->send().duplicate());
  EXPECT_TRUE(again->send().duplicate());
  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_EQ(bob->login()->status(), 0u);
  auto queued = drain(*bob);
  ASSERT_EQ(queued.size(), 21u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(queued[static_cast<std::size_t>(i)].content(), "m" + std::to_string(i));
  EXPECT_EQ(queued[20].content(), "once");
  // Not acknowledged: delivered again after reconnecting. Then acknowledged: gone.
  bob->disconnect();
  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_EQ(bob->login()->status(), 0u);
  auto again_queued = drain(*bob);
  ASSERT_EQ(again_queued.size(), 21u);
  std::vector<std::string> ids;
  for (const auto& e : again_queued) ids.push_back(e.server_id());
  EXPECT_EQ(bob->ack(ids)->ack().deleted(), 21u);
  bob->disconnect();
  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_EQ(bob->login()->status(), 0u);
  EXPECT_TRUE(drain(*bob).empty());
}

// Frame.ack (wire_version 2): deletes like AckRequest, frees the delivery window, and gets no
// response; one the server cannot take closes the connection with a reason.
TEST_F(ServerTest, OneWayAcksDeleteWithoutAResponse) {
  start();
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  EXPECT_EQ(bob->challenge().wire_version(), 2u);
  EXPECT_TRUE(drain(*bob).empty());
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(alice->call(alice->make_send("bob", to_bob, "m" + std::to_string(i)))->status(), 0u);
    auto p = bob->next_push(5s);
    ASSERT_TRUE(p.has_value() && p->has_envelope());
    ids.push_back(p->envelope().server_id());
  }
  ASSERT_TRUE(bob->ack_one_way({ids[0], ids[2]}).is_ok());
  // The next frame bob gets is the answer to its ping: the ack had none.
  wire::Frame ping;
  ping.mutable_request()->set_id(777);
  ping.mutable_request()->mutable_ping();
  ASSERT_TRUE(bob->send_raw(as_bytes(*wire::encode_frame(ping))).is_ok());
  auto f = bob->next_frame(5s);
  ASSERT_TRUE(f.has_value());
  ASSERT_TRUE(f->has_response());
  EXPECT_EQ(f->response().id(), 777u);
  // Deleted: only the unacknowledged one comes again.
  bob->disconnect();
  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_EQ(bob->login()->status(), 0u);
  auto again = drain(*bob);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].server_id(), ids[1]);

  // The window: more than it holds, each acknowledged one way as it comes, all arrive live.
  const int n = 300;  // more than the server's delivery window (256 envelopes)
  std::thread sender([&] {
    for (int i = 0; i < n; ++i) {
      auto r = alice->call(alice->make_send("bob", to_bob, "w" + std::to_string(i)));
      if (!r.has_value() || r->status() != 0u) return;
    }
  });
  int received = 0;
  for (; received < n; ++received) {
    auto p = bob->next_push(10s);
    if (!p.has_value() || !p->has_envelope()) break;
    if (!bob->ack_one_way({p->envelope().server_id()}).is_ok()) break;
  }
  sender.join();
  EXPECT_EQ(received, n);

  // Refused one-way acks close the connection with a reason; the server serves everyone else.
  auto empty = registered("carol", 3);
  EXPECT_TRUE(drain(*empty).empty());
  ASSERT_TRUE(empty->ack_one_way({}).is_ok());
  auto closed = empty->next_frame(3s);
  ASSERT_FALSE(closed.has_value());
  EXPECT_NE(closed.error().message().find("an ack needs 1 to 1000 ids"), std::string::npos)
      << closed.error().to_string();
  auto anonymous = client(60);
  ASSERT_TRUE(anonymous->ack_one_way({ids[1]}).is_ok());
  closed = anonymous->next_frame(3s);
  ASSERT_FALSE(closed.has_value());
  EXPECT_NE(closed.error().message().find("acknowledgement before login"), std::string::npos)
      << closed.error().to_string();
  EXPECT_EQ(alice->call(alice->make_send("bob", to_bob, "still"))->status(), 0u);
}

// Several senders on different connections (so on different io threads) write to one online
// device at once. Every envelope must be pushed live, each once, without the device having to
// reconnect: the store's commits finish in seq order, but the senders' callbacks run on their
// own threads and may reach the device's session out of that order.
TEST_F(ServerTest, ConcurrentSendersToOneOnlineDeviceAreAllPushedLive) {
  start();
  auto bob = registered("bob", 1);
  const std::uint32_t bob_reg = bob->registration_id();
  EXPECT_TRUE(drain(*bob).empty());
  constexpr int kSenders = 6;
  constexpr int kEach = 300;
  std::vector<std::unique_ptr<TestClient>> senders;
  for (int i = 0; i < kSenders; ++i) {
    senders.push_back(registered("s" + std::to_string(i) + "xx", 10 + i));
  }
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kSenders; ++i) {
    threads.emplace_back([&, i] {
      auto& c = *senders[static_cast<std::size_t>(i)];
      for (int n = 0; n < kEach; ++n) {
        auto r = c.call(
            c.make_send("bob", {{1, bob_reg}}, std::to_string(i) + "-" + std::to_string(n)), 10s);
        if (!r || r->status() != 0) refused++;
      }
    });
  }
  std::set<std::string> seen;
  int duplicates = 0;
  std::vector<std::string> pending;
  while (seen.size() < static_cast<std::size_t>(kSenders * kEach)) {
    auto p = bob->next_push(5s);
    if (!p) break;  // a stalled envelope: nothing more arrives
    if (!p->has_envelope()) continue;
    if (!seen.insert(p->envelope().content()).second) duplicates++;
    pending.push_back(p->envelope().server_id());
    if (pending.size() >= 50) {
      auto a = bob->ack(pending);
      ASSERT_TRUE(a.has_value() && a->status() == 0);
      pending.clear();
    }
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(refused.load(), 0);
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kSenders * kEach)) << "envelopes stalled";
  EXPECT_EQ(duplicates, 0);
}

TEST_F(ServerTest, QueueLimitsAreEnforcedAndNamed) {
  // A queue's byte limit is at least the largest message (parleyd refuses to start otherwise).
  // One sender may fill the whole queue here (see OneSenderCannotFillAnotherAccountsQueue).
  start({"--config",
         write_config("[limits]\nmax_message_bytes = 4000\nqueue_sender_share_percent = 100\n"),
         "--queue-max-count", "5", "--queue-max-bytes", "4000"});
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  bob->disconnect();
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  for (int i = 0; i < 5; ++i) ASSERT_EQ(alice->call(alice->make_send("bob", to_bob, "x"))->status(), 0u);
  auto full = alice->call(alice->make_send("bob", to_bob, "x"));
  EXPECT_EQ(full->status(), 429u);
  EXPECT_EQ(full->send().limit(), "count");
  auto carol = registered("carol", 3);
  carol->disconnect();
  const std::map<std::uint32_t, std::uint32_t> to_carol = {{1, carol->registration_id()}};
  ASSERT_EQ(alice->call(alice->make_send("carol", to_carol, std::string(3000, 'b')))->status(), 0u);
  auto big = alice->call(alice->make_send("carol", to_carol, std::string(3000, 'b')));
  EXPECT_EQ(big->status(), 429u);
  EXPECT_EQ(big->send().limit(), "bytes");
}

// With the default share (20 %), one sender holds at most 2 of a 10-envelope queue: past it,
// 429 naming "sender_count", while another sender still gets through; once the device has
// acknowledged, the sender may send again. Also after a restart.
TEST_F(ServerTest, OneSenderCannotFillAnotherAccountsQueue) {
  const std::vector<std::string> args = {"--queue-max-count", "10", "--listen",
                                         "127.0.0.1:" + std::to_string(free_port())};
  start(args);
  auto mallory = registered("mallory", 1);
  auto alice = registered("alice", 2);
  auto bob = registered("bob", 3);
  bob->disconnect();
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(mallory->call(mallory->make_send("bob", to_bob, "spam"))->status(), 0u);
  }
  auto over = mallory->call(mallory->make_send("bob", to_bob, "spam"));
  ASSERT_TRUE(over.has_value());
  EXPECT_EQ(over->status(), 429u);
  EXPECT_EQ(over->send().limit(), "sender_count");
  EXPECT_NE(over->message().find("sender_count"), std::string::npos) << over->message();
  EXPECT_EQ(alice->call(alice->make_send("bob", to_bob, "hello"))->status(), 0u);

  mallory->disconnect();
  alice->disconnect();
  ASSERT_EQ(server_->terminate(), 0);
  start(args);
  ASSERT_TRUE(mallory->connect().is_ok());
  ASSERT_TRUE(mallory->login().has_value());
  EXPECT_EQ(mallory->call(mallory->make_send("bob", to_bob, "spam"))->send().limit(),
            "sender_count");

  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_TRUE(bob->login().has_value());
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto p = bob->next_push(5s);
    ASSERT_TRUE(p.has_value() && p->has_envelope());
    ids.push_back(p->envelope().server_id());
  }
  ASSERT_EQ(bob->ack(ids)->status(), 0u);
  EXPECT_EQ(mallory->call(mallory->make_send("bob", to_bob, "again"))->status(), 0u);
}

// A queue fetch that fails is retried (after 100 ms, doubling up to 10 s) until it succeeds:
// the device gets its queue without reconnecting, and without a new message to wake its
// session. The failure is made from outside, as a failing disk read would make it: another
// process moves the envelopes table out of parleyd's reach for a while.
TEST_F(ServerTest, AFailedQueueFetchIsRetried) {
  start();
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  EXPECT_TRUE(drain(*bob).empty());
  bob->disconnect();
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(alice->call(alice->make_send("bob", to_bob, "m" + std::to_string(i)))->status(), 0u);
  }
  sql("ALTER TABLE envelopes RENAME TO envelopes_away");
  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_EQ(bob->login()->status(), 0u);
  EXPECT_FALSE(bob->next_push(800ms).has_value());  // every fetch fails meanwhile
  sql("ALTER TABLE envelopes_away RENAME TO envelopes");
  auto got = drain(*bob, /*ack=*/true);
  ASSERT_EQ(got.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i].content(), "m" + std::to_string(i));
  std::ifstream log(dir_.path() + ".log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("event=fetch_queue_failed"), std::string::npos);
  EXPECT_TRUE(server_->running());
}

// A full disk: parleyd's file-size limit is lowered to 0 under it (set_file_size_limit), so that
// every write to a file fails, as on a disk with no room. Sends are refused with 503 (try again
// later), an acknowledgement that cannot be recorded closes the connection with a reason, the
// server keeps running and serving, and once there is room again it stores sends; nothing
// refused is delivered, and nothing stored before is lost or deleted unacknowledged.
TEST_F(ServerTest, AFullDiskRefusesSendsClearlyAndRecovers) {
  start();
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  EXPECT_TRUE(drain(*bob).empty());
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  ASSERT_EQ(alice->call(alice->make_send("bob", to_bob, "before"))->status(), 0u);
  auto before = bob->next_push(5s);  // pushed live, acknowledged only once the disk is full
  ASSERT_TRUE(before.has_value() && before->has_envelope());

  ASSERT_TRUE(set_file_size_limit(server_->pid(), 0).is_ok());  // the disk is full
  for (int i = 0; i < 3; ++i) {
    auto refused = alice->call(alice->make_send("bob", to_bob, "refused"));
    ASSERT_TRUE(refused.has_value()) << refused.status().to_string();
    EXPECT_EQ(refused->status(), 503u) << refused->message();  // try again later
    EXPECT_FALSE(refused->message().empty());
  }
  EXPECT_TRUE(server_->running());
  // The operator sees it: the refusals by code, and the store's failed commits.
  auto metrics = admin_get(server_->admin_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->find("parley_responses_total{code=\"503\"} 3\n"), std::string::npos)
      << *metrics;
  EXPECT_NE(metrics->find("parley_store_failed_commits_total 3\n"), std::string::npos) << *metrics;
  // A one-way acknowledgement the store cannot record: the connection is closed with a reason
  // (the device reconnects and is sent the envelope again).
  ASSERT_TRUE(bob->ack_one_way({before->envelope().server_id()}).is_ok());
  auto closed = bob->next_frame(5s);
  ASSERT_FALSE(closed.has_value());
  EXPECT_NE(closed.error().message().find("acknowledgement failed"), std::string::npos)
      << closed.error().to_string();
  // Another device still connects.
  auto carol = client(3);
  EXPECT_TRUE(carol->challenge().nonce().size() > 0);

  ASSERT_TRUE(set_file_size_limit(server_->pid(), kNoFileSizeLimit).is_ok());  // room again
  auto after = alice->call(alice->make_send("bob", to_bob, "after"));
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->status(), 0u) << after->message();
  bob->disconnect();
  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_EQ(bob->login()->status(), 0u);
  auto got = drain(*bob, /*ack=*/true);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].content(), "before");
  EXPECT_EQ(got[1].content(), "after");
  bob->disconnect();  // acknowledged now: gone
  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_EQ(bob->login()->status(), 0u);
  EXPECT_TRUE(drain(*bob).empty());
  EXPECT_TRUE(server_->running());
}

TEST_F(ServerTest, FlagsOverrideTheConfigFileEvenAtTheirDefaults) {
  // The file sets a queue limit of 2; the flag restores the built-in default (10000). The flag
  // must win although it equals the default.
  const std::string conf = dir_.path() + "/parleyd.toml";
  {
    std::FILE* f = std::fopen(conf.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("[limits]\nqueue_max_count = 2\n", f);
    std::fclose(f);
  }
  start({"--config", conf, "--queue-max-count", "10000"});
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  bob->disconnect();
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(alice->call(alice->make_send("bob", to_bob, "x"))->status(), 0u) << "send " << i;
  }
}

TEST_F(ServerTest, ClientsResumeTlsAcrossARestartUnlessTheTicketKeysAreNotKept) {
  const std::string listen = "127.0.0.1:" + std::to_string(free_port());
  const std::string conf = dir_.path() + "/parleyd.toml";
  auto with_tickets = [&](const char* mode) {
    std::FILE* f = std::fopen(conf.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fprintf(f, "[server]\ntls_tickets = \"%s\"\n", mode);
    std::fclose(f);
    start({"--listen", listen, "--config", conf});
  };
  // The connections of one client, each with the newest ticket it has for this server.
  auto resumed = [&](TestClient& c) {
    EXPECT_TRUE(c.connect().is_ok());
    const bool r = c.tls_resumed();
    c.disconnect();
    return r;
  };

  with_tickets("file");  // the default
  auto c = std::make_unique<TestClient>(server_->client_options(), 1);
  EXPECT_FALSE(resumed(*c));
  struct stat st {};
  ASSERT_EQ(::stat((dir_.path() + "/d/tls/ticket-keys").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(server_->terminate(), 0);
  with_tickets("file");
  EXPECT_TRUE(resumed(*c));
  auto metrics = admin_get(server_->admin_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->find("parley_tls_handshakes_total{outcome=\"resumed\"} 1\n"),
            std::string::npos)
      << *metrics;
  ASSERT_EQ(server_->terminate(), 0);

  with_tickets("memory");  // keys of this process only
  EXPECT_FALSE(resumed(*c));
  EXPECT_TRUE(resumed(*c));
  ASSERT_EQ(server_->terminate(), 0);
  with_tickets("memory");
  EXPECT_FALSE(resumed(*c));
  ASSERT_EQ(server_->terminate(), 0);

  with_tickets("off");
  EXPECT_FALSE(resumed(*c));
  EXPECT_FALSE(resumed(*c));
}

// A drain (SIGTERM): the health check says so (503), requests that would change state are
// refused with 503 "server draining" (so a bundle fetch spends no one-time prekey and a send is
// not stored), a ping is still answered; then parleyd closes the connections and exits 0.
TEST_F(ServerTest, ADrainRefusesChangesAndFailsTheHealthCheck) {
  const std::string listen = "127.0.0.1:" + std::to_string(free_port());  // kept for the restart
  start({"--listen", listen});
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  bob->disconnect();
  ASSERT_EQ(health(), "ok\n");
  ASSERT_EQ(::kill(server_->pid(), SIGTERM), 0);
  bool draining = false;
  for (int i = 0; i < 500 && !draining; ++i) {  // up to 5 s
    draining = health() == "draining\n";
    if (!draining) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(draining);
  wire::Request fetch;
  fetch.mutable_fetch_bundles()->set_name("bob");
  wire::Request slot;
  slot.mutable_attachment_slot()->set_size(100);
  wire::Request keys;
  keys.mutable_upload_keys();
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  for (const wire::Request& r : {fetch, slot, keys, alice->make_send("bob", to_bob, "late")}) {
    auto resp = alice->call(r);
    ASSERT_TRUE(resp.has_value()) << r.op_case() << ": " << resp.status().to_string();
    EXPECT_EQ(resp->status(), 503u) << r.op_case();
    EXPECT_EQ(resp->message(), "server draining") << r.op_case();
  }
  wire::Request ping;
  ping.mutable_ping();
  auto pong = alice->call(ping);
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ(pong->status(), 0u);
  alice->disconnect();  // this test client answers no close while it is not reading
  EXPECT_EQ(server_->wait_exit(20s), 0);

  // Nothing changed: bob's ten one-time prekeys are all there, and his queue is empty.
  start({"--listen", listen});
  ASSERT_TRUE(bob->connect().is_ok());
  auto login = bob->login();
  ASSERT_TRUE(login.has_value());
  EXPECT_EQ(login->login().pre_key_count(), 10u);
  EXPECT_TRUE(drain(*bob).empty());
}

// A drain lets a download under way finish (within its 5 s bound): a client that reads 16 MiB
// slowly, and has most of it still to read when SIGTERM arrives, gets all of it before
// parleyd exits. (The drain closed every connection after 0.5 s, cutting it.)
TEST_F(ServerTest, ADrainLetsADownloadUnderWayFinish) {
  start({"--config", write_config("[attachments]\nmin_free_disk_mb = 0\n")});
  auto alice = registered("alice", 1);
  const std::string blob = patterned(16 << 20);
  const auto s = uploaded(*alice, blob);
  alice->disconnect();  // this test client answers no close while it is not reading
  auto peer = std::make_unique<transport::test_support::TlsPeer>();
  ASSERT_EQ(peer->connect(server_->client_options().port), "");
  const std::string get = "GET " + s.path() + " HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(SSL_write(peer->ssl(), get.data(), static_cast<int>(get.size())),
            static_cast<int>(get.size()));
  std::string in;
  char buf[16384];
  auto read_some = [&] {
    const int n = SSL_read(peer->ssl(), buf, sizeof buf);
    if (n > 0) in.append(buf, static_cast<std::size_t>(n));
    return n > 0;
  };
  for (int i = 0; i < 10000 && in.size() < 65536; ++i) ASSERT_TRUE(read_some());
  ASSERT_EQ(::kill(server_->pid(), SIGTERM), 0);
  std::this_thread::sleep_for(1500ms);  // past the drain's 0.5 s
  const auto header_end = in.find("\r\n\r\n");
  ASSERT_NE(header_end, std::string::npos);
  ASSERT_EQ(in.rfind("HTTP/1.1 200", 0), 0u) << in.substr(0, 40);
  const std::size_t want = header_end + 4 + blob.size();
  for (int i = 0; i < 100000 && in.size() < want; ++i) {
    if (!read_some()) break;
  }
  ASSERT_EQ(in.size(), want) << "the download was cut";
  EXPECT_TRUE(in.compare(header_end + 4, blob.size(), blob) == 0);
  peer.reset();
  EXPECT_EQ(server_->wait_exit(20s), 0);
}

// A drain waits for the requests in flight: a send whose commit is held up (another process
// holds the database's write lock for 1.5 s, three times the drain's 0.5 s minimum) when
// SIGTERM arrives is answered as stored before parleyd closes the connection, and it is there
// after the restart.
TEST_F(ServerTest, ADrainWaitsForASendTheStoreIsSlowToCommit) {
  const std::string listen = "127.0.0.1:" + std::to_string(free_port());  // kept for the restart
  start({"--listen", listen});
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  EXPECT_TRUE(drain(*bob).empty());
  bob->disconnect();
  sqlite3* db = open_db();
  ASSERT_EQ(sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);

  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  std::promise<Result<wire::Response>> answered;
  std::thread sender(
      [&] { answered.set_value(alice->call(alice->make_send("bob", to_bob, "slow"), 15s)); });
  // Until the send is read (and waits for the write lock).
  const std::string metrics = metrics_with("\nparley_requests_in_flight 1\n");
  ASSERT_NE(metrics.find("\nparley_requests_in_flight 1\n"), std::string::npos) << metrics;
  // The request is counted on its connection's thread before it reaches the store's queue: give
  // it time to get there, so SIGTERM finds it waiting for the lock.
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(::kill(server_->pid(), SIGTERM), 0);
  std::this_thread::sleep_for(1500ms);
  ASSERT_EQ(sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  sender.join();
  auto resp = answered.get_future().get();
  ASSERT_TRUE(resp.has_value()) << resp.status().to_string();
  EXPECT_EQ(resp->status(), 0u) << resp->message();
  alice->disconnect();
  EXPECT_EQ(server_->wait_exit(20s), 0);

  start({"--listen", listen});
  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_EQ(bob->login()->status(), 0u);
  auto got = drain(*bob);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].content(), "slow");
}

// Requests that get no answer (here an acknowledgement before login, which closes the
// connection) leave the server-wide count of requests in flight with their connection: the
// count a drain waits on goes back to 0.
TEST_F(ServerTest, RequestsThatGetNoAnswerLeaveTheInFlightCountWithTheirConnection) {
  start();
  auto early = client(5);
  ASSERT_TRUE(early->ack_one_way({std::string(16, 'x')}).is_ok());
  EXPECT_FALSE(early->next_frame(5s).has_value());  // the server closes it (answering the close)
  // Until the server has closed the connection (the gauge of open connections is 0), the
  // count could read 0 only because the ack had not been read yet.
  const std::string metrics = metrics_with("\nparley_connections 0\n");
  ASSERT_NE(metrics.find("\nparley_connections 0\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\nparley_requests_in_flight 0\n"), std::string::npos) << metrics;
}

// A second SIGTERM during a drain ends parleyd at once, with status 1.
TEST_F(ServerTest, ASecondSignalDuringADrainExitsAtOnce) {
  start();
  auto alice = registered("alice", 1);
  ASSERT_EQ(::kill(server_->pid(), SIGTERM), 0);
  bool draining = false;
  for (int i = 0; i < 500 && !draining; ++i) {
    draining = health() == "draining\n";
    if (!draining) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(draining);
  ASSERT_EQ(::kill(server_->pid(), SIGTERM), 0);
  EXPECT_EQ(server_->wait_exit(20s), 1);
}

TEST_F(ServerTest, MultiSendFansOut) {
  start();
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  auto carol = registered("carol", 3);
  drain(*bob);
  drain(*carol);
  wire::Request r;
  for (auto* c : {bob.get(), carol.get()}) {
    *r.mutable_multi_send()->add_sends() =
        alice->make_send(c->name(), {{1, c->registration_id()}}, "group hello").send();
  }
  *r.mutable_multi_send()->add_sends() = alice->make_send("nobody", {{1, 1}}, "x").send();
  auto resp = alice->call(r);
  ASSERT_TRUE(resp.has_value());
  ASSERT_EQ(resp->multi_send().results_size(), 3);
  EXPECT_EQ(resp->multi_send().results(0).status(), 0u);
  EXPECT_EQ(resp->multi_send().results(1).status(), 0u);
  EXPECT_EQ(resp->multi_send().results(2).status(), 404u);
  EXPECT_EQ(bob->next_push(5s)->envelope().content(), "group hello");
  EXPECT_EQ(carol->next_push(5s)->envelope().content(), "group hello");
  // The metrics count each send by its own status (the response's own is 0).
  auto metrics = admin_get(server_->admin_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->find("parley_multi_send_results_total{code=\"0\"} 2\n"), std::string::npos)
      << *metrics;
  EXPECT_NE(metrics->find("parley_multi_send_results_total{code=\"404\"} 1\n"), std::string::npos);
}

// The largest message the server takes must reach a device that reads frames of 256 KiB, as
// parley does, even from a sender with the longest name: an envelope it could not read would
// come first again at every login and stop its queue for good.
TEST_F(ServerTest, TheLargestMessageTakenIsDeliverable) {
  start();
  const std::string long_name = "a234567890123456789012345678901z";  // 32 characters
  auto alice = registered(long_name, 1);
  auto bob = registered("bob", 2);  // the harness's client reads frames of up to 256 KiB
  bob->disconnect();
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  // The largest content whose send still fits in a frame: its envelope, with the long source
  // name, would not; it is refused.
  std::size_t fits = wire::kMaxMessageContent;
  for (;; ++fits) {
    wire::Frame f;
    *f.mutable_request() = alice->make_send("bob", to_bob, std::string(fits + 1, 'y'));
    f.mutable_request()->set_id(99);
    if (wire::encode_frame(f)->size() > wire::kMaxFrameSize) break;
  }
  ASSERT_GT(fits, wire::kMaxMessageContent);
  auto too_large = alice->call(alice->make_send("bob", to_bob, std::string(fits, 'y')));
  ASSERT_TRUE(too_large.has_value()) << too_large.status().to_string();
  EXPECT_EQ(too_large->status(), 413u);
  auto s = alice->call(alice->make_send("bob", to_bob, std::string(wire::kMaxMessageContent, 'x')));
  ASSERT_TRUE(s.has_value()) << s.status().to_string();
  ASSERT_EQ(s->status(), 0u) << s->message();
  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_EQ(bob->login()->status(), 0u);
  const auto got = drain(*bob, /*ack=*/true);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].content().size(), wire::kMaxMessageContent);
}

// The delivery window bounds bytes as well as envelopes: a queue of large envelopes is pushed
// a window at a time, not a page at a time past the connection's write queue (which cut the
// device as a slow reader at every login, so such a queue never drained). And each envelope is
// read from the store about once: a page stops where the window's bytes fill (before, each
// acknowledgement read every envelope left again, as the window takes only two or three of
// them: these 24 were read 255 times, on the one store thread).
TEST_F(ServerTest, AQueueOfLargeEnvelopesDrains) {
  start();
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  bob->disconnect();
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  constexpr int kMessages = 24;  // 4.8 MiB: past the 1 MiB write queue
  for (int i = 0; i < kMessages; ++i) {
    auto s = alice->call(
        alice->make_send("bob", to_bob, std::string(200 * 1024, static_cast<char>('a' + i))));
    ASSERT_TRUE(s.has_value());
    ASSERT_EQ(s->status(), 0u) << s->message();
  }
  ASSERT_TRUE(bob->connect().is_ok());
  ASSERT_EQ(bob->login()->status(), 0u);
  std::string order;
  for (int i = 0; i < 2 * kMessages; ++i) {
    auto p = bob->next_push(5s);
    ASSERT_TRUE(p.has_value()) << "after " << order << ": " << p.status().to_string();
    if (p->has_queue_empty()) break;
    ASSERT_TRUE(p->has_envelope());
    order += p->envelope().content()[0];
    ASSERT_TRUE(bob->ack({p->envelope().server_id()}).has_value());
  }
  EXPECT_EQ(order, "abcdefghijklmnopqrstuvwx");
  const std::string metrics = metrics_with("\nparley_queue_envelopes 0\n");
  const auto fetched = number_after(metrics, "\nparley_store_fetched_envelopes_total ");
  ASSERT_TRUE(fetched.has_value()) << metrics;
  EXPECT_GE(*fetched, kMessages);
  EXPECT_LE(*fetched, 2 * kMessages);
}

TEST_F(ServerTest, AttachmentUploadResumesAfterACut) {
  start();
  auto alice = registered("alice", 1);
  const std::string blob = patterned(300000);
  const auto s = upload_slot(*alice, blob.size());
  transport::HttpsClient http(server_->client_options());
  // First part, then the "cut".
  auto p1 = http.put_range(s.path(), s.upload_token(), 0, as_bytes(std::string_view(blob).substr(0, 100000)), blob.size());
  ASSERT_TRUE(p1.has_value()) << p1.status().to_string();
  EXPECT_EQ(p1->status, 308u);
  // Wrong token and wrong offset are refused.
  auto wrong = http.put_range(s.path(), "bad", 100000, as_bytes(std::string_view(blob).substr(100000, 10)), blob.size());
  EXPECT_TRUE(wrong->status == 401u || wrong->status == 403u) << wrong->status;
  auto gap = http.put_range(s.path(), s.upload_token(), 150000, as_bytes(std::string_view(blob).substr(150000, 10)), blob.size());
  EXPECT_EQ(gap->status, 409u);
  // Resume from where the server says it stopped.
  auto head = http.head(s.path(), s.upload_token());
  ASSERT_TRUE(head.has_value());
  const std::uint64_t have = std::stoull(head->content_range);
  EXPECT_EQ(have, 100000u);
  auto p2 = http.put_range(s.path(), s.upload_token(), have, as_bytes(std::string_view(blob).substr(have)), blob.size());
  ASSERT_TRUE(p2.has_value());
  EXPECT_EQ(p2->status, 200u);
  auto whole = http.get(s.path());
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->status, 200u);
  EXPECT_EQ(whole->body, blob);
  auto part = http.get(s.path(), 1000, 500);
  EXPECT_EQ(part->status, 206u);
  EXPECT_EQ(part->body, blob.substr(1000, 500));
  // Too large a slot is refused.
  wire::Request big;
  big.mutable_attachment_slot()->set_size(1ull << 40);
  EXPECT_EQ(alice->call(big)->status(), 413u);
}

// A phone's upload is cut without a FIN when it changes networks; it resumes on a new
// connection and completes the upload before the server notices the old connection is gone.
// What the old connection had received must not be recorded over the finished upload (it was:
// the attachment went back to incomplete, 404 for every recipient, after a 200 to its sender).
TEST_F(ServerTest, AnOldConnectionCutLateDoesNotUndoAFinishedUpload) {
  start();
  auto alice = registered("alice", 1);
  const std::string blob = patterned(200000);
  const auto s = upload_slot(*alice, blob.size());
  transport::HttpsClient http(server_->client_options());
  // The old connection: the whole range announced, a quarter of it sent, then silence until
  // it is dropped without a TLS close.
  const std::string old_request = "PUT " + s.path() + " HTTP/1.1\r\nHost: x\r\n" +
                                  "Authorization: Bearer " + s.upload_token() + "\r\n" +
                                  "Content-Range: bytes 0-199999/200000\r\n" +
                                  "Content-Length: 200000\r\n\r\n" + blob.substr(0, 50000);
  std::thread old_connection([&] { (void)http.raw_exchange_for_test(old_request, 1500ms); });
  std::this_thread::sleep_for(300ms);  // the server has the old connection's bytes
  auto head = http.head(s.path(), s.upload_token());
  ASSERT_TRUE(head.has_value()) << head.status().to_string();
  const std::uint64_t have = std::stoull(head->content_range);
  auto rest = http.put_range(s.path(), s.upload_token(), have,
                             as_bytes(std::string_view(blob).substr(have)), blob.size());
  ASSERT_TRUE(rest.has_value()) << rest.status().to_string();
  ASSERT_EQ(rest->status, 200u);
  old_connection.join();               // now the old connection is cut
  std::this_thread::sleep_for(500ms);  // and the server has seen it go
  auto after = http.head(s.path(), s.upload_token());
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(std::stoull(after->content_range), blob.size());
  auto whole = http.get(s.path());
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->status, 200u);
  EXPECT_EQ(whole->body, blob);
}

// An attachment whose file expiry removed after the attachment was looked up (here removed by
// hand under a row that stays) is not found, as an expired attachment is: a download gets 404,
// not 500, and a part past the first gets 404 and does not make the file again (it would stay
// until the next start, counted by no quota).
TEST_F(ServerTest, AnAttachmentWhoseFileIsGoneIsNotFound) {
  start();
  auto alice = registered("alice", 1);
  const std::string dir = dir_.path() + "/d/attachments/";
  const std::string blob = patterned(5000);
  const auto whole = uploaded(*alice, blob);
  transport::HttpsClient http(server_->client_options());
  auto got = http.get(whole.path());
  ASSERT_TRUE(got.has_value()) << got.status().to_string();
  EXPECT_EQ(got->status, 200u);
  ASSERT_TRUE(std::filesystem::remove(dir + whole.id()));
  got = http.get(whole.path());
  ASSERT_TRUE(got.has_value()) << got.status().to_string();
  EXPECT_EQ(got->status, 404u);

  const auto part = upload_slot(*alice, blob.size());
  ASSERT_EQ(put_part(part, 0, blob.substr(0, 2000), blob.size()), 308u);
  ASSERT_TRUE(std::filesystem::remove(dir + part.id()));
  EXPECT_EQ(put_part(part, 2000, blob.substr(2000), blob.size()), 404u);
  EXPECT_FALSE(std::filesystem::exists(dir + part.id()));
}

// A file in DIR/attachments that no attachment names any more (a crash between expiry's commit
// and the file's removal leaves one) is removed at the next start; an attachment that exists
// keeps its file, and a file under another name is left alone.
TEST_F(ServerTest, OrphanAttachmentFilesAreSweptAtStart) {
  start();
  auto alice = registered("alice", 1);
  const std::string blob = patterned(5000);
  const auto s = uploaded(*alice, blob);
  alice->disconnect();
  ASSERT_EQ(server_->terminate(), 0);
  const std::filesystem::path dir = dir_.path() + "/d/attachments";
  const std::filesystem::path orphan = dir / std::string(32, 'a');
  const std::filesystem::path other = dir / "notes.txt";
  std::ofstream(orphan) << "left behind";
  std::ofstream(other) << "not a name parleyd gives";
  ASSERT_TRUE(std::filesystem::exists(orphan));

  // What the log holds past the first start's lines.
  auto log = [&, from = std::filesystem::file_size(dir_.path() + ".log")] {
    std::ifstream in(dir_.path() + ".log");
    in.seekg(static_cast<std::streamoff>(from));
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  start();
  // Until the sweep says it is done: every file looked up, the live one too.
  for (int i = 0; i < 500 && log().find("event=attachment_sweep ") == std::string::npos; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_NE(log().find("event=attachment_sweep files=2 removed=1"), std::string::npos) << log();
  EXPECT_FALSE(std::filesystem::exists(orphan));
  EXPECT_TRUE(std::filesystem::exists(dir / s.id()));
  EXPECT_TRUE(std::filesystem::exists(other));
  transport::HttpsClient http(server_->client_options());
  auto whole = http.get(s.path());
  ASSERT_TRUE(whole.has_value()) << whole.status().to_string();
  EXPECT_EQ(whole->status, 200u);
  EXPECT_EQ(whole->body, blob);
}

// Expiry at start goes by the time parleyd has run since it last expired, not by the system
// clock: here the clock reads 40 days past the last expiry (a clock set wrongly ahead, or 40
// days down). An envelope stored 60 days before the clock's reading has waited 20 days by the
// expiry clock and is kept; one stored 75 days before it has waited 35 and is deleted
// (limits.queue_max_age_days is 30). An attachment that expired a day ago by the system clock
// has 39 days to go by the expiry clock: it is kept and served, and counts toward its account's
// quota (restarted with a quota of one attachment, the account gets no other slot).
TEST_F(ServerTest, ExpiryAtStartCountsElapsedTimeNotTheSystemClock) {
  start();
  auto alice = registered("alice", 1);
  const std::string blob = patterned(3000);
  const auto slot = uploaded(*alice, blob);
  auto bob = registered("bob", 2);
  EXPECT_TRUE(drain(*bob).empty());
  bob->disconnect();
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  for (const char* content : {"75 days", "60 days"}) {
    ASSERT_EQ(alice->call(alice->make_send("bob", to_bob, content))->status(), 0u);
  }
  alice->disconnect();
  // The drain's last run keeps its reading (and the run at start, 300 ms or more before, is
  // not the one read back).
  std::this_thread::sleep_for(300ms);
  const std::int64_t before_drain_ms = SystemClock().now_ms();
  ASSERT_EQ(server_->terminate(), 0);
  EXPECT_GE(sql_int("SELECT value FROM meta WHERE key = 'expiry_clock'"), before_drain_ms - 50);
  const std::string now = "CAST(strftime('%s', 'now') AS INTEGER) * 1000";
  const std::string day = "86400000";
  sql("UPDATE meta SET value = " + now + " - 40 * " + day + " WHERE key = 'expiry_clock'");
  sql("UPDATE envelopes SET stored_ms = " + now + " - 75 * " + day +
      " WHERE content = CAST('75 days' AS BLOB)");
  sql("UPDATE envelopes SET stored_ms = " + now + " - 60 * " + day +
      " WHERE content = CAST('60 days' AS BLOB)");
  sql("UPDATE attachments SET expires_ms = " + now + " - " + day);

  start({"--config", write_config("[attachments]\naccount_max_count = 1\n")});
  // Until the expiry at start has committed: one envelope left.
  const std::string metrics = metrics_with("\nparley_queue_envelopes 1\n");
  EXPECT_NE(metrics.find("\nparley_queue_envelopes 1\n"), std::string::npos) << metrics;
  auto bob2 = std::make_unique<TestClient>(server_->client_options(), 2);
  ASSERT_TRUE(bob2->connect().is_ok());
  ASSERT_EQ(bob2->login_as("bob", 1, bob->auth_key())->status(), 0u);
  auto got = drain(*bob2, /*ack=*/true);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].content(), "60 days");
  // 40 days, and the seconds between the UPDATE and the run at start.
  const auto lag_s = number_after(metrics, "\nparley_expiry_clock_lag_seconds ");
  ASSERT_TRUE(lag_s.has_value()) << metrics;
  EXPECT_GE(*lag_s, 40 * 86400);
  EXPECT_LE(*lag_s, 40 * 86400 + 60);
  transport::HttpsClient http(server_->client_options());
  auto download = http.get(slot.path());
  ASSERT_TRUE(download.has_value()) << download.status().to_string();
  EXPECT_EQ(download->status, 200u);
  EXPECT_EQ(download->body, blob);
  auto alice2 = std::make_unique<TestClient>(server_->client_options(), 1);
  ASSERT_TRUE(alice2->connect().is_ok());
  ASSERT_EQ(alice2->login_as("alice", 1, alice->auth_key())->status(), 0u);
  const wire::Response another = slot_response(*alice2, 10);
  EXPECT_EQ(another.status(), 413u) << another.message();
  EXPECT_EQ(another.message(), "attachment quota of 1 attachments reached");
  std::ifstream log(dir_.path() + ".log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_EQ(number_after(text, "event=expiry_clock lag_s="), lag_s) << text;
}

// On a full disk a part of an upload is refused for now (503) and nothing of it is recorded;
// with room again the upload resumes from what the server holds.
TEST_F(ServerTest, AnUploadOnAFullDiskIsRefusedForNowAndResumes) {
  start();
  auto alice = registered("alice", 1);
  const std::string blob = patterned(101000);
  const auto s = upload_slot(*alice, blob.size());
  transport::HttpsClient http(server_->client_options());
  const std::string_view all(blob);
  auto first =
      http.put_range(s.path(), s.upload_token(), 0, as_bytes(all.substr(0, 100000)), blob.size());
  ASSERT_TRUE(first.has_value()) << first.status().to_string();
  EXPECT_EQ(first->status, 308u);
  ASSERT_TRUE(set_file_size_limit(server_->pid(), 0).is_ok());  // the disk is full
  // A small part, read whole before the server answers.
  auto refused =
      http.put_range(s.path(), s.upload_token(), 100000, as_bytes(all.substr(100000)), blob.size());
  ASSERT_TRUE(refused.has_value()) << refused.status().to_string();
  EXPECT_EQ(refused->status, 503u);
  ASSERT_TRUE(set_file_size_limit(server_->pid(), kNoFileSizeLimit).is_ok());  // room again
  auto head = http.head(s.path(), s.upload_token());
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(std::stoull(head->content_range), 100000u);
  auto rest =
      http.put_range(s.path(), s.upload_token(), 100000, as_bytes(all.substr(100000)), blob.size());
  ASSERT_TRUE(rest.has_value());
  EXPECT_EQ(rest->status, 200u);
  auto whole = http.get(s.path());
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->body, blob);
}

// An account's slots, by their declared sizes, stay within attachments.account_quota_bytes: one
// more is refused with 413 naming the quota, and other accounts keep theirs.
TEST_F(ServerTest, AttachmentSlotsStayWithinTheAccountQuota) {
  start({"--config", write_config("[attachments]\nmax_bytes = 1000\n"
                                  "account_quota_bytes = 2500\nmin_free_disk_mb = 0\n")});
  auto alice = registered("alice", 1);
  EXPECT_EQ(slot_response(*alice, 1000).status(), 0u);
  EXPECT_EQ(slot_response(*alice, 1000).status(), 0u);
  const wire::Response over = slot_response(*alice, 1000);
  EXPECT_EQ(over.status(), 413u);
  EXPECT_EQ(over.message(), "attachment quota of 2500 bytes reached");
  EXPECT_FALSE(over.has_attachment_slot());
  EXPECT_EQ(slot_response(*alice, 500).status(), 0u);  // what is left still fits
  EXPECT_EQ(slot_response(*alice, 1).status(), 413u);
  auto metrics = admin_get(server_->admin_port(), "/metrics");  // the operator sees them
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->find("parley_attachment_quota_refusals_total 2\n"), std::string::npos)
      << *metrics;
  auto bob = registered("bob", 2);
  EXPECT_EQ(upload_slot(*bob, 1000).max_size(), 1000u);
}

// attachments.account_max_count bounds how many attachments an account holds, however small:
// one-byte slots fit a quota a billion times, each a row of the database.
TEST_F(ServerTest, AttachmentSlotsStayWithinTheAccountsCount) {
  start({"--config", write_config("[attachments]\naccount_max_count = 3\nmin_free_disk_mb = 0\n")});
  auto alice = registered("alice", 1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(slot_response(*alice, 1).status(), 0u) << i;
  const wire::Response over = slot_response(*alice, 1);
  EXPECT_EQ(over.status(), 413u);
  EXPECT_EQ(over.message(), "attachment quota of 3 attachments reached");
  EXPECT_FALSE(over.has_attachment_slot());
  EXPECT_EQ(sql_int("SELECT COUNT(*) FROM attachments"), 3);
  auto bob = registered("bob", 2);
  EXPECT_EQ(slot_response(*bob, 1).status(), 0u);
}

// attachments.min_free_disk_mb: a slot that would leave the disk with less free is refused with
// 503 (the server's storage, not the account, is full: try later) and takes none of the quota;
// 0 switches the check off.
TEST_F(ServerTest, AttachmentSlotsKeepTheDiskReserveFree) {
  const std::string quota = "[attachments]\nmax_bytes = 1000\naccount_quota_bytes = 1000\n";
  start({"--config", write_config(quota + "min_free_disk_mb = 1099511627776\n")});  // 1 EiB
  auto alice = registered("alice", 1);
  const wire::Response full = slot_response(*alice, 1);
  EXPECT_EQ(full.status(), 503u);
  EXPECT_EQ(full.message(), "server storage is full, try later");
  EXPECT_FALSE(full.has_attachment_slot());
  auto metrics = admin_get(server_->admin_port(), "/metrics");  // the operator sees it
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->find("parley_attachment_disk_refusals_total 1\n"), std::string::npos)
      << *metrics;
  alice->disconnect();
  ASSERT_EQ(server_->terminate(), 0);

  start({"--config", write_config(quota + "min_free_disk_mb = 0\n")});
  auto again = client(1);
  ASSERT_EQ(again->login_as("alice", 1, alice->auth_key())->status(), 0u);
  EXPECT_EQ(upload_slot(*again, 1000).max_size(), 1000u);  // the whole quota
}

// The reserve holds for uploads into slots already granted too (slots granted together may
// promise more than the disk has): a part is refused with 503, and the upload resumes once
// there is room.
TEST_F(ServerTest, AnUploadStopsAtTheDiskReserve) {
  const std::string quota = "[attachments]\nmax_bytes = 1000\naccount_quota_bytes = 1000\n";
  const std::string no_reserve = quota + "min_free_disk_mb = 0\n";
  start({"--config", write_config(no_reserve)});
  auto alice = registered("alice", 1);
  const std::string blob = patterned(1000);
  const auto s = upload_slot(*alice, blob.size());
  const std::string_view first = std::string_view(blob).substr(0, 400);
  const std::string_view rest = std::string_view(blob).substr(400);
  ASSERT_EQ(put_part(s, 0, first, blob.size()), 308u);
  alice->disconnect();
  ASSERT_EQ(server_->terminate(), 0);

  start({"--config", write_config(quota + "min_free_disk_mb = 1099511627776\n")});  // 1 EiB
  EXPECT_EQ(put_part(s, 400, rest, blob.size()), 503u);
  auto metrics = admin_get(server_->admin_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->find("parley_attachment_disk_refusals_total 1\n"), std::string::npos)
      << *metrics;
  ASSERT_EQ(server_->terminate(), 0);

  start({"--config", write_config(no_reserve)});
  transport::HttpsClient http(server_->client_options());
  auto head = http.head(s.path(), s.upload_token());
  ASSERT_TRUE(head.has_value()) << head.status().to_string();
  EXPECT_EQ(std::stoull(head->content_range), 400u);  // nothing of the refused part was kept
  EXPECT_EQ(put_part(s, 400, rest, blob.size()), 200u);
  auto whole = http.get(s.path());
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->body, blob);
}

// The checks across keys run once the flags are applied over the file: a flag may mend what
// the file alone gets wrong (here a max_bytes above the default quota of 1 GiB).
TEST_F(ServerTest, AFlagMayMendWhatTheConfigFileAloneGetsWrong) {
  start({"--config", write_config("[attachments]\nmax_bytes = 2147483648\n"),
         "--attachment-max-bytes", "1000"});
  auto alice = registered("alice", 1);
  EXPECT_EQ(slot_response(*alice, 1001).status(), 413u);
  EXPECT_EQ(upload_slot(*alice, 1000).max_size(), 1000u);
}

// A command-line --attachment-max-bytes above the quota stops the start, naming the key.
TEST_F(ServerTest, AMaxAttachmentAboveTheQuotaStopsTheStart) {
  auto d = Parleyd::start(dir_.path(), {"--attachment-max-bytes", "2147483648"});
  ASSERT_FALSE(d.has_value());
  std::ifstream log(dir_.path() + ".log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("attachments.account_quota_bytes"), std::string::npos) << text;
}

TEST_F(ServerTest, KillNineDuringABurstLosesNothingAcknowledged) {
  start();
  auto bob = registered("bob", 1);
  const std::uint32_t bob_reg = bob->registration_id();
  bob->disconnect();
  constexpr int kSenders = 6;
  std::vector<std::unique_ptr<TestClient>> senders;
  for (int i = 0; i < kSenders; ++i) senders.push_back(registered("s" + std::to_string(i) + "xx", 10 + i));
  std::mutex mu;
  std::set<std::string> acknowledged;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kSenders; ++i) {
    threads.emplace_back([&, i] {
      for (int n = 0; n < 100000 && !stop.load(); ++n) {
        const std::string content = "s" + std::to_string(i) + "-" + std::to_string(n);
        auto r = senders[static_cast<std::size_t>(i)]->call(
            senders[static_cast<std::size_t>(i)]->make_send("bob", {{1, bob_reg}}, content), 3s);
        if (!r) return;  // the server died
        if (r->status() == 0) {
          std::lock_guard<std::mutex> lock(mu);
          acknowledged.insert(content);
        }
      }
    });
  }
  std::this_thread::sleep_for(1500ms);
  server_->kill9();
  stop = true;
  for (auto& t : threads) t.join();
  ASSERT_GT(acknowledged.size(), 50u) << "the burst was too small to mean anything";
  std::printf("kill -9 after %zu acknowledged sends from %d connections\n", acknowledged.size(),
              kSenders);

  start();  // same data directory
  auto bob2 = std::make_unique<TestClient>(server_->client_options(), 1);
  ASSERT_TRUE(bob2->connect().is_ok());
  ASSERT_EQ(bob2->login_as("bob", 1, bob->auth_key())->status(), 0u);
  std::multiset<std::string> delivered;
  for (const auto& e : drain(*bob2, /*ack=*/true)) delivered.insert(e.content());
  // Everything was acknowledged: a new connection gets nothing more.
  bob2->disconnect();
  ASSERT_TRUE(bob2->connect().is_ok());
  ASSERT_EQ(bob2->login_as("bob", 1, bob->auth_key())->status(), 0u);
  EXPECT_TRUE(drain(*bob2).empty());
  for (const auto& a : acknowledged) {
    EXPECT_EQ(delivered.count(a), 1u) << "acknowledged message " << a << " delivered "
                                      << delivered.count(a) << " times";
  }
  for (const auto& d : delivered) EXPECT_EQ(delivered.count(d), 1u) << d << " delivered twice";
}

// Raw TCP to the TLS port: garbage instead of a ClientHello.
void send_garbage(std::uint16_t port, const std::string& bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    char buf[256];
    (void)::recv(fd, buf, sizeof buf, 0);
  }
  ::close(fd);
}

// A connection that never logs in is closed at login_timeout_s, pings or not: it would hold a
// connection slot for good. One that logged in stays.
TEST_F(ServerTest, AConnectionThatNeverLogsInIsClosed) {
  const std::string conf = dir_.path() + "/parleyd.toml";
  {
    std::FILE* f = std::fopen(conf.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("[limits]\nlogin_timeout_s = 1\n", f);
    std::fclose(f);
  }
  start({"--config", conf});
  auto alice = registered("alice", 1);
  auto idle = client(2);
  wire::Request ping;
  ping.mutable_ping();
  ASSERT_EQ(idle->call(ping)->status(), 0u);  // answered, but no login
  auto f = idle->next_frame(5s);
  ASSERT_FALSE(f.has_value()) << "still open after the login timeout";
  EXPECT_NE(f.status().message().find("log in first"), std::string::npos) << f.status().to_string();
  auto still = alice->call(ping);
  ASSERT_TRUE(still.has_value()) << "a logged-in connection was closed: "
                                 << still.status().to_string();
  EXPECT_EQ(still->status(), 0u);
}

// A connection holds one identity. A registration or login sent while another is under way is
// refused at once, before it can change anything: pipelined in either order, the first holds
// the connection and the second gets 400. A refused registration leaves no account behind
// (refused only after its commit, as before, it made the account and used the invitation).
TEST_F(ServerTest, ASecondLoginOnAConnectionIsRefused) {
  start();
  auto alice = registered("alice", 1);
  for (const bool login_first : {true, false}) {
    SCOPED_TRACE(login_first ? "login, then a registration" : "a registration, then a login");
    auto c = client(login_first ? 3 : 4);
    const std::string name = login_first ? "carol" : "dave";
    wire::Frame reg;
    *reg.mutable_request() = hand_registration(*c, name, 7);
    wire::Frame login;
    {
      auto* l = login.mutable_request()->mutable_login();
      l->set_name("alice");
      l->set_device_id(1);
      l->set_challenge_signature(std::string(as_chars(alice->auth_key().sign(
          wire::auth_transcript(as_bytes(c->challenge().nonce()), "alice", 1)))));
    }
    wire::Frame& first = login_first ? login : reg;
    wire::Frame& second = login_first ? reg : login;
    first.mutable_request()->set_id(1);
    second.mutable_request()->set_id(2);
    ASSERT_TRUE(c->send_raw(as_bytes(*wire::encode_frame(first))).is_ok());
    ASSERT_TRUE(c->send_raw(as_bytes(*wire::encode_frame(second))).is_ok());
    std::map<std::uint64_t, wire::Response> answers;
    for (int i = 0; i < 10 && answers.size() < 2; ++i) {
      auto f = c->next_frame(5s);
      ASSERT_TRUE(f.has_value()) << f.status().to_string();
      if (f->has_response()) answers[f->response().id()] = f->response();
    }
    ASSERT_EQ(answers.size(), 2u);
    EXPECT_EQ(answers[1].status(), 0u) << answers[1].message();
    EXPECT_EQ(answers[2].status(), 400u);
    // (Or, if the first had finished before the second was read: "already logged in".)
    EXPECT_TRUE(answers[2].message() == "a registration or login is under way" ||
                answers[2].message() == "already logged in")
        << answers[2].message();
    // The name is free exactly when the registration was the one refused.
    auto later = client(login_first ? 5 : 6);
    auto r = later->register_account(name, "", 1);
    ASSERT_TRUE(r.has_value()) << r.status().to_string();
    EXPECT_EQ(r->status(), login_first ? 0u : 409u) << r->message();
  }
}

TEST_F(ServerTest, MalformedInputNeverStopsTheServer) {
  start();
  auto alice = registered("alice", 1);
  auto bob = registered("bob", 2);
  drain(*bob);
  const std::map<std::uint32_t, std::uint32_t> to_bob = {{1, bob->registration_id()}};
  auto still_serves = [&](const std::string& what) {
    auto r = alice->call(alice->make_send("bob", to_bob, what), 5s);
    ASSERT_TRUE(r.has_value()) << "after " << what << ": " << r.status().to_string();
    ASSERT_EQ(r->status(), 0u) << "after " << what;
    auto p = bob->next_push(5s);
    ASSERT_TRUE(p.has_value() && p->has_envelope()) << "after " << what;
    ASSERT_TRUE(bob->ack({p->envelope().server_id()}).has_value());
  };
  const std::uint16_t port = server_->invite().port;
  send_garbage(port, "\x16\x03\x01\xff\xff garbage that is not TLS");
  still_serves("bad tls");
  send_garbage(port, std::string(100000, 'A'));
  still_serves("a flood of bytes");

  transport::HttpsClient http(server_->client_options());
  for (const char* path : {"/", "/index.html", "/nope", "/../../etc/passwd"}) {
    auto r = http.request("GET", path);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->body.find("parley"), std::string::npos) << path;
  }
  auto wrong_path = http.request("GET", server_->invite().ws_path + "x");
  ASSERT_TRUE(wrong_path.has_value());
  EXPECT_EQ(wrong_path->status, 404u);
  auto junk_method = http.request("BREW", "/");
  ASSERT_TRUE(junk_method.has_value());
  still_serves("bad http");

  // Frames that are not a request (the first closes the connection), and a login whose name is
  // not UTF-8.
  for (const std::string& first :
       {std::string("\xff\xff\xff"), std::string("\x0a\x05\x5a\x03\x0a\x01\xff", 7)}) {
    auto c = client(50);
    for (const std::string& junk : {first, std::string(10, '\0')}) {
      ASSERT_TRUE(c->send_raw(as_bytes(junk)).is_ok());
    }
    auto f = c->next_frame(3s);
    EXPECT_FALSE(f.has_value());  // closed with a reason
  }
  still_serves("malformed frames");
  {  // A frame over the frame cap, within the transport's message limit: closed, and told why.
    auto c = client(51);
    ASSERT_TRUE(c->send_raw(as_bytes(std::string(wire::kMaxFrameSize + 1, '\0'))).is_ok());
    auto f = c->next_frame(3s);
    ASSERT_FALSE(f.has_value());
    EXPECT_NE(f.status().message().find("frame too large"), std::string::npos)
        << f.status().to_string();
  }
  still_serves("an oversize frame");
  {  // A text frame.
    transport::ClientOptions o = server_->client_options();
    auto ws = transport::BlockingWsClient::connect(o);
    ASSERT_TRUE(ws.has_value());
    (void)(*ws)->receive(3s);  // challenge
    ASSERT_TRUE((*ws)->send_text_for_test("hello").is_ok());
    auto r = (*ws)->receive(3s);
    EXPECT_FALSE(r.has_value());
  }
  still_serves("a text frame");
  {  // Oversize frame.
    auto c = client(51);
    (void)c->send_raw(as_bytes(std::string(2 * 1024 * 1024, 'x')));
    EXPECT_FALSE(c->next_frame(3s).has_value());
  }
  still_serves("an oversize frame");
  {  // Truncated protobuf and an unknown request type.
    auto c = client(52);
    wire::Frame f;
    f.mutable_request()->set_id(7);
    auto* s = f.mutable_request()->mutable_send();
    s->set_destination("bob");
    std::string bytes = f.SerializeAsString();
    ASSERT_TRUE(c->send_raw(as_bytes(bytes.substr(0, bytes.size() - 2))).is_ok());
    EXPECT_FALSE(c->next_frame(3s).has_value());
    auto d = client(53);
    wire::Request unknown;  // no operation set
    auto r = d->call(unknown, 3s);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status(), 401u);  // before login
    ASSERT_EQ(d->register_account("dave")->status(), 0u);
    EXPECT_EQ(d->call(unknown, 3s)->status(), 400u);
  }
  still_serves("truncated and unknown requests");
  EXPECT_TRUE(server_->running());
  // None of it reached the log as libprotobuf's own unstructured line (the name that is not
  // UTF-8 wrote one before wire::route_protobuf_logs).
  std::ifstream log(dir_.path() + ".log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find("libprotobuf"), std::string::npos) << text;
}

// --admin-from replaces loopback as who the admin listener serves: with only a network the
// test is not in, POST /invite (which mints a registration token) is never answered.
TEST_F(ServerTest, TheAdminListenerServesOnlyTheListedPeers) {
  start({"--registration", "invite", "--admin-from", "10.0.0.0/8"});
  auto minted = admin_get(server_->admin_port(), "/invite", "POST");
  EXPECT_FALSE(minted.has_value() && minted->find("parley://") != std::string::npos) << *minted;
  EXPECT_EQ(sql_int("SELECT COUNT(*) FROM invites"), 1);  // the start's own
}

TEST_F(ServerTest, MetricsAndGracefulDrain) {
  start();
  auto alice = registered("alice", 1);
  auto metrics = admin_get(server_->admin_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->find("parley_connections 1"), std::string::npos) << *metrics;
  EXPECT_NE(metrics->find("parley_requests_total{kind=\"register\"} 1"), std::string::npos);
  EXPECT_NE(metrics->find("parley_store_commits_total"), std::string::npos);
  // The registration synced one commit at least; every operation is in the wait histogram.
  EXPECT_NE(metrics->find("# TYPE parley_store_synced_commit_seconds histogram\n"),
            std::string::npos);
  EXPECT_EQ(metrics->find("parley_store_synced_commit_seconds_count 0\n"), std::string::npos)
      << *metrics;
  EXPECT_NE(metrics->find("parley_store_queue_wait_seconds_bucket{le=\"+Inf\"} "),
            std::string::npos);
  // A fresh server's WAL is far from both checkpoint bounds (64 and 128 MiB), every commit's
  // frames were written at the commit, and no client has been silent long enough to be pinged
  // or cut off.
  for (const char* counter :
       {"parley_store_checkpoints_total 0\n", "parley_store_failed_checkpoints_total 0\n",
        "parley_store_writer_checkpoints_total 0\n", "parley_store_wal_late_writes_total 0\n",
        "parley_ws_pings_total 0\n", "parley_ws_idle_closes_total 0\n",
        "parley_connections_refused_total{reason=\"max_connections\"} 0\n",
        "parley_connections_refused_total{reason=\"handshakes_per_ip\"} 0\n"}) {
    EXPECT_NE(metrics->find(counter), std::string::npos) << counter;
  }
  // alice's was the client's first handshake with this server; bob's resumes its ticket.
  EXPECT_NE(metrics->find("parley_tls_handshakes_total{outcome=\"full\"} 1\n"), std::string::npos)
      << *metrics;
  auto bob = registered("bob", 2);
  metrics = admin_get(server_->admin_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->find("parley_tls_handshakes_total{outcome=\"resumed\"} 1\n"),
            std::string::npos)
      << *metrics;
  bob.reset();
  EXPECT_TRUE(drain(*alice).empty());
  // The client keeps reading while the server drains (as a real client does), so it answers the
  // server's close and the server exits as soon as its connections are gone.
  int exit_status = -2;
  std::thread term([&] { exit_status = server_->terminate(); });
  auto f = alice->next_frame(10s);
  term.join();
  EXPECT_EQ(exit_status, 0);
  EXPECT_FALSE(f.has_value());  // closed by the server
  if (!f) {
    EXPECT_NE(f.status().message().find("server restarting"), std::string::npos)
        << f.status().to_string();
  }
}

}  // namespace
}  // namespace parley::testing
