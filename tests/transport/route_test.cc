// Client routes end to end, with real processes on loopback: SOCKS5 (microsocks, with and
// without user/pass), HTTP CONNECT (tinyproxy), a parleyd bridge in front of parleyd, obfs4
// (obfs4proxy as parleyd's server-side PT and as the client's PT), the pluggable-transport
// launcher's errors, and the client's liveness check on a frozen link.
//
// A proxy binary that is not installed makes its test report SKIPPED with the reason
// (scripts/lib/setup.sh installs them: microsocks, tinyproxy, obfs4proxy).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "tests/server/harness.h"
#include "transport/client.h"
#include "transport/pt.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;
using transport::Route;

bool executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

// A child process (a proxy) killed and reaped by the destructor.
class Child {
 public:
  static std::unique_ptr<Child> spawn(std::vector<std::string> argv, const std::string& log) {
    const pid_t pid = ::fork();
    if (pid < 0) return nullptr;
    if (pid == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
      }
      std::vector<char*> cargv;
      for (auto& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      ::execv(cargv[0], cargv.data());
      ::_exit(127);
    }
    auto c = std::make_unique<Child>();
    c->pid_ = pid;
    return c;
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// True once 127.0.0.1:port accepts a TCP connection (≤ 10 s).
bool wait_listening(std::uint16_t port) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (ok) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// Registers a fresh account over `o` and expects success.
void expect_register(const transport::ClientOptions& o, const std::string& name,
                     std::uint64_t seed) {
  TestClient c(o, seed);
  Status st = c.connect();
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  auto r = c.register_account(name);
  ASSERT_TRUE(r.has_value()) << r.status().to_string();
  EXPECT_EQ(r->status(), 0u) << r->message();
}

Status connect_status(const transport::ClientOptions& o) {
  auto c = transport::BlockingWsClient::connect(o);
  return c.status();
}

class RouteTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    auto d = Parleyd::start(dir_->path() + "/server");
    ASSERT_TRUE(d.has_value()) << d.status().to_string();
    server_ = d->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static transport::ClientOptions base() {
    auto o = server_->client_options();
    o.connect_timeout = 5s;
    return o;
  }
  static std::string log(const std::string& name) { return dir_->path() + "/" + name + ".log"; }

  static TempDir* dir_;
  static Parleyd* server_;
};
TempDir* RouteTest::dir_ = nullptr;
Parleyd* RouteTest::server_ = nullptr;

// --- SOCKS5 -----------------------------------------------------------------------------------

TEST_F(RouteTest, Socks5WithoutAuth) {
  if (!executable("/usr/bin/microsocks")) GTEST_SKIP() << "microsocks not installed";
  const std::uint16_t port = free_port();
  auto proxy = Child::spawn({"/usr/bin/microsocks", "-i", "127.0.0.1", "-p", std::to_string(port)},
                            log("microsocks"));
  ASSERT_TRUE(proxy && wait_listening(port));
  auto o = base();
  o.route.kind = Route::Kind::kSocks5;
  o.route.via_host = "127.0.0.1";
  o.route.via_port = port;
  expect_register(o, "socks_alice", 11);

  // Attachments' HTTPS goes the same way.
  transport::HttpsClient https(o);
  auto site = https.get("/");
  ASSERT_TRUE(site.has_value()) << site.status().to_string();
  EXPECT_EQ(site->status, 200u);

  // The proxy cannot reach the target: its reply code is named.
  o.host = "127.0.0.1";
  o.port = free_port();
  Status st = connect_status(o);
  EXPECT_EQ(st.code(), ErrorCode::kIo);
  EXPECT_NE(st.message().find("socks5: proxy refused: "), std::string::npos) << st.to_string();
}

TEST_F(RouteTest, Socks5UserPassword) {
  if (!executable("/usr/bin/microsocks")) GTEST_SKIP() << "microsocks not installed";
  const std::uint16_t port = free_port();
  auto proxy = Child::spawn({"/usr/bin/microsocks", "-i", "127.0.0.1", "-p", std::to_string(port),
                             "-u", "parley", "-P", "s3cret"},
                            log("microsocks-auth"));
  ASSERT_TRUE(proxy && wait_listening(port));
  auto o = base();
  o.route.kind = Route::Kind::kSocks5;
  o.route.via_host = "127.0.0.1";
  o.route.via_port = port;
  o.route.socks_username = "parley";
  o.route.socks_password = "s3cret";
  expect_register(o, "socks_carol", 21);

  o.route.socks_password = "wrong";
  Status st = connect_status(o);
  EXPECT_EQ(st.code(), ErrorCode::kPermissionDenied) << st.to_string();
  EXPECT_EQ(st.message(), "socks5: proxy refused the credentials");

  o.route.socks_username.clear();
  o.route.socks_password.clear();
  st = connect_status(o);
  EXPECT_EQ(st.code(), ErrorCode::kIo) << st.to_string();
  EXPECT_EQ(st.message(), "socks5: proxy accepts none of our auth methods");
}

TEST_F(RouteTest, ProxyNotListening) {
  auto o = base();
  o.route.kind = Route::Kind::kSocks5;
  o.route.via_host = "127.0.0.1";
  o.route.via_port = free_port();
  Status st = connect_status(o);
  EXPECT_EQ(st.code(), ErrorCode::kIo);
  EXPECT_EQ(st.message().rfind("socks5: proxy connect: ", 0), 0u) << st.to_string();
  o.route.via_port = 0;
  EXPECT_EQ(connect_status(o).code(), ErrorCode::kInvalidArgument);
}

// A one-connection SOCKS5 server that answers with canned bytes: the client validates every
// reply byte. Reads are bounded (SO_RCVTIMEO), so the thread always ends.
class CannedSocks {
 public:
  CannedSocks(std::string greeting_reply, std::string connect_reply)
      : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 1);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this, g = std::move(greeting_reply), c = std::move(connect_reply)] {
      const int conn = ::accept(fd_, nullptr, nullptr);
      if (conn < 0) return;
      timeval tv{5, 0};
      ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char buf[512];
      ssize_t n = 0;
      if (::read(conn, buf, 3) == 3 && ::write(conn, g.data(), g.size()) > 0 && !c.empty() &&
          (n = ::read(conn, buf, sizeof buf)) > 0) {
        second_.assign(buf, static_cast<std::size_t>(n));
        (void)!::write(conn, c.data(), c.size());
      }
      while (::read(conn, buf, sizeof buf) > 0) {
      }
      ::close(conn);
    });
  }
  ~CannedSocks() {
    finish();
    ::close(fd_);
  }
  std::uint16_t port() const { return port_; }
  // Ends the server; returns the client's second message (after the greeting).
  std::string finish() {
    if (thread_.joinable()) {
      ::shutdown(fd_, SHUT_RDWR);
      thread_.join();
    }
    return second_;
  }

 private:
  int fd_;
  std::string second_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

TEST_F(RouteTest, Socks5RepliesAreValidated) {
  struct Case {
    std::string greeting, connect, error;
  };
  const std::string ok_greeting("\x05\x00", 2);
  const std::vector<Case> cases = {
      {std::string("\x04\x00", 2), "", "socks5: not a SOCKS5 proxy"},
      {std::string("\x05\xff", 2), "", "socks5: proxy accepts none of our auth methods"},
      {std::string("\x05\x02", 2), "", "socks5: proxy chose an auth method not offered"},
      {ok_greeting, std::string("\x05\x02\x00\x01", 4),
       "socks5: proxy refused: connection not allowed by ruleset"},
      {ok_greeting, std::string("\x05\x00\x01\x01", 4), "socks5: bad reply"},
      {ok_greeting, std::string("\x05\x00\x00\x07", 4), "socks5: bad reply address type"},
  };
  for (const auto& c : cases) {
    CannedSocks fake(c.greeting, c.connect);
    auto o = base();
    o.connect_timeout = 2s;
    o.route.kind = Route::Kind::kSocks5;
    o.route.via_host = "127.0.0.1";
    o.route.via_port = fake.port();
    Status st = connect_status(o);
    EXPECT_EQ(st.message(), c.error) << st.to_string();
  }
}

// PT arguments over 255 bytes continue from the username into the password (pt-spec).
TEST_F(RouteTest, Socks5LongPtArguments) {
  CannedSocks fake(std::string("\x05\x02", 2), std::string("\x01\x01", 2));
  auto o = base();
  o.connect_timeout = 2s;
  o.route.kind = Route::Kind::kSocks5;
  o.route.via_host = "127.0.0.1";
  o.route.via_port = fake.port();
  const std::string args = "cert=" + std::string(300, 'c') + ";iat-mode=0";
  o.route.socks_username = args;
  o.route.socks_password = std::string(1, '\0');
  Status st = connect_status(o);
  EXPECT_EQ(st.message(), "socks5: proxy refused the credentials");
  const std::string auth = fake.finish();
  ASSERT_EQ(auth.size(), 3 + args.size());
  EXPECT_EQ(auth[0], '\x01');
  EXPECT_EQ(static_cast<unsigned char>(auth[1]), 255u);
  EXPECT_EQ(auth.substr(2, 255), args.substr(0, 255));
  EXPECT_EQ(static_cast<unsigned char>(auth[257]), args.size() - 255);
  EXPECT_EQ(auth.substr(258), args.substr(255));
}

// --- HTTP CONNECT ------------------------------------------------------------------------------

TEST_F(RouteTest, HttpConnect) {
  if (!executable("/usr/bin/tinyproxy")) GTEST_SKIP() << "tinyproxy not installed";
  const std::uint16_t port = free_port();
  const std::string conf = dir_->path() + "/tinyproxy.conf";
  {
    std::ofstream f(conf);
    f << "Port " << port << "\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\n"
      << "MaxClients 20\nLogLevel Warning\n";
    if (::geteuid() == 0) f << "User nobody\nGroup nogroup\n";
  }
  auto proxy = Child::spawn({"/usr/bin/tinyproxy", "-d", "-c", conf}, log("tinyproxy"));
  ASSERT_TRUE(proxy && wait_listening(port)) << "tinyproxy did not start (see its log)";
  auto o = base();
  o.route.kind = Route::Kind::kHttpConnect;
  o.route.via_host = "127.0.0.1";
  o.route.via_port = port;
  expect_register(o, "connect_dave", 31);

  transport::HttpsClient https(o);
  auto site = https.get("/");
  ASSERT_TRUE(site.has_value()) << site.status().to_string();
  EXPECT_EQ(site->status, 200u);

  o.port = free_port();  // nothing there: the proxy answers with an error status
  Status st = connect_status(o);
  EXPECT_EQ(st.code(), ErrorCode::kIo);
  EXPECT_EQ(st.message().rfind("http connect: proxy answered ", 0), 0u) << st.to_string();
}

// --- Bridge ------------------------------------------------------------------------------------

class BridgeTest : public RouteTest {
 protected:
  void SetUp() override {
    RouteTest::SetUp();
    const auto& inv = server_->invite();
    auto b = Parleyd::start(dir_->path() + "/bridge" + std::to_string(++n_),
                            {"--bridge-to", inv.host + ":" + std::to_string(inv.port)});
    ASSERT_TRUE(b.has_value()) << b.status().to_string();
    bridge_ = std::move(*b);
    ASSERT_TRUE(bridge_->invite().is_bridge) << bridge_->invite_link();
  }
  transport::ClientOptions through_bridge() const {
    auto o = base();
    const auto& b = bridge_->invite();
    o.route.kind = Route::Kind::kBridge;
    o.route.via_host = b.host;
    o.route.via_port = b.port;
    o.route.bridge_pin_sha256 = b.pin_sha256;
    o.route.bridge_path = b.ws_path;
    return o;
  }
  // The bridge itself, as a direct HTTPS server (what a censor's scanner sees).
  transport::ClientOptions bridge_direct() const {
    auto o = base();
    o.host = bridge_->invite().host;
    o.port = bridge_->invite().port;
    o.pin_sha256 = bridge_->invite().pin_sha256;
    o.ws_path = bridge_->invite().ws_path;
    return o;
  }
  std::unique_ptr<Parleyd> bridge_;
  static inline int n_ = 0;
};

TEST_F(BridgeTest, LinkFormat) {
  const std::string& link = bridge_->invite_link();
  EXPECT_EQ(link.rfind("parley://127.0.0.1:", 0), 0u) << link;
  EXPECT_NE(link.find("&bridge=1&"), std::string::npos) << link;
  EXPECT_EQ(link.find("name="), std::string::npos) << link;
  EXPECT_NE(bridge_->invite().pin_sha256, server_->invite().pin_sha256);
  EXPECT_NE(bridge_->invite().ws_path, server_->invite().ws_path);
}

TEST_F(BridgeTest, WebSocketAndHttpsThroughTheBridge) {
  auto o = through_bridge();
  TestClient c(o, 41);
  Status st = c.connect();
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  auto reg = c.register_account("bridge_erin");
  ASSERT_TRUE(reg.has_value()) << reg.status().to_string();
  EXPECT_EQ(reg->status(), 0u) << reg->message();
  // A fresh connection through the bridge: the challenge-response login.
  c.disconnect();
  st = c.connect();
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  auto login = c.login();
  ASSERT_TRUE(login.has_value()) << login.status().to_string();
  EXPECT_EQ(login->status(), 0u) << login->message();

  transport::HttpsClient https(o);
  auto site = https.get("/");
  ASSERT_TRUE(site.has_value()) << site.status().to_string();
  EXPECT_EQ(site->status, 200u);
}

// A bridge's admin listener shows its connections and the accept caps at work.
TEST_F(BridgeTest, MetricsCountConnectionsAndRefusals) {
  auto metrics = admin_get(bridge_->admin_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value()) << metrics.status().to_string();
  EXPECT_NE(metrics->find("parley_bridge_connections 0"), std::string::npos) << *metrics;
  EXPECT_NE(metrics->find("parley_connections_refused_total{reason=\"max_connections\"} 0"),
            std::string::npos)
      << *metrics;
  EXPECT_NE(metrics->find("parley_connections_refused_total{reason=\"handshakes_per_ip\"} 0"),
            std::string::npos)
      << *metrics;
}

TEST_F(BridgeTest, InnerPinIsCheckedThroughTheBridge) {
  auto o = through_bridge();
  o.pin_sha256 = bridge_->invite().pin_sha256;  // the bridge's pin is not the server's
  Status st = connect_status(o);
  EXPECT_EQ(st.code(), ErrorCode::kPermissionDenied) << st.to_string();
  EXPECT_EQ(st.message(), "certificate pin mismatch");

  o = through_bridge();
  o.route.bridge_pin_sha256 = server_->invite().pin_sha256;
  st = connect_status(o);
  EXPECT_EQ(st.code(), ErrorCode::kPermissionDenied) << st.to_string();
  EXPECT_EQ(st.message(), "bridge certificate pin mismatch");

  o = through_bridge();
  o.route.bridge_path = "/not-the-secret";
  st = connect_status(o);
  EXPECT_EQ(st.code(), ErrorCode::kIo) << st.to_string();
  EXPECT_EQ(st.message(), "bridge: no upgrade (404)");
}

// Without the secret, the bridge is a website as parleyd is, answer for answer: the same
// statuses and header fields, but its own built-in site (its own DIR/site_seed), so that the
// bridge cannot be found by matching the server's pages.
TEST_F(BridgeTest, LooksLikeTheWebsite) {
  transport::HttpsClient server_https(base());
  transport::HttpsClient bridge_https(bridge_direct());
  for (const char* path : {"/", "/index.html", "/no/such/page", "/robots.txt"}) {
    auto a = server_https.get(path);
    auto b = bridge_https.get(path);
    ASSERT_TRUE(a.has_value() && b.has_value()) << path;
    EXPECT_EQ(a->status, b->status) << path;
    std::vector<std::string> ha, hb;
    for (const auto& h : a->headers) ha.push_back(h.first);
    for (const auto& h : b->headers) hb.push_back(h.first);
    EXPECT_EQ(ha, hb) << path;
    if (std::string_view(path) == "/") {
      EXPECT_NE(a->body, b->body);
      EXPECT_NE(a->header("ETag"), b->header("ETag"));
    }
  }
  // A WebSocket upgrade on a wrong path gets the site's own 404, as on parleyd.
  const std::string upgrade =
      "GET /wrong HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
  auto a = server_https.raw_exchange_for_test(upgrade, 1500ms);
  auto b = bridge_https.raw_exchange_for_test(upgrade, 1500ms);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(a->substr(0, a->find("\r\n")), b->substr(0, b->find("\r\n")));
  auto a404 = server_https.get("/wrong");
  auto b404 = bridge_https.get("/wrong");
  ASSERT_TRUE(a404.has_value() && b404.has_value());
  EXPECT_EQ(a->substr(a->find("\r\n\r\n") + 4), a404->body);
  EXPECT_EQ(b->substr(b->find("\r\n\r\n") + 4), b404->body);
}

// --- obfs4 -------------------------------------------------------------------------------------

TEST(Obfs4Test, ParleydBehindObfs4) {
  if (!executable("/usr/bin/obfs4proxy")) GTEST_SKIP() << "obfs4proxy not installed";
  TempDir dir;
  auto d = Parleyd::start(dir.path() + "/server", {"--obfs4", "127.0.0.1:0", "--pt-binary",
                                                   "/usr/bin/obfs4proxy"});
  ASSERT_TRUE(d.has_value()) << d.status().to_string();
  const wire::Invite& inv = (*d)->invite();
  ASSERT_EQ(inv.obfs4_host, "127.0.0.1") << (*d)->invite_link();
  ASSERT_NE(inv.obfs4_port, 0);
  ASSERT_EQ(inv.obfs4_args.rfind("cert=", 0), 0u) << inv.obfs4_args;

  transport::PtClientOptions po;
  po.binary = "/usr/bin/obfs4proxy";
  po.state_dir = dir.path() + "/pt-client";
  auto pt = transport::PtClient::start(po);
  ASSERT_TRUE(pt.has_value()) << pt.status().to_string();
  EXPECT_EQ((*pt)->socks_host(), "127.0.0.1");

  auto o = (*d)->client_options();
  o.connect_timeout = 10s;
  o.host = inv.obfs4_host;
  o.port = inv.obfs4_port;
  o.route = (*pt)->route(inv.obfs4_args);
  EXPECT_EQ(o.route.socks_username.find(','), std::string::npos) << o.route.socks_username;
  expect_register(o, "obfs4_frank", 51);

  // A wrong cert: the obfs4 handshake cannot complete.
  auto bad = o;
  std::string args = inv.obfs4_args;
  args[5] = args[5] == 'A' ? 'B' : 'A';
  bad.route = (*pt)->route(args);
  bad.connect_timeout = 3s;
  EXPECT_FALSE(connect_status(bad).is_ok());

  // obfs4proxy ends with parleyd (SIGTERM drain).
  EXPECT_EQ((*d)->terminate(), 0);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  bool closed = false;
  while (!closed && std::chrono::steady_clock::now() < deadline) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(inv.obfs4_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    closed = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0;
    ::close(fd);
    if (!closed) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(closed) << "obfs4proxy still listening after parleyd exited";
}

// --- the PT launcher's errors ------------------------------------------------------------------

std::string fake_pt(const TempDir& dir, const std::string& name, const std::string& script) {
  const std::string path = dir.path() + "/" + name;
  std::ofstream(path) << "#!/bin/sh\n" << script;
  ::chmod(path.c_str(), 0700);
  return path;
}

TEST(PtLauncherTest, Errors) {
  TempDir dir;
  transport::PtClientOptions o;
  o.state_dir = dir.path() + "/state";
  o.start_timeout = 2s;

  o.binary = dir.path() + "/missing";
  auto r = transport::PtClient::start(o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound) << r.error().to_string();

  o.binary = fake_pt(dir, "cmerr", "echo 'VERSION 1'\necho 'CMETHOD-ERROR obfs4 no luck'\n");
  r = transport::PtClient::start(o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kIo);
  EXPECT_EQ(r.error().message(), "pt: CMETHOD-ERROR obfs4 no luck");

  o.binary = fake_pt(dir, "enverr", "echo 'ENV-ERROR no TOR_PT_STATE_LOCATION'\n");
  r = transport::PtClient::start(o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "pt: ENV-ERROR no TOR_PT_STATE_LOCATION");

  o.binary = fake_pt(dir, "silent", "sleep 30\n");
  o.start_timeout = 300ms;
  const auto t0 = std::chrono::steady_clock::now();
  r = transport::PtClient::start(o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable) << r.error().to_string();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);  // the child is killed, not awaited

  o.start_timeout = 2s;
  o.binary = fake_pt(dir, "exits", "echo 'VERSION 1'\nexit 1\n");
  r = transport::PtClient::start(o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kIo) << r.error().to_string();

  o.binary = fake_pt(dir, "longline", "echo 'VERSION 1'\nhead -c 10000 /dev/zero | tr '\\0' x\n");
  r = transport::PtClient::start(o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "pt: line too long");

  // A well-behaved fake: the environment is as the spec says, the CMETHOD is parsed.
  o.binary = fake_pt(dir, "good",
                     "[ \"$TOR_PT_MANAGED_TRANSPORT_VER\" = 1 ] || exit 3\n"
                     "[ \"$TOR_PT_CLIENT_TRANSPORTS\" = obfs4 ] || exit 3\n"
                     "[ \"$TOR_PT_EXIT_ON_STDIN_CLOSE\" = 1 ] || exit 3\n"
                     "[ -d \"$TOR_PT_STATE_LOCATION\" ] || exit 3\n"
                     "echo 'VERSION 1'\necho 'CMETHOD obfs4 socks5 127.0.0.1:4321'\n"
                     "echo 'CMETHODS DONE'\ncat >/dev/null\n");
  r = transport::PtClient::start(o);
  ASSERT_TRUE(r.has_value()) << r.status().to_string();
  EXPECT_EQ((*r)->socks_port(), 4321);
  auto route = (*r)->route("cert=abc,iat-mode=0");
  EXPECT_EQ(route.kind, Route::Kind::kSocks5);
  EXPECT_EQ(route.via_port, 4321);
  EXPECT_EQ(route.socks_username, "cert=abc;iat-mode=0");
  EXPECT_EQ(route.socks_password, std::string(1, '\0'));

  transport::PtServerOptions so;
  so.state_dir = dir.path() + "/sstate";
  so.bind_addr = "127.0.0.1:0";
  so.orport = "127.0.0.1:1";
  so.binary = fake_pt(dir, "server",
                      "[ \"$TOR_PT_SERVER_BINDADDR\" = obfs4-127.0.0.1:0 ] || exit 3\n"
                      "[ \"$TOR_PT_ORPORT\" = 127.0.0.1:1 ] || exit 3\n"
                      "echo 'VERSION 1'\necho 'SMETHOD obfs4 127.0.0.1:5555 ARGS:cert=xyz,iat-mode=0'\n"
                      "echo 'SMETHODS DONE'\ncat >/dev/null\n");
  auto s = transport::PtServer::start(so);
  ASSERT_TRUE(s.has_value()) << s.status().to_string();
  EXPECT_EQ((*s)->port(), 5555);
  EXPECT_EQ((*s)->args(), "cert=xyz,iat-mode=0");
}

// --- liveness on a frozen link -----------------------------------------------------------------

TEST(LivenessTest, FrozenLinkIsDetected) {
  TempDir dir;
  auto d = Parleyd::start(dir.path() + "/server");
  ASSERT_TRUE(d.has_value()) << d.status().to_string();
  auto o = (*d)->client_options();
  o.idle_timeout = 1000ms;
  auto c = transport::BlockingWsClient::connect(o);
  ASSERT_TRUE(c.has_value()) << c.status().to_string();
  auto challenge = (*c)->receive(5s);
  ASSERT_TRUE(challenge.has_value()) << challenge.status().to_string();
  // The kernel keeps the TCP connection up; nothing more comes from the application.
  ASSERT_EQ(::kill((*d)->pid(), SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto next = (*c)->receive(10s);
  const auto waited = std::chrono::steady_clock::now() - t0;
  ::kill((*d)->pid(), SIGCONT);
  ASSERT_FALSE(next.has_value());
  EXPECT_EQ(next.error().code(), ErrorCode::kIo);
  EXPECT_EQ(next.error().message(), "link stalled");
  EXPECT_LT(waited, 4s);
}

}  // namespace
}  // namespace parley::testing
