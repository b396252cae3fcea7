#pragma once
// Internal to src/transport: TcpTls, the client's TLS to parleyd over a TCP connection: direct,
// or through a SOCKS5 or HTTP CONNECT proxy that relays it. (Through a bridge the TLS runs
// inside another TLS stream and stays an asio ssl::stream; client.cc's BridgePipe.)
//
// The connection and a proxy's handshake run on a beast::tcp_stream (tcp()), whose timeouts
// bound each step; start_tls() then moves the connected socket into a TlsSocket, the stream the
// server uses, on the client side. OpenSSL reads and writes the socket itself: no BIO pair, no
// copy of every byte through it, and no 17 KB buffers kept per connection for life
// (tls_socket.h). Through session 9 the client used beast::ssl_stream<tcp_stream>; its
// operations (asio's ssl io_op over a timed tcp_stream) were a large part of the load
// generator's CPU per message (docs/benchmarks.md, session 10).
//
// Deadlines: expires_after() goes to whichever layer is active (the tcp_stream while
// connecting, the TlsSocket after start_tls()). Threading: as TlsSocket (one executor, one read
// and one write at a time).

#include <boost/asio/ssl/stream_base.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <cassert>
#include <chrono>
#include <memory>
#include <utility>

#include "base/result.h"
#include "transport/internal/tls_socket.h"

namespace parley::transport::internal {

class TcpTls {
 public:
  using executor_type = boost::asio::any_io_executor;
  using next_layer_type = TlsSocket;

  TcpTls(const executor_type& ex, SSL_CTX* ctx) : tcp_(ex), ctx_(ctx) {}

  // Before start_tls(): the TCP stream to connect, and to run a proxy's handshake on.
  boost::beast::tcp_stream& tcp() { return tcp_; }
  // Hands the connected socket to a TLS client stream. kIo when the socket is not connected,
  // kInternal when OpenSSL cannot make the SSL object.
  Status start_tls() {
    if (!tcp_.socket().is_open()) return make_error(ErrorCode::kIo, "tls: not connected");
    tcp_.expires_never();
    auto tls = TlsSocket::connect(tcp_.release_socket(), ctx_);
    if (!tls) return tls.error();
    tls_ = std::move(*tls);
    return Status::ok();
  }

  executor_type get_executor() { return tcp_.get_executor(); }
  // After start_tls().
  TlsSocket& next_layer() {
    assert(tls_);
    return *tls_;
  }
  SSL* native_handle() { return tls_ ? tls_->native_handle() : nullptr; }
  // TlsSocket::read_ready(): a read completes without waiting (false before start_tls()).
  bool read_ready() const { return tls_ && tls_->read_ready(); }

  void expires_after(std::chrono::steady_clock::duration d) {
    if (tls_) {
      tls_->expires_after(d);
    } else {
      tcp_.expires_after(d);
    }
  }
  void expires_never() {
    if (tls_) {
      tls_->expires_never();
    } else {
      tcp_.expires_never();
    }
  }
  // Closes the connection at once, in whichever phase; pending operations fail.
  void close() {
    if (tls_) {
      tls_->close();
    } else {
      boost::system::error_code ignored;
      tcp_.socket().close(ignored);
    }
  }

  // The operations of an asio TLS stream, after start_tls(). The role is always the client's.
  template <class Token>
  auto async_handshake(boost::asio::ssl::stream_base::handshake_type, Token&& token) {
    return next_layer().async_handshake(std::forward<Token>(token));
  }
  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return next_layer().async_read_some(buffers, std::forward<Token>(token));
  }
  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return next_layer().async_write_some(buffers, std::forward<Token>(token));
  }
  template <class Token>
  auto async_shutdown(Token&& token) {
    return next_layer().async_shutdown(std::forward<Token>(token));
  }

  // The WebSocket close: TlsSocket's (close_notify, then the TCP connection is closed; never
  // half-closed, which obfs4proxy would turn into a full close anyway).
  template <class Handler>
  friend void async_teardown(boost::beast::role_type role, TcpTls& s, Handler&& handler) {
    async_teardown(role, s.next_layer(), std::forward<Handler>(handler));
  }
  friend void teardown(boost::beast::role_type role, TcpTls& s, boost::system::error_code& ec) {
    teardown(role, s.next_layer(), ec);
  }

 private:
  boost::beast::tcp_stream tcp_;
  SSL_CTX* ctx_;
  std::unique_ptr<TlsSocket> tls_;
};

}  // namespace parley::transport::internal
