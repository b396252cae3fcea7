#pragma once
// Internal to src/transport: TlsSocket, the TLS stream of the server and of the client's TCP
// routes (internal/tcp_tls.h). OpenSSL reads and writes the non-blocking socket itself (a socket
// BIO with read-ahead), and the stream waits for readiness with the socket's async_wait only when
// OpenSSL asks for it.
//
// Why not asio::ssl::stream: its engine keeps two 17 KB buffers per connection for life, plus a
// BIO pair whose buffers OpenSSL allocates on first use and never returns, and it copies every
// byte through both. Here an idle connection holds only OpenSSL's SSL object:
// SSL_MODE_RELEASE_BUFFERS hands the record buffers back whenever they are empty, and a
// record goes from the kernel to OpenSSL and out again with no extra copy.
//
// After a TLS 1.3 handshake on a server context prepared with enable_record_handoff(), the
// stream frees the SSL object and protects records itself with the traffic keys OpenSSL
// derived (tls_records.h): an idle connection then holds its keys and counters instead of
// OpenSSL's 13.7 KB. A TLS 1.2 connection, or a TLS 1.3 one with another suite, keeps its SSL.
//
// Timeouts work like beast::tcp_stream's: expires_after() sets a deadline for whatever runs from
// then on; when it passes, pending and later operations fail with beast::error::timeout.
//
// Lifetime: like any asio stream, a TlsSocket must outlive its pending operations (the server
// shares it with CorkStream's flush for that reason). The deadline's handler holds only a small
// shared state, so a timer that fires late never touches a TlsSocket that is gone.
//
// Threading: all operations must run on the socket's executor (the connection's strand); one
// read and one write may be pending at once, as with any asio stream.
//
// A write that fails ends writing: every later write, and the close_notify, fails at once with
// broken_pipe (or with timeout while the deadline has passed), since the stream may hold part of
// the failed write's records, sealed or half sent. Reads go on, unless what failed was the
// connection itself.

#include <openssl/ssl.h>

#include <boost/asio/async_result.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/role.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/result.h"
#include "transport/internal/coarse_clock.h"

namespace parley::transport::internal {

class TlsSocket {
 public:
  using executor_type = boost::asio::any_io_executor;
  using next_layer_type = boost::asio::ip::tcp::socket;

  // Takes an accepted socket (made non-blocking) and a server context. kInternal when OpenSSL
  // cannot make the SSL object.
  static Result<std::unique_ptr<TlsSocket>> accept(boost::asio::ip::tcp::socket sock,
                                                   SSL_CTX* ctx);
  // The client side: takes a connected socket (made non-blocking) and a client context; the
  // caller sets SNI and a session to offer on native_handle() before the handshake.
  static Result<std::unique_ptr<TlsSocket>> connect(boost::asio::ip::tcp::socket sock,
                                                    SSL_CTX* ctx);
  // Makes every server TlsSocket on `ctx` hand its records over after a TLS 1.3 handshake (the
  // header comment): installs a key log callback that takes the application traffic secrets.
  // Call before the context is shared.
  static void enable_record_handoff(SSL_CTX* ctx);
  // For tests: sockets on `ctx` handed over after this change their write key every `n`
  // records (n > 0) instead of every 2^23 (TlsRecords::kRecordsPerKey), so that the change can
  // be reached.
  static void set_records_per_key(SSL_CTX* ctx, std::uint32_t n);
  ~TlsSocket();
  TlsSocket(const TlsSocket&) = delete;
  TlsSocket& operator=(const TlsSocket&) = delete;

  boost::asio::ip::tcp::socket& next_layer() { return sock_; }
  executor_type get_executor() { return sock_.get_executor(); }
  // nullptr once the records were handed over.
  SSL* native_handle() { return ssl_; }
  // Whether the handshake ended with the SSL object freed and the records protected here.
  bool records_handed_off() const { return records_ != nullptr; }
  // Closes the TCP connection at once (no close_notify); pending operations fail.
  void close();

  void expires_after(std::chrono::steady_clock::duration d);
  void expires_never();
  // After the handshake: whether it resumed a session (a client's ticket).
  bool session_reused() const { return reused_; }
  // Whether a read is under way that will complete without waiting for the socket: its bytes
  // were already in hand (in OpenSSL's buffer or read from the socket) and its completion is
  // queued. CorkStream holds a flush back while this is so (cork_stream.h).
  bool read_ready() const { return read_in_hand_; }
  // When the last read returned bytes (or the socket was made, before any): a coarse time
  // (coarse_clock.h), for keep-alive and idle checks that must not cost a timer per read.
  std::chrono::steady_clock::time_point last_read() const { return last_read_; }

  // void(error_code)
  template <class Handler>
  auto async_handshake(Handler&& handler) {
    return start<void(boost::system::error_code)>(Kind::kHandshake, nullptr, 0,
                                                  std::forward<Handler>(handler));
  }
  // void(error_code, std::size_t): reads from the first non-empty buffer.
  template <class MutableBuffers, class Handler>
  auto async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    auto b = first_buffer(buffers);
    return start<void(boost::system::error_code, std::size_t)>(Kind::kRead, b.data(), b.size(),
                                                               std::forward<Handler>(handler));
  }
  // void(error_code, std::size_t): writes from the first non-empty buffer (one or more records).
  template <class ConstBuffers, class Handler>
  auto async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    auto b = first_buffer(buffers);
    return start<void(boost::system::error_code, std::size_t)>(
        Kind::kWrite, const_cast<void*>(b.data()), b.size(), std::forward<Handler>(handler));
  }
  // Sends close_notify (without waiting for the peer's). void(error_code)
  template <class Handler>
  auto async_shutdown(Handler&& handler) {
    return start<void(boost::system::error_code)>(Kind::kShutdown, nullptr, 0,
                                                  std::forward<Handler>(handler));
  }

  // The WebSocket close: close_notify, then the TCP connection is shut down and closed.
  template <class Handler>
  friend void async_teardown(boost::beast::role_type, TlsSocket& s, Handler&& handler) {
    s.async_shutdown(
        [&s, h = std::forward<Handler>(handler)](boost::system::error_code ec) mutable {
          s.close();
          h(ec == boost::asio::error::operation_aborted ? ec : boost::system::error_code{});
        });
  }
  friend void teardown(boost::beast::role_type, TlsSocket& s, boost::system::error_code& ec) {
    ec = {};
    s.close();
  }

 private:
  enum class Kind { kHandshake, kRead, kWrite, kShutdown };
  enum class Want { kDone, kRead, kWrite };
  struct Step {
    Want want = Want::kDone;
    boost::system::error_code ec;
    std::size_t n = 0;
  };

  TlsSocket(boost::asio::ip::tcp::socket sock, SSL* ssl);
  static Result<std::unique_ptr<TlsSocket>> make(boost::asio::ip::tcp::socket sock, SSL_CTX* ctx,
                                                 bool server);
  Step step(Kind kind, void* data, std::size_t size);
  // After a completed handshake: hands the records over when the connection qualifies.
  void finish_handshake();
  // step() once the records were handed over (tls_socket_records.cc).
  Step record_step(Kind kind, void* data, std::size_t size);
  Step record_read(std::uint8_t* data, std::size_t size);
  Step record_write(const std::uint8_t* data, std::size_t size);
  Step record_shutdown();
  Step record_flush(std::size_t done);
  Step record_fail(std::uint8_t alert, bool sent);
  bool record_post_handshake(const std::uint8_t* msg, std::size_t size, std::uint8_t* alert);
  void write_room(std::size_t n);
  bool seal_append(std::uint8_t type, const std::uint8_t* data, std::size_t n);
  bool seal_key_update();
  void release_read_buffer();
  static void key_log(const SSL* ssl, const char* line);
  static void handshake_message(int write_p, int version, int content_type, const void* buf,
                                std::size_t len, SSL* ssl, void* arg);

  template <class Buffers>
  static auto first_buffer(const Buffers& buffers) {
    auto it = boost::asio::buffer_sequence_begin(buffers);
    const auto end = boost::asio::buffer_sequence_end(buffers);
    using B = std::decay_t<decltype(*it)>;
    for (; it != end; ++it) {
      B b(*it);
      if (b.size() != 0) return b;
    }
    return B();
  }

  // One operation: try, wait for what OpenSSL wants, try again. A result that is ready at once
  // is posted, never delivered inside the initiating call.
  struct Op {
    TlsSocket& s;
    Kind kind;
    void* data;
    std::size_t size;
    int state = 0;  // 0: first try; 1: waited; 2: posted result
    Step result{};

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}) {
      if (kind == Kind::kRead) s.read_in_hand_ = true;
      if (state == 2) return finish(self);
      if (state == 1 && ec) {
        result.ec = s.dl_->timed_out ? boost::system::error_code(boost::beast::error::timeout) : ec;
        return finish(self);
      }
      if (s.dl_->timed_out) {
        result.ec = boost::beast::error::timeout;
      } else if ((kind == Kind::kWrite || kind == Kind::kShutdown) && s.write_failed_) {
        result.ec = boost::asio::error::broken_pipe;
      } else {
        result = s.step(kind, data, size);
      }
      if (result.want != Want::kDone) {
        state = 1;
        if (kind == Kind::kRead) s.read_in_hand_ = false;
        s.sock_.async_wait(result.want == Want::kRead ? boost::asio::ip::tcp::socket::wait_read
                                                      : boost::asio::ip::tcp::socket::wait_write,
                           std::move(self));
        return;
      }
      if (state == 0) {
        state = 2;
        boost::asio::post(s.get_executor(), std::move(self));
        return;
      }
      finish(self);
    }
    template <class Self>
    void finish(Self& self) {
      if (kind == Kind::kRead) s.read_in_hand_ = false;  // the handler may read again
      if (kind == Kind::kWrite && result.ec) s.write_failed_ = true;
      if constexpr (requires { self.complete(result.ec, result.n); }) {
        self.complete(result.ec, result.n);
      } else {
        self.complete(result.ec);
      }
    }
  };

  template <class Signature, class Handler>
  auto start(Kind kind, void* data, std::size_t size, Handler&& handler) {
    return boost::asio::async_compose<Handler, Signature>(Op{*this, kind, data, size}, handler,
                                                          sock_);
  }

  boost::asio::ip::tcp::socket sock_;
  SSL* ssl_;
  // During a server's handshake: what the handoff needs from OpenSSL (tls_socket.cc).
  struct Capture;
  std::unique_ptr<Capture> capture_;
  // After the handoff: the record keys and buffers (tls_socket_records.cc).
  struct Records;
  std::unique_ptr<Records> records_;
  bool reused_ = false;
  // A read op runs or its completion is queued, not waiting for the socket (read_ready()).
  bool read_in_hand_ = false;
  // A write failed (timed out, or the socket or the stream broke): part of its records may be
  // sealed, or sent, and the caller was told none of it was written. No later write, nor the
  // close_notify, can follow that on the same stream, so each fails with broken_pipe.
  bool write_failed_ = false;
  std::chrono::steady_clock::time_point last_read_ = coarse_now();
  // Shared with the deadline timer's handler: `generation` tells a stale expiry (the deadline
  // was moved after the timer fired) from a real one; `alive` is false once the socket is gone.
  struct Deadline {
    std::uint64_t generation = 0;
    bool timed_out = false;
    bool alive = true;
  };
  std::shared_ptr<Deadline> dl_ = std::make_shared<Deadline>();
  boost::asio::steady_timer deadline_;
};

}  // namespace parley::transport::internal
