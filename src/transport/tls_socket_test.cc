// TlsSocket's reads through OpenSSL's read-ahead: a blocking OpenSSL peer on a thread writes a
// known stream over loopback TCP, in writes from one byte to several records; the TlsSocket
// reads it back with buffers of every size, from one byte to more than a TLS record, and then
// reports how the stream ended. And its writes after the handoff, across changes of its key, and
// what follows a write that failed.
#include "transport/internal/tls_socket.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/error.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "transport/internal/asio.h"
#include "transport/testing/support.h"

namespace parley::transport::internal {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// The bytes of the stream: position-dependent, so a byte lost, doubled or reordered shows.
char stream_byte(std::size_t i) { return static_cast<char>((i * 131 + i / 251) & 0xff); }

enum class Ending { kCloseNotify, kBareFin };

// Connects to `port`, writes `total` bytes of the stream in writes of many sizes (one byte up to
// several records at once), then ends as told. Returns what failed, or "".
std::string peer(std::uint16_t port, std::size_t total, Ending ending) {
  test_support::TlsPeer p;
  std::string failed = p.connect(port);
  std::string chunk;
  const std::size_t sizes[] = {1, 2, 300, 5000, 16384, 40000, 7, 100000, 1536};
  for (std::size_t sent = 0, k = 0; failed.empty() && sent < total; ++k) {
    const std::size_t n = std::min(sizes[k % std::size(sizes)], total - sent);
    chunk.resize(n);
    for (std::size_t i = 0; i < n; ++i) chunk[i] = stream_byte(sent + i);
    if (SSL_write(p.ssl(), chunk.data(), static_cast<int>(n)) != static_cast<int>(n)) {
      failed = "write";
    }
    sent += n;
  }
  p.end(failed.empty() && ending == Ending::kCloseNotify);
  return failed;
}

struct Outcome {
  std::string received;
  boost::system::error_code end;  // what the read after the last byte reported
  std::size_t reads = 0;
};

// Accepts one connection as a TLS server and reads until an error, with buffers of the sizes
// given in turn.
Outcome serve(tcp::acceptor& acceptor, const std::vector<std::size_t>& buffer_sizes) {
  net::io_context& io = static_cast<net::io_context&>(acceptor.get_executor().context());
  auto ctx = make_server_tls_context(test_support::test_identity().cert_pem,
                                     test_support::test_identity().key_pem);
  EXPECT_TRUE(ctx.has_value());
  Outcome out;
  if (!ctx) return out;
  auto tls = TlsSocket::accept(acceptor.accept(), (*ctx)->native_handle());
  EXPECT_TRUE(tls.has_value());
  if (!tls) return out;
  TlsSocket& s = **tls;
  s.expires_after(20s);
  std::vector<char> buf;
  std::function<void(boost::system::error_code, std::size_t)> on_read =
      [&](boost::system::error_code ec, std::size_t n) {
        if (ec) {
          out.end = ec;
          s.expires_never();
          return;
        }
        out.received.append(buf.data(), n);
        buf.assign(buffer_sizes[++out.reads % buffer_sizes.size()], 0);
        s.async_read_some(net::buffer(buf), on_read);
      };
  s.async_handshake([&](boost::system::error_code ec) {
    if (ec) {
      out.end = ec;
      s.expires_never();
      return;
    }
    buf.assign(buffer_sizes[0], 0);
    s.async_read_some(net::buffer(buf), on_read);
  });
  io.run();
  return out;
}

void expect_stream(const std::string& got, std::size_t total) {
  ASSERT_EQ(got.size(), total);
  for (std::size_t i = 0; i < total; ++i) {
    ASSERT_EQ(got[i], stream_byte(i)) << "at byte " << i;
  }
}

class TlsSocketTest : public ::testing::Test {
 protected:
  tcp::acceptor listen() {
    tcp::acceptor a(io_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    return a;
  }
  net::io_context io_;
};

// Large buffers take several records' plaintext in one read; small ones take a record over many
// reads. Both must give the stream back byte for byte, and the peer's close_notify as eof.
TEST_F(TlsSocketTest, ReadsTheWholeStreamWithBuffersOfAnySize) {
  constexpr std::size_t kTotal = 2 * 1024 * 1024 + 17;
  auto acceptor = listen();
  std::string peer_failed;
  std::thread t(
      [&] { peer_failed = peer(acceptor.local_endpoint().port(), kTotal, Ending::kCloseNotify); });
  const Outcome out = serve(acceptor, {65536, 1, 7, 1536, 300, 65536, 65536, 16384, 20000});
  t.join();
  EXPECT_EQ(peer_failed, "");
  expect_stream(out.received, kTotal);
  EXPECT_EQ(out.end, net::error::eof) << out.end.message();
}

// A peer that closes TCP without close_notify: everything it sent is read, then the stream
// reports that it was cut.
TEST_F(TlsSocketTest, AnEndWithoutCloseNotifyIsATruncatedStream) {
  constexpr std::size_t kTotal = 300 * 1024;
  auto acceptor = listen();
  std::string peer_failed;
  std::thread t(
      [&] { peer_failed = peer(acceptor.local_endpoint().port(), kTotal, Ending::kBareFin); });
  const Outcome out = serve(acceptor, {1536});
  t.join();
  EXPECT_EQ(peer_failed, "");
  expect_stream(out.received, kTotal);
  EXPECT_EQ(out.end, net::ssl::error::stream_truncated) << out.end.message();
}

// After the handoff the server changes its write key every `n` records (2^23 unless a test
// lowers it): an OpenSSL client reads every byte of a stream of many records across the
// changes, and sees one KeyUpdate (update_not_requested) each time the key's records run out.
TEST_F(TlsSocketTest, TheServerChangesItsWriteKeyWhenItsRecordsRunOut) {
  constexpr std::uint32_t kPerKey = 50;
  constexpr std::size_t kWrites = 1000;  // a record each
  constexpr std::size_t kChunk = 100;
  auto acceptor = listen();
  std::string peer_failed;
  std::string got;
  int key_updates = 0;
  std::thread t([&] {
    test_support::TlsPeer p;
    peer_failed = p.connect(acceptor.local_endpoint().port());
    if (!peer_failed.empty()) return;
    SSL_set_msg_callback(
        p.ssl(), [](int write_p, int, int type, const void* buf, std::size_t len, SSL*, void* arg) {
          const auto* b = static_cast<const std::uint8_t*>(buf);
          if (write_p == 0 && type == SSL3_RT_HANDSHAKE && len == 5 && b[0] == SSL3_MT_KEY_UPDATE &&
              b[4] == 0) {
            ++*static_cast<int*>(arg);
          }
        });
    SSL_set_msg_callback_arg(p.ssl(), &key_updates);
    char buf[4096];
    for (;;) {
      const int n = SSL_read(p.ssl(), buf, sizeof buf);
      if (n <= 0) {
        if (SSL_get_error(p.ssl(), n) != SSL_ERROR_ZERO_RETURN) peer_failed = "read";
        return;
      }
      got.append(buf, static_cast<std::size_t>(n));
    }
  });
  auto ctx = make_server_tls_context(test_support::test_identity().cert_pem,
                                     test_support::test_identity().key_pem);
  if (!ctx) {  // the peer's handshake gives up within its timeout; join it before returning
    t.join();
    FAIL() << ctx.error().to_string();
  }
  TlsSocket::set_records_per_key((*ctx)->native_handle(), kPerKey);
  auto tls = TlsSocket::accept(acceptor.accept(), (*ctx)->native_handle());
  if (!tls) {
    t.join();
    FAIL() << tls.error().to_string();
  }
  TlsSocket& s = **tls;
  s.expires_after(20s);
  std::string chunk;
  std::size_t written = 0;
  boost::system::error_code end;
  std::function<void(boost::system::error_code, std::size_t)> on_write =
      [&](boost::system::error_code ec, std::size_t n) {
        written += ec ? 0 : n;
        if (ec || written == kWrites * kChunk) {
          end = ec;
          s.async_shutdown([&](boost::system::error_code sec) {
            if (!end) end = sec;
            s.expires_never();
          });
          return;
        }
        chunk.resize(kChunk);
        for (std::size_t i = 0; i < kChunk; ++i) chunk[i] = stream_byte(written + i);
        net::async_write(s, net::buffer(chunk), on_write);
      };
  s.async_handshake([&](boost::system::error_code ec) {
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_TRUE(s.records_handed_off());
    on_write({}, 0);
  });
  io_.run();
  t.join();
  EXPECT_FALSE(end) << end.message();
  EXPECT_EQ(peer_failed, "");
  expect_stream(got, kWrites * kChunk);
  // The records under the first key include what OpenSSL sent after the handshake (its
  // session ticket); each later key carries kPerKey records.
  EXPECT_GE(key_updates, static_cast<int>(kWrites / kPerKey) - 1);
  EXPECT_LE(key_updates, static_cast<int>(kWrites / kPerKey));
}

// A write that times out may leave part of its records sealed or half sent, and its caller is
// told that none of it was written: no later write can follow it on the stream. The next write
// and the close_notify fail with broken_pipe at once, and reading goes on; the peer gets a
// prefix of the stream, never another write's bytes in its place.
void a_failed_write_ends_writing(net::io_context& io, tcp::acceptor& acceptor, bool tls12) {
  std::atomic<bool> go{false};
  std::string peer_failed;
  std::size_t peer_got = 0;
  std::thread t([&] {
    test_support::TlsPeer p;
    if (tls12) p.max_version = TLS1_2_VERSION;
    peer_failed = p.connect(acceptor.local_endpoint().port());
    if (!peer_failed.empty()) return;
    const int rcvbuf = 16384;
    ::setsockopt(p.fd(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    for (int i = 0; i < 1000 && !go.load(); ++i) std::this_thread::sleep_for(10ms);
    if (SSL_write(p.ssl(), "ping", 4) != 4) {
      peer_failed = "write";
      return;
    }
    char buf[16384];
    for (;;) {  // until the server closes (SO_RCVTIMEO bounds each read)
      const int n = SSL_read(p.ssl(), buf, sizeof buf);
      if (n <= 0) return;
      for (int i = 0; i < n; ++i) {
        if (buf[i] != stream_byte(peer_got + static_cast<std::size_t>(i))) {
          peer_failed = "stream";
          return;
        }
      }
      peer_got += static_cast<std::size_t>(n);
    }
  });
  auto ctx = make_server_tls_context(test_support::test_identity().cert_pem,
                                     test_support::test_identity().key_pem);
  auto tls = ctx ? TlsSocket::accept(acceptor.accept(), (*ctx)->native_handle())
                 : Result<std::unique_ptr<TlsSocket>>(ctx.error());
  if (!tls) {  // the peer gives up within its timeouts; it must be joined before returning
    go = true;
    t.join();
    FAIL() << tls.error().to_string();
  }
  TlsSocket& s = **tls;
  s.next_layer().set_option(tcp::socket::send_buffer_size(4096));
  // Far more than the peer's receive buffer, which it leaves to fill (and made small).
  std::string big(16u << 20, 0);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = stream_byte(i);
  boost::system::error_code first, second, shut, read_end;
  std::size_t first_n = 0, second_n = 0, ping_n = 0;
  bool handed_off = false;
  char ping[4] = {};
  s.expires_after(10s);
  s.async_handshake([&](boost::system::error_code ec) {
    ASSERT_FALSE(ec) << ec.message();
    handed_off = s.records_handed_off();
    s.expires_after(300ms);  // the peer reads nothing yet: the write fills the socket and waits
    net::async_write(s, net::buffer(big), [&](boost::system::error_code ec1, std::size_t n1) {
      first = ec1;
      first_n = n1;
      go = true;  // the peer reads from now on, so a write could go through again
      s.expires_after(10s);
      s.async_write_some(net::buffer("hello", 5), [&](boost::system::error_code ec2,
                                                      std::size_t n2) {
        second = ec2;
        second_n = n2;
        s.async_shutdown([&](boost::system::error_code ec3) {
          shut = ec3;
          net::async_read(s, net::buffer(ping), [&](boost::system::error_code ec4, std::size_t n4) {
            read_end = ec4;
            ping_n = n4;
            s.close();
            s.expires_never();
          });
        });
      });
    });
  });
  io.run();
  t.join();
  EXPECT_EQ(handed_off, !tls12);
  EXPECT_EQ(first, boost::beast::error::timeout) << first.message();
  EXPECT_LT(first_n, big.size());
  EXPECT_EQ(second, net::error::broken_pipe) << second.message();
  EXPECT_EQ(second_n, 0u);
  EXPECT_EQ(shut, net::error::broken_pipe) << shut.message();
  EXPECT_FALSE(read_end) << read_end.message();
  EXPECT_EQ(std::string(ping, ping_n), "ping");
  EXPECT_EQ(peer_failed, "");
  EXPECT_GE(peer_got, first_n);
  EXPECT_LT(peer_got, big.size());
}

TEST_F(TlsSocketTest, AFailedWriteEndsWritingAfterTheHandoff) {
  auto acceptor = listen();
  a_failed_write_ends_writing(io_, acceptor, false);
}

TEST_F(TlsSocketTest, AFailedWriteEndsWritingWithOpenSslRecords) {
  auto acceptor = listen();
  a_failed_write_ends_writing(io_, acceptor, true);
}

}  // namespace
}  // namespace parley::transport::internal
