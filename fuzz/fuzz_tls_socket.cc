// TlsSocket after the handoff (transport/internal/tls_socket.h): the server's record layer as a
// client drives it, byte stream and all. fuzz_tls_records covers TlsRecords alone; this target
// covers what lies around it in tls_socket_records.cc: records split across reads and several in
// one read, the read buffer's compaction, padding, empty records, alerts, KeyUpdates both ways
// and the answer the server owes, and the failure path with its sealed alert.
//
// Each input is one connection over a socketpair. OpenSSL's client does a real TLS 1.3
// handshake with a server TlsSocket (the first byte sets the suite, and whether the server
// sends two session tickets after the handshake, which the record layer it hands over must
// count), which then hands its records over. The client side then speaks records itself, with a
// TlsRecords over the traffic secrets its key log gave. The server echoes what it reads; the second
// byte sets its read size and whether it echoes half duplex (each read written back before the
// next) or full duplex (the next read under way while the last is written back, so that records,
// KeyUpdates among them, are opened while a write is half sent). Then steps (op, 16-bit length):
//   0: an application data record of `length` bytes (at most 2^14, made up, not read from the
//      input);
//   1: a record of any inner type: the step's bytes are the inner plaintext, content and type
//      and padding (so an empty, padded, alert, KeyUpdate or bad record);
//   2: a KeyUpdate from the client, asking for the server's when `length` is odd;
//   3: the step's bytes sent as they are (a forged header, garbage);
//   4: what is queued goes to the socket in pieces of `length` bytes, the server running
//      between pieces;
//   5: the server closes its side (close_notify), once it has read and echoed everything sent
//      so far; a write after it fails (broken_pipe) and sends nothing; it goes on reading,
//      echoing nothing more, and owes no KeyUpdate and sends no alert after it.
// (Op bytes are taken modulo 6; seeds written when they were taken modulo 5 use only 0-4.)
// A close_notify ends the stream. A model of RFC 8446's rules, kept here, says what the server
// must read and how it must end. Invariants:
// - every record the server sends opens under the client's keys, and nothing follows its alert;
// - the server ends as the model says: end of stream after close_notify, or the alert named for
//   the first bad record (received by the client, sealed, unless it was held back behind a
//   KeyUpdate answer or a half-sent write: best effort);
// - it echoes exactly the data the model expects, in order (full duplex, after a failure: a
//   prefix of it, as data read may not have been written back yet);
// - half duplex, it answers each KeyUpdate request at its place in the stream; full duplex,
//   with no more answers than requests and one at or before each request's place once data
//   from after it is echoed;
// - after a write of the echo fails, one more write fails with broken_pipe and sends nothing.
// After forged bytes (3) the stream is the fuzzer's to garble: the echo must then only be a
// prefix of the data sent.
// Not covered here: a KeyUpdate the server makes when its key wears out (2^23 records;
// TlsSocketTest.TheServerChangesItsWriteKeyWhenItsRecordsRunOut lowers the limit to reach it).
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "fuzz_support.h"
#include "transport/internal/tls_records.h"
#include "transport/internal/tls_socket.h"

using namespace parley;                       // NOLINT: a fuzz target
using namespace parley::transport::internal;  // NOLINT: a fuzz target
namespace net = boost::asio;
using error_code = boost::system::error_code;

namespace {

using Suite = TlsRecords::Suite;

// --- set-up, once -----------------------------------------------------------------------------

constexpr std::size_t kTickets = 2;  // NewSessionTickets sent when the input asks for tickets

// Without tickets, the server's first record under its traffic key is the echo's; with them,
// two NewSessionTicket records come first, which the record layer handed over must count.
SSL_CTX* server_context(bool tickets) {
  static SSL_CTX* ctxs[2] = {};
  SSL_CTX*& ctx = ctxs[tickets ? 1 : 0];
  if (ctx == nullptr) {
    SSL_CTX* c = SSL_CTX_new(TLS_server_method());
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    PARLEY_FUZZ_CHECK(c && key && cert);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600 * 24);
    X509_set_pubkey(cert, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("fuzz"), -1, -1, 0);
    X509_set_issuer_name(cert, X509_get_subject_name(cert));
    PARLEY_FUZZ_CHECK(X509_sign(cert, key, EVP_sha256()) > 0);
    PARLEY_FUZZ_CHECK(SSL_CTX_use_certificate(c, cert) == 1 && SSL_CTX_use_PrivateKey(c, key) == 1);
    X509_free(cert);
    EVP_PKEY_free(key);
    SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
    SSL_CTX_set_num_tickets(c, tickets ? kTickets : 0);
    if (!tickets) SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    TlsSocket::enable_record_handoff(c);
    ctx = c;
  }
  return ctx;
}

// The client's traffic secrets, from its key log.
struct ClientSecrets {
  std::optional<Bytes> client, server;
} g_secrets;

void client_key_log(const SSL*, const char* line) {
  const std::string_view l(line);
  const auto secret = [&] { return from_hex(l.substr(l.rfind(' ') + 1)); };
  if (l.starts_with("CLIENT_TRAFFIC_SECRET_0 ")) g_secrets.client = secret();
  if (l.starts_with("SERVER_TRAFFIC_SECRET_0 ")) g_secrets.server = secret();
}

SSL_CTX* client_context(Suite suite) {
  static SSL_CTX* ctxs[3] = {};
  SSL_CTX*& c = ctxs[static_cast<int>(suite)];
  if (c == nullptr) {
    static const char* const kNames[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                         "TLS_CHACHA20_POLY1305_SHA256"};
    c = SSL_CTX_new(TLS_client_method());
    PARLEY_FUZZ_CHECK(c != nullptr);
    SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
    PARLEY_FUZZ_CHECK(SSL_CTX_set_ciphersuites(c, kNames[static_cast<int>(suite)]) == 1);
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_keylog_callback(c, client_key_log);
  }
  return c;
}

// --- the model: what the server must make of the records the client sends ----------------------

// RFC 8446's rules as tls_socket_records.cc applies them, record by record.
struct Model {
  // Records in a row without data (empty, KeyUpdate, user_canceled) a server takes, as OpenSSL
  // (tls_socket_state.h); stated again here so that the model does not follow a change blindly.
  static constexpr int kMaxEmptyRecords = 32;

  std::string data;          // the application data the server must read, in order
  bool ended = false;        // a record ended the stream (close_notify or a fault)
  bool closed = false;       // ... by close_notify
  std::optional<int> alert;  // ... by this alert (sent by the server, or received + 256)
  bool sent_alert = false;   // the server sent the alert (it did not receive it)
  // The server's alert is best effort: bytes still waiting for room in the socket when the
  // connection fails keep it back. Only a KeyUpdate answer can be waiting then (an echo's
  // write ends with all its bytes sent), so the alert may be missing only when a requested
  // KeyUpdate came after the last data.
  bool request_since_data = false;
  bool alert_optional = false;
  int empty_in_a_row = 0;    // records without data, as the server counts them
  bool garbled = false;      // raw bytes went out: the stream is the fuzzer's
  // Where in the data the client asked for the server's KeyUpdate: the server must send one
  // there, after echoing what came before and before echoing what came after.
  std::set<std::size_t> requested_at;
  std::size_t requests = 0;
  // The server closed its side (step 5) when it had read this much data: nothing of it may
  // follow its close_notify, no KeyUpdate answer and no alert.
  std::optional<std::size_t> shut_at;

  std::string echoed_data() const { return data.substr(0, shut_at.value_or(data.size())); }

  void fail(int a, bool sent) {
    ended = true;
    alert = sent ? a : a + 256;
    sent_alert = sent;
    alert_optional = request_since_data;
  }
  bool empty_record() {
    if (++empty_in_a_row > kMaxEmptyRecords) {
      fail(TlsRecords::kUnexpectedMessage, true);
      return false;
    }
    return true;
  }

  // The record with inner plaintext `inner` (content, type, padding). Returns whether it is a
  // KeyUpdate the server takes (so the client's write key must move with it).
  bool record(const std::vector<std::uint8_t>& inner) {
    if (ended || garbled) return false;
    std::size_t end = inner.size();
    while (end > 0 && inner[end - 1] == 0) --end;
    if (end == 0) {  // all padding: no type
      fail(TlsRecords::kUnexpectedMessage, true);
      return false;
    }
    const std::uint8_t type = inner[end - 1];
    const std::size_t n = end - 1;
    const std::uint8_t* c = inner.data();
    switch (type) {
      case TlsRecords::kApplicationData:
        if (n != 0) {
          empty_in_a_row = 0;
          request_since_data = false;
          data.append(reinterpret_cast<const char*>(c), n);
          return false;
        }
        empty_record();
        return false;
      case TlsRecords::kAlert:
        if (n != 2) {
          fail(TlsRecords::kDecodeError, true);
        } else if (c[1] == TlsRecords::kCloseNotify) {
          ended = closed = true;
        } else if (c[1] == 90) {  // user_canceled: a warning
          empty_record();
        } else {
          fail(c[1], false);
        }
        return false;
      case TlsRecords::kHandshake: {
        if (!empty_record()) return false;
        if (n < 4 || c[0] != SSL3_MT_KEY_UPDATE) {
          fail(n < 4 ? TlsRecords::kDecodeError : TlsRecords::kUnexpectedMessage, true);
          return false;
        }
        const std::size_t length = (std::size_t{c[1]} << 16) | (std::size_t{c[2]} << 8) | c[3];
        if (length != 1 || n < 5) {
          fail(TlsRecords::kDecodeError, true);
        } else if (n != 5) {
          fail(TlsRecords::kUnexpectedMessage, true);
        } else if (c[4] > 1) {
          fail(TlsRecords::kIllegalParameter, true);
        } else {
          if (c[4] == 1 && !shut_at) {
            requested_at.insert(data.size());
            ++requests;
            request_since_data = true;
          }
          return true;
        }
        return false;
      }
      default:
        fail(TlsRecords::kUnexpectedMessage, true);
        return false;
    }
  }
};

// --- one connection ---------------------------------------------------------------------------

// The server: echoes what it reads until an operation fails.
// Half duplex: each read is written back before the next read. Full duplex: what is read is
// written back while the next read is under way, so records are opened (KeyUpdates among them)
// while a write is half sent.
struct Echo {
  explicit Echo(TlsSocket& socket) : s(socket) {}
  TlsSocket& s;
  bool duplex = false;
  bool shut = false;  // the server closed its side: what it reads is no longer echoed
  std::vector<std::uint8_t> buf;
  std::optional<error_code> end;  // the read side's
  std::string pending, writing;   // full duplex: read and not yet written; being written
  bool write_busy = false;
  // After a write failed: what one more write reported (it must fail with broken_pipe, sending
  // nothing: Client::drain checks that nothing follows an alert or a close_notify).
  std::optional<error_code> write_after_failure;

  void write_after_failed() {
    if (write_after_failure) return;
    write_after_failure = error_code();
    write_busy = true;
    net::async_write(s, net::buffer("x", 1), [this](error_code ec, std::size_t) {
      write_busy = false;
      write_after_failure = ec;
    });
  }

  void read() {
    s.async_read_some(net::buffer(buf), [this](error_code ec, std::size_t n) {
      if (ec) {
        end = ec;
        return;
      }
      if (shut) return read();
      if (duplex) {
        pending.append(reinterpret_cast<const char*>(buf.data()), n);
        write();
        return read();
      }
      net::async_write(s, net::buffer(buf.data(), n), [this](error_code wec, std::size_t) {
        if (wec) {
          end = wec;
          return write_after_failed();
        }
        read();
      });
    });
  }

  void write() {
    if (write_busy || pending.empty()) return;
    writing.swap(pending);
    pending.clear();
    write_busy = true;
    net::async_write(s, net::buffer(writing), [this](error_code wec, std::size_t) {
      write_busy = false;
      writing.clear();
      if (wec) return write_after_failed();
      write();
    });
  }
};

// The client after the handshake: its records, and what it has read of the server's.
struct Client {
  int fd = -1;
  std::unique_ptr<TlsRecords> keys;
  std::vector<std::uint8_t> queued;  // sealed, not yet sent
  std::vector<std::uint8_t> in;      // received, not yet opened
  std::string echoed;
  std::optional<int> alert_received;
  bool server_closed = false;
  std::set<std::size_t> key_update_at;  // how much was echoed when each KeyUpdate came
  std::size_t key_updates = 0;
  std::size_t tickets = 0;  // NewSessionTickets, before anything else

  void seal(std::uint8_t type, const std::uint8_t* p, std::size_t n) {
    const std::size_t at = queued.size();
    queued.resize(at + n + TlsRecords::kOverhead);
    auto sealed = keys->seal(static_cast<TlsRecords::ContentType>(type), p, n, &queued[at]);
    PARLEY_FUZZ_CHECK(sealed && *sealed == n + TlsRecords::kOverhead);
  }

  // Reads and opens what the server sent: every record must open, and only data, our KeyUpdate
  // answer and one last alert may come.
  void drain() {
    std::uint8_t tmp[65536];
    for (;;) {
      const ssize_t got = ::recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
      if (got <= 0) break;
      in.insert(in.end(), tmp, tmp + got);
    }
    std::size_t pos = 0;
    for (;;) {
      std::size_t need = 0;
      PARLEY_FUZZ_CHECK(!TlsRecords::check_header(in.data() + pos, in.size() - pos, &need));
      if (need == 0 || in.size() - pos < need) break;
      PARLEY_FUZZ_CHECK(!alert_received && !server_closed);  // nothing after the last alert
      const auto opened = keys->open(in.data() + pos, need);
      PARLEY_FUZZ_CHECK(opened.opened.has_value());
      const std::uint8_t* c = in.data() + pos + TlsRecords::kHeaderSize;
      const std::size_t n = opened.opened->size;
      switch (opened.opened->type) {
        case TlsRecords::kApplicationData:
          echoed.append(reinterpret_cast<const char*>(c), n);
          break;
        case TlsRecords::kHandshake:  // the server's KeyUpdate: never asking for ours
          if (n >= 4 && c[0] == SSL3_MT_NEWSESSION_TICKET) {
            // One or more whole tickets in the record, before anything else.
            PARLEY_FUZZ_CHECK(echoed.empty() && key_updates == 0);
            for (std::size_t at = 0; at < n;) {
              PARLEY_FUZZ_CHECK(n - at >= 4 && c[at] == SSL3_MT_NEWSESSION_TICKET);
              const std::size_t len =
                  (std::size_t{c[at + 1]} << 16) | (std::size_t{c[at + 2]} << 8) | c[at + 3];
              PARLEY_FUZZ_CHECK(len <= n - at - 4);
              at += 4 + len;
              ++tickets;
            }
            break;
          }
          PARLEY_FUZZ_CHECK(n == 5 && c[0] == SSL3_MT_KEY_UPDATE && c[1] == 0 && c[2] == 0 &&
                            c[3] == 1 && c[4] == 0);
          PARLEY_FUZZ_CHECK(keys->update_read_key().is_ok());
          key_update_at.insert(echoed.size());
          ++key_updates;
          break;
        case TlsRecords::kAlert:
          PARLEY_FUZZ_CHECK(n == 2);
          if (c[1] == TlsRecords::kCloseNotify) {
            server_closed = true;
          } else {
            PARLEY_FUZZ_CHECK(c[0] == 2);  // fatal
            alert_received = c[1];
          }
          break;
        default:
          PARLEY_FUZZ_CHECK(false);
      }
      pos += need;
    }
    in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(pos));
  }
};

// Runs the server's ready handlers, and reads what it sent, until nothing moves.
void settle(net::io_context& io, Client& cl) {
  for (int i = 0; i < 64; ++i) {
    const std::size_t ran = io.poll();
    const std::size_t had = cl.in.size() + cl.echoed.size();
    cl.drain();
    if (ran == 0 && cl.in.size() + cl.echoed.size() == had) return;
  }
}

// Sends what is queued in pieces of `piece` bytes or more (at most 2,048 pieces), the server
// running in between. False when the socket stayed full: the server stopped reading.
bool flush(net::io_context& io, Client& cl, std::size_t piece) {
  piece = std::max(piece, (cl.queued.size() + 2047) / 2048);
  std::size_t sent = 0;
  bool stalled = false;
  for (int full = 0; sent < cl.queued.size();) {
    const std::size_t n = std::min(piece, cl.queued.size() - sent);
    const ssize_t w = ::send(cl.fd, cl.queued.data() + sent, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w > 0) {
      sent += static_cast<std::size_t>(w);
      full = 0;
    } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      break;  // the server closed
    } else if (++full > 64) {
      stalled = true;
      break;
    }
    settle(io, cl);
  }
  cl.queued.clear();
  return !stalled;
}

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const auto suite = static_cast<Suite>(data[0] % 3);
  const bool tickets = (data[0] / 3) % 2 == 1;
  static constexpr std::size_t kReadSizes[] = {1, 5, 17, 300, 4096, 16384, 16406, 70000};
  const std::size_t read_size = kReadSizes[data[1] % std::size(kReadSizes)];

  int fds[2];
  PARLEY_FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  // Room for what the server writes in most runs (echoes of 1-byte reads are 23-byte records),
  // so that its alert is rarely held back by a KeyUpdate answer waiting for a full socket
  // (alert_after_a_full_socket in the corpus, with the default buffer; Model::alert_optional).
  // SO_SNDBUFFORCE needs CAP_NET_ADMIN; without it the buffer is smaller, which the model
  // allows for.
  const int sndbuf = 4 << 20;
  if (::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) != 0) {
    ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  }
  net::io_context io;
  auto work = net::make_work_guard(io);
  net::ip::tcp::socket sock(io);
  error_code ec;
  sock.assign(net::ip::tcp::v4(), fds[0], ec);
  PARLEY_FUZZ_CHECK(!ec);
  auto tls = TlsSocket::accept(std::move(sock), server_context(tickets));
  PARLEY_FUZZ_CHECK(tls.has_value());
  TlsSocket& server = **tls;

  // The handshake, OpenSSL's client against the server, both in this thread.
  g_secrets = {};
  SSL* ssl = SSL_new(client_context(suite));
  PARLEY_FUZZ_CHECK(ssl != nullptr);
  PARLEY_FUZZ_CHECK(::fcntl(fds[1], F_SETFL, O_NONBLOCK) == 0);
  SSL_set_fd(ssl, fds[1]);
  SSL_set_connect_state(ssl);
  std::optional<error_code> handshaken;
  server.async_handshake([&](error_code e) { handshaken = e; });
  bool client_done = false;
  for (int i = 0; i < 1000 && !(client_done && handshaken); ++i) {
    if (!client_done) {
      const int r = SSL_do_handshake(ssl);
      client_done = r == 1;
      PARLEY_FUZZ_CHECK(r == 1 || SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ);
    }
    io.poll();
  }
  PARLEY_FUZZ_CHECK(client_done && handshaken && !*handshaken);
  PARLEY_FUZZ_CHECK(server.records_handed_off());
  PARLEY_FUZZ_CHECK(g_secrets.client && g_secrets.server);
  SSL_free(ssl);  // from here the client speaks records itself

  Client cl;
  cl.fd = fds[1];
  auto keys = TlsRecords::make(suite, *g_secrets.server, *g_secrets.client, 0, 0);
  PARLEY_FUZZ_CHECK(keys.has_value());
  cl.keys = std::move(*keys);
  Echo echo{server};
  echo.duplex = (data[1] / std::size(kReadSizes)) % 2 == 1;
  echo.buf.resize(read_size);
  echo.read();

  Model model;
  // The data the made-up records (step 0) may carry in all: the server echoes each read as
  // one record, so small reads of much data would only make the run slow.
  std::size_t budget = read_size >= 4096 ? std::size_t{128} << 10 : std::size_t{16} << 10;
  std::size_t pos = 2;
  std::uint32_t made = 0;
  for (int steps = 0; pos + 3 <= size && steps < 256 && !model.ended; ++steps) {
    const std::uint8_t op = data[pos] % 6;
    const std::size_t length = be16(data + pos + 1);
    pos += 3;
    switch (op) {
      case 0: {
        const std::size_t n = std::min({length, TlsRecords::kMaxPlaintext, budget});
        budget -= n;
        std::vector<std::uint8_t> inner(n + 1);
        for (std::size_t i = 0; i + 1 < inner.size(); ++i) {
          inner[i] = static_cast<std::uint8_t>('a' + (made++ % 26));
        }
        inner.back() = TlsRecords::kApplicationData;
        model.record(inner);
        cl.seal(TlsRecords::kApplicationData, inner.data(), inner.size() - 1);
        break;
      }
      case 1: {
        const std::size_t n = std::min({length, size - pos, TlsRecords::kMaxPlaintext + 1});
        std::vector<std::uint8_t> inner(data + pos, data + pos + n);
        pos += n;
        if (inner.empty()) break;
        const bool update = model.record(inner);
        // The last byte goes where seal() puts the type: the inner plaintext is the step's.
        cl.seal(inner.back(), inner.data(), inner.size() - 1);
        if (update) PARLEY_FUZZ_CHECK(cl.keys->update_write_key().is_ok());
        break;
      }
      case 2: {
        const std::uint8_t msg[5] = {SSL3_MT_KEY_UPDATE, 0, 0, 1,
                                     static_cast<std::uint8_t>(length & 1)};
        std::vector<std::uint8_t> inner(msg, msg + 5);
        inner.push_back(TlsRecords::kHandshake);
        const bool update = model.record(inner);
        cl.seal(TlsRecords::kHandshake, msg, sizeof msg);
        if (update) PARLEY_FUZZ_CHECK(cl.keys->update_write_key().is_ok());
        break;
      }
      case 3: {
        const std::size_t n = std::min(length, size - pos);
        cl.queued.insert(cl.queued.end(), data + pos, data + pos + n);
        pos += n;
        if (n != 0) model.garbled = true;
        break;
      }
      case 4:
        // A server that has not ended must keep reading.
        PARLEY_FUZZ_CHECK(flush(io, cl, std::max<std::size_t>(length, 1)) || model.ended ||
                          model.garbled);
        break;
      default: {
        if (model.ended || model.garbled || model.shut_at) break;
        PARLEY_FUZZ_CHECK(flush(io, cl, 65536) || model.ended);
        for (int i = 0; i < 100 && !model.ended && cl.echoed.size() < model.data.size(); ++i) {
          settle(io, cl);
        }
        // Everything read is echoed: the server is between a write and its next read.
        if (model.ended || cl.echoed != model.data || echo.write_busy) break;
        echo.shut = true;
        model.shut_at = model.data.size();
        std::optional<error_code> closed;
        server.async_shutdown([&](error_code e) { closed = e; });
        settle(io, cl);
        PARLEY_FUZZ_CHECK(closed && !*closed && cl.server_closed);
        // A write after it fails, and nothing of it goes out (Client::drain checks that
        // nothing follows the close_notify).
        std::optional<error_code> wrote;
        const char one = 'x';
        net::async_write(server, net::buffer(&one, 1),
                         [&](error_code e, std::size_t) { wrote = e; });
        settle(io, cl);
        PARLEY_FUZZ_CHECK(wrote && *wrote == net::error::broken_pipe);
        break;
      }
    }
  }
  if (!model.ended && !model.garbled) {
    const std::uint8_t close_notify[3] = {1, TlsRecords::kCloseNotify, TlsRecords::kAlert};
    model.record(std::vector<std::uint8_t>(close_notify, close_notify + 3));
    cl.seal(TlsRecords::kAlert, close_notify, 2);
  }
  PARLEY_FUZZ_CHECK(flush(io, cl, 65536) || model.ended || model.garbled);
  ::shutdown(fds[1], SHUT_WR);
  settle(io, cl);
  for (int i = 0; i < 100 && (!echo.end || echo.write_busy); ++i) settle(io, cl);

  // The server read exactly what the model says, and ended as it says.
  if (parley::fuzz::verbose()) {
    std::fprintf(stderr,
                 "model: alert %d (sent %d), closed %d, garbled %d, %zu bytes, %zu KeyUpdate "
                 "requests; server: end \"%s\", alert %d, %zu bytes echoed, %zu KeyUpdates\n",
                 model.alert.value_or(-1), model.sent_alert, model.closed, model.garbled,
                 model.data.size(), model.requested_at.size(),
                 echo.end ? echo.end->message().c_str() : "none", cl.alert_received.value_or(-1),
                 cl.echoed.size(), cl.key_update_at.size());
  }
  PARLEY_FUZZ_CHECK(echo.end.has_value() && !echo.write_busy);
  PARLEY_FUZZ_CHECK(!echo.write_after_failure ||
                    *echo.write_after_failure == net::error::broken_pipe);
  PARLEY_FUZZ_CHECK(cl.tickets == (tickets ? kTickets : 0));
  PARLEY_FUZZ_CHECK(model.data.starts_with(cl.echoed));
  if (model.shut_at) PARLEY_FUZZ_CHECK(cl.server_closed && !cl.alert_received);
  if (!model.garbled) {
    if (model.closed) {
      PARLEY_FUZZ_CHECK(*echo.end == net::error::eof);
      PARLEY_FUZZ_CHECK(cl.echoed == model.echoed_data());
    } else {
      PARLEY_FUZZ_CHECK(model.alert && echo.end->value() == *model.alert &&
                        echo.end->category().name() == std::string_view("parley.tls"));
      // Full duplex: data read before the failure may still have been waiting to be written,
      // and an alert is not sent while a write is half sent.
      if (!echo.duplex) PARLEY_FUZZ_CHECK(cl.echoed == model.echoed_data());
      if (model.sent_alert && !model.shut_at &&
          (cl.alert_received || (!model.alert_optional && !echo.duplex))) {
        PARLEY_FUZZ_CHECK(cl.alert_received == model.alert);
      }
    }
    if (!echo.duplex) {
      // Each request answered at once, where it stood in the stream.
      PARLEY_FUZZ_CHECK(cl.key_update_at == model.requested_at);
    } else {
      // Answered before the first write begun after the request was read, which may hold data
      // from before it (several requests may share an answer): never more answers than
      // requests, and once data sent after a request is echoed, an answer came at or before
      // the request's place in the stream.
      PARLEY_FUZZ_CHECK(cl.key_updates <= model.requests);
      for (const std::size_t r : model.requested_at) {
        if (cl.echoed.size() > r) {
          PARLEY_FUZZ_CHECK(!cl.key_update_at.empty() && *cl.key_update_at.begin() <= r);
        }
      }
    }
  }
  ::close(fds[1]);
  return 0;
}
