// TLS 1.3 records after the handoff (tls_records.h, tls_socket.h).
// - TlsRecords alone: round trips, tampering, replays, headers no peer sends, KeyUpdate.
// - TlsSocket against OpenSSL's own client (an independent implementation of the same records):
//   an echo with each suite, KeyUpdate both ways, a resumed session, TLS 1.2 kept on OpenSSL,
//   and bad records answered with the alert RFC 8446 names.
#include "transport/internal/tls_records.h"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "transport/internal/asio.h"
#include "transport/internal/tls_socket.h"
#include "transport/testing/support.h"

namespace parley::transport::internal {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using Suite = TlsRecords::Suite;

constexpr Suite kSuites[] = {Suite::kAes128GcmSha256, Suite::kAes256GcmSha384,
                             Suite::kChaCha20Poly1305Sha256};

Bytes secret_of(Suite s, std::uint8_t fill) {
  return Bytes(s == Suite::kAes256GcmSha384 ? 48 : 32, fill);
}

// A client's and a server's records over the same secrets.
struct Pair {
  std::unique_ptr<TlsRecords> client, server;
};
Pair make_pair(Suite s) {
  const Bytes c = secret_of(s, 0x11), srv = secret_of(s, 0x22);
  auto client = TlsRecords::make(s, srv, c, 0, 0);
  auto server = TlsRecords::make(s, c, srv, 0, 0);
  EXPECT_TRUE(client.has_value() && server.has_value());
  return {client ? std::move(*client) : nullptr, server ? std::move(*server) : nullptr};
}

std::vector<std::uint8_t> seal(TlsRecords& r, TlsRecords::ContentType type, std::size_t n) {
  std::vector<std::uint8_t> plain(n);
  for (std::size_t i = 0; i < n; ++i) plain[i] = static_cast<std::uint8_t>(i * 7 + 1);
  std::vector<std::uint8_t> out(n + TlsRecords::kOverhead);
  auto size = r.seal(type, plain.data(), n, out.data());
  EXPECT_TRUE(size.has_value());
  EXPECT_EQ(size.has_value() ? *size : 0, out.size());
  return out;
}

TEST(TlsRecords, RoundTripsEverySizeWithEverySuite) {
  for (Suite s : kSuites) {
    Pair p = make_pair(s);
    ASSERT_TRUE(p.client && p.server);
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{200}, std::size_t{16384}}) {
      auto rec = seal(*p.client, TlsRecords::kApplicationData, n);
      auto opened = p.server->open(rec.data(), rec.size());
      ASSERT_TRUE(opened.opened) << opened.fault.what;
      EXPECT_EQ(opened.opened->type, TlsRecords::kApplicationData);
      ASSERT_EQ(opened.opened->size, n);
      for (std::size_t i = 0; i < n; ++i) {
        ASSERT_EQ(rec[TlsRecords::kHeaderSize + i], static_cast<std::uint8_t>(i * 7 + 1));
      }
    }
    EXPECT_EQ(p.client->write_seq(), 4u);
    EXPECT_EQ(p.server->read_seq(), 4u);
  }
}

TEST(TlsRecords, AnyChangedByteFailsToOpen) {
  Pair p = make_pair(Suite::kAes128GcmSha256);
  auto rec = seal(*p.client, TlsRecords::kApplicationData, 40);
  for (std::size_t i = 0; i < rec.size(); ++i) {
    auto bad = rec;
    bad[i] ^= 0x01;
    auto copy = TlsRecords::make(Suite::kAes128GcmSha256, secret_of(Suite::kAes128GcmSha256, 0x11),
                                 secret_of(Suite::kAes128GcmSha256, 0x22), 0, 0);
    ASSERT_TRUE(copy.has_value());
    EXPECT_FALSE((*copy)->open(bad.data(), bad.size()).opened) << "byte " << i;
  }
  EXPECT_TRUE(p.server->open(rec.data(), rec.size()).opened);
}

TEST(TlsRecords, AReplayedOrReorderedRecordFails) {
  Pair p = make_pair(Suite::kChaCha20Poly1305Sha256);
  auto first = seal(*p.client, TlsRecords::kApplicationData, 10);
  auto second = seal(*p.client, TlsRecords::kApplicationData, 10);
  auto second_copy = second;
  auto r = p.server->open(second.data(), second.size());  // out of order
  EXPECT_FALSE(r.opened);
  EXPECT_EQ(r.fault.alert, TlsRecords::kBadRecordMac);
  Pair q = make_pair(Suite::kChaCha20Poly1305Sha256);
  auto a = seal(*q.client, TlsRecords::kApplicationData, 10);
  auto a_copy = a;
  EXPECT_TRUE(q.server->open(a.data(), a.size()).opened);
  EXPECT_FALSE(q.server->open(a_copy.data(), a_copy.size()).opened);  // replayed
}

TEST(TlsRecords, HeadersNoPeerSendsAreRefusedWithTheirAlert) {
  struct Case {
    std::vector<std::uint8_t> header;
    TlsRecords::Alert alert;
  };
  const Case cases[] = {
      {{22, 3, 3, 0, 40}, TlsRecords::kUnexpectedMessage},    // a plaintext handshake record
      {{20, 3, 3, 0, 1}, TlsRecords::kUnexpectedMessage},     // change_cipher_spec after Finished
      {{23, 3, 1, 0, 40}, TlsRecords::kDecodeError},          // another version
      {{23, 3, 3, 0x41, 0x01}, TlsRecords::kRecordOverflow},  // 2^14 + 257
      {{23, 3, 3, 0, 16}, TlsRecords::kDecodeError},          // no room for a tag and a type
  };
  for (const Case& c : cases) {
    std::size_t size = 0;
    auto fault = TlsRecords::check_header(c.header.data(), c.header.size(), &size);
    ASSERT_TRUE(fault.has_value());
    EXPECT_EQ(fault->alert, c.alert) << fault->what;
  }
  std::size_t size = 1;
  const std::uint8_t partial[] = {23, 3, 3, 0};
  EXPECT_FALSE(TlsRecords::check_header(partial, sizeof partial, &size));
  EXPECT_EQ(size, 0u);  // not yet known
  const std::uint8_t largest[] = {23, 3, 3, 0x41, 0x00};
  EXPECT_FALSE(TlsRecords::check_header(largest, sizeof largest, &size));
  EXPECT_EQ(size, TlsRecords::kMaxRecord);
}

TEST(TlsRecords, ARecordOfPaddingOnlyOrTooMuchPlaintextIsRefused) {
  // Inner type 0 over zero content leaves nothing but zeros: no content type at all.
  Pair p = make_pair(Suite::kAes128GcmSha256);
  std::vector<std::uint8_t> zeros(30, 0);
  std::vector<std::uint8_t> out(30 + TlsRecords::kOverhead);
  ASSERT_TRUE(p.client->seal(static_cast<TlsRecords::ContentType>(0), zeros.data(), zeros.size(),
                             out.data()));
  auto r = p.server->open(out.data(), out.size());
  EXPECT_FALSE(r.opened);
  EXPECT_EQ(r.fault.alert, TlsRecords::kUnexpectedMessage);
  // 2^14 + 1 bytes of content is one over; seal() refuses to make it.
  std::vector<std::uint8_t> big(TlsRecords::kMaxPlaintext + 1, 1);
  std::vector<std::uint8_t> sealed(big.size() + TlsRecords::kOverhead);
  EXPECT_FALSE(p.client->seal(TlsRecords::kApplicationData, big.data(), big.size(), sealed.data()));
}

TEST(TlsRecords, KeyUpdateMovesBothEnds) {
  for (Suite s : kSuites) {
    Pair p = make_pair(s);
    ASSERT_TRUE(p.client->update_write_key().is_ok());
    auto rec = seal(*p.client, TlsRecords::kApplicationData, 64);
    auto stale = rec;
    Pair q = make_pair(s);  // never updated
    EXPECT_FALSE(q.server->open(stale.data(), stale.size()).opened);
    ASSERT_TRUE(p.server->update_read_key().is_ok());
    EXPECT_TRUE(p.server->open(rec.data(), rec.size()).opened);
    EXPECT_EQ(p.server->read_seq(), 1u);  // a new key starts at sequence 0
  }
}

TEST(TlsRecords, BadSecretsAndAnExhaustedSequenceAreRefused) {
  EXPECT_FALSE(TlsRecords::make(Suite::kAes128GcmSha256, Bytes(48, 1), Bytes(32, 1), 0, 0));
  EXPECT_FALSE(TlsRecords::make(Suite::kAes256GcmSha384, Bytes(32, 1), Bytes(32, 1), 0, 0));
  auto r = TlsRecords::make(Suite::kAes128GcmSha256, Bytes(32, 1), Bytes(32, 2), 0,
                            std::numeric_limits<std::uint64_t>::max());
  ASSERT_TRUE(r.has_value());
  std::uint8_t out[1 + TlsRecords::kOverhead];
  const std::uint8_t one = 1;
  auto sealed = (*r)->seal(TlsRecords::kApplicationData, &one, 1, out);
  ASSERT_FALSE(sealed.has_value());
  EXPECT_EQ(sealed.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_FALSE(TlsRecords::suite_for(0x1304));  // TLS_AES_128_CCM_SHA256: kept on OpenSSL
  EXPECT_FALSE(TlsRecords::suite_for(0xc02b));  // a TLS 1.2 suite
}

// --- TlsSocket against OpenSSL's client ---------------------------------------------------

// An echo server on one accepted connection: everything read is written back, until an error.
struct Served {
  bool handed_off = false;
  bool reused = false;
  boost::system::error_code end;
  std::size_t echoed = 0;
};

Served echo(tcp::acceptor& acceptor) {
  net::io_context& io = static_cast<net::io_context&>(acceptor.get_executor().context());
  auto ctx = make_server_tls_context(test_support::test_identity().cert_pem,
                                     test_support::test_identity().key_pem);
  EXPECT_TRUE(ctx.has_value());
  Served out;
  if (!ctx) return out;
  auto tls = TlsSocket::accept(acceptor.accept(), (*ctx)->native_handle());
  EXPECT_TRUE(tls.has_value());
  if (!tls) return out;
  TlsSocket& s = **tls;
  s.expires_after(20s);
  std::vector<char> buf(70000);
  std::function<void(boost::system::error_code, std::size_t)> on_read;
  auto read = [&] { s.async_read_some(net::buffer(buf), on_read); };
  on_read = [&](boost::system::error_code ec, std::size_t n) {
    if (ec) {
      out.end = ec;
      s.expires_never();
      return;
    }
    net::async_write(s, net::buffer(buf.data(), n),
                     [&, n](boost::system::error_code wec, std::size_t) {
                       if (wec) {
                         out.end = wec;
                         s.expires_never();
                         return;
                       }
                       out.echoed += n;
                       read();
                     });
  };
  s.async_handshake([&](boost::system::error_code ec) {
    out.handed_off = s.records_handed_off();
    out.reused = s.session_reused();
    if (ec) {
      out.end = ec;
      s.expires_never();
      return;
    }
    read();
  });
  io.run();
  return out;
}

// OpenSSL's client: counts the KeyUpdate messages it receives.
struct Client {
  test_support::TlsPeer peer;
  int key_updates_received = 0;

  static void on_message(int write_p, int, int type, const void* buf, std::size_t len, SSL*,
                         void* arg) {
    if (write_p == 0 && type == SSL3_RT_HANDSHAKE && len > 0 &&
        static_cast<const std::uint8_t*>(buf)[0] == SSL3_MT_KEY_UPDATE) {
      ++static_cast<Client*>(arg)->key_updates_received;
    }
  }

  // Writes chunks of many sizes, asking for a KeyUpdate before every third, and reads each
  // echo back. "" or what failed.
  std::string echo_stream() {
    SSL_set_msg_callback(peer.ssl(), &Client::on_message);
    SSL_set_msg_callback_arg(peer.ssl(), this);
    // Padded records (RFC 8446 section 5.4): the server must find the type under the zeros.
    SSL_set_block_padding(peer.ssl(), 512);
    const std::size_t sizes[] = {1, 200, 16384, 16385, 40000, 65536, 7, 100000};
    for (std::size_t k = 0; k < std::size(sizes); ++k) {
      if (k % 3 == 2 && SSL_key_update(peer.ssl(), SSL_KEY_UPDATE_REQUESTED) != 1) {
        return "SSL_key_update";
      }
      std::string chunk(sizes[k], '\0');
      for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>(i * 31 + k);
      if (SSL_write(peer.ssl(), chunk.data(), static_cast<int>(chunk.size())) !=
          static_cast<int>(chunk.size())) {
        return "SSL_write";
      }
      std::string back(chunk.size(), '\0');
      for (std::size_t got = 0; got < back.size();) {
        const int n = SSL_read(peer.ssl(), back.data() + got, static_cast<int>(back.size() - got));
        if (n <= 0)
          return "SSL_read after " + std::to_string(got) + " of chunk " + std::to_string(k);
        got += static_cast<std::size_t>(n);
      }
      if (back != chunk) return "echo differs in chunk " + std::to_string(k);
    }
    return "";
  }
};

class TlsHandoff : public ::testing::Test {
 protected:
  tcp::acceptor listen() {
    return tcp::acceptor(io_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  }
  net::io_context io_;
};

TEST_F(TlsHandoff, EchoesWithEverySuiteThroughKeyUpdates) {
  for (const char* suite :
       {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}) {
    SCOPED_TRACE(suite);
    auto acceptor = listen();
    std::string failed;
    int updates = 0;
    std::thread t([&] {
      Client c;
      failed = c.peer.connect(acceptor.local_endpoint().port(), suite);
      if (failed.empty()) failed = c.echo_stream();
      updates = c.key_updates_received;
      c.peer.end(true);
    });
    const Served out = echo(acceptor);
    t.join();
    io_.restart();
    EXPECT_EQ(failed, "");
    EXPECT_TRUE(out.handed_off);
    EXPECT_EQ(out.end, net::error::eof) << out.end.message();
    // The server answered the requests with its own KeyUpdate, and the client read past it.
    EXPECT_GE(updates, 1);
  }
}

TEST_F(TlsHandoff, AResumedSessionIsHandedOffToo) {
  auto ctx = make_server_tls_context(test_support::test_identity().cert_pem,
                                     test_support::test_identity().key_pem);
  ASSERT_TRUE(ctx.has_value());
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(client_ctx, nullptr);
  SSL_SESSION* session = nullptr;
  for (int round = 0; round < 2; ++round) {
    auto acceptor = listen();
    std::string failed;
    std::thread t([&] {
      const int fd = test_support::connect_loopback(acceptor.local_endpoint().port(), 10);
      SSL* ssl = SSL_new(client_ctx);
      SSL_set_fd(ssl, fd);
      if (session != nullptr) SSL_set_session(ssl, session);
      failed = SSL_connect(ssl) == 1 ? "" : "SSL_connect";
      char byte = 'x';
      if (failed.empty() && SSL_write(ssl, &byte, 1) != 1) failed = "SSL_write";
      if (failed.empty() && SSL_read(ssl, &byte, 1) != 1) failed = "SSL_read";  // also the tickets
      if (session == nullptr) session = SSL_get1_session(ssl);
      SSL_shutdown(ssl);
      SSL_free(ssl);
      ::close(fd);
    });
    net::io_context& io = io_;
    auto tls = TlsSocket::accept(acceptor.accept(), (*ctx)->native_handle());
    ASSERT_TRUE(tls.has_value());
    TlsSocket& s = **tls;
    bool handed_off = false, reused = false, echoed = false;
    std::vector<char> buf(16);
    s.async_handshake([&](boost::system::error_code ec) {
      ASSERT_FALSE(ec) << ec.message();
      handed_off = s.records_handed_off();
      reused = s.session_reused();
      s.async_read_some(net::buffer(buf), [&](boost::system::error_code rec, std::size_t n) {
        ASSERT_FALSE(rec) << rec.message();
        net::async_write(s, net::buffer(buf.data(), n),
                         [&](boost::system::error_code wec, std::size_t) { echoed = !wec; });
      });
    });
    io.run();
    io.restart();
    t.join();
    EXPECT_EQ(failed, "") << "round " << round;
    EXPECT_TRUE(handed_off) << "round " << round;
    EXPECT_EQ(reused, round == 1);
    EXPECT_TRUE(echoed);
  }
  SSL_SESSION_free(session);
  SSL_CTX_free(client_ctx);
}

// A KeyUpdate request that arrives while a large write is stuck on a full socket: the answer
// waits for the write's sealed records and goes before the next ones, and the client reads the
// whole stream across it.
TEST_F(TlsHandoff, AKeyUpdateRequestDuringAStuckWriteIsAnsweredInOrder) {
  constexpr std::size_t kTotal = 8 * 1024 * 1024;
  auto acceptor = listen();
  std::string failed;
  int updates = 0;
  std::thread t([&] {
    Client c;
    failed = c.peer.connect(acceptor.local_endpoint().port());
    if (!failed.empty()) return;
    SSL_set_msg_callback(c.peer.ssl(), &Client::on_message);
    SSL_set_msg_callback_arg(c.peer.ssl(), &c);
    // Let the server fill the socket before asking.
    std::this_thread::sleep_for(200ms);
    if (SSL_key_update(c.peer.ssl(), SSL_KEY_UPDATE_REQUESTED) != 1 ||
        SSL_do_handshake(c.peer.ssl()) != 1) {
      failed = "key update";
      return;
    }
    std::string back(64 * 1024, '\0');
    for (std::size_t got = 0; got < kTotal;) {
      const int n = SSL_read(c.peer.ssl(), back.data(), static_cast<int>(back.size()));
      if (n <= 0) {
        failed = "SSL_read after " + std::to_string(got);
        return;
      }
      for (int i = 0; i < n; ++i) {
        if (back[static_cast<std::size_t>(i)] != static_cast<char>((got + i) % 251)) {
          failed = "stream differs at " + std::to_string(got + i);
          return;
        }
      }
      got += static_cast<std::size_t>(n);
    }
    updates = c.key_updates_received;
    c.peer.end(true);
  });
  auto ctx = make_server_tls_context(test_support::test_identity().cert_pem,
                                     test_support::test_identity().key_pem);
  ASSERT_TRUE(ctx.has_value());
  auto tls = TlsSocket::accept(acceptor.accept(), (*ctx)->native_handle());
  ASSERT_TRUE(tls.has_value());
  TlsSocket& s = **tls;
  s.expires_after(20s);
  std::string stream(kTotal, '\0');
  for (std::size_t i = 0; i < kTotal; ++i) stream[i] = static_cast<char>(i % 251);
  bool handed_off = false;
  boost::system::error_code write_end, read_end;
  std::vector<char> rbuf(4096);
  std::function<void(boost::system::error_code, std::size_t)> on_read =
      [&](boost::system::error_code ec, std::size_t) {
        if (ec) {
          read_end = ec;
          s.expires_never();  // the client has read everything and closed
          s.close();
          return;
        }
        s.async_read_some(net::buffer(rbuf), on_read);
      };
  s.async_handshake([&](boost::system::error_code ec) {
    ASSERT_FALSE(ec) << ec.message();
    handed_off = s.records_handed_off();
    net::async_write(s, net::buffer(stream),
                     [&](boost::system::error_code wec, std::size_t) { write_end = wec; });
    s.async_read_some(net::buffer(rbuf), on_read);
  });
  io_.run_for(30s);
  t.join();
  EXPECT_EQ(failed, "");
  EXPECT_TRUE(handed_off);
  EXPECT_FALSE(write_end) << write_end.message();
  EXPECT_EQ(read_end, net::error::eof) << read_end.message();
  EXPECT_EQ(updates, 1);
}

TEST_F(TlsHandoff, TlsOneTwoKeepsOpenSsl) {
  auto acceptor = listen();
  std::string failed;
  std::thread t([&] {
    Client c;
    c.peer.max_version = TLS1_2_VERSION;
    failed = c.peer.connect(acceptor.local_endpoint().port());
    if (failed.empty() && SSL_version(c.peer.ssl()) != TLS1_2_VERSION) failed = "not TLS 1.2";
    if (failed.empty()) {
      char byte = 'x';
      if (SSL_write(c.peer.ssl(), &byte, 1) != 1 || SSL_read(c.peer.ssl(), &byte, 1) != 1) {
        failed = "echo";
      }
    }
    c.peer.end(true);
  });
  const Served out = echo(acceptor);
  t.join();
  EXPECT_EQ(failed, "");
  EXPECT_FALSE(out.handed_off);
  EXPECT_EQ(out.echoed, 1u);
  EXPECT_EQ(out.end, net::error::eof) << out.end.message();
}

// A client that negotiated a smaller max_fragment_length (RFC 6066) keeps OpenSSL's records,
// which honour it: the handoff's records are always full size.
TEST_F(TlsHandoff, AClientWithAMaxFragmentLengthKeepsOpenSsl) {
  auto acceptor = listen();
  std::string failed;
  std::thread t([&] {
    const int fd = test_support::connect_loopback(acceptor.local_endpoint().port(), 10);
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_tlsext_max_fragment_length(ctx, TLSEXT_max_fragment_length_512);
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    failed = SSL_connect(ssl) == 1 ? "" : "SSL_connect";
    const std::string sent(3000, 'm');
    std::string back(sent.size(), '\0');
    if (failed.empty() && SSL_write(ssl, sent.data(), static_cast<int>(sent.size())) !=
                              static_cast<int>(sent.size())) {
      failed = "SSL_write";
    }
    for (std::size_t got = 0; failed.empty() && got < back.size();) {
      const int n = SSL_read(ssl, back.data() + got, static_cast<int>(back.size() - got));
      if (n <= 0) failed = "SSL_read (a record over the negotiated 512 bytes?)";
      got += n > 0 ? static_cast<std::size_t>(n) : 0;
    }
    if (failed.empty() && back != sent) failed = "echo differs";
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ::close(fd);
  });
  const Served out = echo(acceptor);
  t.join();
  EXPECT_EQ(failed, "");
  EXPECT_FALSE(out.handed_off);
  EXPECT_EQ(out.echoed, 3000u);
}

// A client that sends nothing but KeyUpdates makes the server work for nothing: after 32 in a
// row the connection ends with unexpected_message, as OpenSSL ends it.
TEST_F(TlsHandoff, EndlessKeyUpdatesEndTheConnection) {
  auto acceptor = listen();
  std::string failed;
  int reason = 0;
  std::thread t([&] {
    Client c;
    failed = c.peer.connect(acceptor.local_endpoint().port());
    char byte = 'x';
    if (failed.empty() &&
        (SSL_write(c.peer.ssl(), &byte, 1) != 1 || SSL_read(c.peer.ssl(), &byte, 1) != 1)) {
      failed = "echo";
    }
    for (int i = 0; failed.empty() && i < 40; ++i) {
      if (SSL_key_update(c.peer.ssl(), SSL_KEY_UPDATE_NOT_REQUESTED) != 1 ||
          SSL_do_handshake(c.peer.ssl()) != 1) {
        failed = "key update " + std::to_string(i);
      }
    }
    ERR_clear_error();
    if (failed.empty() && SSL_read(c.peer.ssl(), &byte, 1) > 0) failed = "read data";
    reason = ERR_GET_REASON(ERR_peek_error());
  });
  const Served out = echo(acceptor);
  t.join();
  EXPECT_EQ(failed, "");
  EXPECT_TRUE(out.handed_off);
  EXPECT_EQ(out.end.value(), SSL_AD_UNEXPECTED_MESSAGE) << out.end.message();
  EXPECT_EQ(reason, SSL_AD_REASON_OFFSET + SSL_AD_UNEXPECTED_MESSAGE);
}

// Bytes written straight to the socket after the handshake, under OpenSSL's records: the
// server ends the connection with the alert each deserves, sealed so that the client reads it.
TEST_F(TlsHandoff, BadRecordsEndTheConnectionWithTheirAlert) {
  struct Case {
    const char* name;
    std::vector<std::uint8_t> bytes;
    int alert;
  };
  std::vector<std::uint8_t> forged = {23, 3, 3, 0, 40};
  forged.resize(45, 0xab);
  const Case cases[] = {
      {"a record that does not authenticate", forged, SSL_AD_BAD_RECORD_MAC},
      {"a plaintext handshake record", {22, 3, 3, 0, 4, 1, 0, 0, 0}, SSL_AD_UNEXPECTED_MESSAGE},
      {"a record over 2^14 + 256 bytes", {23, 3, 3, 0x48, 0}, SSL_AD_RECORD_OVERFLOW},
      {"another version", {23, 3, 1, 0, 40}, SSL_AD_DECODE_ERROR},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto acceptor = listen();
    std::string failed;
    int reason = 0;
    std::thread t([&] {
      Client cl;
      failed = cl.peer.connect(acceptor.local_endpoint().port());
      char byte = 'x';
      if (failed.empty() &&
          (SSL_write(cl.peer.ssl(), &byte, 1) != 1 || SSL_read(cl.peer.ssl(), &byte, 1) != 1)) {
        failed = "echo";
      }
      if (failed.empty() && ::send(cl.peer.fd(), c.bytes.data(), c.bytes.size(), MSG_NOSIGNAL) !=
                                static_cast<ssize_t>(c.bytes.size())) {
        failed = "send";
      }
      ERR_clear_error();
      if (failed.empty() && SSL_read(cl.peer.ssl(), &byte, 1) > 0) failed = "read data";
      reason = ERR_GET_REASON(ERR_peek_error());
    });
    const Served out = echo(acceptor);
    t.join();
    io_.restart();
    EXPECT_EQ(failed, "");
    EXPECT_TRUE(out.handed_off);
    EXPECT_EQ(out.end.value(), c.alert) << out.end.message();
    EXPECT_EQ(out.end.category().name(), std::string("parley.tls"));
    EXPECT_EQ(reason, SSL_AD_REASON_OFFSET + c.alert);
  }
}

}  // namespace
}  // namespace parley::transport::internal
