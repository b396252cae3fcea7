// The client's transports end to end (issue 5, client half): `parley transports` and
// `transport add/remove/enable/disable`, racing to a working transport when the direct address
// is dead, the winner remembered, and a link that drops or freezes under `receive --follow`
// replaced without losing or repeating a message. Real parleyd and parley processes; the
// "censor" is a SOCKS5 forwarder on loopback (tests/client/socks_forwarder.h).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/client/cli_support.h"
#include "tests/client/socks_forwarder.h"
#include "tests/server/harness.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Waits (bounded) until the file at `path` contains `needle`.
bool wait_for_text(const std::string& path, const std::string& needle,
                   std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (read_file(path).find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// A counter on parleyd's /metrics ("name{labels}"), or -1 when it cannot be read.
long long server_counter(const Parleyd& server, const std::string& series) {
  auto metrics = admin_get(server.admin_port(), "/metrics");
  if (!metrics) return -1;
  const auto at = metrics->find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(metrics->substr(at + series.size() + 2));
}

int count_of(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (auto at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

class TransportTest : public ::testing::Test {
 protected:
  void start() {
    auto d = Parleyd::start(dir_.path());
    ASSERT_TRUE(d.has_value()) << d.status().to_string();
    server_ = std::move(*d);
  }
  std::string profile(const std::string& name) const { return dir_.path() + "/p-" + name; }
  Ran parley(const std::string& who, std::vector<std::string> args) {
    args.insert(args.begin(), {"--profile", profile(who)});
    return run_parley(args);
  }
  // The server's invite with its port replaced by one where nothing listens: the direct
  // address of a profile registered with it is dead (connections are refused at once).
  std::string dead_invite() {
    const std::string live = server_->invite_link();
    const std::string port = ":" + std::to_string(server_->invite().port) + "/";
    std::string dead = live;
    dead.replace(dead.find(port), port.size(), ":" + std::to_string(free_port()) + "/");
    return dead;
  }
  // bob registers through a relay and follows; alice sends one, the relay is cut (or frozen),
  // alice sends two more: bob prints all three, once each, and nothing is left on the server.
  void run_follow_across(bool freeze);
  std::vector<nlohmann::json> transports(const std::string& who) {
    Ran r = parley(who, {"transports", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json_lines(r.out);
  }

  TempDir dir_;
  std::unique_ptr<Parleyd> server_;
};

TEST_F(TransportTest, AddValidatesListsRemovesAndDirectStays) {
  start();
  ASSERT_EQ(parley("alice", {"register", server_->invite_link(), "--name", "alice"}).exit_code, 0);
  auto list = transports("alice");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["id"], 1);
  EXPECT_EQ(list[0]["kind"], "direct");
  EXPECT_EQ(list[0]["enabled"], true);
  EXPECT_EQ(list[0]["preferred"], true);  // registration raced (alone) and won
  EXPECT_EQ(list[0]["last_result"], "ok");
  EXPECT_GT(list[0]["last_success_ms"].get<std::int64_t>(), 0);

  // Bad links: a clear error, exit 1, and nothing changes.
  const std::vector<std::vector<std::string>> bad = {
      {"socks5://127.0.0.1"},
      {"socks5://127.0.0.1:99999"},
      {"socks5://user@127.0.0.1:1080"},
      {"http://user:pw@127.0.0.1:3128"},
      {"https://127.0.0.1:443"},
      {"ftp://127.0.0.1:21"},
      {"obfs4", "192.0.2.1:443"},              // no cert, no iat-mode
      {"obfs4", "192.0.2.1:443", "cert=abc"},  // no iat-mode
      {"obfs4", "192.0.2.1", "cert=abc", "iat-mode=0"},
      {server_->invite_link()},  // a server invite is not a bridge link
      {"parley://127.0.0.1:9/?v=1&bridge=1&path=/x"},  // no pin
      {"direct"},
      {""}};
  for (const auto& words : bad) {
    std::vector<std::string> args = {"transport", "add"};
    args.insert(args.end(), words.begin(), words.end());
    Ran r = parley("alice", args);
    EXPECT_NE(r.exit_code, 0) << words[0];
    EXPECT_FALSE(r.err.empty()) << words[0];
  }
  EXPECT_EQ(transports("alice").size(), 1u);

  // Good ones, stored in canonical form.
  Ran a = parley("alice", {"transport", "add", "socks5://u:p@127.0.0.1:1080"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, "added transport 2\n");
  ASSERT_EQ(parley("alice", {"transport", "add", "http://127.0.0.1:3128/"}).exit_code, 0);
  // A Tor bridge line, unquoted, with its fingerprint (dropped) and another PT binary.
  Ran pt = parley("alice", {"transport", "add", "obfs4", "192.0.2.1:443",
                            "0123456789ABCDEF0123456789ABCDEF01234567", "cert=c2VjcmV0",
                            "iat-mode=0", "--pt-binary", "lyrebird"});
  ASSERT_EQ(pt.exit_code, 0) << pt.err;
  // The same again is refused.
  Ran dup = parley("alice", {"transport", "add", "socks5://u:p@127.0.0.1:1080"});
  EXPECT_EQ(dup.exit_code, 1);
  EXPECT_NE(dup.err.find("already"), std::string::npos) << dup.err;

  list = transports("alice");
  ASSERT_EQ(list.size(), 4u);
  EXPECT_EQ(list[1]["kind"], "socks5");
  EXPECT_EQ(list[1]["link"], "socks5://u:p@127.0.0.1:1080");
  EXPECT_EQ(list[1]["last_result"], "");
  EXPECT_EQ(list[2]["kind"], "http");
  EXPECT_EQ(list[2]["link"], "http://127.0.0.1:3128");
  EXPECT_EQ(list[3]["kind"], "pt");
  EXPECT_EQ(list[3]["link"], "obfs4 192.0.2.1:443 cert=c2VjcmV0 iat-mode=0");
  EXPECT_EQ(list[3]["pt_binary"], "lyrebird");

  Ran text = parley("alice", {"transports"});
  ASSERT_EQ(text.exit_code, 0);
  EXPECT_NE(text.out.find("1 direct [preferred] last: ok ("), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("3 http http://127.0.0.1:3128 last: never tried\n"), std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("(lyrebird)"), std::string::npos) << text.out;

  // Removing: any but direct, which can only be disabled.
  EXPECT_EQ(parley("alice", {"transport", "remove", "3"}).exit_code, 0);
  EXPECT_EQ(parley("alice", {"transport", "remove", "3"}).exit_code, 1);  // gone
  Ran keep = parley("alice", {"transport", "remove", "1"});
  EXPECT_EQ(keep.exit_code, 1);
  EXPECT_NE(keep.err.find("disable"), std::string::npos) << keep.err;
  ASSERT_EQ(parley("alice", {"transport", "disable", "1"}).exit_code, 0);
  list = transports("alice");
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0]["enabled"], false);
  ASSERT_EQ(parley("alice", {"transport", "enable", "1"}).exit_code, 0);
  EXPECT_EQ(transports("alice")[0]["enabled"], true);

  // Registration refuses a bad --transport before creating anything.
  Ran reg = parley("bob", {"register", server_->invite_link(), "--name", "bob", "--transport",
                           "socks5://nowhere"});
  EXPECT_EQ(reg.exit_code, 1);
  EXPECT_FALSE(fs::exists(profile("bob")));
}

TEST_F(TransportTest, RacingReachesTheServerThroughAProxyWhenDirectIsDeadAndRemembersIt) {
  start();
  SocksForwarder proxy(server_->invite().port);
  ASSERT_NE(proxy.port(), 0);
  const std::string socks = "socks5://127.0.0.1:" + std::to_string(proxy.port());

  // alice's direct address is dead: registration itself must go through the proxy.
  Ran reg = parley("alice", {"register", dead_invite(), "--name", "alice", "--transport", socks});
  ASSERT_EQ(reg.exit_code, 0) << reg.err;
  EXPECT_EQ(reg.out, "registered alice@127.0.0.1\n");
  const int after_registration = proxy.connections();
  EXPECT_GE(after_registration, 1);
  auto list = transports("alice");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["kind"], "direct");
  EXPECT_EQ(list[0]["preferred"], false);
  EXPECT_NE(list[0]["last_result"], "ok");
  EXPECT_NE(list[0]["last_result"], "");
  EXPECT_EQ(list[1]["link"], socks);
  EXPECT_EQ(list[1]["preferred"], true);
  EXPECT_EQ(list[1]["last_result"], "ok");

  ASSERT_EQ(parley("bob", {"register", server_->invite_link(), "--name", "bob"}).exit_code, 0);
  Ran sent = parley("alice", {"send", "bob", "through the proxy"});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  Ran got = parley("bob", {"receive", "--json", "--timeout", "20"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  auto msgs = json_lines(got.out);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["text"], "through the proxy");

  ASSERT_EQ(parley("bob", {"send", "alice", "and back"}).exit_code, 0);
  got = parley("alice", {"receive", "--json", "--timeout", "20"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  msgs = json_lines(got.out);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["text"], "and back");
  EXPECT_GT(proxy.connections(), after_registration);

  // The winner is remembered (it starts first next time) and stays the winner.
  list = transports("alice");
  EXPECT_EQ(list[1]["preferred"], true);
  EXPECT_EQ(list[1]["last_result"], "ok");

  // With the proxy disabled there is no way left: a clear error naming each transport.
  ASSERT_EQ(parley("alice", {"transport", "disable", "2"}).exit_code, 0);
  Ran none = parley("alice", {"receive", "--timeout", "5"});
  EXPECT_EQ(none.exit_code, 1);
  ASSERT_EQ(parley("alice", {"transport", "disable", "1"}).exit_code, 0);
  none = parley("alice", {"receive", "--timeout", "5"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("no transport is enabled"), std::string::npos) << none.err;
}

// The same through a parleyd bridge (`parleyd --bridge-to`): its link is added after
// registration, and the server's pin is still checked through it.
TEST_F(TransportTest, ABridgeWinsWhenDirectIsDeadAndTheWinnerIsRemembered) {
  start();
  TempDir bridge_dir;
  auto bridge = Parleyd::start(bridge_dir.path(), {"--bridge-to", "127.0.0.1:" +
                                                   std::to_string(server_->invite().port)});
  ASSERT_TRUE(bridge.has_value()) << bridge.status().to_string();
  const std::string bridge_link = (*bridge)->invite_link();
  ASSERT_NE(bridge_link.find("bridge=1"), std::string::npos) << bridge_link;

  // Registered directly; then the direct address "gets blocked" (disabled, as a dead one would
  // fail) and the bridge is added: every later command goes through the bridge.
  ASSERT_EQ(parley("alice", {"register", server_->invite_link(), "--name", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", server_->invite_link(), "--name", "bob"}).exit_code, 0);
  Ran added = parley("alice", {"transport", "add", bridge_link});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  ASSERT_EQ(parley("alice", {"transport", "disable", "1"}).exit_code, 0);
  Ran sent = parley("alice", {"send", "bob", "over the bridge"});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  auto list = transports("alice");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1]["kind"], "bridge");
  EXPECT_EQ(list[1]["preferred"], true);
  EXPECT_EQ(list[1]["last_result"], "ok");
  ASSERT_EQ(parley("alice", {"transport", "enable", "1"}).exit_code, 0);

  // A profile whose direct address is dead registers through the bridge.
  Ran reg = parley("carol", {"register", dead_invite(), "--name", "carol", "--transport",
                             bridge_link});
  ASSERT_EQ(reg.exit_code, 0) << reg.err;
  list = transports("carol");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1]["preferred"], true);
  EXPECT_NE(list[0]["last_result"], "ok");
  ASSERT_EQ(parley("carol", {"send", "bob", "me too"}).exit_code, 0);

  Ran got = parley("bob", {"receive", "--json", "--timeout", "20"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  auto msgs = json_lines(got.out);
  ASSERT_EQ(msgs.size(), 2u) << got.out;
  EXPECT_EQ(msgs[0]["text"], "over the bridge");
  EXPECT_EQ(msgs[1]["text"], "me too");

  // A bridge link sent as a message is recognised, with a hint.
  ASSERT_EQ(parley("bob", {"send", "alice", bridge_link}).exit_code, 0);
  Ran hint = parley("alice", {"receive", "--timeout", "20"});
  ASSERT_EQ(hint.exit_code, 0) << hint.err;
  EXPECT_NE(hint.out.find("(a bridge link: parley --profile"), std::string::npos) << hint.out;
}

// A bridge that names each client in a PROXY v2 header (`--bridge-proxy-header`) to a server
// that trusts only it for that (`--proxy-from`, here loopback, the bridge's address): clients
// get through the bridge; without it, from the same address, they are refused; a bridge that
// sends no header is refused too; the server's /metrics counts the refusals.
TEST_F(TransportTest, ABridgeThatNamesItsClientsReachesAServerThatTrustsIt) {
  auto d = Parleyd::start(dir_.path(), {"--proxy-from", "127.0.0.1"});
  ASSERT_TRUE(d.has_value()) << d.status().to_string();
  server_ = std::move(*d);
  const std::string upstream = "127.0.0.1:" + std::to_string(server_->invite().port);
  TempDir naming_dir, silent_dir;
  auto naming =
      Parleyd::start(naming_dir.path(), {"--bridge-to", upstream, "--bridge-proxy-header"});
  ASSERT_TRUE(naming.has_value()) << naming.status().to_string();
  auto silent = Parleyd::start(silent_dir.path(), {"--bridge-to", upstream});
  ASSERT_TRUE(silent.has_value()) << silent.status().to_string();

  Ran direct = parley("mallory", {"register", server_->invite_link(), "--name", "mallory"});
  EXPECT_NE(direct.exit_code, 0);
  Ran unnamed = parley("mallory", {"register", server_->invite_link(), "--name", "mallory",
                                   "--transport", (*silent)->invite_link()});
  EXPECT_NE(unnamed.exit_code, 0);
  for (const char* who : {"alice", "bob"}) {
    Ran reg = parley(who, {"register", server_->invite_link(), "--name", who, "--transport",
                           (*naming)->invite_link()});
    ASSERT_EQ(reg.exit_code, 0) << reg.err;
  }
  ASSERT_EQ(parley("alice", {"send", "bob", "named by the bridge"}).exit_code, 0);
  Ran got = parley("bob", {"receive", "--json", "--timeout", "20"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  auto msgs = json_lines(got.out);
  ASSERT_EQ(msgs.size(), 1u) << got.out;
  EXPECT_EQ(msgs[0]["text"], "named by the bridge");

  // mallory's two attempts at least; alice's and bob's connections, named by the bridge.
  EXPECT_GE(server_counter(*server_, "parley_connections_refused_total{reason=\"proxy_header\"}"),
            2);
  EXPECT_GE(server_counter(*server_, "parley_connections_relayed_total{via=\"proxy_header\"}"), 3);
}

// A server with obfs4proxy in front (`parleyd --obfs4`): its invite adds the obfs4 transport at
// registration, and with direct disabled the client starts its own obfs4proxy (PT v1 managed
// mode, state under PROFILE/pt) and goes through it.
TEST_F(TransportTest, AnInvitesObfs4EndpointIsAddedAtRegistrationAndWorks) {
  if (::system("command -v obfs4proxy >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "obfs4proxy is not installed";
  }
  auto d = Parleyd::start(dir_.path(), {"--obfs4", "127.0.0.1:" + std::to_string(free_port())});
  ASSERT_TRUE(d.has_value()) << d.status().to_string();
  server_ = std::move(*d);
  ASSERT_NE(server_->invite_link().find("obfs4="), std::string::npos) << server_->invite_link();
  ASSERT_EQ(parley("alice", {"register", server_->invite_link(), "--name", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", server_->invite_link(), "--name", "bob"}).exit_code, 0);
  auto list = transports("alice");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1]["kind"], "pt");
  EXPECT_EQ(list[1]["link"].get<std::string>().rfind("obfs4 127.0.0.1:", 0), 0u) << list[1];

  ASSERT_EQ(parley("alice", {"transport", "disable", "1"}).exit_code, 0);
  Ran sent = parley("alice", {"send", "bob", "through obfs4"});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  list = transports("alice");
  EXPECT_EQ(list[1]["preferred"], true);
  EXPECT_EQ(list[1]["last_result"], "ok");
  EXPECT_TRUE(fs::exists(profile("alice") + "/pt/obfs4"));
  Ran got = parley("bob", {"receive", "--json", "--timeout", "20"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  auto msgs = json_lines(got.out);
  ASSERT_EQ(msgs.size(), 1u) << got.out;
  EXPECT_EQ(msgs[0]["text"], "through obfs4");
  // obfs4proxy named alice on the server's Extended ORPort, with the cookie parleyd wrote.
  EXPECT_GE(server_counter(*server_, "parley_connections_relayed_total{via=\"ext_orport\"}"), 1);
  EXPECT_EQ(server_counter(*server_, "parley_connections_refused_total{reason=\"ext_orport\"}"), 0);
  const fs::path cookie = dir_.path() + "/d/pt/extended_orport_auth_cookie";
  EXPECT_EQ(fs::file_size(cookie), 64u);
  EXPECT_EQ(fs::status(cookie).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
}

// `receive --follow` whose link is cut (or frozen) mid-way reconnects, with back-off, and
// prints everything sent meanwhile exactly once.
TEST_F(TransportTest, ALinkCutUnderFollowIsReplacedAndNothingIsLostOrRepeated) {
  start();
  run_follow_across(/*freeze=*/false);
}

// The same across a link that goes silent instead (no reset): only the idle timeout
// (--idle-timeout 3: pings after 1.5 s, given up after 3 s) can tell, and the client moves on
// to a fresh connection.
TEST_F(TransportTest, ALinkFrozenUnderFollowIsGivenUpAfterTheIdleTimeout) {
  start();
  run_follow_across(/*freeze=*/true);
}

void TransportTest::run_follow_across(bool freeze) {
  // bob's direct address is a TCP relay to the server that the test can cut or freeze.
  SocksForwarder relay(server_->invite().port, /*plain=*/true);
  std::string invite = server_->invite_link();
  const std::string port = ":" + std::to_string(server_->invite().port) + "/";
  invite.replace(invite.find(port), port.size(), ":" + std::to_string(relay.port()) + "/");
  ASSERT_EQ(parley("bob", {"register", invite, "--name", "bob"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"register", server_->invite_link(), "--name", "alice"}).exit_code,
            0);
  const std::string log = dir_.path() + "/follow.log";
  auto follow = ParleyProcess::spawn({"--profile", profile("bob"), "--idle-timeout", "3",
                                      "receive", "--follow", "--json", "--timeout", "90"},
                                     log);
  ASSERT_TRUE(follow.has_value()) << follow.status().to_string();

  ASSERT_EQ(parley("alice", {"send", "bob", "one"}).exit_code, 0);
  ASSERT_TRUE(wait_for_text(log, "\"one\"", 30s)) << read_file(log);

  if (freeze) {
    relay.freeze_open();  // silence, no reset
  } else {
    relay.cut_all();  // a reset
  }
  ASSERT_EQ(parley("alice", {"send", "bob", "two"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"send", "bob", "three"}).exit_code, 0);
  ASSERT_TRUE(wait_for_text(log, "\"three\"", 30s)) << read_file(log);
  EXPECT_TRUE(wait_for_text(log, "reconnecting", 1s)) << read_file(log);

  (*follow)->terminate();
  const std::string out = read_file(log);
  for (const char* text : {"\"one\"", "\"two\"", "\"three\""}) {
    EXPECT_EQ(count_of(out, std::string("\"text\":") + text), 1) << text << "\n" << out;
  }
  EXPECT_EQ(json_lines(out).size(), 3u) << out;
  // And nothing is waiting on the server any more.
  Ran rest = parley("bob", {"receive", "--json", "--timeout", "10"});
  EXPECT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_TRUE(json_lines(rest.out).empty()) << rest.out;
}

}  // namespace
}  // namespace parley::testing
