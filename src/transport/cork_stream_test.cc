// CorkStream over a real TlsSocket on loopback: what a burst of messages that arrived together
// causes leaves in one write, and the answer to a lone message is not held back. The peer is a
// blocking OpenSSL client on a thread that counts the TLS records it receives.
#include "transport/internal/cork_stream.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>

#include "transport/internal/asio.h"
#include "transport/internal/tls_socket.h"
#include "transport/testing/support.h"

namespace parley::transport::internal {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

constexpr std::size_t kSize = 40;

std::string message(int i) { return std::string(kSize, static_cast<char>('a' + i % 26)); }

struct PeerResult {
  std::string failed;
  int burst_records = -1;  // TLS records that carried the burst's echoes
  std::string burst_echo;
  bool lone_echoed = false;
};

// Reads exactly n bytes of plaintext; false on error or timeout (the socket's 10 s).
bool read_exactly(SSL* ssl, std::size_t n, std::string& out) {
  char buf[4096];
  while (n > 0) {
    const int got = SSL_read(ssl, buf, static_cast<int>(std::min(n, sizeof buf)));
    if (got <= 0) return false;
    out.append(buf, static_cast<std::size_t>(got));
    n -= static_cast<std::size_t>(got);
  }
  return true;
}

void count_records(int write_p, int, int content_type, const void*, std::size_t, SSL*, void* arg) {
  if (write_p == 0 && content_type == SSL3_RT_HEADER) ++*static_cast<int*>(arg);
}

// One warm-up round trip (it also takes in the server's session tickets), then `burst` messages
// corked into one TCP segment, their echoes counted in records; then one lone message.
PeerResult peer(std::uint16_t port, int burst) {
  PeerResult r;
  test_support::TlsPeer p;
  r.failed = p.connect(port);
  SSL* ssl = p.ssl();
  int records = 0;
  std::string got;
  if (r.failed.empty() && (SSL_write(ssl, "w", 1) != 1 || !read_exactly(ssl, 1, got))) {
    r.failed = "warm-up";
  }
  if (r.failed.empty()) {
    SSL_set_msg_callback(ssl, count_records);
    SSL_set_msg_callback_arg(ssl, &records);
    int on = 1;
    ::setsockopt(p.fd(), IPPROTO_TCP, TCP_CORK, &on, sizeof on);
    for (int i = 0; i < burst && r.failed.empty(); ++i) {
      const std::string m = message(i);
      if (SSL_write(ssl, m.data(), static_cast<int>(m.size())) != static_cast<int>(m.size())) {
        r.failed = "burst write";
      }
    }
    int off = 0;
    ::setsockopt(p.fd(), IPPROTO_TCP, TCP_CORK, &off, sizeof off);  // all of it in one segment
    if (r.failed.empty() &&
        !read_exactly(ssl, static_cast<std::size_t>(burst) * kSize, r.burst_echo)) {
      r.failed = "burst echo";
    }
    r.burst_records = records;
    SSL_set_msg_callback(ssl, nullptr);
  }
  if (r.failed.empty()) {
    std::string lone;
    r.lone_echoed = SSL_write(ssl, "lone", 4) == 4 && read_exactly(ssl, 4, lone) && lone == "lone";
  }
  p.end(true);
  return r;
}

// Echoes everything read through a CorkStream until the peer ends. As a WebSocket session does,
// it reads on without waiting for its writes, which go one at a time.
class Echo {
 public:
  explicit Echo(std::shared_ptr<TlsSocket> tls) : tls_(tls), cork_(std::move(tls)) {}

  void start() {
    tls_->expires_after(20s);
    tls_->async_handshake([this](boost::system::error_code ec) {
      if (ec) return end(ec);
      read();
    });
  }
  boost::system::error_code ended() const { return ended_; }

 private:
  void read() {
    cork_.async_read_some(net::buffer(buf_), [this](boost::system::error_code ec, std::size_t n) {
      if (ec) return end(ec);
      outbox_.append(buf_, n);
      write();
      read();
    });
  }
  void write() {
    if (writing_ || outbox_.empty()) return;
    writing_ = true;
    sending_.swap(outbox_);
    cork_.async_write_some(net::buffer(sending_),
                           [this](boost::system::error_code ec, std::size_t) {
                             writing_ = false;
                             sending_.clear();
                             if (ec) return end(ec);
                             write();
                           });
  }
  void end(boost::system::error_code ec) {
    if (!ended_) ended_ = ec;
    tls_->close();  // the peer reads until the connection closes
  }

  std::shared_ptr<TlsSocket> tls_;
  CorkStream<TlsSocket> cork_;
  char buf_[4096];
  std::string outbox_;
  std::string sending_;
  bool writing_ = false;
  boost::system::error_code ended_;
};

// Runs the echo against a peer that sends `burst` messages at once.
PeerResult echo_burst(int burst, boost::system::error_code& ended) {
  net::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  auto ctx = make_server_tls_context(test_support::test_identity().cert_pem,
                                     test_support::test_identity().key_pem);
  EXPECT_TRUE(ctx.has_value());
  PeerResult result;
  if (!ctx) {
    result.failed = "context";
    return result;
  }
  std::thread t([&] { result = peer(acceptor.local_endpoint().port(), burst); });
  auto tls = TlsSocket::accept(acceptor.accept(), (*ctx)->native_handle());
  EXPECT_TRUE(tls.has_value());
  if (tls) {
    Echo echo(std::shared_ptr<TlsSocket>(std::move(*tls)));
    echo.start();
    io.run();
    ended = echo.ended();
  }
  t.join();
  std::string want;
  for (int i = 0; i < burst; ++i) want += message(i);
  EXPECT_EQ(result.burst_echo, want);
  return result;
}

TEST(CorkStreamTest, EchoesOfABurstInHandLeaveInOneRecordAndALoneAnswerIsNotHeldBack) {
  boost::system::error_code ended;
  const PeerResult result = echo_burst(20, ended);
  ASSERT_EQ(result.failed, "");
  // Every message of the burst was in hand at once: their echoes wait for the last of them and
  // leave in one flush (one TLS write, so one record of 20 * kSize bytes).
  EXPECT_EQ(result.burst_records, 1);
  // A lone message's read is followed by one that must wait for the socket: its echo leaves
  // at once (a held answer would time the peer out).
  EXPECT_TRUE(result.lone_echoed);
  EXPECT_EQ(ended, net::error::eof) << ended.message();
}

// A flush waits behind at most kMaxYields reads in a row: a peer that keeps more in hand than
// that still gets its answers in several writes, not only after the last of its messages.
TEST(CorkStreamTest, AFlushWaitsBehindABoundedNumberOfReads) {
  constexpr int kBurst = 3 * CorkStream<TlsSocket>::kMaxYields;  // 7.7 KB: one segment, one read
  boost::system::error_code ended;
  const PeerResult result = echo_burst(kBurst, ended);
  ASSERT_EQ(result.failed, "");
  EXPECT_GE(result.burst_records, 2);
  EXPECT_LE(result.burst_records, kBurst / 8);
  EXPECT_TRUE(result.lone_echoed);
  EXPECT_EQ(ended, net::error::eof) << ended.message();
}

// try_append takes a piece whole, in order with async writes, while the buffer is below kLimit,
// and hands back the body's copy to change in place; once the buffer is full it takes nothing,
// and a write waits for the flush instead.
TEST(CorkStreamTest, TryAppendTakesWholePiecesInOrderWhileThereIsRoom) {
  using Cork = CorkStream<TlsSocket>;
  const std::string big(Cork::kLimit, 'b');
  const std::string want = "h1b1" + std::string("w2") + big + "y";
  net::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  auto ctx = make_server_tls_context(test_support::test_identity().cert_pem,
                                     test_support::test_identity().key_pem);
  ASSERT_TRUE(ctx.has_value());
  std::string got, failed;
  std::thread t([&] {
    test_support::TlsPeer p;
    failed = p.connect(acceptor.local_endpoint().port());
    if (failed.empty() && !read_exactly(p.ssl(), want.size(), got)) failed = "read";
    p.end(true);
  });
  auto tls = TlsSocket::accept(acceptor.accept(), (*ctx)->native_handle());
  ASSERT_TRUE(tls.has_value());
  auto socket = std::shared_ptr<TlsSocket>(std::move(*tls));
  Cork cork(socket);
  bool appended_first = false, appended_big = false, refused_when_full = false;
  boost::system::error_code wrote_w2, wrote_y;
  socket->expires_after(20s);
  socket->async_handshake([&](boost::system::error_code handshake) {
    ASSERT_FALSE(handshake) << handshake.message();
    // The copy of the body may be changed in place before the flush: "bX" leaves as "b1".
    auto body = cork.try_append(net::buffer("h1", 2), net::buffer("bX", 2));
    appended_first = body && body->size() == 2;
    if (body) static_cast<char*>(body->data())[1] = '1';
    cork.async_write_some(net::buffer("w2", 2),
                          [&](boost::system::error_code ec, std::size_t) { wrote_w2 = ec; });
    appended_big = cork.try_append(net::const_buffer(), net::buffer(big)).has_value();
    refused_when_full = !cork.try_append(net::buffer("x", 1), net::const_buffer());
    cork.async_write_some(net::buffer("y", 1), [&](boost::system::error_code ec, std::size_t) {
      wrote_y = ec;
      cork.async_flush([&](boost::system::error_code) { socket->close(); });
    });
  });
  io.run_for(20s);
  t.join();
  ASSERT_EQ(failed, "");
  EXPECT_TRUE(appended_first);
  EXPECT_TRUE(appended_big);
  EXPECT_TRUE(refused_when_full);
  EXPECT_FALSE(wrote_w2);
  EXPECT_FALSE(wrote_y);
  EXPECT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want);
}

}  // namespace
}  // namespace parley::transport::internal
