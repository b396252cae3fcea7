// TicketKeys: the file, rotation, and the tickets themselves through real TLS handshakes
// between two OpenSSL endpoints in memory (a BIO pair), with a manual clock.
#include "transport/internal/ticket_keys.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "base/clock.h"
#include "crypto/x509.h"
#include "transport/internal/asio.h"
#include "transport/testing/support.h"

namespace parley::transport::internal {
namespace {

using namespace std::chrono_literals;
constexpr std::int64_t kStartMs = 1'764'500'000'000;  // 2025-11-30
constexpr std::int64_t kHourMs = 3'600'000;

struct SslFree {
  void operator()(SSL* p) const { SSL_free(p); }
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
  void operator()(SSL_SESSION* p) const { SSL_SESSION_free(p); }
};
using SslPtr = std::unique_ptr<SSL, SslFree>;
using CtxPtr = std::unique_ptr<SSL_CTX, SslFree>;
using SessionPtr = std::unique_ptr<SSL_SESSION, SslFree>;

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class TicketKeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test_support::fresh_test_dir("ticket_keys_test");
    path_ = (dir_ / "ticket-keys").string();
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::unique_ptr<TicketKeys> open_keys(const std::string& path) {
    auto keys = TicketKeys::open(path, 1h, clock_);
    EXPECT_TRUE(keys.has_value()) << keys.error().to_string();
    return keys ? std::move(keys).value() : nullptr;
  }

  std::filesystem::path dir_;
  std::string path_;
  ManualClock clock_{kStartMs};
};

TEST_F(TicketKeysTest, AreKeptInAPrivateFileAndReadBackAfterARestart) {
  auto keys = open_keys(path_);
  ASSERT_TRUE(keys);
  ASSERT_EQ(keys->names().size(), 1u);
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(std::filesystem::exists(path_ + ".tmp"));

  auto again = open_keys(path_);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->names(), keys->names());
  // In memory only: a new key every time, and no file.
  auto a = open_keys(""), b = open_keys("");
  EXPECT_NE(a->names(), b->names());
  EXPECT_NE(a->names(), keys->names());
}

TEST_F(TicketKeysTest, RotateOncePerPeriodAndKeepTheOldKeyForOneMore) {
  auto keys = open_keys(path_);
  const auto first = keys->names().at(0);
  clock_.advance_ms(kHourMs - 1000);
  EXPECT_FALSE(keys->rotate_if_due().value());

  clock_.advance_ms(1000);
  EXPECT_TRUE(keys->rotate_if_due().value());
  auto names = keys->names();
  ASSERT_EQ(names.size(), 2u);
  EXPECT_NE(names[0], first);
  EXPECT_EQ(names[1], first);
  EXPECT_EQ(open_keys(path_)->names(), names);  // the file has both

  clock_.advance_ms(kHourMs);
  EXPECT_TRUE(keys->rotate_if_due().value());
  auto later = keys->names();
  ASSERT_EQ(later.size(), 2u);  // `first` has opened tickets for a whole period: gone
  EXPECT_EQ(later[1], names[0]);

  // A server that was down for a long time: the newest key (which sealed until it stopped)
  // still opens for a period; one older than that is gone; a new one seals.
  clock_.advance_ms(10 * kHourMs);
  auto restarted = open_keys(path_);
  auto after = restarted->names();
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[1], later[0]);
}

TEST_F(TicketKeysTest, AKeyDatedFarAheadIsReplaced) {
  auto keys = open_keys(path_);
  const auto ahead = keys->names().at(0);
  clock_.advance_ms(-3 * kHourMs);  // the clock was wrong when the key was made
  EXPECT_TRUE(keys->rotate_if_due().value());
  EXPECT_NE(keys->names().at(0), ahead);
}

TEST_F(TicketKeysTest, AKeyDatedFarAheadInTheFileIsDroppedAtOpen) {
  const std::string ahead = "v1 " + std::to_string(kStartMs / 1000 + 2 * 3600) + " " +
                            std::string(32, 'a') + " " + std::string(64, 'b') + " " +
                            std::string(64, 'c') + "\n";
  std::ofstream(path_, std::ios::binary | std::ios::trunc) << ahead;
  auto keys = open_keys(path_);
  ASSERT_EQ(keys->names().size(), 1u);
  EXPECT_NE(keys->names()[0], TicketKeys::Name{});
  EXPECT_EQ(read_all(path_).find(std::string(32, 'a')), std::string::npos);  // rewritten
  EXPECT_EQ(open_keys(path_)->names(), keys->names());
}

TEST_F(TicketKeysTest, MalformedFilesAreRefusedAndLeftAlone) {
  const std::string key =
      std::string(32, 'a') + " " + std::string(64, 'b') + " " + std::string(64, 'c');
  const std::string good = "v1 1764490000 " + key + "\n";  // older than a period
  const std::vector<std::string> bad = {
      "v2 1764500000 " + key + "\n",  // unknown version
      "v1 -5 " + key + "\n",          // bad time
      "v1 17645x0000 " + key + "\n",  // bad time
      "v1 1764500000 " + std::string(30, 'a') + " " + std::string(64, 'b') + " " +
          std::string(64, 'c') + "\n",  // short name
      "v1 1764500000 " + std::string(32, 'a') + " " + std::string(64, 'g') + " " +
          std::string(64, 'c') + "\n",               // not hex
      "v1 1764500000 " + key + " extra\n",           // a field too many
      "v1 1764500000\n",                             // fields missing
      good + good,                                   // the same name twice
      std::string(kMaxTicketKeyFileBytes + 1, '#'),  // too large
  };
  std::string five;
  for (char c : std::string("12345")) {
    five += "v1 1764500000 " + std::string(31, 'a') + c + " " + std::string(64, 'b') + " " +
            std::string(64, 'c') + "\n";
  }
  std::vector<std::string> all = bad;
  all.push_back(five);  // more keys than kMaxTicketKeys
  for (const std::string& text : all) {
    std::ofstream(path_, std::ios::binary | std::ios::trunc) << text;
    auto keys = TicketKeys::open(path_, 1h, clock_);
    ASSERT_FALSE(keys.has_value()) << text;
    EXPECT_EQ(keys.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(keys.error().message().find(path_), std::string::npos);
    EXPECT_NE(keys.error().message().find("deleting"), std::string::npos);
    EXPECT_EQ(read_all(path_), text);
  }
  // The one good line is taken as it is (and, being old, replaced by a new key).
  std::ofstream(path_, std::ios::binary | std::ios::trunc) << "# a comment\n\n" << good;
  auto keys = open_keys(path_);
  ASSERT_TRUE(keys);
  EXPECT_EQ(keys->names().size(), 2u);
  EXPECT_NE(read_all(path_).find(key), std::string::npos);
}

// ---- tickets through real handshakes ------------------------------------------------------

const crypto::TlsIdentity& identity() { return test_support::test_identity(); }

struct Outcome {
  bool done = false;
  bool resumed = false;
  SessionPtr session;  // the client's newest session (with the last ticket it got)
  int tickets = 0;     // sessions (tickets) the client got in this handshake
};

// The client context's new-session callback counts into the connection's Outcome.
int count_ticket(SSL* ssl, SSL_SESSION*) {
  ++static_cast<Outcome*>(SSL_get_app_data(ssl))->tickets;
  return 0;  // the session is not kept here (SSL_get1_session below takes the newest)
}

CtxPtr client_ctx(int max_version) {
  CtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_max_proto_version(ctx.get(), max_version);
  SSL_CTX_set_session_cache_mode(ctx.get(),
                                 SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx.get(), count_ticket);
  return ctx;
}

// One handshake in memory, then one byte from the server so that the client reads the TLS 1.3
// tickets sent after the handshake.
Outcome handshake(SSL_CTX* server, SSL_CTX* client, SSL_SESSION* offer) {
  SslPtr s(SSL_new(server)), c(SSL_new(client));
  BIO *sb = nullptr, *cb = nullptr;
  if (BIO_new_bio_pair(&sb, 0, &cb, 0) != 1) return {};
  SSL_set_bio(s.get(), sb, sb);
  SSL_set_bio(c.get(), cb, cb);
  SSL_set_accept_state(s.get());
  SSL_set_connect_state(c.get());
  // A copy, as the client in client.cc offers: OpenSSL changes a session that a handshake
  // resumes, so that it would not resume a second time.
  SessionPtr copy(offer != nullptr ? SSL_SESSION_dup(offer) : nullptr);
  if (copy) SSL_set_session(c.get(), copy.get());
  Outcome out;
  SSL_set_app_data(c.get(), &out);
  for (int i = 0; i < 50 && !out.done; ++i) {
    const int rc = SSL_do_handshake(c.get());
    const int rs = SSL_do_handshake(s.get());
    out.done = rc == 1 && rs == 1;
  }
  if (!out.done) return out;
  if (SSL_write(s.get(), "x", 1) != 1) return {};
  char byte = 0;
  for (int i = 0; i < 10 && SSL_read(c.get(), &byte, 1) != 1; ++i) {
  }
  out.done = byte == 'x';
  out.resumed = SSL_session_reused(c.get()) == 1;
  out.session.reset(SSL_get1_session(c.get()));
  // A connection freed without a close_notify marks its session not resumable.
  SSL_shutdown(c.get());
  return out;
}

class TicketHandshakeTest : public TicketKeysTest {
 protected:
  CtxPtr server_ctx(TicketKeys& keys) {
    auto ctx = make_server_tls_context(identity().cert_pem, identity().key_pem);
    EXPECT_TRUE(ctx.has_value());
    // Owned here, not by the boost context: SSL_CTX_up_ref keeps it past the wrapper.
    SSL_CTX* native = (*ctx)->native_handle();
    SSL_CTX_up_ref(native);
    keys.install(native);
    return CtxPtr(native);
  }
};

TEST_F(TicketHandshakeTest, Tls13TicketsResumeUntilTheirKeyIsGone) {
  auto keys = open_keys(path_);
  auto server = server_ctx(*keys);
  auto client = client_ctx(TLS1_3_VERSION);

  Outcome full = handshake(server.get(), client.get(), nullptr);
  ASSERT_TRUE(full.done);
  EXPECT_FALSE(full.resumed);
  ASSERT_TRUE(full.session && SSL_SESSION_is_resumable(full.session.get()));
  Outcome resumed = handshake(server.get(), client.get(), full.session.get());
  ASSERT_TRUE(resumed.done);
  EXPECT_TRUE(resumed.resumed);

  // After one rotation the old key still opens the ticket (and a new ticket is issued).
  clock_.advance_ms(kHourMs);
  ASSERT_TRUE(keys->rotate_if_due().value());
  Outcome after_rotation = handshake(server.get(), client.get(), full.session.get());
  ASSERT_TRUE(after_rotation.done);
  EXPECT_TRUE(after_rotation.resumed);

  // After the second, it is gone: a full handshake, no error.
  clock_.advance_ms(kHourMs);
  ASSERT_TRUE(keys->rotate_if_due().value());
  Outcome gone = handshake(server.get(), client.get(), full.session.get());
  ASSERT_TRUE(gone.done);
  EXPECT_FALSE(gone.resumed);
  // The ticket issued after the rotation, under the key that now seals, still resumes.
  Outcome fresh = handshake(server.get(), client.get(), after_rotation.session.get());
  ASSERT_TRUE(fresh.done);
  EXPECT_TRUE(fresh.resumed);
}

// One ticket after a full handshake and one after a resumed one: the client keeps only the
// newest, so the server seals no more. A resumption renews the ticket, so a client never needs
// to offer one twice (connections could be linked by it).
TEST_F(TicketHandshakeTest, OneFreshTicketAfterEachHandshake) {
  auto keys = open_keys(path_);
  auto server = server_ctx(*keys);
  auto client = client_ctx(TLS1_3_VERSION);
  Outcome full = handshake(server.get(), client.get(), nullptr);
  ASSERT_TRUE(full.done && full.session);
  EXPECT_FALSE(full.resumed);
  EXPECT_EQ(full.tickets, 1);
  Outcome resumed = handshake(server.get(), client.get(), full.session.get());
  ASSERT_TRUE(resumed.done);
  EXPECT_TRUE(resumed.resumed);
  EXPECT_EQ(resumed.tickets, 1);
  ASSERT_TRUE(resumed.session);
  const auto ticket = [](SSL_SESSION* s) {
    const unsigned char* p = nullptr;
    std::size_t n = 0;
    SSL_SESSION_get0_ticket(s, &p, &n);
    return std::string(reinterpret_cast<const char*>(p), n);
  };
  EXPECT_FALSE(ticket(resumed.session.get()).empty());
  EXPECT_NE(ticket(resumed.session.get()), ticket(full.session.get()));
  Outcome again = handshake(server.get(), client.get(), resumed.session.get());
  ASSERT_TRUE(again.done);
  EXPECT_TRUE(again.resumed);  // the renewed ticket resumes in turn
}

TEST_F(TicketHandshakeTest, OtherKeysOpenNothing) {
  auto keys = open_keys(path_);
  auto other_keys = open_keys("");
  auto server = server_ctx(*keys), other = server_ctx(*other_keys);
  auto client = client_ctx(TLS1_3_VERSION);
  Outcome full = handshake(server.get(), client.get(), nullptr);
  ASSERT_TRUE(full.done && full.session);
  Outcome elsewhere = handshake(other.get(), client.get(), full.session.get());
  ASSERT_TRUE(elsewhere.done);
  EXPECT_FALSE(elsewhere.resumed);
  // The same keys read back from the file (a restarted server) open it.
  auto reread = open_keys(path_);
  auto restarted = server_ctx(*reread);
  Outcome back = handshake(restarted.get(), client.get(), full.session.get());
  ASSERT_TRUE(back.done);
  EXPECT_TRUE(back.resumed);
}

TEST_F(TicketHandshakeTest, Tls12GetsNoTicket) {
  auto keys = open_keys(path_);
  auto server = server_ctx(*keys);
  auto client = client_ctx(TLS1_2_VERSION);
  Outcome full = handshake(server.get(), client.get(), nullptr);
  ASSERT_TRUE(full.done);
  EXPECT_EQ(SSL_SESSION_get_protocol_version(full.session.get()), TLS1_2_VERSION);
  EXPECT_EQ(SSL_SESSION_has_ticket(full.session.get()), 0);
  Outcome again = handshake(server.get(), client.get(), full.session.get());
  ASSERT_TRUE(again.done);
  EXPECT_FALSE(again.resumed);
}

}  // namespace
}  // namespace parley::transport::internal
