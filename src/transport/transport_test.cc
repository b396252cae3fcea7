// Real TLS on 127.0.0.1: the static site, WebSocket sessions and their limits, attachments,
// pinning, and robustness against bad peers. Every wait is bounded.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "crypto/primitives.h"
#include "crypto/x509.h"
#include "transport/admin.h"
#include "transport/client.h"
#include "transport/internal/proxy_header.h"
#include "transport/io_pool.h"
#include "transport/server.h"
#include "transport/static_site.h"
#include "transport/testing/support.h"

namespace parley::transport {
namespace {

using namespace std::chrono_literals;

const crypto::TlsIdentity& identity() { return test_support::test_identity(); }

Bytes pin() {
  auto p = crypto::certificate_pin(identity().cert_pem);
  if (!p) std::abort();
  return Bytes(p->begin(), p->end());
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

template <typename Pred>
bool wait_for(Pred pred, std::chrono::milliseconds timeout = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// Attachments in a temp directory: id -> token, size, have.
class TestFiles final : public HttpFiles {
 public:
  explicit TestFiles(std::filesystem::path dir) : dir_(std::move(dir)) {}
  void add(const std::string& id, const std::string& token, std::uint64_t size) {
    std::lock_guard lock(mu_);
    entries_[id] = Entry{token, size, 0};
  }
  std::uint64_t have(const std::string& id) {
    std::lock_guard lock(mu_);
    return entries_[id].have;
  }
  void set_have(const std::string& id, std::uint64_t have) {
    std::lock_guard lock(mu_);
    entries_[id].have = have;
  }
  // While held, every call waits; release() answers those waiting from the calling thread, as
  // a store answers from its own.
  void hold(bool on = true) {
    std::lock_guard lock(mu_);
    held_ = on;
  }
  std::size_t waiting() {
    std::lock_guard lock(mu_);
    return waiting_.size();
  }
  void release() {
    std::vector<std::function<void()>> run;
    {
      std::lock_guard lock(mu_);
      run.swap(waiting_);
    }
    for (auto& f : run) f();
  }
  // Answers only the newest call waiting.
  void release_newest() {
    std::function<void()> f;
    {
      std::lock_guard lock(mu_);
      if (waiting_.empty()) return;
      f = std::move(waiting_.back());
      waiting_.pop_back();
    }
    f();
  }
  void begin_upload(std::string id, std::string token, Done<Result<Upload>> done) override {
    answer([this, id, token, done] {
      std::lock_guard lock(mu_);
      auto it = entries_.find(id);
      if (it == entries_.end()) return done(make_error(ErrorCode::kNotFound, "no such upload"));
      if (it->second.token != token) {
        return done(make_error(ErrorCode::kPermissionDenied, "bad token"));
      }
      done(Upload{(dir_ / id).string(), it->second.size, it->second.have});
    });
  }
  // As the store: progress only moves forward, and the answer is what is recorded.
  void finish_upload(std::string id, std::uint64_t have,
                     Done<Result<std::uint64_t>> done) override {
    answer([this, id, have, done] {
      std::lock_guard lock(mu_);
      auto it = entries_.find(id);
      if (it == entries_.end()) return done(make_error(ErrorCode::kNotFound, "no such upload"));
      if (have > it->second.size) {
        return done(make_error(ErrorCode::kInvalidArgument, "bad offset"));
      }
      it->second.have = std::max(it->second.have, have);
      done(it->second.have);
    });
  }
  void open_download(std::string id, Done<Result<Download>> done) override {
    answer([this, id, done] {
      std::lock_guard lock(mu_);
      auto it = entries_.find(id);
      if (it == entries_.end() || it->second.have != it->second.size) {
        return done(make_error(ErrorCode::kNotFound, "no such attachment"));
      }
      done(Download{(dir_ / id).string(), it->second.size});
    });
  }

 private:
  struct Entry {
    std::string token;
    std::uint64_t size = 0;
    std::uint64_t have = 0;
  };
  // Runs `f` now (on the io thread, before the call returns), or at release() while held.
  void answer(std::function<void()> f) {
    {
      std::lock_guard lock(mu_);
      if (held_) return waiting_.push_back(std::move(f));
    }
    f();
  }

  std::filesystem::path dir_;
  std::mutex mu_;
  bool held_ = false;
  std::vector<std::function<void()>> waiting_;
  std::map<std::string, Entry> entries_;
};

// Echoes every message; the "flood" handler instead floods the peer from another thread.
struct Shared {
  std::atomic<int> opened{0};
  std::atomic<int> closed{0};
  std::atomic<bool> flood{false};
  std::atomic<std::size_t> max_queued{0};
  std::atomic<bool> flood_refused{false};
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<std::thread::id> open_threads;  // guarded by mu: where each on_open ran
  std::atomic<int> moved{0};                  // messages handled off their on_open thread
  std::vector<std::string> remote_ips;        // guarded by mu: each WebSocket's remote_ip()
  // Instead of echoing, answers "<message>-1" from another thread, then "<message>-2" from
  // the connection's own thread.
  std::atomic<bool> two_threads{false};
  // The handler throws on the message "throw".
  std::atomic<bool> throw_on_message{false};
};

class EchoHandler final : public WsHandler {
 public:
  explicit EchoHandler(Shared& shared) : shared_(shared) {}
  void on_open(std::shared_ptr<WsConnection> conn) override {
    conn_ = conn;
    open_thread_ = std::this_thread::get_id();
    {
      std::lock_guard lock(shared_.mu);
      shared_.open_threads.push_back(open_thread_);
    }
    shared_.opened++;
    if (shared_.flood.load()) {
      std::weak_ptr<WsConnection> weak = conn;
      std::lock_guard lock(shared_.mu);
      shared_.threads.emplace_back([weak, &shared = shared_] {
        auto msg = std::make_shared<const std::string>(32 * 1024, 'x');
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (std::chrono::steady_clock::now() < deadline) {
          auto c = weak.lock();
          if (!c) return;
          bool ok = c->send(msg);
          std::size_t q = c->queued_bytes();
          std::size_t prev = shared.max_queued.load();
          while (q > prev && !shared.max_queued.compare_exchange_weak(prev, q)) {
          }
          if (!ok) {
            shared.flood_refused = true;
            return;
          }
          std::this_thread::sleep_for(1ms);
        }
      });
    }
  }
  void on_message(std::string_view message) override {
    if (shared_.throw_on_message.load() && message == "throw") throw std::runtime_error("boom");
    if (std::this_thread::get_id() != open_thread_) shared_.moved++;
    auto c = conn_.lock();
    if (!c) return;
    if (shared_.two_threads.load()) {
      // The first send is posted to this thread, which cannot run it before this returns.
      std::thread([c, first = std::string(message) + "-1"] {
        c->send(std::make_shared<const std::string>(first));
      }).join();
      c->send(std::make_shared<const std::string>(std::string(message) + "-2"));
      return;
    }
    c->send(std::make_shared<const std::string>(message));
  }
  void on_close() override { shared_.closed++; }

 private:
  Shared& shared_;
  std::weak_ptr<WsConnection> conn_;
  std::thread::id open_thread_;
};

constexpr std::string_view kWsPath = "/k3J9xQ2mVt/ws";

class TransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test_support::fresh_test_dir("transport_test");
    files_ = std::make_unique<TestFiles>(dir_);
    options_.cert_pem = identity().cert_pem;
    options_.key_pem = identity().key_pem;
    options_.ws_path = std::string(kWsPath);
    options_.max_message_size = 64 * 1024;
    options_.max_http_body = 1024 * 1024;
    options_.write_queue_limit = 256 * 1024;
    options_.handshake_timeout = 3s;
    options_.idle_timeout = 20s;
    options_.ping_interval = 5s;
    options_.files_timeout = 30s;  // above any hold of TestFiles' answers a test makes
  }

  void start(std::size_t max_connections = 100) {
    options_.max_connections = max_connections;
    start_server();
    thread_ = std::thread([this] { io_.run(); });
  }

  // `attempts`: the old listening socket of a restart closes on the io thread
  // (stop_accepting posts it), so the bind is retried for a while.
  void start_server(int attempts = 1) {
    auto make = [this] {
      return Server::start(
          io_, options_,
          [this](const std::string& remote_ip) {
            std::lock_guard lock(shared_.mu);
            shared_.remote_ips.push_back(remote_ip);
            return std::make_unique<EchoHandler>(shared_);
          },
          files_.get());
    };
    auto server = make();
    for (int i = 1; i < attempts && !server; ++i) {
      std::this_thread::sleep_for(10ms);
      server = make();
    }
    ASSERT_TRUE(server.has_value()) << server.error().to_string();
    server_ = std::move(server).value();
  }

  // A new server (with options_ as they are now) in place of the running one, on its port.
  void restart_on_the_same_port() {
    options_.listen_port = server_->port();
    stop_server();
    start_server(500);
  }

  void stop_server() {
    server_->stop_accepting();
    server_->close_all("test over");
    EXPECT_TRUE(wait_for([&] { return server_->connection_count() == 0; }, 10000ms));
    server_.reset();
  }

  void TearDown() override {
    files_->hold(false);
    files_->release();  // what a failed test left waiting
    if (server_) stop_server();
    {
      std::lock_guard lock(shared_.mu);
      for (auto& t : shared_.threads) t.join();
      shared_.threads.clear();
    }
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  ClientOptions client_options() const {
    ClientOptions o;
    o.host = "127.0.0.1";
    o.port = server_->port();
    o.ws_path = std::string(kWsPath);
    o.pin_sha256 = pin();
    o.connect_timeout = 3000ms;
    o.max_message_size = 1024 * 1024;
    return o;
  }

  std::unique_ptr<BlockingWsClient> ws() {
    auto c = BlockingWsClient::connect(client_options());
    EXPECT_TRUE(c.has_value()) << c.error().to_string();
    return c ? std::move(c).value() : nullptr;
  }

  static void expect_echo(BlockingWsClient& c, const std::string& m) {
    ASSERT_TRUE(c.send(as_bytes(m)).is_ok());
    auto got = c.receive(3000ms);
    ASSERT_TRUE(got.has_value()) << got.error().to_string();
    EXPECT_EQ(*got, m);
  }

  std::string att(const std::string& id) const { return std::string(kWsPath) + "/att/" + id; }
  // Starts the upload part of all 1,000 bytes of attachment `id` on `peer`, sends its first
  // 400 ('a'), and waits until the server has opened the file (the bytes wait in its buffer for
  // more). Use with ASSERT_NO_FATAL_FAILURE.
  void begin_part(test_support::TlsPeer& peer, const std::string& id, const std::string& token) {
    ASSERT_EQ(peer.connect(server_->port()), "");
    const std::string request =
        "PUT " + att(id) + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
        "\r\nContent-Range: bytes 0-999/1000\r\nContent-Length: 1000\r\n\r\n" +
        std::string(400, 'a');
    ASSERT_EQ(SSL_write(peer.ssl(), request.data(), static_cast<int>(request.size())),
              static_cast<int>(request.size()));
    ASSERT_TRUE(wait_for([&] { return std::filesystem::exists(dir_ / id); }));
  }

  // Bridge mode (options_) to an upstream that the test accepts on itself: its listening socket
  // on 127.0.0.1, or -1.
  int bridge_to_a_test_upstream() {
    const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) return -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(lfd, 8) != 0 ||
        ::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(lfd);
      return -1;
    }
    options_.bridge_to_host = "127.0.0.1";
    options_.bridge_to_port = ntohs(addr.sin_port);
    return lfd;
  }

  std::filesystem::path dir_;
  std::unique_ptr<TestFiles> files_;
  ServerOptions options_;
  Shared shared_;
  // A test's worker contexts (ServerOptions::workers), declared before io_ so that they outlive
  // it: an accept still pending on io_ holds a socket made on a worker until io_ runs the
  // acceptor's posted close (stop_accepting) or is destroyed. (A worker destroyed first made
  // that socket's destruction a use after free under ASan.)
  boost::asio::io_context worker_{1};
  boost::asio::io_context worker2_{1};
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_{
      io_.get_executor()};
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

void expect_nothing_revealing(const HttpResponse& r) {
  EXPECT_EQ(lower(r.body).find("parley"), std::string::npos);
  for (const auto& [k, v] : r.headers) {
    EXPECT_EQ(lower(k + v).find("parley"), std::string::npos) << k;
    EXPECT_EQ(lower(k + v).find("beast"), std::string::npos) << k;
  }
}

// The client reads no more of a response body than it asked for: a body over get()'s
// max_body fails the request.
TEST_F(TransportTest, AClientRefusesAResponseBodyLargerThanItAllows) {
  start();
  HttpsClient https(client_options());
  auto whole = https.get("/");
  ASSERT_TRUE(whole.has_value()) << whole.error().to_string();
  ASSERT_GT(whole->body.size(), 10u);
  EXPECT_TRUE(https.get("/", 0, std::nullopt, whole->body.size()).has_value());
  auto cut = https.get("/", 0, std::nullopt, whole->body.size() - 1);
  ASSERT_FALSE(cut.has_value());
  EXPECT_NE(cut.error().to_string().find("body limit"), std::string::npos)
      << cut.error().to_string();
}

TEST_F(TransportTest, StaticSite) {
  start();
  HttpsClient https(client_options());
  auto home = https.request("GET", "/");
  ASSERT_TRUE(home.has_value()) << home.error().to_string();
  EXPECT_EQ(home->status, 200u);
  EXPECT_NE(home->body.find("<html"), std::string::npos);
  EXPECT_NE(home->header("Content-Type").find("text/html"), std::string::npos);
  EXPECT_FALSE(home->header("Date").empty());
  EXPECT_FALSE(home->header("ETag").empty());
  EXPECT_FALSE(home->header("Last-Modified").empty());
  expect_nothing_revealing(*home);

  for (const char* path : {"/wp-login.php", "/admin", "/a/b/c.html?x=1", "/../../etc/passwd",
                           "/%2e%2e/%2e%2e/etc/passwd", "/k3J9xQ2mVt", "/k3J9xQ2mVt/ws/att/"}) {
    auto r = https.request("GET", path);
    ASSERT_TRUE(r.has_value()) << path;
    EXPECT_EQ(r->status, 404u) << path;
    expect_nothing_revealing(*r);
  }
  auto post = https.request("POST", "/", "a=b");
  ASSERT_TRUE(post.has_value());
  EXPECT_EQ(post->status, 405u);
  // Every page the home page links to is there, the stylesheet included.
  std::size_t links = 0;
  for (std::size_t at = home->body.find("href=\""); at != std::string::npos;
       at = home->body.find("href=\"", at + 1), ++links) {
    const std::string href = home->body.substr(at + 6, home->body.find('"', at + 6) - (at + 6));
    auto linked = https.request("GET", href);
    ASSERT_TRUE(linked.has_value()) << href;
    EXPECT_EQ(linked->status, 200u) << href;
    expect_nothing_revealing(*linked);
  }
  EXPECT_GE(links, 4u);  // the stylesheet, the name, Home and at least two pages
  auto head = https.request("HEAD", "/");
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->status, 200u);
  EXPECT_TRUE(head->body.empty());
  EXPECT_EQ(head->header("Content-Length"), std::to_string(home->body.size()));
}

// The built-in site differs from one installation to the next (its seed: parleyd's
// DIR/site_seed), and stays the same across a restart: one GET / cannot find every server.
TEST(StaticSiteTest, TheBuiltInSiteDiffersByItsSeed) {
  auto home = [](const std::string& seed) { return StaticSite("", seed).handle("GET", "/", ""); };
  const SiteResponse a = home("seed a");
  const SiteResponse again = home("seed a");
  EXPECT_EQ(a.body, again.body);
  EXPECT_EQ(a.etag, again.etag);
  EXPECT_EQ(a.last_modified, again.last_modified);
  std::set<std::string> bodies, etags, dates;
  for (int i = 0; i < 200; ++i) {
    const SiteResponse r = home("installation " + std::to_string(i));
    ASSERT_EQ(r.status, 200u);
    bodies.insert(r.body);
    etags.insert(r.etag);
    dates.insert(r.last_modified);
  }
  EXPECT_EQ(bodies.size(), 200u);
  EXPECT_EQ(etags.size(), 200u);
  EXPECT_GE(dates.size(), 195u);
  // The pages besides the home page differ too: the 404 page names the site's own stylesheet.
  std::set<std::string> not_found;
  for (int i = 0; i < 50; ++i) {
    not_found.insert(StaticSite("", std::to_string(i)).error_page(404).body);
  }
  EXPECT_GE(not_found.size(), 2u);
}

TEST_F(TransportTest, WsPathWithoutUpgradeIsThe404Page) {
  start();
  HttpsClient https(client_options());
  auto missing = https.request("GET", "/no-such-page");
  auto ws_plain = https.request("GET", std::string(kWsPath));
  ASSERT_TRUE(missing.has_value());
  ASSERT_TRUE(ws_plain.has_value());
  EXPECT_EQ(ws_plain->status, 404u);
  EXPECT_EQ(ws_plain->body, missing->body);
  expect_nothing_revealing(*ws_plain);
}

TEST_F(TransportTest, WebSocketEcho) {
  start();
  auto c = ws();
  ASSERT_TRUE(c);
  expect_echo(*c, "hello");
  expect_echo(*c, std::string(60 * 1024, 'z'));
  std::string binary;
  for (int i = 0; i < 256; ++i) binary.push_back(static_cast<char>(i));
  expect_echo(*c, binary);
  // A receive timeout leaves the connection usable.
  auto nothing = c->receive(50ms);
  ASSERT_FALSE(nothing.has_value());
  EXPECT_EQ(nothing.error().code(), ErrorCode::kUnavailable);
  expect_echo(*c, "still here");
  EXPECT_EQ(shared_.opened.load(), 1);
  c->close();
  EXPECT_TRUE(wait_for([&] { return shared_.closed.load() == 1; }));
}

// Many messages in flight at once: the server gathers a connection's frames into large TLS
// writes (CorkStream), including messages larger than its buffer. Every one must arrive whole
// and in order.
TEST_F(TransportTest, PipelinedMessagesArriveWholeAndInOrder) {
  options_.write_queue_limit = 8 * 1024 * 1024;  // the client reads only after sending all
  start();
  auto c = ws();
  ASSERT_TRUE(c);
  std::vector<std::string> sent;
  for (int i = 0; i < 400; ++i) {
    std::size_t size = 1 + static_cast<std::size_t>(i * 37 % 300);
    if (i % 50 >= 45) size = 60 * 1024 + static_cast<std::size_t>(i);  // five large in a row
    std::string m(size, static_cast<char>('a' + i % 26));
    m.replace(0, std::min<std::size_t>(m.size(), 4), std::to_string(i).substr(0, 4));
    ASSERT_TRUE(c->send(as_bytes(m)).is_ok()) << i;
    sent.push_back(std::move(m));
  }
  for (std::size_t i = 0; i < sent.size(); ++i) {
    auto got = c->receive(5000ms);
    ASSERT_TRUE(got.has_value()) << i << ": " << got.error().to_string();
    ASSERT_EQ(*got, sent[i]) << i;
  }
  expect_echo(*c, "after the burst");
}

// send() on the connection's own thread queues at once, but never ahead of a send made earlier
// from another thread and still posted: messages leave in the order of the send() calls.
void expect_answers_in_send_order(BlockingWsClient& c) {
  for (int i = 0; i < 20; ++i) {
    const std::string m = "m" + std::to_string(i);
    ASSERT_TRUE(c.send(as_bytes(m)).is_ok());
    for (const char* suffix : {"-1", "-2"}) {
      auto got = c.receive(5000ms);
      ASSERT_TRUE(got.has_value()) << m << ": " << got.error().to_string();
      EXPECT_EQ(*got, m + suffix);
    }
  }
}

TEST_F(TransportTest, SendsLeaveInTheOrderTheyWereMadeFromAnyThreadOnAStrand) {
  shared_.two_threads = true;
  start();
  auto c = ws();
  ASSERT_TRUE(c);
  expect_answers_in_send_order(*c);
}

TEST_F(TransportTest, SendsLeaveInTheOrderTheyWereMadeFromAnyThreadOnAWorkerContext) {
  auto guard = boost::asio::make_work_guard(worker_);
  std::thread t([&] { worker_.run(); });
  shared_.two_threads = true;
  options_.workers = {&worker_};
  start();
  auto c = ws();
  ASSERT_TRUE(c);
  expect_answers_in_send_order(*c);
  c->close();
  server_->stop_accepting();
  server_->close_all("test over");
  EXPECT_TRUE(wait_for([&] { return server_->connection_count() == 0; }, 10000ms));
  server_.reset();
  guard.reset();
  t.join();
}

// A peer that connects and never speaks TLS is closed at the handshake timeout (the server's
// own TLS stream keeps that deadline), and others are served meanwhile.
TEST_F(TransportTest, SilentPeerIsClosedAtTheHandshakeTimeout) {
  options_.handshake_timeout = 1s;
  start();
  const int fd = test_support::connect_loopback(server_->port(), 6);
  ASSERT_GE(fd, 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto good = ws();
  ASSERT_TRUE(good);
  expect_echo(*good, "served while the other waits");
  char byte = 0;
  const ssize_t n = ::recv(fd, &byte, 1, 0);
  const auto waited = std::chrono::steady_clock::now() - t0;
  ::close(fd);
  EXPECT_EQ(n, 0);  // closed by the server, not by our 6 s receive timeout
  EXPECT_GE(waited, 900ms);
  EXPECT_LT(waited, 4s);
}

std::string ws_upgrade_request() {
  return "GET " + std::string(kWsPath) +
         " HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
}

// One response read by a raw TLS peer: its header and a Content-Length body (none without the
// field). What came until the server closed, or the peer's receive timeout passed, otherwise.
// Reads responses until a final one (not "100 Continue") is whole; returns every byte read,
// and the size of each TLS record it came in (one SSL_read returns at most one) to `records`.
std::string read_response(SSL* ssl, std::vector<std::size_t>* records = nullptr) {
  std::string in;
  char buf[4096];
  std::size_t at = 0;  // where the response being read starts
  for (int i = 0; i < 1000; ++i) {
    for (auto end = in.find("\r\n\r\n", at); end != std::string::npos;
         end = in.find("\r\n\r\n", at)) {
      const std::string header = lower(in.substr(at, end - at));
      std::size_t length = 0;
      const auto cl = header.find("\r\ncontent-length: ");
      if (cl != std::string::npos) length = std::stoul(header.substr(cl + 18));
      if (in.size() < end + 4 + length) break;
      if (header.rfind("http/1.1 100 ", 0) != 0 && header.rfind("http/1.0 100 ", 0) != 0) {
        return in;
      }
      at = end + 4 + length;
    }
    const int n = SSL_read(ssl, buf, sizeof buf);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
    if (records != nullptr) records->push_back(static_cast<std::size_t>(n));
  }
  return in;
}

bool ssl_send(SSL* ssl, std::string_view bytes) {
  return SSL_write(ssl, bytes.data(), static_cast<int>(bytes.size())) ==
         static_cast<int>(bytes.size());
}

// Sends the last 600 bytes ('a') of a part begun by TransportTest::begin_part() and returns the
// response (empty if the send failed).
std::string end_part(test_support::TlsPeer& peer) {
  if (!ssl_send(peer.ssl(), std::string(600, 'a'))) return "";
  return read_response(peer.ssl());
}

// A WebSocket peer that goes silent is pinged after ping_interval; one that answers (a client
// that keeps reading answers pings by itself) stays, one that does not is closed at the idle
// timeout. Both sides send nothing else meanwhile.
TEST_F(TransportTest, AnIdlePeerIsPingedAndClosedOnlyWhenItDoesNotAnswer) {
  options_.idle_timeout = 2s;
  options_.ping_interval = 1s;
  start();
  auto answering = ws();
  auto silent = ws();
  ASSERT_TRUE(answering && silent);
  expect_echo(*answering, "before");
  expect_echo(*silent, "before");
  // The silent client's io only runs inside its calls: it reads nothing and answers no ping.
  // The answering one reads for three idle timeouts; nothing but pings comes.
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < 6s) {
    auto got = answering->receive(200ms);
    ASSERT_FALSE(got.has_value()) << "a message arrived: " << *got;
    ASSERT_EQ(got.error().code(), ErrorCode::kUnavailable) << got.error().to_string();
  }
  EXPECT_EQ(shared_.closed.load(), 1);  // the silent one, after about 2 s
  expect_echo(*answering, "after");
  auto closed = silent->receive(3000ms);
  ASSERT_FALSE(closed.has_value());
  EXPECT_EQ(closed.error().code(), ErrorCode::kIo) << closed.error().to_string();
}

// The pings keep to ping_interval: a peer that upgrades and then reads without ever answering
// is pinged about every second and cut off at the 4 s idle timeout, nothing else arriving.
// A raw TLS peer, so that nothing answers the pings behind the test's back.
TEST_F(TransportTest, ASilentPeerIsPingedEveryIntervalUntilTheIdleTimeout) {
  options_.idle_timeout = 4s;
  options_.ping_interval = 1s;
  start();
  test_support::TlsPeer peer;
  ASSERT_EQ(peer.connect(server_->port()), "");
  const std::string upgrade = ws_upgrade_request();
  ASSERT_EQ(SSL_write(peer.ssl(), upgrade.data(), static_cast<int>(upgrade.size())),
            static_cast<int>(upgrade.size()));
  const auto t0 = std::chrono::steady_clock::now();
  std::string in;
  std::vector<std::chrono::steady_clock::duration> pings;
  bool upgraded = false;
  char buf[4096];
  for (int i = 0; i < 100; ++i) {  // ends when the server closes (or 10 s pass without a byte)
    const int n = SSL_read(peer.ssl(), buf, sizeof buf);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
    if (!upgraded) {
      const auto end = in.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      ASSERT_EQ(in.rfind("HTTP/1.1 101", 0), 0u) << in;
      in.erase(0, end + 4);
      upgraded = true;
    }
    // The server's frames are unmasked; these are all small (one length byte).
    while (in.size() >= 2 && in.size() >= 2u + (static_cast<unsigned char>(in[1]) & 0x7f)) {
      const int opcode = in[0] & 0x0f;
      ASSERT_EQ(opcode, 0x9) << "only pings were expected";
      pings.push_back(std::chrono::steady_clock::now() - t0);
      in.erase(0, 2u + (static_cast<unsigned char>(in[1]) & 0x7f));
    }
  }
  const auto closed = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(upgraded);
  // At about 1, 2 and 3 s; the close at 4 s comes before a fourth. Beast's own keep-alive sent
  // one, at half the idle timeout.
  ASSERT_GE(pings.size(), 2u);
  EXPECT_LE(pings.size(), 4u);
  EXPECT_GE(pings[0], 800ms);
  EXPECT_GE(pings[1] - pings[0], 800ms);
  EXPECT_LT(pings[1] - pings[0], 1800ms);
  EXPECT_GE(closed, 3800ms);
  EXPECT_LT(closed, 7s);
  EXPECT_TRUE(wait_for([&] { return shared_.closed.load() == 1; }, 5000ms));
  EXPECT_EQ(server_->keepalive_counts().pings, pings.size());
  EXPECT_EQ(server_->keepalive_counts().idle_closes, 1u);
}

// The other way round: a server that takes the TCP connection and never answers the client's
// hello. The client's TLS stream (a TlsSocket after the TCP connect) keeps connect_timeout for
// the handshake, for the WebSocket and the HTTPS client alike.
TEST_F(TransportTest, ASilentServerFailsTheClientsHandshakeAtItsTimeout) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(lfd, 8), 0);  // the kernel completes the TCP handshakes; nobody reads
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ClientOptions o;
  o.host = "127.0.0.1";
  o.port = ntohs(addr.sin_port);
  o.ws_path = std::string(kWsPath);
  o.pin_sha256 = Bytes(32, 1);
  o.connect_timeout = 500ms;
  const auto t0 = std::chrono::steady_clock::now();
  auto c = BlockingWsClient::connect(o);
  const auto ws_waited = std::chrono::steady_clock::now() - t0;
  HttpsClient https(o);
  auto r = https.request("GET", "/");
  const auto both_waited = std::chrono::steady_clock::now() - t0;
  ::close(lfd);
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), ErrorCode::kIo);
  EXPECT_NE(c.error().message().find("tls handshake"), std::string::npos) << c.error().message();
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("tls handshake"), std::string::npos) << r.error().message();
  EXPECT_GE(ws_waited, 450ms);
  EXPECT_LT(ws_waited, 3s);
  EXPECT_LT(both_waited, 6s);
}

// A request in two TLS records with a pause between them. The server's first recv comes back
// short, so its next read waits for the socket instead of calling recv (TlsSocket's BIO): the
// second record must still be read.
TEST_F(TransportTest, ARequestThatArrivesInPiecesIsServed) {
  start();
  const int fd = test_support::connect_loopback(server_->port(), 5);
  ASSERT_GE(fd, 0);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  SSL* ssl = SSL_new(ctx);
  ASSERT_NE(ssl, nullptr);
  SSL_set_fd(ssl, fd);
  ASSERT_EQ(SSL_connect(ssl), 1);
  const std::string head = "GET / HTTP/1.1\r\nHo";
  const std::string tail = "st: localhost\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(SSL_write(ssl, head.data(), static_cast<int>(head.size())),
            static_cast<int>(head.size()));
  std::this_thread::sleep_for(150ms);
  ASSERT_EQ(SSL_write(ssl, tail.data(), static_cast<int>(tail.size())),
            static_cast<int>(tail.size()));
  std::string response;
  char buf[4096];
  for (int i = 0; i < 100; ++i) {
    const int n = SSL_read(ssl, buf, sizeof buf);
    if (n <= 0) break;
    response.append(buf, static_cast<std::size_t>(n));
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
  EXPECT_EQ(response.rfind("HTTP/1.1 200", 0), 0u) << response.substr(0, 60);
  EXPECT_NE(response.find("<html"), std::string::npos);
}

// TLS 1.3 suites: AES-128-GCM-SHA256 by the server's order, whatever the client lists first
// (OpenSSL's clients list AES-256 first), except ChaCha20-Poly1305 for a client that lists it
// first (no AES instructions).
TEST_F(TransportTest, TheServerChoosesAes128UnlessTheClientPutsChaChaFirst) {
  start();
  auto suite = [&](const char* offered) -> std::string {
    test_support::TlsPeer peer;
    const std::string failed = peer.connect(server_->port(), offered);
    if (!failed.empty()) return failed;
    std::string name = SSL_get_cipher_name(peer.ssl());
    peer.end(false);
    return name;
  };
  EXPECT_EQ(suite("TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"),
            "TLS_AES_128_GCM_SHA256");
  EXPECT_EQ(suite("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"),
            "TLS_CHACHA20_POLY1305_SHA256");
  EXPECT_EQ(suite("TLS_AES_256_GCM_SHA384"), "TLS_AES_256_GCM_SHA384");
}

TEST_F(TransportTest, AsyncClientEcho) {
  start();
  boost::asio::io_context io;
  std::string got;
  std::optional<Status> closed;
  std::shared_ptr<WsClient> client;
  WsClient::async_connect(
      io, client_options(),
      [&](std::string_view m) {
        got = std::string(m);
        client->close();
      },
      [&](const Status& why) { closed = why; },
      [&](Result<std::shared_ptr<WsClient>> r) {
        ASSERT_TRUE(r.has_value()) << r.error().to_string();
        client = *r;
        client->send(std::make_shared<const std::string>("ping"));
      });
  io.run_for(5s);
  EXPECT_EQ(got, "ping");
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->code(), ErrorCode::kIo);
}

// A host name goes through the resolver (an address does not): "localhost" (from /etc/hosts,
// no DNS query) reaches the server like "127.0.0.1", for the WebSocket and the HTTPS client.
TEST_F(TransportTest, AHostNameIsResolved) {
  start();
  ClientOptions o = client_options();
  o.host = "localhost";
  auto c = BlockingWsClient::connect(o);
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  expect_echo(**c, "by name");
  HttpsClient https(o);
  auto r = https.request("GET", "/");
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(r->status, 200u);
}

TEST_F(TransportTest, WrongPinRefused) {
  start();
  ClientOptions o = client_options();
  o.pin_sha256[0] ^= 1;
  auto c = BlockingWsClient::connect(o);
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(c.error().message(), "certificate pin mismatch");
  HttpsClient https(o);
  auto r = https.request("GET", "/");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(shared_.opened.load(), 0);
}

// TLS session resumption (ClientOptions::resume_tls, internal/tls_resumption.h).
TEST_F(TransportTest, TlsSessionsResumeOnlyWithTheServerThatIssuedThem) {
  start();
  ClientOptions o = client_options();
  auto first = BlockingWsClient::connect(o);
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  EXPECT_FALSE((*first)->tls_resumed());
  expect_echo(**first, "first");
  (*first)->close();

  // The server's ticket came with the first connection: the next ones resume it.
  auto second = BlockingWsClient::connect(o);
  ASSERT_TRUE(second.has_value()) << second.error().to_string();
  EXPECT_TRUE((*second)->tls_resumed());
  expect_echo(**second, "second");
  (*second)->close();
  auto page = HttpsClient(o).request("GET", "/");
  ASSERT_TRUE(page.has_value()) << page.error().to_string();
  EXPECT_EQ(page->status, 200u);
  EXPECT_TRUE(page->tls_resumed);

  ClientOptions full = o;
  full.resume_tls = false;
  auto third = BlockingWsClient::connect(full);
  ASSERT_TRUE(third.has_value()) << third.error().to_string();
  EXPECT_FALSE((*third)->tls_resumed());
  (*third)->close();

  // A new server on the same port, with a new certificate: the session is offered to it (same
  // host, port and pin) but it cannot resume it, and the pin check still refuses it.
  auto other = crypto::generate_self_signed("localhost", 30);
  ASSERT_TRUE(other.has_value());
  options_.cert_pem = other->cert_pem;
  options_.key_pem = other->key_pem;
  restart_on_the_same_port();
  auto refused = BlockingWsClient::connect(o);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().message(), "certificate pin mismatch");

  // Under its own pin: a full handshake, then resumption again.
  auto new_pin = crypto::certificate_pin(other->cert_pem);
  ASSERT_TRUE(new_pin.has_value());
  o.pin_sha256 = Bytes(new_pin->begin(), new_pin->end());
  for (bool resumed : {false, true}) {
    auto c = BlockingWsClient::connect(o);
    ASSERT_TRUE(c.has_value()) << c.error().to_string();
    EXPECT_EQ((*c)->tls_resumed(), resumed);
    expect_echo(**c, "again");
    (*c)->close();
  }
}

// Connections opened many at once, each replaced by a new one as soon as it is up (as in a
// reconnect storm), all resume: each takes the newest session the client holds.
TEST_F(TransportTest, ConnectionsOpenedAtOnceEachResume) {
  start();
  ClientOptions o = client_options();
  auto first = BlockingWsClient::connect(o);
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  (*first)->close();
  constexpr int kTotal = 400, kAtOnce = 16;
  boost::asio::io_context io;
  int launched = 0, up = 0, resumed = 0, failed = 0;
  std::function<void()> launch = [&] {
    while (launched < kTotal && launched - up - failed < kAtOnce) {
      ++launched;
      WsClient::async_connect(
          io, o, [](std::string_view) {}, [](const Status&) {},
          [&](Result<std::shared_ptr<WsClient>> r) {
            if (!r) {
              ++failed;
            } else {
              ++up;
              if ((*r)->tls_resumed()) ++resumed;
              (*r)->close();
            }
            launch();
          });
    }
  };
  launch();
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (up + failed < kTotal && std::chrono::steady_clock::now() < deadline &&
         io.run_one_for(1s) > 0) {
  }
  io.run_for(2s);  // the closes
  launch = nullptr;
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(up, kTotal);
  EXPECT_EQ(resumed, kTotal);
}

// A server restarted with the same certificate and its ticket keys in memory only has new
// ones: the client's session is refused and the handshake falls back to a full one.
TEST_F(TransportTest, AServerThatCannotResumeGetsAFullHandshake) {
  start();
  ClientOptions o = client_options();
  for (int i = 0; i < 2; ++i) {
    auto c = BlockingWsClient::connect(o);
    ASSERT_TRUE(c.has_value()) << c.error().to_string();
    EXPECT_EQ((*c)->tls_resumed(), i == 1);
    (*c)->close();
  }
  restart_on_the_same_port();
  auto c = BlockingWsClient::connect(o);
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  EXPECT_FALSE((*c)->tls_resumed());
  expect_echo(**c, "after the restart");
}

TEST_F(TransportTest, KeptTicketKeysLetClientsResumeAfterARestart) {
  options_.ticket_key_file = (dir_ / "ticket-keys").string();
  start();
  ClientOptions o = client_options();
  auto first = BlockingWsClient::connect(o);
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  EXPECT_FALSE((*first)->tls_resumed());
  (*first)->close();

  restart_on_the_same_port();
  auto again = BlockingWsClient::connect(o);
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_TRUE((*again)->tls_resumed());
  expect_echo(**again, "resumed across the restart");
  (*again)->close();

  // Without the file, a restart makes new keys: one full handshake, then resumed again.
  std::filesystem::remove(options_.ticket_key_file);
  restart_on_the_same_port();
  EXPECT_TRUE(std::filesystem::exists(options_.ticket_key_file));
  for (int i = 0; i < 2; ++i) {
    auto c = BlockingWsClient::connect(o);
    ASSERT_TRUE(c.has_value()) << c.error().to_string();
    EXPECT_EQ((*c)->tls_resumed(), i == 1);
    (*c)->close();
  }
}

TEST_F(TransportTest, WithoutTicketsNoClientResumes) {
  options_.tls_tickets = false;
  start();
  for (int i = 0; i < 3; ++i) {
    auto c = BlockingWsClient::connect(client_options());
    ASSERT_TRUE(c.has_value()) << c.error().to_string();
    EXPECT_FALSE((*c)->tls_resumed());
    expect_echo(**c, "full handshake " + std::to_string(i));
    (*c)->close();
  }
  EXPECT_EQ(server_->tls_handshakes().resumed, 0u);
  EXPECT_FALSE(server_->rotate_ticket_keys().value());
}

TEST_F(TransportTest, AMalformedTicketKeyFileStopsTheStartAndIsLeftAlone) {
  const auto path = dir_ / "ticket-keys";
  const std::string bad = "v1 1764500000 00 11 22\n";
  std::ofstream(path) << bad;
  options_.ticket_key_file = path.string();
  auto server = Server::start(
      io_, options_, [this](const std::string&) { return std::make_unique<EchoHandler>(shared_); },
      files_.get());
  ASSERT_FALSE(server.has_value());
  EXPECT_EQ(server.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(server.error().message().find(path.string() + ": line 1"), std::string::npos)
      << server.error().message();
  std::ifstream in(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), bad);
}

std::string masked_frame(std::uint8_t opcode, std::string_view payload) {
  std::string f;
  f.push_back(static_cast<char>(0x80 | opcode));
  f.push_back(static_cast<char>(0x80 | payload.size()));  // < 126 bytes
  const char mask[4] = {0x11, 0x22, 0x33, 0x44};
  f.append(mask, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) f.push_back(payload[i] ^ mask[i % 4]);
  return f;
}

// What the server sent after the upgrade (`out`) holds its close frame with `code` and `reason`:
// 0x88, the length, the code, the reason.
void expect_close_frame(const std::string& out, std::string_view reason, std::uint16_t code) {
  EXPECT_NE(out.find("101 Switching Protocols"), std::string::npos);
  const auto at = out.find(reason);
  ASSERT_NE(at, std::string::npos) << testing::PrintToString(out);
  ASSERT_GE(at, 4u);
  EXPECT_EQ(static_cast<std::uint8_t>(out[at - 4]), 0x88);
  EXPECT_EQ(static_cast<std::uint8_t>(out[at - 3]), 2 + reason.size());
  EXPECT_EQ(static_cast<std::uint8_t>(out[at - 2]), code >> 8);
  EXPECT_EQ(static_cast<std::uint8_t>(out[at - 1]), code & 0xff);
}

TEST_F(TransportTest, TextFrameClosesWithReason) {
  start();
  HttpsClient https(client_options());
  auto out = https.raw_exchange_for_test(ws_upgrade_request(), 1000ms, masked_frame(0x1, "hi"));
  ASSERT_TRUE(out.has_value()) << out.error().to_string();
  expect_close_frame(*out, "binary frames only", 1003);
  EXPECT_TRUE(wait_for([&] { return shared_.closed.load() == 1; }));
}

// A handler that throws ends its own connection with 1011 (internal error), is told of the close
// once, and the server goes on serving everyone else.
TEST_F(TransportTest, AHandlerThatThrowsClosesItsConnectionOnly) {
  shared_.throw_on_message = true;
  start();
  auto other = ws();
  ASSERT_TRUE(other);
  HttpsClient https(client_options());
  auto out = https.raw_exchange_for_test(ws_upgrade_request(), 1000ms, masked_frame(0x2, "throw"));
  ASSERT_TRUE(out.has_value()) << out.error().to_string();
  expect_close_frame(*out, "internal error", 1011);
  EXPECT_TRUE(wait_for([&] { return shared_.closed.load() == 1; }));
  expect_echo(*other, "still served");
  EXPECT_EQ(shared_.closed.load(), 1);
}

TEST_F(TransportTest, PipelinedUpgradeRefused) {
  start();
  HttpsClient https(client_options());
  auto out = https.raw_exchange_for_test(ws_upgrade_request() + masked_frame(0x2, "hi"), 1000ms);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->rfind("HTTP/1.1 400", 0), 0u) << out->substr(0, 40);
  EXPECT_EQ(shared_.opened.load(), 0);
}

TEST_F(TransportTest, OversizeMessageCloses) {
  start();
  auto c = ws();
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(as_bytes(std::string(options_.max_message_size + 1, 'a'))).is_ok() ||
              true);
  auto r = c->receive(3000ms);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kIo) << r.error().to_string();
  EXPECT_TRUE(wait_for([&] { return shared_.closed.load() == 1; }));
  // The server still serves others.
  auto d = ws();
  ASSERT_TRUE(d);
  expect_echo(*d, "ok");
}

TEST_F(TransportTest, SlowReaderIsClosedAndMemoryBounded) {
  shared_.flood = true;
  start();
  auto c = ws();  // never reads: its io_context only runs inside calls
  ASSERT_TRUE(c);
  ASSERT_TRUE(wait_for([&] { return shared_.closed.load() == 1; }, 20000ms));
  EXPECT_TRUE(shared_.flood_refused.load());
  EXPECT_LE(shared_.max_queued.load(), options_.write_queue_limit + 32 * 1024);
  EXPECT_GT(shared_.max_queued.load(), 0u);
  // Others are unaffected.
  shared_.flood = false;
  auto d = ws();
  ASSERT_TRUE(d);
  expect_echo(*d, "fine");
}

// Plain TCP to the TLS port: writes `bytes`, reads until close or timeout.
std::string raw_tcp(std::uint16_t port, const std::string& bytes) {
  const int fd = test_support::connect_loopback(port, 2);
  if (fd < 0) return {};
  std::string out;
  if (::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) >= 0) {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

TEST_F(TransportTest, BadPeersDoNotDisturbOthers) {
  start();
  auto good = ws();
  ASSERT_TRUE(good);
  // Not TLS at all.
  raw_tcp(server_->port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  raw_tcp(server_->port(), std::string(5000, '\x16'));
  std::string noise;
  for (int i = 0; i < 3000; ++i) noise.push_back(static_cast<char>((i * 131 + 7) & 0xff));
  raw_tcp(server_->port(), noise);
  // TLS, then garbage instead of HTTP.
  HttpsClient https(client_options());
  auto bad = https.raw_exchange_for_test("\x01\x02\x03 NOT HTTP AT ALL\r\n\r\n", 1000ms);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->rfind("HTTP/1.1 400", 0), 0u) << *bad;
  auto huge = https.raw_exchange_for_test(
      "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n", 1000ms);
  ASSERT_TRUE(huge.has_value());
  EXPECT_EQ(huge->rfind("HTTP/1.1 4", 0), 0u) << huge->substr(0, 40);
  // A broken WebSocket upgrade is answered and closed.
  auto badws = https.raw_exchange_for_test(
      "GET " + std::string(kWsPath) +
          " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
      1000ms);
  ASSERT_TRUE(badws.has_value());
  EXPECT_EQ(badws->rfind("HTTP/1.1 ", 0), 0u);
  EXPECT_EQ(badws->find("101"), std::string::npos);
  expect_echo(*good, "still fine");
  auto site = https.request("GET", "/");
  ASSERT_TRUE(site.has_value());
  EXPECT_EQ(site->status, 200u);
}

TEST_F(TransportTest, ResumableAttachmentUpload) {
  start();
  const std::uint64_t total = 300000;
  std::string data(total, '\0');
  for (std::uint64_t i = 0; i < total; ++i) data[i] = static_cast<char>((i * 7919) >> 3);
  files_->add("att1", "tok-1", total);
  HttpsClient https(client_options());

  // Unknown id and wrong or missing token.
  auto unknown = https.put_range(att("nope"), "tok-1", 0, as_bytes(data.substr(0, 10)), total);
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ(unknown->status, 404u);
  auto wrong = https.put_range(att("att1"), "tok-2", 0, as_bytes(data.substr(0, 10)), total);
  ASSERT_TRUE(wrong.has_value());
  EXPECT_EQ(wrong->status, 403u);
  auto missing = https.put_range(att("att1"), "", 0, as_bytes(data.substr(0, 10)), total);
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, 401u);

  // First range.
  auto first = https.put_range(att("att1"), "tok-1", 0, as_bytes(data.substr(0, 100000)), total);
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  EXPECT_EQ(first->status, 308u);
  EXPECT_EQ(first->header("Upload-Offset"), "100000");

  // Second range, cut after 50000 body bytes.
  std::string cut_req = "PUT " + att("att1") +
                        " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-1\r\n"
                        "Content-Range: bytes 100000-299999/300000\r\nContent-Length: 200000\r\n\r\n" +
                        data.substr(100000, 50000);
  auto cut = https.raw_exchange_for_test(cut_req, 300ms);
  ASSERT_TRUE(cut.has_value());
  EXPECT_TRUE(cut->empty());  // no response for an unfinished body

  // Resume from HEAD's Upload-Offset.
  std::uint64_t offset = 0;
  ASSERT_TRUE(wait_for([&] {
    auto h = https.head(att("att1"), "tok-1");
    if (!h || h->status != 200) return false;
    offset = std::stoull(h->header("Upload-Offset"));
    EXPECT_EQ(h->header("Upload-Length"), "300000");
    return offset > 100000;
  }));
  EXPECT_EQ(offset, 150000u);
  EXPECT_EQ(files_->have("att1"), offset);

  // A wrong offset is refused with the right one.
  auto conflict =
      https.put_range(att("att1"), "tok-1", 100000, as_bytes(data.substr(100000, 10)), total);
  ASSERT_TRUE(conflict.has_value());
  EXPECT_EQ(conflict->status, 409u);
  EXPECT_EQ(conflict->header("Upload-Offset"), std::to_string(offset));
  // Not downloadable until complete.
  auto early = https.get(att("att1"));
  ASSERT_TRUE(early.has_value());
  EXPECT_EQ(early->status, 404u);

  auto rest = https.put_range(att("att1"), "tok-1", offset,
                              as_bytes(std::string_view(data).substr(offset)), total);
  ASSERT_TRUE(rest.has_value());
  EXPECT_EQ(rest->status, 200u);

  auto whole = https.get(att("att1"));
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->status, 200u);
  EXPECT_TRUE(whole->body == data);
  auto part = https.get(att("att1"), 1000, 5000);
  ASSERT_TRUE(part.has_value());
  EXPECT_EQ(part->status, 206u);
  EXPECT_EQ(part->content_range, "bytes 1000-5999/300000");
  EXPECT_TRUE(part->body == data.substr(1000, 5000));
  auto tail = https.get(att("att1"), 299990);
  ASSERT_TRUE(tail.has_value());
  EXPECT_EQ(tail->status, 206u);
  EXPECT_TRUE(tail->body == data.substr(299990));
  auto beyond = https.get(att("att1"), 400000, 10);
  ASSERT_TRUE(beyond.has_value());
  EXPECT_EQ(beyond->status, 416u);
  EXPECT_EQ(beyond->content_range, "bytes */300000");
}

// The attachment calls may answer later and from another thread, as the store does: the io
// thread (the fixture runs one) serves everyone else while a request waits for them.
TEST_F(TransportTest, AnAttachmentRequestWaitingForTheStoreHoldsUpNoOne) {
  start();
  const std::string data(5000, 'a');
  files_->add("att2", "tok-2", data.size());
  files_->hold();
  HttpsClient https(client_options());
  Result<HttpResponse> put = make_error(ErrorCode::kInternal, "not run");
  std::thread uploader(
      [&] { put = https.put_range(att("att2"), "tok-2", 0, as_bytes(data), data.size()); });
  for (int call = 0; call < 2; ++call) {  // begin_upload, then finish_upload
    ASSERT_TRUE(wait_for([&] { return files_->waiting() == 1; })) << "call " << call;
    HttpsClient other(client_options());
    auto page = other.get("/");
    ASSERT_TRUE(page.has_value()) << page.error().to_string();
    EXPECT_EQ(page->status, 200u);
    EXPECT_EQ(files_->waiting(), 1u);
    files_->release();
  }
  uploader.join();
  ASSERT_TRUE(put.has_value()) << put.error().to_string();
  EXPECT_EQ(put->status, 200u);
  EXPECT_EQ(files_->have("att2"), data.size());

  Result<HttpResponse> got = make_error(ErrorCode::kInternal, "not run");
  std::thread downloader([&] { got = https.get(att("att2")); });
  ASSERT_TRUE(wait_for([&] { return files_->waiting() == 1; }));
  files_->release();
  downloader.join();
  ASSERT_TRUE(got.has_value()) << got.error().to_string();
  EXPECT_EQ(got->status, 200u);
  EXPECT_TRUE(got->body == data);
}

// A connection that uploaded a part while another connection finished the attachment (its
// client gave up on it, but it was not cut) is told the attachment is complete: 200, not 308
// with its own smaller offset.
TEST_F(TransportTest, AStaleUploadIsAnsweredWithTheAttachmentsState) {
  start();
  const std::string data(300, 'b');
  files_->add("att3", "tok-3", data.size());
  files_->hold();
  HttpsClient https(client_options());
  Result<HttpResponse> put = make_error(ErrorCode::kInternal, "not run");
  std::thread stale([&] {
    put = https.put_range(att("att3"), "tok-3", 0, as_bytes(data.substr(0, 100)), data.size());
  });
  ASSERT_TRUE(wait_for([&] { return files_->waiting() == 1; }));  // begin_upload: at 0
  files_->release();
  ASSERT_TRUE(wait_for([&] { return files_->waiting() == 1; }));  // finish_upload: at 100
  files_->set_have("att3", data.size());  // meanwhile another connection finished it
  files_->release();
  stale.join();
  ASSERT_TRUE(put.has_value()) << put.error().to_string();
  EXPECT_EQ(put->status, 200u);
  EXPECT_EQ(files_->have("att3"), data.size());
}

std::string file_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A client's upload connection broke on its side, and it resumed on a new one while the server
// still read the old one's body: once the new part has taken over, the old one writes nothing
// more (it did: its late bytes landed in the finished file, and a download then passed its
// length check with them) and records nothing; it is answered 409 (ask for the offset).
TEST_F(TransportTest, AnOldUploadPartWritesNothingOnceANewerOneTookOver) {
  start();
  files_->add("att4", "tok-4", 1000);
  test_support::TlsPeer old;
  ASSERT_NO_FATAL_FAILURE(begin_part(old, "att4", "tok-4"));
  HttpsClient https(client_options());
  const std::string body(1000, 'b');
  auto put = https.put_range(att("att4"), "tok-4", 0, as_bytes(body), body.size());
  ASSERT_TRUE(put.has_value()) << put.error().to_string();
  EXPECT_EQ(put->status, 200u);
  const std::string r = end_part(old);
  EXPECT_EQ(r.rfind("HTTP/1.1 409", 0), 0u) << r.substr(0, 60);
  EXPECT_EQ(files_->have("att4"), 1000u);
  EXPECT_EQ(file_text(dir_ / "att4"), body);
}

// A PUT that writes nothing supersedes no one: one with a wrong token, a status query, a part
// from a stale offset. The part under way goes on and completes.
TEST_F(TransportTest, AnUploadPartThatWritesNothingSupersedesNoOne) {
  start();
  files_->add("att6", "tok-6", 1000);
  test_support::TlsPeer part;
  ASSERT_NO_FATAL_FAILURE(begin_part(part, "att6", "tok-6"));
  HttpsClient https(client_options());
  auto wrong =
      https.put_range(att("att6"), "not-the-token", 0, as_bytes(std::string(1000, 'b')), 1000);
  ASSERT_TRUE(wrong.has_value()) << wrong.error().to_string();
  EXPECT_EQ(wrong->status, 403u);
  auto status =
      https.raw_exchange_for_test("PUT " + att("att6") +
                                      " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-6\r\n"
                                      "Content-Range: bytes */1000\r\nContent-Length: 0\r\n\r\n",
                                  1000ms);
  ASSERT_TRUE(status.has_value()) << status.error().to_string();
  EXPECT_EQ(status->rfind("HTTP/1.1 308", 0), 0u) << status->substr(0, 40);
  auto stale = https.put_range(att("att6"), "tok-6", 500, as_bytes(std::string(500, 'b')), 1000);
  ASSERT_TRUE(stale.has_value()) << stale.error().to_string();
  EXPECT_EQ(stale->status, 409u);
  const std::string r = end_part(part);
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << r.substr(0, 60);
  EXPECT_EQ(file_text(dir_ / "att6"), std::string(1000, 'a'));
}

// A newer part that read the offset before an older part's completion was recorded writes
// nothing into the finished file: it is answered 409, and its client then finds the upload
// complete.
TEST_F(TransportTest, APartThatReadTheOffsetBeforeTheCompletionWritesNothing) {
  start();
  files_->add("att5", "tok-5", 1000);
  const std::string first(1000, 'a');
  HttpsClient https(client_options());
  Result<HttpResponse> done = make_error(ErrorCode::kInternal, "not run");
  files_->hold();
  std::thread completing(
      [&] { done = https.put_range(att("att5"), "tok-5", 0, as_bytes(first), first.size()); });
  ASSERT_TRUE(wait_for([&] { return files_->waiting() == 1; }));  // begin_upload: at 0
  files_->release();
  ASSERT_TRUE(wait_for([&] { return files_->waiting() == 1; }));  // finish_upload: at 1000
  HttpsClient late_client(client_options());
  Result<HttpResponse> late = make_error(ErrorCode::kInternal, "not run");
  std::atomic<bool> late_answered{false};
  std::thread late_part([&] {
    late = late_client.put_range(att("att5"), "tok-5", 0, as_bytes(std::string(1000, 'b')), 1000);
    late_answered = true;
  });
  ASSERT_TRUE(wait_for([&] { return files_->waiting() == 2; }));  // its begin_upload
  files_->release_newest();  // answered before the completion is recorded: at 0
  // Answered without the store, or (as before) waiting to record what it wrote.
  ASSERT_TRUE(wait_for([&] { return late_answered || files_->waiting() == 2; }));
  files_->hold(false);
  files_->release();
  completing.join();
  late_part.join();
  ASSERT_TRUE(done.has_value()) << done.error().to_string();
  EXPECT_EQ(done->status, 200u);
  ASSERT_TRUE(late.has_value()) << late.error().to_string();
  EXPECT_EQ(late->status, 409u);
  EXPECT_EQ(file_text(dir_ / "att5"), first);
  EXPECT_EQ(files_->have("att5"), 1000u);
}

// When the server ends a connection the client meant to keep (here after its 1,000th request)
// while the client has sent more, the close lingers: the client, reading slowly, still gets
// the whole last response. (A plain close with the next request unread made the kernel reset
// the connection and drop the megabytes still in the server's socket buffer.)
TEST_F(TransportTest, AConnectionTheServerEndsStillDeliversItsLastResponse) {
  start();
  constexpr std::size_t kSize = 4 << 20;
  std::string blob(kSize, '\0');
  for (std::size_t i = 0; i < kSize; ++i) blob[i] = static_cast<char>('a' + i % 23);
  std::ofstream(dir_ / "big7", std::ios::binary) << blob;
  files_->add("big7", "t", kSize);
  files_->set_have("big7", kSize);
  test_support::TlsPeer peer;
  ASSERT_EQ(peer.connect(server_->port()), "");
  std::string requests;
  for (int i = 0; i < 999; ++i) requests += "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
  requests += "GET " + att("big7") + " HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(ssl_send(peer.ssl(), requests));
  const std::string length = "\r\nContent-Length: " + std::to_string(kSize) + "\r\n";
  std::string in;
  char buf[16384];
  bool sent_more = false;
  for (int i = 0; i < 100000; ++i) {
    const int n = SSL_read(peer.ssl(), buf, sizeof buf);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
    // Once 64 KiB of the download are in, one more request than the server takes (it reaches
    // the server's socket, unread, as the server finishes).
    const auto download = sent_more ? std::string::npos : in.find(length);
    if (download != std::string::npos && in.size() > download + 65536) {
      // The download is a file transfer under way (a drain waits for it, bounded).
      EXPECT_EQ(server_->file_transfers(), 1u);
      ASSERT_TRUE(ssl_send(peer.ssl(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      sent_more = true;
    }
    if (i % 4 == 3) std::this_thread::sleep_for(2ms);  // a slow reader: the server's buffers fill
  }
  EXPECT_TRUE(sent_more);
  const auto header = in.find(length);
  ASSERT_NE(header, std::string::npos) << in.size();
  const auto body = in.find("\r\n\r\n", header);
  ASSERT_NE(body, std::string::npos);
  EXPECT_EQ(in.size() - (body + 4), kSize);
  EXPECT_TRUE(in.compare(body + 4, std::string::npos, blob) == 0);
  EXPECT_NE(in.rfind("Connection: close", body), std::string::npos);
  EXPECT_TRUE(wait_for([&] { return server_->file_transfers() == 0; }));
}

// A download whose file shrinks under it (or cannot be read) is cut short without a TLS
// close_notify, so that the client sees a cut, not a response that ended.
TEST_F(TransportTest, ADownloadCutShortEndsWithoutACloseNotify) {
  start();
  constexpr std::size_t kSize = 4 << 20;
  std::ofstream(dir_ / "big8", std::ios::binary) << std::string(kSize, 'z');
  files_->add("big8", "t", kSize);
  files_->set_have("big8", kSize);
  test_support::TlsPeer peer;
  ASSERT_EQ(peer.connect(server_->port()), "");
  ASSERT_TRUE(ssl_send(peer.ssl(), "GET " + att("big8") + " HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::size_t got = 0;
  int last = 0;
  char buf[16384];
  for (int i = 0; i < 100000; ++i) {
    last = SSL_read(peer.ssl(), buf, sizeof buf);
    if (last <= 0) break;
    got += static_cast<std::size_t>(last);
    if (i == 10) std::filesystem::resize_file(dir_ / "big8", 1 << 20);
    if (i % 4 == 3) std::this_thread::sleep_for(2ms);
  }
  EXPECT_LT(got, kSize);
  EXPECT_NE(SSL_get_error(peer.ssl(), last), SSL_ERROR_ZERO_RETURN) << "a close_notify came";
}

// A store that does not answer (stuck on a failing disk) does not hold an attachment request
// for good: after files_timeout it is answered 503 (try later), and the late answer is harmless.
TEST_F(TransportTest, AnAttachmentRequestTheStoreDoesNotAnswerGets503) {
  options_.files_timeout = 300ms;
  start();
  files_->add("att4", "tok-4", 10);
  files_->hold();
  HttpsClient https(client_options());
  const auto t0 = std::chrono::steady_clock::now();
  auto put = https.put_range(att("att4"), "tok-4", 0, as_bytes(std::string(10, 'c')), 10);
  ASSERT_TRUE(put.has_value()) << put.error().to_string();
  EXPECT_EQ(put->status, 503u);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  EXPECT_EQ(files_->waiting(), 1u);
  files_->release();  // the answer comes late
  files_->hold(false);
  auto again = https.put_range(att("att4"), "tok-4", 0, as_bytes(std::string(10, 'c')), 10);
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_EQ(again->status, 200u);
}

TEST_F(TransportTest, AttachmentBodyLimit) {
  start();
  files_->add("big", "t", 4 * 1024 * 1024);
  HttpsClient https(client_options());
  auto r = https.raw_exchange_for_test(
      "PUT " + att("big") +
          " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
          "Content-Range: bytes 0-1999999/4194304\r\nContent-Length: 2000000\r\n\r\n",
      1000ms);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->rfind("HTTP/1.1 413", 0), 0u) << r->substr(0, 40);
  // Length that does not match the range.
  auto m = https.raw_exchange_for_test(
      "PUT " + att("big") +
          " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
          "Content-Range: bytes 0-9/4194304\r\nContent-Length: 5\r\n\r\nabcde",
      1000ms);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->rfind("HTTP/1.1 400", 0), 0u) << m->substr(0, 40);
}

// idle_timeout 0 ends no WebSocket for its silence, but HTTP keeps a deadline of its own: a
// second request on a kept-alive connection, and a body that arrives in two parts, are served.
TEST_F(TransportTest, AZeroIdleTimeoutStillServesKeptAliveHttp) {
  options_.idle_timeout = 0s;
  options_.ping_interval = 0s;
  start();
  test_support::TlsPeer peer;
  ASSERT_EQ(peer.connect(server_->port()), "");
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(ssl_send(peer.ssl(), "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    const std::string r = read_response(peer.ssl());
    EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << i << ": " << r.substr(0, 60);
    EXPECT_NE(r.find("</html>"), std::string::npos) << i;
    std::this_thread::sleep_for(50ms);
  }

  files_->add("att0", "tok", 1000);
  const std::string body(1000, 'b');
  test_support::TlsPeer put;
  ASSERT_EQ(put.connect(server_->port()), "");
  ASSERT_TRUE(ssl_send(put.ssl(), "PUT " + att("att0") +
                                      " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n"
                                      "Content-Range: bytes 0-999/1000\r\nContent-Length: 1000\r\n"
                                      "\r\n" +
                                      body.substr(0, 400)));
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(ssl_send(put.ssl(), body.substr(400)));
  const std::string r = read_response(put.ssl());
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << r.substr(0, 60);
  EXPECT_EQ(files_->have("att0"), 1000u);
}

// A HEAD request gets a header and no body, error pages included (as from nginx).
TEST_F(TransportTest, HeadRequestsNeverGetABody) {
  start();
  files_->add("gone", "t", 0);  // complete, but its file is missing: 404
  HttpsClient https(client_options());
  auto expect_header_only = [&](const std::string& request, const std::string& status) {
    auto out = https.raw_exchange_for_test(request, 1000ms);
    ASSERT_TRUE(out.has_value()) << out.error().to_string();
    EXPECT_EQ(out->rfind("HTTP/1.1 " + status, 0), 0u) << out->substr(0, 40);
    const auto end = out->find("\r\n\r\n");
    ASSERT_NE(end, std::string::npos) << status;
    EXPECT_EQ(out->size(), end + 4) << status << ": " << out->substr(end + 4, 40);
    EXPECT_NE(lower(*out).find("\r\ncontent-length: "), std::string::npos) << status;
  };
  const std::string path = att("gone");
  expect_header_only("HEAD " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\n\r\n",
                     "401");
  expect_header_only("HEAD " + path + " HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                     "400");
  expect_header_only("HEAD " + path + " HTTP/1.1\r\nHost: x\r\n\r\n", "404");
  expect_header_only("HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n", "413");
  expect_header_only("HEAD / HTTP/1.1\r\n\r\n", "400");  // no Host
  expect_header_only("HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400");
  // The 401 names the scheme it wants, as RFC 9110 (11.6.1) asks.
  auto challenge = https.raw_exchange_for_test(
      "HEAD " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\n\r\n", 1000ms);
  ASSERT_TRUE(challenge.has_value());
  EXPECT_NE(lower(*challenge).find("\r\nwww-authenticate: bearer\r\n"), std::string::npos)
      << *challenge;
}

// Reads one HTTP response from `ssl` (with `head`: the header only); "" on error or timeout.
std::string read_response(SSL* ssl, bool head) {
  std::string in;
  char buf[4096];
  for (int i = 0; i < 1000; ++i) {  // each read waits at most the peer's 10 s
    const auto end = in.find("\r\n\r\n");
    if (end != std::string::npos) {
      if (head) return in;
      const auto at = lower(in).find("\r\ncontent-length: ");
      if (at == std::string::npos || at > end) return "";
      if (in.size() >= end + 4 + std::stoul(in.substr(at + 18))) return in;
    }
    const int n = SSL_read(ssl, buf, sizeof buf);
    if (n <= 0) return "";
    in.append(buf, static_cast<std::size_t>(n));
  }
  return "";
}

void count_received_records(int write_p, int, int content_type, const void*, std::size_t, SSL*,
                            void* arg) {
  if (write_p == 0 && content_type == SSL3_RT_HEADER) ++*static_cast<int*>(arg);
}

// A response's header and body leave together, in one TLS record when they fit, as nginx sends
// them: a header in a record of its own, then the body in another, is a pattern that sets the
// front apart from an ordinary server. A page, an error page, a 401, a download from a file.
TEST_F(TransportTest, AResponseLeavesInOneRecordWhenItFits) {
  start();
  files_->add("small", "t", 3000);
  files_->set_have("small", 3000);
  std::ofstream(dir_ / "small") << std::string(3000, 'x');
  test_support::TlsPeer peer;
  ASSERT_EQ(peer.connect(server_->port()), "");
  SSL* ssl = peer.ssl();
  int records = 0;
  auto exchange = [&](const std::string& request, bool head) {
    records = 0;
    EXPECT_TRUE(ssl_send(ssl, request));
    return read_response(ssl, head);
  };
  // The first answer also brings the server's session tickets, which are records too.
  const std::string first = exchange("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
  const auto at = lower(first).find("\r\netag: ");
  ASSERT_NE(at, std::string::npos) << first;
  const std::string etag = first.substr(at + 8, first.find("\r\n", at + 8) - (at + 8));
  SSL_set_msg_callback(ssl, count_received_records);
  SSL_set_msg_callback_arg(ssl, &records);
  const struct {
    std::string request;
    bool head;
    std::string status;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, "200"},
      {"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", true, "200"},
      {"GET /no-such-page HTTP/1.1\r\nHost: x\r\n\r\n", false, "404"},
      {"GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + "\r\n\r\n", true, "304"},
      {"GET " + att("small") + " HTTP/1.1\r\nHost: x\r\n\r\n", false, "200"},
      {"GET " + att("small") + " HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n", false, "206"},
      {"PUT " + att("small") + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false,
       "401"},  // last: it closes
  };
  for (const auto& c : cases) {
    const std::string out = exchange(c.request, c.head);
    ASSERT_EQ(out.rfind("HTTP/1.1 " + c.status, 0), 0u) << c.request << out.substr(0, 40);
    EXPECT_EQ(records, 1) << c.request;
  }
  SSL_set_msg_callback(ssl, nullptr);
}

// A body sent to the site has one deadline for all of it, the first request's (handshake_timeout),
// also on a connection's later requests: a header that announces a body and then stops held the
// connection and 80 KB for http_idle (120 s by default) at each byte (from a review).
TEST_F(TransportTest, ABodyThatStopsArrivingHasTheFirstRequestsDeadline) {
  options_.handshake_timeout = 1s;
  options_.idle_timeout = 30s;
  start();
  test_support::TlsPeer peer;
  ASSERT_EQ(peer.connect(server_->port()), "");
  SSL* ssl = peer.ssl();
  const std::string get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(ssl_send(ssl, get));
  ASSERT_NE(read_response(ssl, false), "");  // the next request's header has 30 s
  const std::string post = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab";
  ASSERT_TRUE(ssl_send(ssl, post));
  const auto t0 = std::chrono::steady_clock::now();
  char buf[4096];
  for (int i = 0; i < 100 && SSL_read(ssl, buf, sizeof buf) > 0; ++i) {  // until it closes
  }
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 800ms);
  EXPECT_LT(waited, 5s);  // not the 30 s idle timeout (the peer itself gives up at 10 s)
}

// A file held open through a transfer takes a slot of max_connections of its own (a second
// descriptor, as a bridge's upstream): with none free, 503, and the open-file limit that
// max_connections stands for holds (from a review: 141 unread downloads, each a socket and a
// file, took a server limited to 300 files to EMFILE while 250 slots were allowed).
TEST_F(TransportTest, AFileTransferTakesASlotOfItsOwn) {
  start(2);
  files_->add("file", "t", 3000);
  files_->set_have("file", 3000);
  std::ofstream(dir_ / "file") << std::string(3000, 'f');
  auto exchange = [](test_support::TlsPeer& peer, const std::string& path) {
    const std::string get = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
    EXPECT_TRUE(ssl_send(peer.ssl(), get));
    return read_response(peer.ssl(), false).substr(0, 12);
  };
  auto other = std::make_unique<test_support::TlsPeer>();
  ASSERT_EQ(other->connect(server_->port()), "");
  {
    test_support::TlsPeer peer;
    ASSERT_EQ(peer.connect(server_->port()), "");
    EXPECT_EQ(exchange(peer, att("file")), "HTTP/1.1 503");  // both slots are connections'
  }
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 1; }));
  test_support::TlsPeer peer;
  ASSERT_EQ(peer.connect(server_->port()), "");
  EXPECT_EQ(exchange(peer, "/"), "HTTP/1.1 200");  // a page from memory needs no slot
  other->end(true);
  other.reset();
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 1; }));
  EXPECT_EQ(exchange(peer, att("file")), "HTTP/1.1 200");
  EXPECT_EQ(exchange(peer, att("file")), "HTTP/1.1 200");  // and its slot was given back
}

// Requests refused, and connections ended, as an ordinary server does: HTTP/1.1 without exactly
// one Host gets 400 (RFC 9112, 3.2); a body whose chunks are malformed gets 400, one over the
// site's limit 413; and the last request a connection may make (the 1000th, as nginx's
// keepalive_requests) is answered with "Connection: close".
TEST_F(TransportTest, HttpRequestsAreRefusedAndEndedAsByOrdinaryServers) {
  start();
  HttpsClient https(client_options());
  auto status_of = [&](const std::string& request) {
    auto out = https.raw_exchange_for_test(request, 1000ms);
    return out.has_value() ? out->substr(0, 12) : "failed: " + out.error().to_string();
  };
  EXPECT_EQ(status_of("GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 400");
  EXPECT_EQ(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), "HTTP/1.1 400");
  EXPECT_EQ(status_of("GET / HTTP/1.1\r\nHost:\r\n\r\n"), "HTTP/1.1 200");  // empty is valid
  EXPECT_EQ(status_of("GET / HTTP/1.0\r\n\r\n"), "HTTP/1.0 200");           // 1.0 needs no Host
  const std::string chunked = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  EXPECT_EQ(status_of(chunked + "zz\r\n"), "HTTP/1.1 400");
  // (A chunk's size is enough to refuse it: the data is not sent, so that the server's close
  // cannot cut the client's write short.)
  EXPECT_EQ(status_of(chunked + "10001\r\n"), "HTTP/1.1 413");

  std::string requests;
  for (int i = 0; i < 1001; ++i) requests += "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
  auto out = https.raw_exchange_for_test(requests, 10000ms);
  ASSERT_TRUE(out.has_value()) << out.error().to_string();
  const std::string all = lower(*out);
  std::vector<std::size_t> starts;
  for (auto at = all.find("http/1.1 200"); at != std::string::npos;
       at = all.find("http/1.1 200", at + 1)) {
    starts.push_back(at);
  }
  ASSERT_EQ(starts.size(), 1000u) << "the 1001st request is not answered";
  EXPECT_EQ(all.find("connection: close"), all.find("connection: close", starts.back()))
      << "only the last response ends the connection";
  EXPECT_NE(all.find("connection: close", starts.back()), std::string::npos);
}

// The parser bounds a request's header and its body's data, but not a chunk's size line (its
// extensions) or the trailer after the last chunk: those are bounded by the read buffer. A
// client that sends one without end is answered 400 once the buffer is full, instead of growing
// the server's memory for as long as the read deadline allows (over 500 MB in 4 s before).
TEST_F(TransportTest, AnEndlessChunkLineOrTrailerIsRefused) {
  start();
  const std::string chunked = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string filler(16 * 1024, 'b');
  for (const std::string& endless : {chunked + "1;a=", chunked + "0\r\nX-A: "}) {
    test_support::TlsPeer peer;
    ASSERT_EQ(peer.connect(server_->port()), "");
    ASSERT_TRUE(ssl_send(peer.ssl(), endless));
    // 1 MiB, sixteen times the buffer: the server answers long before the end of it, and
    // lingers (reading and discarding) so that none of these writes is reset.
    for (int i = 0; i < 64; ++i) ASSERT_TRUE(ssl_send(peer.ssl(), filler)) << i;
    const std::string r = read_response(peer.ssl());
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << endless.substr(chunked.size()) << r.substr(0, 60);
  }
  HttpsClient https(client_options());
  auto served = https.request("GET", "/");
  ASSERT_TRUE(served.has_value()) << served.error().to_string();
  EXPECT_EQ(served->status, 200u);
}

// An answer given before the request's body is read (a refused upload part) closes the
// connection, and the close lingers as nginx's does: the server stops sending and discards what
// the client still sends until it closes. Closed at once instead, the kernel resets the
// connection while the client writes the body, and the client (curl, say) fails on its write
// and never reads the 409 that tells it where to resume.
TEST_F(TransportTest, ARefusedUploadIsReadAfterTheBodyTheClientStillSends) {
  start();
  files_->add("att9", "tok-9", 1024 * 1024);
  const std::string part(512 * 1024, 'p');
  test_support::TlsPeer peer;
  ASSERT_EQ(peer.connect(server_->port()), "");
  // It starts at 100, the attachment holds nothing yet: 409 at once, from the header alone.
  ASSERT_TRUE(ssl_send(peer.ssl(), "PUT " + att("att9") +
                                       " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-9\r\n"
                                       "Content-Range: bytes 100-524387/1048576\r\n"
                                       "Content-Length: 524288\r\n\r\n"));
  std::this_thread::sleep_for(200ms);  // the answer and the server's close come first
  for (std::size_t at = 0; at < part.size(); at += 16 * 1024) {
    ASSERT_TRUE(ssl_send(peer.ssl(), std::string_view(part).substr(at, 16 * 1024))) << at;
  }
  const std::string r = read_response(peer.ssl());
  EXPECT_EQ(r.rfind("HTTP/1.1 409", 0), 0u) << r.substr(0, 60);
  EXPECT_NE(lower(r).find("\r\nupload-offset: 0\r\n"), std::string::npos) << r;
  EXPECT_EQ(files_->have("att9"), 0u);
}

// A TCP connection to 127.0.0.1:port from the loopback address `source` (another peer address
// for the server), or -1.
int connect_from(const char* source, std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in from{};
  from.sin_family = AF_INET;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::inet_pton(AF_INET, source, &from.sin_addr) != 1 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Connections from one address that have not finished their TLS handshake are capped: one more
// is closed at once, however many of max_connections are free, so that bare TCP connections
// from one address cannot take every slot. A connection past its handshake no longer counts.
TEST_F(TransportTest, HandshakesUnderWayAreCappedPerAddress) {
  options_.max_handshakes_per_ip = 5;
  start(20);
  HttpsClient https(client_options());
  std::vector<int> bare;  // TCP only: no ClientHello
  // Twenty from 127.0.0.2: five stay, and a client from 127.0.0.1 is served.
  for (int i = 0; i < 20; ++i) {
    bare.push_back(connect_from("127.0.0.2", server_->port()));
    ASSERT_GE(bare.back(), 0);
  }
  auto served = https.request("GET", "/");
  ASSERT_TRUE(served.has_value()) << served.error().to_string();
  EXPECT_EQ(served->status, 200u);
  EXPECT_TRUE(wait_for([&] { return server_->connection_count() == 5; }));
  EXPECT_EQ(server_->refusals().handshakes_per_ip, 15u);  // counted for the metrics
  EXPECT_EQ(server_->refusals().max_connections, 0u);
  for (int fd : bare) ::close(fd);
  bare.clear();
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 0; }));

  // From the test's own address, 127.0.0.1.
  for (int i = 0; i < 5; ++i) {
    bare.push_back(test_support::connect_loopback(server_->port(), 1));
    ASSERT_GE(bare.back(), 0);
  }
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 5; }));
  // The sixth is closed by the server at once, not at the 3 s handshake timeout (nor at our
  // 1 s receive timeout); a TLS client from the same address too.
  const int sixth = test_support::connect_loopback(server_->port(), 1);
  ASSERT_GE(sixth, 0);
  const auto t0 = std::chrono::steady_clock::now();
  char byte = 0;
  const ssize_t n = ::recv(sixth, &byte, 1, 0);
  const auto waited = std::chrono::steady_clock::now() - t0;
  ::close(sixth);
  EXPECT_EQ(n, 0);
  EXPECT_LT(waited, 900ms);
  EXPECT_FALSE(https.request("GET", "/").has_value());
  EXPECT_EQ(server_->connection_count(), 5u);
  EXPECT_GE(server_->refusals().handshakes_per_ip, 17u);

  for (int fd : bare) ::close(fd);
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 0; }));
  auto page = https.request("GET", "/");
  ASSERT_TRUE(page.has_value()) << page.error().to_string();
  EXPECT_EQ(page->status, 200u);

  // Five connections past their handshake (waiting for a request): a sixth handshake goes on.
  const auto full = server_->tls_handshakes().full;
  std::vector<std::unique_ptr<test_support::TlsPeer>> peers;
  for (int i = 0; i < 5; ++i) {
    peers.push_back(std::make_unique<test_support::TlsPeer>());
    ASSERT_EQ(peers.back()->connect(server_->port()), "") << i;
  }
  ASSERT_TRUE(wait_for([&] { return server_->tls_handshakes().full == full + 5; }));
  auto again = https.request("GET", "/");
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_EQ(again->status, 200u);
}

// Connections open at once from one address are capped too, in any phase: connections past
// their handshake (held open as an idle HTTP keep-alive can be) count until they close, and one
// more is closed at once, while other addresses are served.
TEST_F(TransportTest, ConnectionsOpenAreCappedPerAddress) {
  options_.max_connections_per_ip = 3;
  options_.max_handshakes_per_ip = 0;
  options_.handshake_timeout = 10s;  // the three wait for a first request meanwhile
  start(20);
  std::vector<std::unique_ptr<test_support::TlsPeer>> peers;  // from 127.0.0.1
  for (int i = 0; i < 3; ++i) {
    peers.push_back(std::make_unique<test_support::TlsPeer>());
    ASSERT_EQ(peers.back()->connect(server_->port()), "") << i;
  }
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 3; }));
  // A fourth from the same address is closed before any TLS.
  const int fourth = test_support::connect_loopback(server_->port(), 1);
  ASSERT_GE(fourth, 0);
  char byte = 0;
  EXPECT_EQ(::recv(fourth, &byte, 1, 0), 0);
  ::close(fourth);
  HttpsClient https(client_options());
  EXPECT_FALSE(https.request("GET", "/").has_value());
  EXPECT_EQ(server_->refusals().connections_per_ip, 2u);
  EXPECT_EQ(server_->refusals().handshakes_per_ip, 0u);
  // Another address is served meanwhile.
  const int other = connect_from("127.0.0.2", server_->port());
  ASSERT_GE(other, 0);
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 4; }));
  ::close(other);
  // One of the three closes: its address may open one more.
  peers.pop_back();
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 2; }));
  auto page = https.request("GET", "/");
  ASSERT_TRUE(page.has_value()) << page.error().to_string();
  EXPECT_EQ(page->status, 200u);
  EXPECT_EQ(server_->refusals().connections_per_ip, 2u);
}

// A WebSocket opened by a raw TLS peer from the loopback address `source`, after `preamble`:
// the server's first response line, or what failed.
std::string upgrade_from(test_support::TlsPeer& peer, const char* source, std::uint16_t port,
                         std::string_view preamble) {
  const std::string tls = peer.handshake_on(connect_from(source, port), preamble);
  if (!tls.empty()) return tls;
  if (!ssl_send(peer.ssl(), ws_upgrade_request())) return "no write";
  const std::string response = read_response(peer.ssl());
  return response.substr(0, response.find("\r\n"));
}

std::string proxy_header(const char* client, std::uint16_t client_port) {
  const Bytes h = internal::make_proxy_v2(boost::asio::ip::make_address(client), client_port,
                                          boost::asio::ip::make_address("127.0.0.1"), 443);
  return std::string(as_chars(h));
}

// A relay (ServerOptions::proxy_from) names the client in a PROXY v2 header: the WebSocket's
// remote_ip() is that client, a LOCAL header keeps the relay's own address, and the cap on
// handshakes counts each named client apart, not the relay.
TEST_F(TransportTest, ARelaysConnectionIsTheClientItsProxyHeaderNames) {
  options_.proxy_from = {"127.0.0.2/31"};  // 127.0.0.2 and 127.0.0.3
  options_.max_handshakes_per_ip = 2;
  start(20);
  test_support::TlsPeer v4, v6, local;
  EXPECT_EQ(upgrade_from(v4, "127.0.0.3", server_->port(), proxy_header("198.51.100.7", 5555)),
            "HTTP/1.1 101 Switching Protocols");
  EXPECT_EQ(upgrade_from(v6, "127.0.0.2", server_->port(), proxy_header("2001:db8::5", 1)),
            "HTTP/1.1 101 Switching Protocols");
  Bytes health = internal::make_proxy_v2(boost::asio::ip::make_address("198.51.100.8"), 1,
                                         boost::asio::ip::make_address("127.0.0.1"), 443);
  health[12] = 0x20;  // LOCAL
  EXPECT_EQ(upgrade_from(local, "127.0.0.3", server_->port(), as_chars(health)),
            "HTTP/1.1 101 Switching Protocols");
  {
    std::lock_guard lock(shared_.mu);
    EXPECT_EQ(shared_.remote_ips,
              (std::vector<std::string>{"198.51.100.7", "2001:db8::5", "127.0.0.3"}));
  }

  // Three connections named 198.51.100.9 without a ClientHello: the third is closed at once.
  // Connections for another client, and more from the relay itself, go on.
  std::vector<int> bare;
  for (int i = 0; i < 3; ++i) {
    bare.push_back(connect_from("127.0.0.3", server_->port()));
    ASSERT_GE(bare.back(), 0);
    const std::string h = proxy_header("198.51.100.9", static_cast<std::uint16_t>(1000 + i));
    ASSERT_EQ(::send(bare.back(), h.data(), h.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(h.size()));
  }
  ASSERT_TRUE(wait_for([&] { return server_->refusals().handshakes_per_ip == 1; }));
  test_support::TlsPeer other;
  EXPECT_EQ(upgrade_from(other, "127.0.0.3", server_->port(), proxy_header("198.51.100.10", 2)),
            "HTTP/1.1 101 Switching Protocols");
  EXPECT_EQ(server_->refusals().handshakes_per_ip, 1u);
  EXPECT_EQ(server_->refusals().proxy_header, 0u);
  for (int fd : bare) ::close(fd);
}

// A relay may name its client in a version 1 line (nginx's `proxy_protocol on`): TCP4, TCP6,
// UNKNOWN (the relay's own connection), a line that arrives in pieces, and one that arrives in
// the same segment as the ClientHello behind it, of which the server must take no byte.
TEST_F(TransportTest, ARelayMayNameItsClientInAVersionOneLine) {
  options_.proxy_from = {"127.0.0.2/31"};
  start(20);
  test_support::TlsPeer v4, v6, unknown, split, corked;
  EXPECT_EQ(upgrade_from(v4, "127.0.0.3", server_->port(),
                         "PROXY TCP4 198.51.100.7 127.0.0.1 5555 443\r\n"),
            "HTTP/1.1 101 Switching Protocols");
  EXPECT_EQ(upgrade_from(v6, "127.0.0.2", server_->port(), "PROXY TCP6 2001:db8::5 ::1 1 443\r\n"),
            "HTTP/1.1 101 Switching Protocols");
  EXPECT_EQ(upgrade_from(unknown, "127.0.0.3", server_->port(), "PROXY UNKNOWN\r\n"),
            "HTTP/1.1 101 Switching Protocols");
  // In three pieces, apart, the CR in one and the LF in the last, which leaves with the
  // ClientHello (corked together).
  const int on = 1;
  const int split_fd = connect_from("127.0.0.3", server_->port());
  ASSERT_GE(split_fd, 0);
  for (std::string_view piece : {"PROX", "Y TCP4 203.0.113.10 127.0.0.1 8 443\r"}) {
    ASSERT_EQ(::send(split_fd, piece.data(), piece.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(piece.size()));
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(::setsockopt(split_fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on), 0);
  ASSERT_EQ(split.handshake_on(split_fd, "\n"), "");
  ASSERT_TRUE(ssl_send(split.ssl(), ws_upgrade_request()));
  EXPECT_EQ(read_response(split.ssl()).substr(0, 34), "HTTP/1.1 101 Switching Protocols\r\n");
  // Corked: the line and the ClientHello leave together (TCP_CORK holds them up to 200 ms).
  const int corked_fd = connect_from("127.0.0.3", server_->port());
  ASSERT_GE(corked_fd, 0);
  ASSERT_EQ(::setsockopt(corked_fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on), 0);
  ASSERT_EQ(corked.handshake_on(corked_fd, "PROXY TCP4 203.0.113.9 127.0.0.1 7 443\r\n"), "");
  ASSERT_TRUE(ssl_send(corked.ssl(), ws_upgrade_request()));
  EXPECT_EQ(read_response(corked.ssl()).substr(0, 34), "HTTP/1.1 101 Switching Protocols\r\n");
  std::lock_guard lock(shared_.mu);
  EXPECT_EQ(shared_.remote_ips,
            (std::vector<std::string>{"198.51.100.7", "2001:db8::5", "127.0.0.3", "203.0.113.10",
                                      "203.0.113.9"}));
  EXPECT_EQ(server_->refusals().proxy_header, 0u);
  EXPECT_EQ(server_->relayed().proxy_header, 4u);
}

// From a relay, anything but a valid PROXY header first is refused and counted, soon (a
// silent relay at the handshake timeout); from any other address a header is not read but
// taken for TLS, so a client cannot name itself someone else. Everyone else is served.
TEST_F(TransportTest, ARelaysConnectionWithoutAValidProxyHeaderIsClosed) {
  options_.proxy_from = {"127.0.0.3"};
  options_.handshake_timeout = 1s;
  start(20);
  // Straight into TLS, a version 1 line with a bad address, one with no end within 107 bytes,
  // a DGRAM header, a header too long to read.
  test_support::TlsPeer tls_first;
  EXPECT_NE(tls_first.handshake_on(connect_from("127.0.0.3", server_->port()), {}), "");
  Bytes dgram = internal::make_proxy_v2(boost::asio::ip::make_address("198.51.100.7"), 1,
                                        boost::asio::ip::make_address("127.0.0.1"), 443);
  dgram[13] = 0x12;
  Bytes too_long = dgram;
  too_long[13] = 0x11;
  too_long[14] = 0xFF;
  const std::string no_line_end = "PROXY UNKNOWN " + std::string(93, 'x');  // 107 bytes
  for (const std::string& bad :
       {std::string("PROXY TCP4 198.51.100.300 127.0.0.1 1 443\r\n"), no_line_end,
        std::string(as_chars(dgram)), std::string(as_chars(too_long))}) {
    const int fd = connect_from("127.0.0.3", server_->port());
    ASSERT_GE(fd, 0);
    timeval tv{3, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ASSERT_EQ(::send(fd, bad.data(), bad.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bad.size()));
    const auto t0 = std::chrono::steady_clock::now();
    char byte = 0;
    const ssize_t n = ::recv(fd, &byte, 1, 0);  // closed by the server (reset: bytes unread)
    EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << n << " " << errno;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 900ms);
    ::close(fd);
  }
  EXPECT_TRUE(wait_for([&] { return server_->refusals().proxy_header == 5; }));
  // A relay that says nothing is closed at the handshake timeout.
  const int silent = connect_from("127.0.0.3", server_->port());
  ASSERT_GE(silent, 0);
  timeval tv{6, 0};
  ::setsockopt(silent, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const auto t0 = std::chrono::steady_clock::now();
  char byte = 0;
  EXPECT_EQ(::recv(silent, &byte, 1, 0), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
  ::close(silent);
  EXPECT_TRUE(wait_for([&] { return server_->refusals().proxy_header == 6; }));
  // A relay that drips a version 1 line, a byte every 100 ms, is closed at the timeout too.
  const int drip = connect_from("127.0.0.3", server_->port());
  ASSERT_GE(drip, 0);
  const std::string line = "PROXY TCP4 198.51.100.7 127.0.0.1 1 443\r\n";
  const auto d0 = std::chrono::steady_clock::now();
  std::size_t dripped = 0;
  for (; dripped < line.size(); ++dripped) {
    if (::send(drip, &line[dripped], 1, MSG_NOSIGNAL) != 1) break;  // closed
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_LT(dripped, line.size());
  EXPECT_LT(std::chrono::steady_clock::now() - d0, 3s);
  ::close(drip);
  EXPECT_TRUE(wait_for([&] { return server_->refusals().proxy_header == 7; }));

  // A client that is no relay sends a header: it is not TLS, so the handshake fails.
  const auto failed = server_->tls_handshakes().failed;
  test_support::TlsPeer impostor;
  EXPECT_NE(upgrade_from(impostor, "127.0.0.4", server_->port(), proxy_header("198.51.100.7", 1)),
            "HTTP/1.1 101 Switching Protocols");
  EXPECT_TRUE(wait_for([&] { return server_->tls_handshakes().failed == failed + 1; }));
  test_support::TlsPeer impostor_v1;
  EXPECT_NE(upgrade_from(impostor_v1, "127.0.0.4", server_->port(),
                         "PROXY TCP4 198.51.100.7 127.0.0.1 1 443\r\n"),
            "HTTP/1.1 101 Switching Protocols");
  EXPECT_TRUE(wait_for([&] { return server_->tls_handshakes().failed == failed + 2; }));
  auto good = ws();
  ASSERT_TRUE(good);
  expect_echo(*good, "served all along");
  std::lock_guard lock(shared_.mu);
  EXPECT_EQ(shared_.remote_ips, std::vector<std::string>{"127.0.0.1"});
}

TEST_F(TransportTest, AServerRefusesAProxyFromThatIsNoAddress) {
  options_.proxy_from = {"bridge.example"};
  auto server = Server::start(io_, options_, nullptr, nullptr);
  ASSERT_FALSE(server.has_value());
  EXPECT_EQ(server.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(server.error().message().find("bridge.example"), std::string::npos);
}

// A bridge with bridge_proxy_header opens each upstream connection with a PROXY v2 header that
// names its client; the bytes after it are the client's, as before.
TEST_F(TransportTest, ABridgeNamesItsClientToTheUpstream) {
  const int lfd = bridge_to_a_test_upstream();
  ASSERT_GE(lfd, 0);
  options_.bridge_proxy_header = true;
  start(4);
  test_support::TlsPeer client;
  EXPECT_EQ(upgrade_from(client, "127.0.0.4", server_->port(), {}),
            "HTTP/1.1 101 Switching Protocols");
  ASSERT_TRUE(ssl_send(client.ssl(), "after the header"));
  const int up = ::accept(lfd, nullptr, nullptr);
  ASSERT_GE(up, 0);
  timeval tv{5, 0};
  ::setsockopt(up, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  char buf[256];
  for (int i = 0; i < 100 && got.size() < 28 + 16; ++i) {
    const ssize_t n = ::recv(up, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  ASSERT_EQ(got.size(), 28u + 16u);
  auto peer = internal::parse_proxy_v2(as_bytes(std::string_view(got).substr(0, 28)));
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  EXPECT_TRUE(peer->proxied);
  EXPECT_EQ(peer->ip, "127.0.0.4");
  EXPECT_NE(peer->port, 0);
  EXPECT_EQ(got.substr(28), "after the header");
  ::close(up);
  ::close(lfd);
}

// Reads exactly `n` bytes from a blocking socket: what came (fewer when it closed or timed out).
std::string recv_exactly(int fd, std::size_t n) {
  std::string got(n, '\0');
  std::size_t at = 0;
  for (int i = 0; i < 1000 && at < n; ++i) {
    const ssize_t r = ::recv(fd, got.data() + at, n - at, 0);
    if (r <= 0) break;
    at += static_cast<std::size_t>(r);
  }
  got.resize(at);
  return got;
}

bool send_all(int fd, std::string_view bytes) {
  return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

std::string ext_command(std::uint16_t cmd, std::string_view body) {
  std::string out{static_cast<char>(cmd >> 8), static_cast<char>(cmd & 0xFF),
                  static_cast<char>(body.size() >> 8), static_cast<char>(body.size() & 0xFF)};
  return out + std::string(body);
}

// The Extended ORPort's handshake as obfs4proxy (goptlib's pt.DialOr) runs it, with the cookie
// read from `cookie_file` (or, when `wrong_cookie`, another one): "" when the server said OKAY,
// or the step that failed. The socket is then at the start of the client's TLS.
std::string ext_orport_client(int fd, const std::filesystem::path& cookie_file,
                              const std::string& useraddr, bool wrong_cookie = false) {
  std::ifstream in(cookie_file, std::ios::binary);
  std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (file.size() != 64) return "cookie file";
  std::string cookie = file.substr(32);
  if (wrong_cookie) cookie[0] = static_cast<char>(cookie[0] ^ 1);
  if (recv_exactly(fd, 2) != std::string("\x01\x00", 2)) return "greeting";
  const std::string client_nonce(32, 'n');
  if (!send_all(fd, "\x01" + client_nonce)) return "send nonce";
  const std::string reply = recv_exactly(fd, 64);
  if (reply.size() != 64) return "server hash";
  const std::string server_nonce = reply.substr(32);
  auto hash = [&](std::string_view label) {
    const auto d = crypto::hmac_sha256(
        as_bytes(cookie), {as_bytes(label), as_bytes(client_nonce), as_bytes(server_nonce)});
    return std::string(as_chars(d));
  };
  if (!wrong_cookie &&
      reply.substr(0, 32) != hash("ExtORPort authentication server-to-client hash")) {
    return "server hash mismatch";
  }
  if (!send_all(fd, hash("ExtORPort authentication client-to-server hash"))) return "send hash";
  if (recv_exactly(fd, 1) != std::string(1, '\x01')) return "refused";
  if (!send_all(fd, ext_command(1, useraddr) + ext_command(2, "obfs4") + ext_command(0, ""))) {
    return "send commands";
  }
  if (recv_exactly(fd, 4) != std::string("\x10\x00\x00\x00", 4)) return "no OKAY";
  return "";
}

// A pluggable transport on the Extended ORPort proves it read the cookie and names its client;
// the client's TLS and WebSocket follow on the same connection, as that client. A wrong cookie,
// or a client named badly, is refused and counted; the main listener serves on.
TEST_F(TransportTest, AnExtendedOrPortConnectionIsTheClientItNames) {
  const auto cookie_file = dir_ / "ext_cookie";
  options_.ext_orport_cookie_file = cookie_file.string();
  start(20);
  ASSERT_NE(server_->ext_orport_port(), 0);
  EXPECT_EQ(std::filesystem::status(cookie_file).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  for (const char* useraddr : {"203.0.113.5:4711", "[2001:db8::7]:1"}) {
    const int fd = test_support::connect_loopback(server_->ext_orport_port(), 5);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ext_orport_client(fd, cookie_file, useraddr), "");
    test_support::TlsPeer peer;
    ASSERT_EQ(peer.handshake_on(fd, {}), "");
    ASSERT_TRUE(ssl_send(peer.ssl(), ws_upgrade_request()));
    const std::string response = read_response(peer.ssl());
    EXPECT_EQ(response.rfind("HTTP/1.1 101", 0), 0u) << response.substr(0, 40);
  }
  {
    std::lock_guard lock(shared_.mu);
    EXPECT_EQ(shared_.remote_ips, (std::vector<std::string>{"203.0.113.5", "2001:db8::7"}));
  }
  EXPECT_EQ(server_->relayed().ext_orport, 2u);
  EXPECT_EQ(server_->relayed().proxy_header, 0u);

  const int wrong = test_support::connect_loopback(server_->ext_orport_port(), 5);
  ASSERT_GE(wrong, 0);
  EXPECT_EQ(ext_orport_client(wrong, cookie_file, "203.0.113.5:1", true), "refused");
  ::close(wrong);
  const int bad_addr = test_support::connect_loopback(server_->ext_orport_port(), 5);
  ASSERT_GE(bad_addr, 0);
  EXPECT_EQ(ext_orport_client(bad_addr, cookie_file, "somewhere:1"), "no OKAY");
  ::close(bad_addr);
  // TLS straight away, as to the main listener: no auth type 0x16.
  test_support::TlsPeer direct;
  EXPECT_NE(direct.handshake_on(test_support::connect_loopback(server_->ext_orport_port(), 5), {}),
            "");
  EXPECT_TRUE(wait_for([&] { return server_->refusals().ext_orport == 3; }));
  auto good = ws();
  ASSERT_TRUE(good);
  expect_echo(*good, "the main listener serves on");
  EXPECT_EQ(server_->relayed().ext_orport, 2u);
}

// A bridge without bridge_proxy_header passes on no client stream that opens with a PROXY
// signature of either version (an upstream that wrongly expected a header from it would believe
// the client's), however the client splits it; a stream that only starts like one is passed on
// whole.
TEST_F(TransportTest, ABridgeWithoutItsOwnHeaderPassesOnNoClientsHeader) {
  const int lfd = bridge_to_a_test_upstream();
  ASSERT_GE(lfd, 0);
  start(4);
  // What the upstream gets from a client that sends `pieces` one after another.
  auto upstream_gets = [&](const std::vector<std::string>& pieces) {
    test_support::TlsPeer client;
    EXPECT_EQ(upgrade_from(client, "127.0.0.4", server_->port(), {}),
              "HTTP/1.1 101 Switching Protocols");
    const int up = ::accept(lfd, nullptr, nullptr);
    EXPECT_GE(up, 0);
    timeval tv{5, 0};
    ::setsockopt(up, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (const std::string& piece : pieces) {
      if (!ssl_send(client.ssl(), piece)) break;
      std::this_thread::sleep_for(20ms);  // apart, so that the bridge reads them apart
    }
    client.end(false);
    std::string got;
    char buf[256];
    for (int i = 0; i < 100; ++i) {
      const ssize_t n = ::recv(up, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
    ::close(up);
    return got;
  };
  const std::string header = proxy_header("198.51.100.7", 1);
  EXPECT_EQ(upstream_gets({header + "then TLS"}), "");
  const std::string split =
      upstream_gets({header.substr(0, 5), header.substr(5, 6), header.substr(11) + "then TLS"});
  EXPECT_EQ(split, header.substr(0, 11));  // never the whole signature: no header
  EXPECT_EQ(upstream_gets({"\r\n\r\n", "not a header"}), "\r\n\r\nnot a header");
  EXPECT_EQ(upstream_gets({"PROXY TCP4 198.51.100.7 127.0.0.1 1 443\r\nthen TLS"}), "");
  EXPECT_EQ(upstream_gets({"PRO", "XY", " TCP4 198.51.100.7 127.0.0.1 1 443\r\n"}), "PROXY");
  EXPECT_EQ(upstream_gets({"PRO", "XIMITY"}), "PROXIMITY");
  ::close(lfd);
}

// A bridge answers the upgrade itself: it refuses the requests the WebSocket server refuses
// with the same bytes (a key over 24 characters reached an assertion in Beast's key encoder,
// which aborts a debug build), and opens no upstream connection for them.
TEST_F(TransportTest, ABridgeRefusesTheUpgradesTheWebSocketServerRefuses) {
  // On a worker context, as parleyd runs its connections (where they flush affects how the
  // answers are cut into TLS records).
  auto guard = boost::asio::make_work_guard(worker_);
  std::thread worker([&] { worker_.run(); });
  options_.workers = {&worker_};
  const std::string good = ws_upgrade_request();
  auto with = [&](const std::string& from, const std::string& to) {
    std::string r = good;
    r.replace(r.find(from), from.size(), to);
    return r;
  };
  const std::string key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
  const std::string version = "Sec-WebSocket-Version: 13\r\n";
  const std::string expect = "Expect: 100-continue\r\n";
  const std::vector<std::string> requests = {
      with(key, "Sec-WebSocket-Key: " + std::string(32, 'A') + "\r\n"),
      with(key, ""),
      with(version, "Sec-WebSocket-Version: 12\r\n"),
      with(version, ""),
      with(version, "Sec-WebSocket-Version: 12\r\n" + expect),
  };
  // The answer, and the sizes of the TLS records it came in (a prober sees those too).
  auto answer = [&](const std::string& request) {
    test_support::TlsPeer peer;
    EXPECT_EQ(peer.connect(server_->port()), "");
    EXPECT_TRUE(ssl_send(peer.ssl(), request));
    std::vector<std::size_t> records;
    std::string r = read_response(peer.ssl(), &records);
    for (std::size_t n : records) r += "|record " + std::to_string(n);
    return r;
  };
  auto answers = [&] {
    std::vector<std::string> out;
    for (const std::string& request : requests) out.push_back(answer(request));
    return out;
  };
  start();
  const std::vector<std::string> websocket_server = answers();
  ASSERT_EQ(websocket_server.size(), 5u);
  EXPECT_EQ(websocket_server[0].rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u)
      << websocket_server[0];
  EXPECT_NE(websocket_server[0].find("Sec-WebSocket-Key field is invalid"), std::string::npos)
      << websocket_server[0];
  EXPECT_EQ(websocket_server[2].rfind("HTTP/1.1 426 Upgrade Required\r\n", 0), 0u);
  EXPECT_EQ(websocket_server[4].rfind("HTTP/1.1 100 Continue\r\n", 0), 0u) << websocket_server[4];
  // And the answers that accept, which the bridge gives once its upstream is connected (up to
  // the end of the 101's header: what follows is the WebSocket's).
  auto accept_answer = [&](const std::string& request) {
    const std::string r = answer(request);
    const auto end = r.find("\r\n\r\n", r.find("HTTP/1.1 101 "));
    return end == std::string::npos ? r : r.substr(0, end + 4) + r.substr(r.find("|record "));
  };
  const std::string accepted = accept_answer(good);
  const std::string accepted_continued = accept_answer(with(version, version + expect));
  EXPECT_EQ(accepted.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << accepted;

  const int lfd = bridge_to_a_test_upstream();
  ASSERT_GE(lfd, 0);
  restart_on_the_same_port();
  EXPECT_EQ(answers(), websocket_server);
  // No upstream connection was opened for them; the good request still gets one.
  const int flags = ::fcntl(lfd, F_GETFL);
  ::fcntl(lfd, F_SETFL, flags | O_NONBLOCK);
  EXPECT_LT(::accept(lfd, nullptr, nullptr), 0);
  test_support::TlsPeer client;
  EXPECT_EQ(upgrade_from(client, "127.0.0.4", server_->port(), {}),
            "HTTP/1.1 101 Switching Protocols");
  EXPECT_EQ(accept_answer(good), accepted);
  EXPECT_EQ(accept_answer(with(version, version + expect)), accepted_continued);
  EXPECT_EQ(accepted_continued.rfind("HTTP/1.1 100 Continue\r\n", 0), 0u) << accepted_continued;
  ::close(lfd);
  server_->stop_accepting();
  server_->close_all("test over");
  EXPECT_TRUE(wait_for([&] { return server_->connection_count() == 0; }, 10000ms));
  server_.reset();
  guard.reset();
  worker.join();
}

// Bridge mode: a bridged connection holds two descriptors (the client's and its upstream's)
// and takes two of max_connections; connection_count() still counts it once.
TEST_F(TransportTest, ABridgedConnectionTakesTwoOfMaxConnections) {
  const int lfd = bridge_to_a_test_upstream();  // the kernel accepts
  ASSERT_GE(lfd, 0);
  start(3);
  auto upgrade = [&](test_support::TlsPeer& peer) -> std::string {
    if (!peer.connect(server_->port()).empty()) return "no TLS";
    if (!ssl_send(peer.ssl(), ws_upgrade_request())) return "no write";
    return read_response(peer.ssl());
  };
  test_support::TlsPeer first;
  const std::string bridged = upgrade(first);
  EXPECT_EQ(bridged.rfind("HTTP/1.1 101", 0), 0u) << bridged.substr(0, 40);
  // The second is accepted (the third slot) but finds no slot for its upstream: it is closed.
  test_support::TlsPeer second;
  const std::string refused = upgrade(second);
  EXPECT_EQ(refused.find("101"), std::string::npos) << refused.substr(0, 40);
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 1; }));
  // The website still gets the third.
  HttpsClient https(client_options());
  auto page = https.request("GET", "/");
  ASSERT_TRUE(page.has_value()) << page.error().to_string();
  EXPECT_EQ(page->status, 200u);
  ::close(lfd);
}

TEST_F(TransportTest, MaxConnections) {
  start(2);
  auto a = ws();
  auto b = ws();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 2; }));
  auto c = BlockingWsClient::connect(client_options());
  EXPECT_FALSE(c.has_value());
  expect_echo(*a, "a");
  b->close();
  b.reset();
  ASSERT_TRUE(wait_for([&] { return server_->connection_count() == 1; }));
  auto d = ws();
  ASSERT_TRUE(d);
  expect_echo(*d, "d");
}

TEST_F(TransportTest, CloseAllAndStopAccepting) {
  start();
  auto a = ws();
  ASSERT_TRUE(a);
  server_->stop_accepting();
  server_->close_all("maintenance");
  auto r = a->receive(3000ms);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kIo);
  EXPECT_NE(r.error().message().find("maintenance"), std::string::npos);
  EXPECT_TRUE(wait_for([&] { return server_->connection_count() == 0; }));
  EXPECT_FALSE(BlockingWsClient::connect(client_options()).has_value());
}

TEST_F(TransportTest, SiteDirWithoutTraversal) {
  auto site = dir_ / "site";
  std::filesystem::create_directories(site / "sub");
  std::ofstream(site / "index.html") << "<html>home</html>";
  std::ofstream(site / "sub" / "page.txt") << "text";
  std::ofstream(dir_ / "secret.txt") << "secret";
  std::filesystem::create_symlink(dir_ / "secret.txt", site / "link.txt");
  options_.site_dir = site.string();
  start();
  HttpsClient https(client_options());
  auto home = https.request("GET", "/");
  ASSERT_TRUE(home.has_value());
  EXPECT_EQ(home->status, 200u);
  EXPECT_EQ(home->body, "<html>home</html>");
  auto page = https.request("GET", "/sub/page.txt");
  ASSERT_TRUE(page.has_value());
  EXPECT_EQ(page->body, "text");
  EXPECT_NE(page->header("Content-Type").find("text/plain"), std::string::npos);
  std::ofstream(site / "empty.txt").flush();  // an empty file: a header and nothing more
  auto empty = https.request("GET", "/empty.txt");
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->status, 200u);
  EXPECT_EQ(empty->body, "");
  for (const char* p : {"/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt",
                        "/link.txt", "/sub/%00"}) {
    auto r = https.request("GET", p);
    ASSERT_TRUE(r.has_value()) << p;
    EXPECT_EQ(r->status, 404u) << p;
    EXPECT_EQ(r->body.find("secret"), std::string::npos);
  }
  // A custom 404 page is served from the site only: one that links out is not followed.
  std::filesystem::create_symlink(dir_ / "secret.txt", site / "404.html");
  auto linked = https.request("GET", "/missing");
  ASSERT_TRUE(linked.has_value());
  EXPECT_EQ(linked->status, 404u);
  EXPECT_EQ(linked->body.find("secret"), std::string::npos) << linked->body;
  std::filesystem::remove(site / "404.html");
  std::ofstream(site / "404.html") << "our own 404";
  auto own = https.request("GET", "/missing");
  ASSERT_TRUE(own.has_value());
  EXPECT_EQ(own->status, 404u);
  EXPECT_EQ(own->body, "our own 404");
}

// A page's file is opened only as the site checked it: when a directory on its path, or the file
// itself, is swapped for a symlink out of the site after the check, the open fails.
TEST_F(TransportTest, ASiteFileSwappedAfterItsCheckIsNotOpened) {
  namespace fs = std::filesystem;
  const fs::path site = dir_ / "site";
  fs::create_directories(site / "d");
  fs::create_directories(dir_ / "out" / "d");
  std::ofstream(site / "d" / "page.html") << "inside";
  std::ofstream(dir_ / "out" / "d" / "page.html") << "outside";
  // A second name keeps the checked file's inode in use, so that no new file gets its number.
  fs::create_hard_link(site / "d" / "page.html", dir_ / "checked.html");
  auto read_all = [](int fd) {
    std::string text(64, '\0');
    const ssize_t n = ::read(fd, text.data(), text.size());
    ::close(fd);
    text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return text;
  };
  StaticSite static_site(site.string());
  const SiteResponse page = static_site.handle("GET", "/d/page.html", "");
  ASSERT_EQ(page.status, 200u);
  int fd = open_site_file(page);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(read_all(fd), "inside");

  fs::rename(site / "d", site / "d.old");  // the directory, for a symlink out of the site
  fs::create_directory_symlink(dir_ / "out" / "d", site / "d");
  fd = open_site_file(page);
  EXPECT_LT(fd, 0);
  if (fd >= 0) ADD_FAILURE() << "opened " << read_all(fd);
  EXPECT_EQ(static_site.handle("GET", "/d/page.html", "").status, 404u);

  fs::remove(site / "d");  // the file itself, for a symlink out of the site
  fs::rename(site / "d.old", site / "d");
  fs::remove(site / "d" / "page.html");
  fs::create_symlink(dir_ / "out" / "d" / "page.html", site / "d" / "page.html");
  fd = open_site_file(page);
  EXPECT_LT(fd, 0);
  if (fd >= 0) ADD_FAILURE() << "opened " << read_all(fd);

  fs::remove(site / "d" / "page.html");  // replaced by another file: not the one checked
  std::ofstream(site / "d" / "new.html") << "new";
  fs::rename(site / "d" / "new.html", site / "d" / "page.html");
  fd = open_site_file(page);
  EXPECT_LT(fd, 0);
  if (fd >= 0) ADD_FAILURE() << "opened " << read_all(fd);
  const SiteResponse fresh = static_site.handle("GET", "/d/page.html", "");
  fd = open_site_file(fresh);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(read_all(fd), "new");

  // A FIFO is not a page, and looking at it does not wait for a writer (which would hold the
  // io thread): a 404 at once, also as the custom 404 page.
  ASSERT_EQ(::mkfifo((site / "d" / "fifo.html").c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo((site / "404.html").c_str(), 0600), 0);
  const SiteResponse fifo = static_site.handle("GET", "/d/fifo.html", "");
  EXPECT_EQ(fifo.status, 404u);
  EXPECT_TRUE(fifo.file_path.empty());
}

// With worker contexts (an IoPool's), connections are spread over them round-robin, and each
// stays on its context's one thread.
TEST_F(TransportTest, ConnectionsSpreadOverWorkerContexts) {
  auto g1 = boost::asio::make_work_guard(worker_);
  auto g2 = boost::asio::make_work_guard(worker2_);
  std::thread t1([&] { worker_.run(); });
  std::thread t2([&] { worker2_.run(); });
  options_.workers = {&worker_, &worker2_};
  start();
  std::vector<std::unique_ptr<BlockingWsClient>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(ws());
    ASSERT_TRUE(clients.back());
  }
  for (int round = 0; round < 3; ++round) {
    for (auto& c : clients) expect_echo(*c, "round " + std::to_string(round));
  }
  {
    std::lock_guard lock(shared_.mu);
    // Two on each worker. (Counted, not compared in order: a handler's on_open can run
    // after its client has the 101 and the next connection's has run, on the other worker.)
    ASSERT_EQ(shared_.open_threads.size(), 4u);
    const auto& seen = shared_.open_threads;
    EXPECT_EQ(std::count(seen.begin(), seen.end(), t1.get_id()), 2);
    EXPECT_EQ(std::count(seen.begin(), seen.end(), t2.get_id()), 2);
  }
  EXPECT_EQ(shared_.moved.load(), 0);
  // The workers outlive every connection on them.
  server_->stop_accepting();
  server_->close_all("test over");
  EXPECT_TRUE(wait_for([&] { return server_->connection_count() == 0; }, 10000ms));
  server_.reset();
  g1.reset();
  g2.reset();
  t1.join();
  t2.join();
}

// In a child process (one thread, its own descriptor limit): with no descriptor free, the admin
// listener pauses between failed accepts (EMFILE) instead of spinning on the waiting
// connection, and answers it once descriptors are free. 0 or what failed.
int admin_without_descriptors() {
  boost::asio::io_context io(1);
  auto admin = AdminServer::start(io, "127.0.0.1", 0,
                                  [](const std::string&, const std::string&, AdminReply reply) {
                                    reply(AdminResponse{200, "text/plain", "ok\n"});
                                  });
  if (!admin) return 2;
  const int client = test_support::connect_loopback((*admin)->port(), 2);
  if (client < 0) return 3;
  const std::string request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  if (::send(client, request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) {
    return 4;
  }
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 5;
  limit.rlim_cur = std::min<rlim_t>(limit.rlim_cur, 256);
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return 5;
  std::vector<int> taken;
  for (int i = 0; i < 256; ++i) {
    const int fd = ::dup(client);
    if (fd < 0) break;
    taken.push_back(fd);
  }
  if (::dup(client) >= 0 || errno != EMFILE) return 6;
  // About 20 accepts and 20 pauses in a second; spinning ran hundreds of thousands.
  const std::size_t handlers = io.run_for(1s);
  for (int fd : taken) ::close(fd);
  io.run_for(300ms);
  char reply[32] = {};
  const ssize_t n = ::recv(client, reply, sizeof reply - 1, 0);
  if (handlers > 200) return 7;
  if (n <= 0 || std::string_view(reply).rfind("HTTP/1.1 200", 0) != 0) return 8;
  (*admin)->stop();
  io.run_for(100ms);
  return 0;
}

// One request to the admin listener over plain TCP: everything it answered until it closed.
std::string admin_exchange(std::uint16_t port, const std::string& request) {
  const int fd = test_support::connect_loopback(port, 5);
  if (fd < 0) return "no connection";
  std::string got;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
      static_cast<ssize_t>(request.size())) {
    char buf[1024];
    for (int i = 0; i < 100; ++i) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return got;
}

// The admin listener serves only the peers it allows: loopback by default; with a list, only
// those (here a network the test's loopback peer is not in: it is closed unanswered, and the
// handler never runs). An entry that is no address or network stops the start.
TEST(AdminServer, ServesOnlyThePeersItAllows) {
  boost::asio::io_context io(1);
  std::atomic<int> handled{0};
  auto handler = [&](const std::string&, const std::string&, AdminReply reply) {
    handled.fetch_add(1);
    reply(AdminResponse{200, "text/plain", "ok\n"});
  };
  auto loopback = AdminServer::start(io, "127.0.0.1", 0, handler);
  ASSERT_TRUE(loopback.has_value()) << loopback.error().to_string();
  auto elsewhere = AdminServer::start(io, "127.0.0.1", 0, handler, {"10.0.0.0/8", "fd00::/8"});
  ASSERT_TRUE(elsewhere.has_value()) << elsewhere.error().to_string();
  auto listed = AdminServer::start(io, "127.0.0.1", 0, handler, {"127.0.0.1"});
  ASSERT_TRUE(listed.has_value()) << listed.error().to_string();
  auto bad = AdminServer::start(io, "127.0.0.1", 0, handler, {"not-an-address"});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  std::thread runner([&] { io.run_for(10s); });
  const std::string request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  EXPECT_EQ(admin_exchange((*loopback)->port(), request).rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(admin_exchange((*elsewhere)->port(), request), "");
  EXPECT_EQ(handled.load(), 1);
  EXPECT_EQ(admin_exchange((*listed)->port(), request).rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(handled.load(), 2);
  for (auto* a : {&*loopback, &*elsewhere, &*listed}) (*a)->stop();
  io.stop();
  runner.join();
}

// The admin listener is for the operator's tools, not for web pages the operator visits: a Host
// that is not an IP address or localhost (DNS rebinding) or any Origin (a cross-site request)
// gets 403 without reaching the handler. A handler may answer later (1 s), from another thread,
// while the listener's one thread serves other requests. At most kMaxAdminConnections are open.
TEST(AdminServer, RefusesWebPagesAnswersLaterAndCapsConnections) {
  boost::asio::io_context io(1);
  std::atomic<int> handled{0};
  std::vector<std::thread> repliers;
  std::mutex mu;
  auto admin = AdminServer::start(
      io, "127.0.0.1", 0, [&](const std::string&, const std::string& target, AdminReply reply) {
        handled.fetch_add(1);
        if (target != "/later") return reply(AdminResponse{200, "text/plain", "ok\n"});
        std::lock_guard lock(mu);
        repliers.emplace_back([reply] {
          std::this_thread::sleep_for(1000ms);
          reply(AdminResponse{200, "text/plain", "later\n"});
        });
      });
  ASSERT_TRUE(admin.has_value()) << admin.error().to_string();
  std::thread runner([&] { io.run_for(20s); });
  const std::uint16_t port = (*admin)->port();
  auto get = [&](const std::string& target, const std::string& fields) {
    return admin_exchange(port, "GET " + target + " HTTP/1.1\r\n" + fields + "\r\n");
  };
  for (const char* host :
       {"evil.example", "evil.example:9090", "127.0.0.1.evil.example", "localhost.evil.example",
        "[::1", "127.0.0.1:", "127.0.0.1:x", "[::1]:abc"}) {
    EXPECT_EQ(get("/health", "Host: " + std::string(host) + "\r\n").rfind("HTTP/1.1 403", 0), 0u)
        << host;
  }
  EXPECT_EQ(get("/health", "").rfind("HTTP/1.1 403", 0), 0u);  // no Host
  EXPECT_EQ(get("/health", "Host: 127.0.0.1:9090\r\nOrigin: http://evil.example\r\n")
                .rfind("HTTP/1.1 403", 0),
            0u);
  EXPECT_EQ(handled.load(), 0);
  for (const char* host :
       {"127.0.0.1", "127.0.0.1:9090", "localhost", "LocalHost:1", "[::1]", "[::1]:9090"}) {
    EXPECT_EQ(get("/health", "Host: " + std::string(host) + "\r\n").rfind("HTTP/1.1 200", 0), 0u)
        << host;
  }

  // A late answer, and a request served while it is awaited.
  std::string late;
  std::thread waiting([&] { late = get("/later", "Host: 127.0.0.1\r\n"); });
  std::this_thread::sleep_for(100ms);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(get("/health", "Host: 127.0.0.1\r\n").rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 600ms) << "the late answer held the thread";
  waiting.join();
  EXPECT_EQ(late.rfind("HTTP/1.1 200", 0), 0u) << late;
  EXPECT_NE(late.find("later\n"), std::string::npos) << late;

  // kMaxAdminConnections idle connections: one more is closed unanswered; then room again.
  std::vector<int> idle;
  for (int i = 0; i < kMaxAdminConnections; ++i) {
    idle.push_back(test_support::connect_loopback(port, 5));
    ASSERT_GE(idle.back(), 0);
  }
  std::this_thread::sleep_for(500ms);  // all accepted
  EXPECT_EQ(get("/health", "Host: 127.0.0.1\r\n"), "");
  for (int fd : idle) ::close(fd);
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {  // up to 5 s for the closes to be seen
    served = get("/health", "Host: 127.0.0.1\r\n").rfind("HTTP/1.1 200", 0) == 0;
    if (!served) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(served);
  (*admin)->stop();
  io.stop();
  runner.join();
  std::lock_guard lock(mu);
  for (auto& t : repliers) t.join();
}

TEST(AdminServer, PausesWhenNoDescriptorIsFree) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(admin_without_descriptors());
  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 1000 && done == 0; ++i) {  // up to 10 s
    done = ::waitpid(pid, &status, WNOHANG);
    if (done == 0) std::this_thread::sleep_for(10ms);
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    FAIL() << "the child did not end";
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "7: spinning; 8: no answer; else the set-up failed";
}

// The admin server may be destroyed while io still runs, with a request half read: the accept
// loop ends and the request is still answered, touching nothing destroyed (before, both used
// the destroyed server; AddressSanitizer's run in CI catches a regression).
TEST(AdminServer, DestroyedWhileServingEndsCleanly) {
  boost::asio::io_context io(1);
  auto admin = AdminServer::start(io, "127.0.0.1", 0,
                                  [](const std::string&, const std::string&, AdminReply reply) {
                                    reply(AdminResponse{200, "text/plain", "ok\n"});
                                  });
  ASSERT_TRUE(admin.has_value()) << admin.error().to_string();
  const int client = test_support::connect_loopback((*admin)->port(), 2);
  ASSERT_GE(client, 0);
  const std::string head = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";  // unfinished
  ASSERT_EQ(::send(client, head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
  io.run_for(200ms);  // accepted; the request waits for the rest of its header
  admin->reset();     // destroyed while io runs
  io.run_for(100ms);  // the accept loop ends
  ASSERT_EQ(::send(client, "\r\n", 2, 0), 2);
  io.run_for(300ms);
  char reply[32] = {};
  const ssize_t n = ::recv(client, reply, sizeof reply - 1, 0);
  ::close(client);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string_view(reply).rfind("HTTP/1.1 200", 0), 0u) << reply;
}

TEST(IoPool, RunsEachContextOnItsOwnThreadUntilMainEnds) {
  boost::asio::io_context main_ctx(1);
  IoPool pool(main_ctx, 3);
  const auto& ctxs = pool.contexts();
  ASSERT_EQ(ctxs.size(), 3u);
  EXPECT_EQ(ctxs[0], &main_ctx);
  std::mutex mu;
  std::set<std::thread::id> seen;
  std::atomic<int> ran{0};
  for (auto* c : ctxs) {
    boost::asio::post(*c, [&] {
      std::lock_guard lock(mu);
      seen.insert(std::this_thread::get_id());
      ran++;
    });
  }
  // The other contexts keep running (they have no work of their own) until main's run() ends.
  boost::asio::steady_timer stop(main_ctx, 200ms);
  stop.async_wait([&](boost::system::error_code) {
    EXPECT_EQ(ran.load(), 3);
    main_ctx.stop();
  });
  pool.run();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen.count(std::this_thread::get_id()), 1u);
  // Work posted after run() ended does not run.
  boost::asio::post(*ctxs[1], [&] { ran++; });
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(ran.load(), 3);
}

// Many connections one after another, each a full TLS handshake: every one is served. (Their
// rate is measured by parley-load's handshake scenario, not here.)
TEST_F(TransportTest, ManySequentialConnectionsAreEachServed) {
  start();
  HttpsClient https(client_options());
  for (int i = 0; i < 50; ++i) {
    auto r = https.request("GET", "/");
    ASSERT_TRUE(r.has_value()) << i;
    EXPECT_EQ(r->status, 200u);
  }
  for (int i = 0; i < 50; ++i) {
    auto c = ws();
    ASSERT_TRUE(c) << i;
    expect_echo(*c, "n" + std::to_string(i));
  }
  EXPECT_TRUE(wait_for([&] { return shared_.closed.load() == 50; }));
}

}  // namespace
}  // namespace parley::transport
