// Unit tests of the server's small parts; the server as a whole is tested through real parleyd
// processes in tests/server/.
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "crypto/pow.h"
#include "crypto/primitives.h"
#include "server/attachments.h"
#include "server/config.h"
#include "server/disk_space.h"
#include "server/housekeeping.h"
#include "server/metrics.h"
#include "server/names.h"
#include "server/rate_limiter.h"
#include "server/service.h"
#include "server/session.h"
#include "store/store.h"
#include "transport/client_address.h"

namespace parley::server {
namespace {

TEST(Names, FoldAndValidate) {
  EXPECT_EQ(*fold_name("Alice"), "alice");
  EXPECT_EQ(*fold_name("bob.smith-2_x"), "bob.smith-2_x");
  EXPECT_FALSE(fold_name("al").has_value());
  EXPECT_FALSE(fold_name(std::string(33, 'a')).has_value());
  EXPECT_FALSE(fold_name("_alice").has_value());
  EXPECT_FALSE(fold_name("ali ce").has_value());
  EXPECT_FALSE(fold_name("ali\xc3\xa9").has_value());  // no Unicode look-alikes
  EXPECT_EQ(fold_name("ALICE").value(), fold_name("alice").value());
}

TEST(Pow, SolveAndVerify) {
  Bytes challenge(32, 9);
  std::uint64_t nonce = 0;
  ASSERT_TRUE(crypto::pow_solve(challenge, "alice", 12, 1u << 24, nonce));
  EXPECT_TRUE(crypto::pow_valid(challenge, "alice", nonce, 12));
  EXPECT_FALSE(crypto::pow_valid(challenge, "alicf", nonce, 12) && crypto::pow_valid(challenge, "alicf", nonce, 20));
  EXPECT_TRUE(crypto::pow_valid(challenge, "alice", nonce, 0));
  EXPECT_FALSE(crypto::pow_valid(challenge, "alice", nonce, 65));
}

TEST(RateLimiter, BurstThenRefill) {
  ManualClock clock(0);
  RateLimiter rl(clock, 10, 5, 2);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(rl.allow("a"));
  EXPECT_FALSE(rl.allow("a"));
  clock.advance_ms(100);  // one token back
  EXPECT_TRUE(rl.allow("a"));
  EXPECT_FALSE(rl.allow("a"));
  EXPECT_TRUE(rl.allow("b"));
  EXPECT_TRUE(rl.allow("c"));  // evicts the least recent ("a"), bounded memory
  EXPECT_TRUE(rl.allow("a"));  // a fresh bucket
}

// parleyd's clock while the system clock has not been set (FlooredClock): buckets still
// refill. (A clock that stood at its floor refused everyone for good once the bursts were spent.)
TEST(RateLimiter, RefillsOverAClockBehindItsFloor) {
  ManualClock system(0);
  const FlooredClock clock(system, 1'780'000'000'000);
  RateLimiter rl(clock, 100, 1);  // a token every 10 ms
  EXPECT_TRUE(rl.allow("a"));
  bool again = false;
  for (int i = 0; i < 100 && !again; ++i) {  // at most 1 s
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    again = rl.allow("a");
  }
  EXPECT_TRUE(again);
}

// An IPv6 client is limited by its /64 (transport::client_block(), tested with the transport):
// each of its addresses does not get a fresh bucket.
TEST(RateLimiter, KeysByIPv4OrIPv6Slash64) {
  ManualClock clock(0);
  RateLimiter rl(clock, 1, 2);
  EXPECT_TRUE(rl.allow(transport::client_block("2001:db8::1")));
  EXPECT_TRUE(rl.allow(transport::client_block("2001:db8::2")));
  EXPECT_FALSE(rl.allow(transport::client_block("2001:db8::3")));
  EXPECT_TRUE(rl.allow(transport::client_block("2001:db8:1::1")));
}

TEST(Config, HostPort) {
  EXPECT_EQ(parse_host_port("127.0.0.1:8443")->port, 8443);
  EXPECT_EQ(parse_host_port("[::1]:1")->host, "::1");
  EXPECT_FALSE(parse_host_port("nohost").has_value());
  EXPECT_FALSE(parse_host_port("h:99999").has_value());
  EXPECT_FALSE(parse_host_port("h:12x").has_value());
}

TEST(Config, TomlFileAndUnknownKeys) {
  const std::string path = ::testing::TempDir() + "/parleyd_test.toml";
  {
    std::ofstream f(path);
    f << "[server]\nlisten = \"0.0.0.0:9443\"\nname = \"example.org\"\nio_threads = 3\n"
      << "[registration]\npolicy = \"pow\"\npow_difficulty = 8\n"
      << "[limits]\nqueue_max_count = 7\n";
  }
  ServerConfig c;
  ASSERT_TRUE(load_config_file(path, c).is_ok());
  EXPECT_EQ(c.listen.port, 9443);
  EXPECT_EQ(c.server_name, "example.org");
  EXPECT_EQ(c.io_threads, 3u);
  EXPECT_EQ(c.registration, RegistrationPolicy::kPow);
  EXPECT_EQ(c.pow_difficulty, 8u);
  EXPECT_EQ(c.queue_max_count, 7u);
  {
    std::ofstream f(path);
    f << "[limits]\nqueue_max_cuont = 7\n";
  }
  Status s = load_config_file(path, c);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("queue_max_cuont"), std::string::npos);
  {
    std::ofstream f(path);
    f << "[limits\n";
  }
  EXPECT_FALSE(load_config_file(path, c).is_ok());

  // A file larger than any configuration is refused before it is parsed; one that is missing
  // is named.
  {
    std::ofstream f(path);
    f << "[limits]\nqueue_max_count = 8\n" << std::string(kMaxConfigFileBytes, '#');
  }
  s = load_config_file(path, c);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("larger than"), std::string::npos) << s.message();
  EXPECT_EQ(c.queue_max_count, 7u);
  // Only ASCII reaches the TOML parser (Debian's toml++ misbehaves on some other characters);
  // a string spells them as escapes.
  s = load_config_text("[server]\n# caf\xc3\xa9\nname = \"x\"\n", "t.toml", c);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("line 2: a character that is not ASCII"), std::string::npos)
      << s.message();
  ASSERT_TRUE(load_config_text("[server]\nname = \"caf\\u00e9.example\"\n", "t.toml", c).is_ok());
  EXPECT_EQ(c.server_name, "caf\xc3\xa9.example");
  // An empty address switches the listener or bridge off; one that names no host is refused.
  ASSERT_TRUE(load_config_text("[bridge]\nto = \"\"\n", "t.toml", c).is_ok());
  EXPECT_TRUE(c.bridge_to.host.empty());
  for (const char* text : {"[bridge]\nto = \"[]:443\"\n", "[bridge]\nto = \"h:0\"\n",
                           "[transport]\nobfs4 = \"[]:1\"\n", "[server]\nadmin = \"[]:1\"\n"}) {
    EXPECT_EQ(load_config_text(text, "t.toml", c).code(), ErrorCode::kInvalidArgument) << text;
  }
  // A count is an integer: a float is refused, however large (toml++ would cast 1e25 unchecked).
  for (const char* text :
       {"[server]\nio_threads = 6666666666666666666666666.6\n", "[server]\nio_threads = 2.0\n",
        "[limits]\nqueue_max_count = 1e300\n", "[limits]\nqueue_max_count = -1\n",
        "[limits]\nqueue_max_count = nan\n"}) {
    EXPECT_EQ(load_config_text(text, "t.toml", c).code(), ErrorCode::kInvalidArgument) << text;
  }
  // An editor's byte order mark is skipped.
  ASSERT_TRUE(load_config_text("\xef\xbb\xbf[server]\nname = \"x\"\n", "bom.toml", c).is_ok());

  std::filesystem::remove(path);
  s = load_config_file(path, c);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cannot open"), std::string::npos) << s.message();
}

// The example configuration in docs/operations.md is one parleyd takes as it stands.
TEST(Config, TheDocumentedExampleLoads) {
  std::ifstream doc(std::string(PARLEY_DOCS_DIR) + "/operations.md");
  ASSERT_TRUE(doc.good());
  std::string line, example;
  bool in = false;
  while (std::getline(doc, line)) {
    if (line == "```toml") {
      in = true;
    } else if (in && line == "```") {
      break;
    } else if (in) {
      example += line + "\n";
    }
  }
  ASSERT_NE(example.find("[limits]"), std::string::npos) << "no ```toml example found";
  ServerConfig c;
  Status s = load_config_text(example, "operations.md", c);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  s = validate_config(c);
  EXPECT_TRUE(s.is_ok()) << s.to_string();
}

// Loads a config file (under the test's temporary directory) of one [section] holding `text`,
// then checks it as parleyd does (validate_config).
Status load_section(const std::string& file, const std::string& section, const std::string& text,
                    ServerConfig& c) {
  const std::string path = ::testing::TempDir() + "/" + file;
  std::ofstream(path) << "[" << section << "]\n" << text << "\n";
  PARLEY_TRY(load_config_file(path, c));
  return validate_config(c);
}

// ping_interval_s must be below idle_timeout_s, or no ping would go out before the idle
// timeout cut a quiet client off; zero switches either off.
TEST(Config, PingIntervalBelowIdleTimeout) {
  auto load = [](const std::string& text, ServerConfig& c) {
    return load_section("parleyd_ping.toml", "limits", text, c);
  };
  ServerConfig c;
  ASSERT_TRUE(load("idle_timeout_s = 60\nping_interval_s = 20", c).is_ok());
  EXPECT_EQ(c.ping_interval_s, 20u);
  ASSERT_TRUE(load("idle_timeout_s = 0\nping_interval_s = 500", c).is_ok());
  ASSERT_TRUE(load("idle_timeout_s = 10\nping_interval_s = 0", c).is_ok());
  for (const char* bad : {"idle_timeout_s = 60\nping_interval_s = 60",
                          "ping_interval_s = 120"}) {  // the default idle_timeout_s is 120
    ServerConfig fresh;
    Status s = load(bad, fresh);
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("ping_interval_s"), std::string::npos) << s.message();
  }
}

// Limits that would break delivery are refused with the key named: a message whose envelope
// does not fit in a frame, a write queue too small for a delivery window.
TEST(Config, MessageAndWriteQueueSizes) {
  auto load = [](const std::string& text, ServerConfig& c) {
    return load_section("parleyd_sizes.toml", "limits", text, c);
  };
  ServerConfig c;
  EXPECT_EQ(c.max_message_bytes, wire::kMaxMessageContent);
  ASSERT_TRUE(load("max_message_bytes = 1000\nwrite_queue_bytes = 2097152\n"
                   "max_handshakes_per_ip = 8",
                   c)
                  .is_ok());
  EXPECT_EQ(c.max_message_bytes, 1000u);
  EXPECT_EQ(c.max_handshakes_per_ip, 8u);
  for (const auto& [bad, key] :
       {std::pair<std::string, std::string>{"max_message_bytes = 262144", "max_message_bytes"},
        {"write_queue_bytes = 524288", "write_queue_bytes"}}) {
    ServerConfig fresh;
    Status s = load(bad, fresh);
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find(key), std::string::npos) << s.message();
  }
}

// Limits that would refuse or drop everything instead of limiting it, or limit nothing (nan,
// inf), are refused with the key named; the smallest values that still limit are taken.
TEST(Config, LimitsThatWouldStopEverything) {
  auto load = [](const std::string& section, const std::string& text, ServerConfig& c) {
    return load_section("parleyd_floors.toml", section, text, c);
  };
  ServerConfig c;
  ASSERT_TRUE(load("limits",
                   "queue_max_count = 1\nqueue_max_bytes = " +
                       std::to_string(ServerConfig{}.max_message_bytes) +
                       "\nmax_connections = 1\n"
                       "queue_max_age_days = 1\nmax_inflight_requests = 1\n"
                       "ip_request_rate = 0.01\nip_request_burst = 1\nip_connect_rate = 0.01\n"
                       "ip_connect_burst = 1\naccount_send_rate = 0.01\naccount_send_burst = 64\n"
                       "register_rate_per_ip = 0.01\nregister_burst_per_ip = 1\n"
                       "bundle_fetch_rate = 0.001\nbundle_fetch_burst = 3\n"
                       "queue_sender_share_percent = 1\n"
                       "max_connections_per_ip = 0",  // 0: no cap
                   c)
                  .is_ok());
  EXPECT_EQ(c.queue_max_age_days, 1u);
  EXPECT_EQ(c.max_connections_per_ip, 0u);
  EXPECT_EQ(c.account_send_burst, 64.0);
  EXPECT_EQ(c.bundle_fetch_rate, 0.001);
  EXPECT_EQ(c.bundle_fetch_burst, 3.0);
  EXPECT_EQ(c.queue_sender_share_percent, 1u);
  ASSERT_TRUE(load("attachments", "expiry_days = 1", c).is_ok());
  for (const auto& [section, bad, key] : {
           std::tuple<std::string, std::string, std::string>{"limits", "queue_max_count = 0",
                                                             "queue_max_count"},
           {"limits", "queue_max_bytes = 0", "queue_max_bytes"},
           {"limits", "max_message_bytes = 0", "max_message_bytes"},
           {"limits", "max_message_bytes = 1000\nqueue_max_bytes = 999", "queue_max_bytes"},
           {"limits", "max_connections = 0", "max_connections"},
           {"server", "io_threads = 257", "io_threads"},
           {"limits", "ip_request_burst = nan", "ip_request_burst"},
           {"limits", "ip_connect_burst = inf", "ip_connect_burst"},
           {"limits", "account_send_rate = nan", "account_send_rate"},
           {"limits", "queue_max_age_days = 0", "queue_max_age_days"},
           {"limits", "max_inflight_requests = 0", "max_inflight_requests"},
           {"limits", "ip_request_burst = 0.5", "ip_request_burst"},
           {"limits", "ip_connect_burst = 0", "ip_connect_burst"},
           {"limits", "account_send_burst = 63", "account_send_burst"},
           {"limits", "register_burst_per_ip = 0", "register_burst_per_ip"},
           {"limits", "ip_request_rate = 0", "ip_request_rate"},
           {"limits", "ip_connect_rate = 0", "ip_connect_rate"},
           {"limits", "account_send_rate = 0", "account_send_rate"},
           {"limits", "register_rate_per_ip = 0", "register_rate_per_ip"},
           {"limits", "bundle_fetch_rate = 0", "bundle_fetch_rate"},
           {"limits", "bundle_fetch_rate = nan", "bundle_fetch_rate"},
           {"limits", "bundle_fetch_burst = 0.5", "bundle_fetch_burst"},
           {"limits", "queue_sender_share_percent = 0", "queue_sender_share_percent"},
           {"limits", "queue_sender_share_percent = 101", "queue_sender_share_percent"},
           {"limits", "queue_sender_share_percent = 20.0", "queue_sender_share_percent"},
           {"attachments", "expiry_days = 0", "expiry_days"},
       }) {
    ServerConfig fresh;
    Status s = load(section, bad, fresh);
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find(key), std::string::npos) << s.message();
  }
}

// A sender's share of a queue is the configured percent of its count and bytes, and holds at
// least one envelope and one message of the largest size.
TEST(Config, ASendersShareOfAQueue) {
  ServerConfig c;
  store::QueueLimits l = queue_limits(c);
  EXPECT_EQ(l.max_count, 10000u);
  EXPECT_EQ(l.max_sender_count, 2000u);
  EXPECT_EQ(l.max_sender_bytes, (64ull << 20) / 5);
  EXPECT_EQ(l.max_age_ms, 30ll * 24 * 3600 * 1000);
  c.queue_max_count = 3;
  c.queue_max_bytes = c.max_message_bytes + 1;
  l = queue_limits(c);
  EXPECT_EQ(l.max_sender_count, 1u);
  EXPECT_EQ(l.max_sender_bytes, c.max_message_bytes);
  c.queue_sender_share_percent = 100;
  c.queue_max_bytes = ~std::uint64_t{0};
  l = queue_limits(c);
  EXPECT_EQ(l.max_sender_count, 3u);
  EXPECT_EQ(l.max_sender_bytes, ~std::uint64_t{0});  // no overflow on the way
  c.queue_sender_share_percent = 99;
  EXPECT_EQ(queue_limits(c).max_sender_bytes, ~std::uint64_t{0} / 100 * 99 + 15 * 99 / 100);
}

TEST(Config, ProofOfWorkAndLoginTimeout) {
  ServerConfig c;
  ASSERT_TRUE(load_section("parleyd_pow.toml", "registration", "pow_difficulty = 40", c).is_ok());
  EXPECT_EQ(c.pow_difficulty, 40u);
  Status s = load_section("parleyd_pow.toml", "registration", "pow_difficulty = 41", c);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("pow_difficulty"), std::string::npos) << s.message();
  EXPECT_EQ(c.login_timeout_s, 60u);
  ASSERT_TRUE(load_section("parleyd_login.toml", "limits", "login_timeout_s = 0", c).is_ok());
  EXPECT_EQ(c.login_timeout_s, 0u);
}

TEST(Config, TlsTicketKeys) {
  auto load = [](const std::string& text, ServerConfig& c) {
    return load_section("parleyd_tickets.toml", "server", text, c);
  };
  ServerConfig c;
  EXPECT_EQ(c.tls_tickets, TlsTickets::kFile);
  EXPECT_EQ(c.tls_ticket_rotation_hours, 12u);
  ASSERT_TRUE(load("tls_tickets = \"memory\"\ntls_ticket_rotation_hours = 168", c).is_ok());
  EXPECT_EQ(c.tls_tickets, TlsTickets::kMemory);
  EXPECT_EQ(c.tls_ticket_rotation_hours, 168u);
  ASSERT_TRUE(load("tls_tickets = \"off\"", c).is_ok());
  EXPECT_EQ(c.tls_tickets, TlsTickets::kOff);
  for (const char* bad : {"tls_tickets = \"disk\"", "tls_tickets = 1",
                          "tls_ticket_rotation_hours = 0", "tls_ticket_rotation_hours = 169"}) {
    ServerConfig before;
    Status s = load(bad, before);
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("tls_ticket"), std::string::npos) << s.message();
    EXPECT_EQ(before.tls_tickets, TlsTickets::kFile);  // left as it was
    EXPECT_EQ(before.tls_ticket_rotation_hours, 12u);
  }
}

// The attachment quota holds at least the largest attachment (else a slot the size bound allows
// could never be had); the disk reserve is bounded so that it stays a byte count; both are named
// when refused, and a command-line --attachment-max-bytes is checked the same way.
// Relays that send PROXY headers: IP addresses only (a name would be resolved at no defined
// time), at most kMaxProxyFrom; and the bridge's switch to send them.
TEST(Config, ProxyFromAndTheBridgesProxyHeader) {
  ServerConfig c;
  EXPECT_TRUE(c.proxy_from.empty());
  EXPECT_FALSE(c.bridge_proxy_header);
  ASSERT_TRUE(load_section("parleyd_proxy.toml", "server",
                           "proxy_from = [\"198.51.100.7\", \"2001:db8::1\"]", c)
                  .is_ok());
  EXPECT_EQ(c.proxy_from, (std::vector<std::string>{"198.51.100.7", "2001:db8::1"}));
  ASSERT_TRUE(load_section("parleyd_proxy.toml", "server",
                           "proxy_from = [\"10.0.0.0/8\", \"2001:db8::/32\"]", c)
                  .is_ok());
  EXPECT_EQ(c.proxy_from, (std::vector<std::string>{"10.0.0.0/8", "2001:db8::/32"}));
  ASSERT_TRUE(
      load_section("parleyd_proxy.toml", "bridge", "to = \"192.0.2.1:443\"\nproxy_header = true", c)
          .is_ok());
  EXPECT_TRUE(c.bridge_proxy_header);
  // Only a bridge sends the header: on a server the key would do nothing, silently.
  ServerConfig server;
  Status refused = load_section("parleyd_proxy.toml", "bridge", "proxy_header = true", server);
  EXPECT_EQ(refused.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("only for a bridge"), std::string::npos) << refused.message();
  std::string many = "proxy_from = [";
  for (std::size_t i = 0; i <= kMaxProxyFrom; ++i) many += "\"10.0.0." + std::to_string(i) + "\",";
  many += "]";
  for (const auto& [section, bad, why] :
       {std::tuple{"server", "proxy_from = \"198.51.100.7\"", "expected an array"},
        std::tuple{"server", "proxy_from = [7]", "expected an array"},
        std::tuple{"server", "proxy_from = [\"bridge.example\"]", "\"bridge.example\" is not"},
        std::tuple{"server", "proxy_from = [\"10.0.0.0/33\"]", "is not an IP address or network"},
        std::tuple{"server", many.c_str(), "at most 64"},
        std::tuple{"bridge", "proxy_header = 1", "expected true or false"}}) {
    ServerConfig fresh;
    Status s = load_section("parleyd_proxy.toml", section, bad, fresh);
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find(why), std::string::npos) << s.message();
  }
  // A flag sets the list too: validate_config() checks it.
  ServerConfig flagged;
  flagged.proxy_from = {"not-an-address"};
  EXPECT_EQ(validate_config(flagged).code(), ErrorCode::kInvalidArgument);
}

// The admin listener serves loopback unless server.admin_from names others; one bound beyond
// loopback without that list does not start (it has no authentication, and /invite mints
// registration tokens).
TEST(Config, AnAdminListenerBeyondLoopbackNamesWhoMayConnect) {
  ServerConfig c;
  EXPECT_TRUE(c.admin_from.empty());
  for (const char* host : {"127.0.0.1", "127.1.2.3", "::1"}) {
    ServerConfig local;
    local.admin = HostPort{host, 9090};
    EXPECT_TRUE(validate_config(local).is_ok()) << host;
  }
  for (const char* host : {"0.0.0.0", "10.0.0.5", "::"}) {
    ServerConfig open;
    open.admin = HostPort{host, 9090};
    Status s = validate_config(open);
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << host;
    EXPECT_NE(s.message().find("server.admin_from"), std::string::npos) << s.message();
  }
  ASSERT_TRUE(load_section("parleyd_admin.toml", "server",
                           "admin = \"10.0.0.5:9090\"\nadmin_from = [\"10.0.0.9\", \"fd00::/8\"]",
                           c)
                  .is_ok());
  EXPECT_EQ(c.admin_from, (std::vector<std::string>{"10.0.0.9", "fd00::/8"}));
  for (const char* bad : {"admin_from = [\"scraper.example\"]", "admin_from = [\"10.0.0.0/33\"]"}) {
    ServerConfig fresh;
    Status s = load_section("parleyd_admin.toml", "server", bad, fresh);
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("is not an IP address or network"), std::string::npos)
        << s.message();
  }
}

TEST(Config, AttachmentQuotaAndDiskReserve) {
  auto load = [](const std::string& text, ServerConfig& c) {
    return load_section("parleyd_attachments.toml", "attachments", text, c);
  };
  ServerConfig c;
  EXPECT_EQ(c.attachment_account_quota_bytes, 1ull << 30);
  EXPECT_EQ(c.attachment_min_free_disk_mb, 1024u);
  EXPECT_EQ(c.attachment_account_max_count, 10000u);
  ASSERT_TRUE(load("max_bytes = 1000\naccount_quota_bytes = 1000\nmin_free_disk_mb = 0\n"
                   "account_max_count = 1",
                   c)
                  .is_ok());
  EXPECT_EQ(c.attachment_account_max_count, 1u);
  EXPECT_EQ(c.attachment_max_bytes, 1000u);
  EXPECT_EQ(c.attachment_account_quota_bytes, 1000u);
  EXPECT_EQ(c.attachment_min_free_disk_mb, 0u);
  ASSERT_TRUE(load("min_free_disk_mb = 1099511627776", c).is_ok());  // kMaxMinFreeDiskMb
  EXPECT_EQ(c.attachment_min_free_disk_mb, kMaxMinFreeDiskMb);
  for (const auto& [bad, key] :
       {std::pair<std::string, std::string>{"max_bytes = 1000\naccount_quota_bytes = 999",
                                            "account_quota_bytes"},
        {"account_quota_bytes = 0", "account_quota_bytes"},
        {"account_max_count = 0", "account_max_count"},
        {"account_max_count = -1", "account_max_count"},
        {"max_bytes = 2147483648", "account_quota_bytes"},  // above the default quota
        {"min_free_disk_mb = 1099511627777", "min_free_disk_mb"},
        {"min_free_disk_mb = -1", "min_free_disk_mb"}}) {
    ServerConfig fresh;
    Status s = load(bad, fresh);
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find(key), std::string::npos) << s.message();
  }
  ServerConfig flags;
  flags.attachment_max_bytes = flags.attachment_account_quota_bytes + 1;
  Status s = validate_config(flags);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("account_quota_bytes"), std::string::npos) << s.message();
  EXPECT_TRUE(validate_config(ServerConfig{}).is_ok());
}

TEST(DiskSpace, ReserveAfterTheNewAttachment) {
  auto here = available_disk_bytes(::testing::TempDir());
  ASSERT_TRUE(here.has_value()) << here.error().to_string();
  EXPECT_GT(*here, 0u);
  EXPECT_EQ(available_disk_bytes(::testing::TempDir() + "/no/such/dir").error().code(),
            ErrorCode::kIo);
  EXPECT_FALSE(below_disk_reserve(1000, 400, 600));  // exactly the reserve is left
  EXPECT_TRUE(below_disk_reserve(1000, 401, 600));
  EXPECT_TRUE(below_disk_reserve(1000, 1001, 0));  // does not fit at all
  EXPECT_FALSE(below_disk_reserve(1000, 1000, 0));
  EXPECT_TRUE(below_disk_reserve(~0ull, 1, ~0ull));
}

// The transport's side of a connection, for a Session driven by hand: keeps the frames the
// session sends and the reason it closed with.
class RecordingConnection final : public transport::WsConnection {
 public:
  explicit RecordingConnection(boost::asio::any_io_executor ex) : ex_(std::move(ex)) {}
  bool send(std::shared_ptr<const std::string> message) override {
    auto f = wire::decode_frame(*message);
    EXPECT_TRUE(f.has_value());
    if (f) frames_.push_back(std::move(*f));
    return true;
  }
  void close(std::string_view reason) override { closed_ = std::string(reason); }
  const std::string& remote_ip() const override { return ip_; }
  std::size_t queued_bytes() const override { return 0; }
  const boost::asio::any_io_executor& executor() const override { return ex_; }

  // The answer to request `id`, once it has come.
  const wire::Response* response(std::uint64_t id) const {
    for (const auto& f : frames_) {
      if (f.has_response() && f.response().id() == id) return &f.response();
    }
    return nullptr;
  }
  Bytes nonce() const {
    for (const auto& f : frames_) {
      if (f.has_push() && f.push().has_challenge()) return to_bytes(f.push().challenge().nonce());
    }
    return {};
  }

 private:
  boost::asio::any_io_executor ex_;
  const std::string ip_ = "192.0.2.9";
  std::vector<wire::Frame> frames_;
  std::optional<std::string> closed_;
};

// A Service over a fresh SQLite store that holds "alice" (device 1, auth key 0xa0…), on an
// io_context that runs only when a test runs it (run_until), so that a store answer can be
// held back while the test writes.
class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = ::testing::TempDir() + "/parley_service_test.db";
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
    auto opened = store::open_sqlite_store(path);
    ASSERT_TRUE(opened.has_value()) << opened.error().to_string();
    store_ = std::move(*opened);
    auto account = create_account("alice", 11, Bytes(32, 0xa0));
    ASSERT_TRUE(account.has_value()) << account.error().to_string();
    alice_ = std::move(*account);
    config_.data_dir = ::testing::TempDir() + "/parley_service_test";  // its attachments directory
  }
  void TearDown() override {
    if (store_) store_->close();
  }

  // An account with device 1 made in the store (before any Service reads it).
  Result<store::Account> create_account(const std::string& name, std::uint32_t registration,
                                        Bytes auth_public_key, Bytes recovery_hash = {}) {
    store::NewAccount a;
    a.name = a.folded_name = name;
    a.device.device_id = 1;
    a.device.registration_id = registration;
    a.device.auth_public_key = std::move(auth_public_key);
    a.device.identity_key = Bytes(33, 0x05);
    a.device.signed_pre_key = store::SignedPreKey{7, Bytes(33, 0x05), Bytes(64, 0x5e)};
    a.recovery_hash = std::move(recovery_hash);
    a.now_ms = 1000;
    std::promise<Result<store::Account>> made;
    store_->create_account(a, [&](Result<store::Account> r) { made.set_value(std::move(r)); });
    return made.get_future().get();
  }

  // The device's queue as the store holds it (at most 10 envelopes).
  Result<std::vector<store::QueuedEnvelope>> queue_of(std::int64_t account_id) {
    std::promise<Result<std::vector<store::QueuedEnvelope>>> queue;
    store_->fetch_queue(account_id, 1, 0, 10, store::kNoByteLimit,
                        [&](auto q) { queue.set_value(std::move(q)); });
    return queue.get_future().get();
  }

  std::unique_ptr<Service> make_service() {
    return std::make_unique<Service>(io_, config_, *store_, clock_, rng_, metrics_);
  }
  // alice as the store made her, with device 1's auth key and registration id changed by `f`.
  AccountPtr alice_with(const std::function<void(store::Device&)>& f) const {
    auto info = std::make_shared<AccountInfo>();
    info->id = alice_.id;
    info->name = alice_.name;
    info->devices = alice_.devices;
    f(info->devices[0]);
    return info;
  }
  // Runs the io_context until `done` (a store answer arrived), for at most 5 s.
  template <typename Done>
  void run_until(const Done& done) {
    for (int i = 0; i < 500 && !done(); ++i) {
      io_.run_for(std::chrono::milliseconds(10));
      io_.restart();
    }
  }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> keep_ =
      boost::asio::make_work_guard(io_);  // run_for waits for the answer
  std::unique_ptr<store::Store> store_;
  store::Account alice_;
  SystemClock clock_;
  crypto::SystemRng rng_;
  Metrics metrics_;
  ServerConfig config_;
};

// The account cache: a store read that finishes after a write changed the cache does not put
// its older snapshot back (a recovery's new device, or a new signed prekey, would be undone
// until restart: the old device could log in, senders would be told their ids are stale).
TEST_F(ServiceTest, AReadThatFinishesAfterAWriteLeavesTheWrite) {
  auto service = make_service();
  std::optional<Result<AccountPtr>> read;
  service->find_account("alice", [&](Result<AccountPtr> a) { read = std::move(a); });
  // A recovery committed meanwhile: its callback updates the cache before the read's runs.
  service->remember_account("alice", alice_with([](store::Device& d) { d.registration_id = 22; }));
  const std::uint64_t generation = service->accounts_generation();
  run_until([&] { return read.has_value(); });
  ASSERT_TRUE(read.has_value() && read->has_value());
  EXPECT_EQ((**read)->devices[0].registration_id, 11u);  // the read's own answer is what it saw
  const AccountPtr cached = service->cached_account("alice");
  ASSERT_NE(cached, nullptr);
  EXPECT_EQ(cached->devices[0].registration_id, 22u) << "the read put its older snapshot back";
  EXPECT_EQ(service->accounts_generation(), generation);

  // With no write meanwhile, a read fills the cache (and changes no one's snapshot).
  std::optional<Result<AccountPtr>> again;
  auto fresh = make_service();
  fresh->find_account("alice", [&](Result<AccountPtr> a) { again = std::move(a); });
  const std::uint64_t before = fresh->accounts_generation();
  run_until([&] { return again.has_value(); });
  ASSERT_TRUE(again.has_value() && again->has_value());
  EXPECT_NE(fresh->cached_account("alice"), nullptr);
  EXPECT_EQ(fresh->accounts_generation(), before);

  // A new signed prekey stored while nothing was cached: a read under way caches nothing.
  std::optional<Result<AccountPtr>> third;
  auto other = make_service();
  other->find_account("alice", [&](Result<AccountPtr> a) { third = std::move(a); });
  EXPECT_EQ(other->update_signed_pre_key("alice", alice_.devices[0],
                                         store::SignedPreKey{8, Bytes(33, 0x06), Bytes(64, 0x5f)}),
            nullptr);
  run_until([&] { return third.has_value(); });
  ASSERT_TRUE(third.has_value() && third->has_value());
  EXPECT_EQ(other->cached_account("alice"), nullptr) << "a read older than the new prekey was kept";
}

// Presence: a login whose signature was checked against a device that a recovery has replaced
// since is not attached, however late it comes; the recovered device is, and replaces a login
// that came first.
TEST_F(ServiceTest, ALoginOfADeviceARecoveryReplacedIsNotAttached) {
  auto service = make_service();
  const AccountPtr before = alice_with([](store::Device&) {});
  const AccountPtr recovered = alice_with([](store::Device& d) {
    d.auth_public_key = Bytes(32, 0xb0);
    d.registration_id = 22;
  });
  // Nothing cached: the login's own snapshot is attached.
  auto first = std::make_shared<Session>(*service, "192.0.2.1");
  EXPECT_EQ(service->attach("alice", before, 1, first), before);
  EXPECT_EQ(service->session_of(alice_.id, 1), first);

  // The recovery: its cache update, then its own attach, which replaces the old login.
  service->remember_account("alice", recovered);
  auto owner = std::make_shared<Session>(*service, "192.0.2.2");
  EXPECT_EQ(service->attach("alice", recovered, 1, owner), recovered);
  EXPECT_EQ(service->session_of(alice_.id, 1), owner);

  // A login that checked the old key before the recovery and attaches after it: refused, and
  // the owner stays.
  auto late = std::make_shared<Session>(*service, "192.0.2.3");
  EXPECT_EQ(service->attach("alice", before, 1, late), nullptr);
  EXPECT_EQ(service->session_of(alice_.id, 1), owner);

  // A device the account does not have, and another account's snapshot under alice's name.
  EXPECT_EQ(service->attach("alice", recovered, 2, late), nullptr);
  const AccountPtr stranger =
      std::make_shared<AccountInfo>(AccountInfo{alice_.id + 1, "alice", recovered->devices});
  EXPECT_EQ(service->attach("alice", stranger, 1, late), nullptr);
  EXPECT_EQ(service->session_of(alice_.id, 1), owner);

  // A login with the current key attaches the snapshot as cached now (a newer signed prekey).
  const AccountPtr rotated = service->update_signed_pre_key(
      "alice", recovered->devices[0], store::SignedPreKey{8, Bytes(33, 0x06), Bytes(64, 0x5f)});
  ASSERT_NE(rotated, nullptr);
  auto next = std::make_shared<Session>(*service, "192.0.2.4");
  EXPECT_EQ(service->attach("alice", recovered, 1, next), rotated);
  EXPECT_EQ(service->session_of(alice_.id, 1), next);
}

// A send checked against a cached device that a recovery replaces before the store takes the
// send: the store refuses it (SendOutcome::kDeviceChanged), and the sender is told 409 with the
// device stale, so that it fetches the new device's keys. Nothing reaches the new device's
// queue, which could not decrypt it.
TEST_F(ServiceTest, ASendThatRacedARecoveryIsAnsweredStale) {
  const std::string code = "recovery code 0123456789";
  const auto hash = crypto::sha256(as_bytes(code));
  auto dan_key = crypto::Ed25519KeyPair::from_seed(Bytes(32, 0xd0));
  auto carol_key = crypto::Ed25519KeyPair::from_seed(Bytes(32, 0xc0));
  ASSERT_TRUE(dan_key.has_value() && carol_key.has_value());
  auto carol = create_account("carol", 5, Bytes(32, 0xc1), Bytes(hash.begin(), hash.end()));
  ASSERT_TRUE(carol.has_value()) << carol.error().to_string();
  ASSERT_TRUE(create_account("dan", 3, to_bytes(dan_key->public_key)).has_value());
  config_.login_timeout_s = 0;
  auto service = make_service();
  // The store stops (its thread joined) before the service goes, also when an assertion ends
  // the test early: a store callback still running would use the service.
  struct StopStoreFirst {
    store::Store& store;
    ~StopStoreFirst() { store.close(); }
  } stop_store_first{*store_};
  auto message = [](Session& session, wire::Frame f) {
    session.on_message(*wire::encode_frame(f));
  };

  // dan logs in and looks up carol's devices, which caches carol with registration id 5.
  auto dan_conn = std::make_shared<RecordingConnection>(io_.get_executor());
  auto dan = std::make_shared<Session>(*service, "192.0.2.9");
  dan->on_open(dan_conn);
  wire::Frame login;
  login.mutable_request()->set_id(1);
  login.mutable_request()->mutable_login()->set_name("dan");
  login.mutable_request()->mutable_login()->set_device_id(1);
  const auto signature = dan_key->sign(wire::auth_transcript(dan_conn->nonce(), "dan", 1));
  login.mutable_request()->mutable_login()->set_challenge_signature(
      std::string(as_chars(signature)));
  message(*dan, login);
  run_until([&] { return dan_conn->response(1) != nullptr; });
  ASSERT_NE(dan_conn->response(1), nullptr);
  ASSERT_EQ(dan_conn->response(1)->status(), wire::kStatusOk) << dan_conn->response(1)->message();
  wire::Frame devices;
  devices.mutable_request()->set_id(2);
  devices.mutable_request()->mutable_devices()->set_name("carol");
  message(*dan, devices);
  run_until([&] { return dan_conn->response(2) != nullptr; });
  ASSERT_NE(dan_conn->response(2), nullptr);
  ASSERT_EQ(dan_conn->response(2)->devices().devices_size(), 1);
  EXPECT_EQ(dan_conn->response(2)->devices().devices(0).registration_id(), 5u);

  // carol recovers on another connection (registration id 6). Before the io_context runs the
  // recovery's answer (which updates the cache), dan sends to registration id 5: the session's
  // check passes on the cache, and the store takes the send after the recovery.
  auto carol_conn = std::make_shared<RecordingConnection>(io_.get_executor());
  auto recovering = std::make_shared<Session>(*service, "192.0.2.10");
  recovering->on_open(carol_conn);
  wire::Frame recover;
  recover.mutable_request()->set_id(1);
  auto* r = recover.mutable_request()->mutable_register_();
  r->set_name("carol");
  r->set_auth_public_key(std::string(as_chars(carol_key->public_key)));
  r->set_challenge_signature(std::string(
      as_chars(carol_key->sign(wire::auth_transcript(carol_conn->nonce(), "carol", 1)))));
  r->set_identity_key(std::string(1, '\x05') + std::string(32, 'n'));
  r->set_registration_id(6);
  r->mutable_signed_pre_key()->set_id(1);
  r->mutable_signed_pre_key()->set_public_key(std::string(1, '\x05') + std::string(32, 's'));
  r->mutable_signed_pre_key()->set_signature(std::string(64, 'g'));
  r->set_recovery_code(code);
  message(*recovering, recover);
  wire::Frame send;
  send.mutable_request()->set_id(3);
  auto* m = send.mutable_request()->mutable_send();
  m->set_destination("carol");
  m->set_client_message_id(std::string(16, 'm'));
  auto* to = m->add_messages();
  to->set_device_id(1);
  to->set_registration_id(5);
  to->set_content("for the device that was");
  message(*dan, send);
  run_until([&] { return carol_conn->response(1) && dan_conn->response(3); });
  ASSERT_NE(carol_conn->response(1), nullptr);
  EXPECT_EQ(carol_conn->response(1)->status(), wire::kStatusOk)
      << carol_conn->response(1)->message();
  const wire::Response* refused = dan_conn->response(3);
  ASSERT_NE(refused, nullptr);
  EXPECT_EQ(refused->status(), wire::kStatusConflict) << refused->message();
  const auto& mismatch = refused->send().mismatch();
  ASSERT_EQ(mismatch.stale_devices_size(), 1);
  EXPECT_EQ(mismatch.stale_devices(0), 1u);
  EXPECT_EQ(mismatch.missing_devices_size() + mismatch.extra_devices_size(), 0);

  auto queued = queue_of(carol->id);
  ASSERT_TRUE(queued.has_value());
  EXPECT_TRUE(queued->empty()) << "the new device got a message it cannot decrypt";
  dan->on_close();
  recovering->on_close();
}

// Housekeeping deletes by elapsed time: an envelope within the age limit survives the system
// clock jumping 400 days ahead, and goes once the limit has really elapsed. The first run is at
// start, by the wall clock (the store has no expiry clock kept yet).
TEST_F(ServiceTest, HousekeepingExpiresByElapsedTimeNotByAClockJump) {
  constexpr std::int64_t kDay = 24LL * 3600 * 1000;
  constexpr std::int64_t kT0 = 1'790'000'000'000;
  config_.queue_max_age_days = 30;
  auto store_at = [&](std::int64_t stored_ms, std::uint8_t tag) {
    store::SendBatch b;
    b.sender_account = alice_.id;
    b.sender_device = 1;
    b.destination_account = alice_.id;
    store::Delivery d;
    d.account_id = alice_.id;
    d.device_id = 1;
    d.registration_id = 11;
    d.envelope.server_id = Bytes(16, tag);
    d.envelope.source = "alice";
    d.envelope.source_device = 1;
    d.envelope.type = 1;
    d.envelope.content = Bytes(10, tag);
    b.deliveries.push_back(d);
    b.now_ms = stored_ms;
    std::promise<Result<store::SendOutcome>> done;
    store_->store_messages(b, [&](auto r) { done.set_value(std::move(r)); });
    auto r = done.get_future().get();
    ASSERT_TRUE(r.has_value() && r->kind == store::SendOutcome::Kind::kStored);
  };
  auto queued = [&] {
    std::vector<std::uint8_t> tags;
    auto q = queue_of(alice_.id);
    EXPECT_TRUE(q.has_value());
    if (q) {
      for (const auto& e : *q) tags.push_back(e.envelope.content[0]);
    }
    return tags;
  };
  store_at(kT0 - 31 * kDay, 1);
  store_at(kT0 - 28 * kDay, 2);

  ManualClock wall(kT0);
  const FlooredClock floored(wall, 0);
  ManualClock steady(0);  // the elapsed time (BootClock in parleyd)
  auto service = make_service();
  Housekeeping housekeeping(*service, floored, steady, std::chrono::milliseconds(5));
  // Each run: the io_context until the timer fires once more, then the store's answer.
  auto next_run = [&] {
    const std::uint64_t runs = housekeeping.runs();
    run_until([&] { return housekeeping.runs() > runs; });
    ASSERT_GT(housekeeping.runs(), runs);
  };
  housekeeping.start();
  EXPECT_EQ(housekeeping.last_expiry_ms(), kT0);
  EXPECT_EQ(queued(), std::vector<std::uint8_t>({2})) << "31 days old by the wall clock";

  wall.advance_ms(400 * kDay);  // set wrongly ahead
  steady.advance_ms(600'000);
  next_run();
  EXPECT_EQ(housekeeping.last_expiry_ms(), kT0 + 600'000);
  EXPECT_EQ(service->expiry_now_ms(), kT0 + 600'000);  // attachments are served by it
  EXPECT_EQ(metrics_.expiry_clock_lag_ms.load(), 400 * kDay - 600'000);
  EXPECT_EQ(queued(), std::vector<std::uint8_t>({2})) << "deleted by the jump";

  wall.advance_ms(kDay);  // the clock stays wrong; a day passes
  steady.advance_ms(kDay);
  next_run();
  EXPECT_EQ(queued(), std::vector<std::uint8_t>({2})) << "29 days and 10 minutes old";
  wall.advance_ms(kDay);
  steady.advance_ms(kDay);
  next_run();
  EXPECT_TRUE(queued().empty()) << "30 days and 10 minutes old";

  // Set back too far: 400 days and a month. The reading follows it back, so what is stored
  // now (stamped with the wall clock) is not taken for a month old.
  wall.advance_ms(-431 * kDay);
  steady.advance_ms(600'000);
  store_at(wall.now_ms(), 3);
  next_run();
  EXPECT_EQ(housekeeping.last_expiry_ms(), wall.now_ms());
  EXPECT_EQ(queued(), std::vector<std::uint8_t>({3})) << "stored after the clock was set back";

  const std::uint64_t before_stop = housekeeping.runs();
  housekeeping.stop();  // a last run, then none
  EXPECT_EQ(housekeeping.runs(), before_stop + 1);
  io_.run_for(std::chrono::milliseconds(30));
  EXPECT_EQ(housekeeping.runs(), before_stop + 1) << "no run after stop";
}

// A part whose slot expiry deleted while it was written (after its upload began, so the write
// made the file again) is refused with 404 when it is recorded, and leaves no file behind
// (before, the file stayed until the next start's sweep, counted by no quota).
TEST_F(ServiceTest, APartThatExpiryOvertookLeavesNoFile) {
  const std::int64_t now = clock_.now_ms();
  auto service = make_service();
  const std::string token = "token";
  const auto hash = crypto::sha256(as_bytes(token));
  store::Attachment a;
  a.id = std::string(32, 'c');
  a.upload_token_hash = Bytes(hash.begin(), hash.end());
  a.account_id = alice_.id;
  a.size = 100;
  a.created_ms = now - 1000;
  a.expires_ms = now + 60'000;
  std::promise<Result<store::AttachmentOutcome>> made;
  store_->create_attachment(a, store::AttachmentQuota{1000, 10, now},
                            [&](auto r) { made.set_value(std::move(r)); });
  ASSERT_EQ(made.get_future().get().value(), store::AttachmentOutcome::kCreated);
  std::filesystem::create_directories(config_.data_dir);
  auto files = make_attachment_files(*service);
  // Answers come on the store's thread or the io_context's (run here by run_until).
  const auto ready = [](auto& future) {
    return future.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  };
  std::promise<Result<transport::HttpFiles::Upload>> began;
  auto upload = began.get_future();
  files->begin_upload(a.id, token, [&](auto r) { began.set_value(std::move(r)); });
  run_until([&] { return ready(upload); });
  ASSERT_TRUE(ready(upload));
  const std::string path = upload.get().value().path;

  // Housekeeping runs: the row goes, then its file.
  std::promise<Result<std::vector<std::string>>> expired;
  store_->expire(a.expires_ms, kDayMs, kDayMs, [&](auto r) { expired.set_value(std::move(r)); });
  ASSERT_EQ(expired.get_future().get().value(), std::vector<std::string>{a.id});
  std::filesystem::remove(path);
  // The part's write, as put_attachment makes it, recreates the file.
  std::ofstream(path) << "ten bytes.";
  ASSERT_TRUE(std::filesystem::exists(path));

  std::promise<Result<std::uint64_t>> finished;
  auto recorded = finished.get_future();
  files->finish_upload(a.id, 10, [&](auto r) { finished.set_value(std::move(r)); });
  run_until([&] { return ready(recorded) && !std::filesystem::exists(path); });
  ASSERT_TRUE(ready(recorded));
  const Result<std::uint64_t> r = recorded.get();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace parley::server
