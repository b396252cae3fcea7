// Client side: pinned TLS, WebSocket (async and blocking) and HTTPS requests for attachments.
#include "transport/client.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/detail/hybi13.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <deque>
#include <type_traits>
#include <vector>

#include "transport/internal/asio.h"
#include "transport/internal/cork_stream.h"
#include "transport/internal/tcp_tls.h"
#include "transport/internal/tls_resumption.h"
#include "transport/internal/ws_frames.h"

namespace parley::transport {
namespace {

using namespace internal;  // NOLINT: file-local
namespace websocket = boost::beast::websocket;
// The client's TLS to parleyd runs over TCP (TcpTls, internal/tcp_tls.h: direct, SOCKS5, HTTP
// CONNECT) or inside the TLS to a bridge (Tls2Stream over BridgePipe). Either closes the TCP
// connection at once when the WebSocket is torn down: Beast's own teardown half-closes the
// socket (shutdown(SHUT_WR)), and obfs4proxy then closes both directions, so no client stream
// is ever half-closed.
//
// BridgePipe: the TLS stream to a bridge, after its upgrade, seen by the inner TLS as a plain
// byte stream to parleyd. asio's ssl::stream wants lowest_layer(); Beast's get_lowest_layer()
// walks next_layer() down to the tcp_stream, whose timeouts bound every step.
class BridgePipe {
 public:
  using executor_type = TlsStream::executor_type;
  using next_layer_type = TlsStream;
  using lowest_layer_type = beast::tcp_stream::socket_type;

  BridgePipe(const net::any_io_executor& ex, ssl::context& ctx)
      : outer_(std::make_unique<TlsStream>(ex, ctx)) {}

  executor_type get_executor() noexcept { return outer_->get_executor(); }
  TlsStream& next_layer() noexcept { return *outer_; }
  const TlsStream& next_layer() const noexcept { return *outer_; }
  lowest_layer_type& lowest_layer() noexcept { return beast::get_lowest_layer(*outer_).socket(); }
  const lowest_layer_type& lowest_layer() const noexcept {
    return beast::get_lowest_layer(*outer_).socket();
  }
  template <class MutableBufferSequence, class Token>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
    return outer_->async_read_some(buffers, std::forward<Token>(token));
  }
  template <class ConstBufferSequence, class Token>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
    return outer_->async_write_some(buffers, std::forward<Token>(token));
  }

 private:
  std::unique_ptr<TlsStream> outer_;
};

// WebSocket teardown of the bridge pipe (found by ADL): close, never half-close.
void close_now(BridgePipe& pipe) {
  error_code ignored;
  pipe.lowest_layer().close(ignored);
}
[[maybe_unused]] void teardown(beast::role_type, BridgePipe& pipe, error_code& ec) {
  close_now(pipe);
  ec = {};
}
template <class Handler>
void async_teardown(beast::role_type, BridgePipe& pipe, Handler&& handler) {
  close_now(pipe);
  net::post(pipe.get_executor(), beast::bind_front_handler(std::forward<Handler>(handler), error_code{}));
}

// TLS to parleyd over TCP (direct, SOCKS5, HTTP CONNECT), or inside the TLS to a bridge.
using Tls2Stream = beast::ssl_stream<BridgePipe>;
// The WebSocket writes through a CorkStream (as the server's does): the messages written in one
// turn of the event loop leave in one TLS write, one record and one system call.
template <class Tls>
using WsStream = websocket::stream<CorkStream<Tls>>;

template <class Tls>
constexpr bool kThroughBridge = std::is_same_v<Tls, Tls2Stream>;

// A fresh unconnected stream of type Tls (both layers share the client context).
template <class Tls>
std::unique_ptr<Tls> make_stream(const net::any_io_executor& ex, ssl::context& ctx) {
  if constexpr (kThroughBridge<Tls>) {
    return std::make_unique<Tls>(BridgePipe(ex, ctx), ctx);
  } else {
    return std::make_unique<Tls>(ex, ctx.native_handle());
  }
}

// Deadlines and the abrupt close, on either kind of stream.
void expire_after(Tls2Stream& s, std::chrono::steady_clock::duration d) {
  beast::get_lowest_layer(s).expires_after(d);
}
void expire_after(TcpTls& s, std::chrono::steady_clock::duration d) { s.expires_after(d); }
void expire_never(Tls2Stream& s) { beast::get_lowest_layer(s).expires_never(); }
void expire_never(TcpTls& s) { s.expires_never(); }
void close_stream(Tls2Stream& s) {
  error_code ignored;
  beast::get_lowest_layer(s).socket().close(ignored);
}
void close_stream(TcpTls& s) { s.close(); }

constexpr std::string_view kUserAgent =
    "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0";

std::shared_ptr<ssl::context> make_client_tls_context() {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                       ssl::context::no_tlsv1_1 | ssl::context::no_compression,
                   ec);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_ctrl(native, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION, nullptr);
  static constexpr unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(native, kAlpn, sizeof kAlpn);
  // No CA validation: the pin (checked right after the handshake) is the trust anchor.
  ctx->set_verify_mode(ssl::verify_none, ec);
  enable_session_resumption(native);
  return ctx;
}

// One client context for the whole process: it is the same for every connection (the pin, not
// a CA, is the trust anchor), and making one per connection cost the load generator about 90 µs
// of a 1,040 µs handshake (docs/benchmarks.md). SSL_CTX is safe to share between threads.
std::shared_ptr<ssl::context> client_tls_context() {
  static const std::shared_ptr<ssl::context> ctx = make_client_tls_context();
  return ctx;
}

// The pin is SHA-256 over the leaf certificate's DER encoding (crypto::certificate_pin).
// X509_digest hashes the encoding OpenSSL already holds: decoding the certificate a second
// time cost the load generator a sixth of its handshake CPU.
Status check_pin(SSL* ssl, const Bytes& pin, std::string_view mismatch) {
  const auto refuse = [&] { return make_error(ErrorCode::kPermissionDenied, std::string(mismatch)); };
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return refuse();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), digest, &len) != 1) return refuse();
  if (len != pin.size() || CRYPTO_memcmp(digest, pin.data(), len) != 0) return refuse();
  return Status::ok();
}

std::string host_header(const ClientOptions& o) {
  const std::string& host = o.sni.empty() ? o.host : o.sni;
  const bool v6 = host.find(':') != std::string::npos;
  std::string out = v6 ? "[" + host + "]" : host;
  if (o.port != 443) out += ":" + std::to_string(o.port);
  return out;
}

Status io_error(std::string_view what, const error_code& ec) {
  return make_error(ErrorCode::kIo, std::string(what) + ": " + ec.message());
}

#define PARLEY_CO_TRY(expr)                                \
  do {                                                     \
    ::parley::Status parley_co_try_s_ = (expr);            \
    if (!parley_co_try_s_.is_ok()) co_return parley_co_try_s_; \
  } while (0)

std::string bracket(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

// Resolves host:port and connects `sock`, each step bounded by `timeout`. `what` prefixes errors.
net::awaitable<Status> tcp_connect(beast::tcp_stream& sock, const std::string& host,
                                   std::uint16_t port, std::chrono::milliseconds timeout,
                                   std::string_view what) {
  std::vector<tcp::endpoint> endpoints;
  error_code not_an_address;
  const net::ip::address address = net::ip::make_address(host, not_an_address);
  if (!not_an_address) {
    // An address (as invite links usually carry): no resolver, which runs getaddrinfo on a
    // thread of its own (three futex calls per connection; docs/benchmarks.md, session 10).
    endpoints.emplace_back(address, port);
  } else {
    auto ex = co_await net::this_coro::executor;
    auto resolver = std::make_shared<tcp::resolver>(ex);
    auto timer = std::make_shared<net::steady_timer>(ex);
    timer->expires_after(timeout);
    timer->async_wait([resolver](error_code ec) {
      if (!ec) resolver->cancel();
    });
    auto [rec, results] = co_await resolver->async_resolve(host, std::to_string(port), kUse);
    timer->cancel();
    if (rec) co_return io_error(std::string(what) + "resolve", rec);
    for (const auto& r : results) endpoints.push_back(r.endpoint());
  }
  sock.expires_after(timeout);
  auto [cec, ep] = co_await sock.async_connect(endpoints, kUse);
  if (cec) co_return io_error(std::string(what) + "connect", cec);
  error_code ignored;
  sock.socket().set_option(tcp::no_delay(true), ignored);
  co_return Status::ok();
}

net::awaitable<Status> write_all(beast::tcp_stream& sock, const std::string& bytes,
                                 std::chrono::milliseconds timeout, std::string_view what) {
  sock.expires_after(timeout);
  auto [ec, n] = co_await net::async_write(sock, net::buffer(bytes), kUse);
  if (ec) co_return io_error(std::string(what) + "write", ec);
  co_return Status::ok();
}

net::awaitable<Result<std::string>> read_exact(beast::tcp_stream& sock, std::size_t n,
                                               std::chrono::milliseconds timeout,
                                               std::string_view what) {
  std::string out(n, '\0');
  sock.expires_after(timeout);
  auto [ec, got] = co_await net::async_read(sock, net::buffer(out), kUse);
  if (ec) co_return io_error(std::string(what) + "read", ec);
  co_return out;
}

std::string_view socks5_reply_text(unsigned rep) {
  switch (rep) {
    case 1: return "general failure";
    case 2: return "connection not allowed by ruleset";
    case 3: return "network unreachable";
    case 4: return "host unreachable";
    case 5: return "connection refused";
    case 6: return "TTL expired";
    case 7: return "command not supported";
    case 8: return "address type not supported";
    default: return "unknown reply";
  }
}

// SOCKS5 (RFC 1928, RFC 1929 user/pass; the PT spec's long-argument rule) over a connected
// `sock`: CONNECT to o.host:o.port. Every reply byte is checked.
net::awaitable<Status> socks5_handshake(beast::tcp_stream& sock, const ClientOptions& o) {
  const Route& r = o.route;
  const auto t = o.connect_timeout;
  const bool auth = !r.socks_username.empty();
  std::string user = r.socks_username;
  std::string pass = r.socks_password;
  if (user.size() > 255) {  // pt-spec: the arguments continue into the password
    pass = user.substr(255);
    user.resize(255);
  }
  if (pass.size() > 255) {
    co_return make_error(ErrorCode::kInvalidArgument, "socks5: credentials over 510 bytes");
  }
  std::string greeting = {'\x05', '\x01', auth ? '\x02' : '\x00'};
  PARLEY_CO_TRY(co_await write_all(sock, greeting, t, "socks5: "));
  auto method = co_await read_exact(sock, 2, t, "socks5: ");
  if (!method) co_return method.error();
  if ((*method)[0] != '\x05') co_return make_error(ErrorCode::kIo, "socks5: not a SOCKS5 proxy");
  const auto chosen = static_cast<unsigned char>((*method)[1]);
  if (chosen == 0xFF) {
    co_return make_error(ErrorCode::kIo, "socks5: proxy accepts none of our auth methods");
  }
  if (chosen != (auth ? 0x02 : 0x00)) {
    co_return make_error(ErrorCode::kIo, "socks5: proxy chose an auth method not offered");
  }
  if (auth) {
    std::string req;
    req.push_back('\x01');
    req.push_back(static_cast<char>(user.size()));
    req += user;
    req.push_back(static_cast<char>(pass.size()));
    req += pass;
    PARLEY_CO_TRY(co_await write_all(sock, req, t, "socks5: "));
    auto st = co_await read_exact(sock, 2, t, "socks5: ");
    if (!st) co_return st.error();
    if ((*st)[0] != '\x01') co_return make_error(ErrorCode::kIo, "socks5: bad auth reply");
    if ((*st)[1] != '\x00') {
      co_return make_error(ErrorCode::kPermissionDenied, "socks5: proxy refused the credentials");
    }
  }
  std::string req = {'\x05', '\x01', '\x00'};
  error_code aec;
  const auto addr = net::ip::make_address(o.host, aec);
  if (!aec && addr.is_v4()) {
    req.push_back('\x01');
    for (unsigned char b : addr.to_v4().to_bytes()) req.push_back(static_cast<char>(b));
  } else if (!aec && addr.is_v6()) {
    req.push_back('\x04');
    for (unsigned char b : addr.to_v6().to_bytes()) req.push_back(static_cast<char>(b));
  } else {
    if (o.host.empty() || o.host.size() > 255) {
      co_return make_error(ErrorCode::kInvalidArgument, "socks5: bad host name");
    }
    req.push_back('\x03');
    req.push_back(static_cast<char>(o.host.size()));
    req += o.host;
  }
  req.push_back(static_cast<char>(o.port >> 8));
  req.push_back(static_cast<char>(o.port & 0xFF));
  PARLEY_CO_TRY(co_await write_all(sock, req, t, "socks5: "));
  auto head = co_await read_exact(sock, 4, t, "socks5: ");
  if (!head) co_return head.error();
  if ((*head)[0] != '\x05' || (*head)[2] != '\x00') {
    co_return make_error(ErrorCode::kIo, "socks5: bad reply");
  }
  const auto rep = static_cast<unsigned char>((*head)[1]);
  if (rep != 0) {
    co_return make_error(ErrorCode::kIo,
                         "socks5: proxy refused: " + std::string(socks5_reply_text(rep)));
  }
  std::size_t rest = 0;
  switch ((*head)[3]) {
    case '\x01': rest = 4 + 2; break;
    case '\x04': rest = 16 + 2; break;
    case '\x03': {
      auto len = co_await read_exact(sock, 1, t, "socks5: ");
      if (!len) co_return len.error();
      rest = static_cast<unsigned char>((*len)[0]) + std::size_t{2};
      break;
    }
    default: co_return make_error(ErrorCode::kIo, "socks5: bad reply address type");
  }
  auto bound = co_await read_exact(sock, rest, t, "socks5: ");
  if (!bound) co_return bound.error();
  co_return Status::ok();
}

// Reads one HTTP response header (bounded). A tunnel's (2xx, 101) must be followed by nothing
// yet: the proxy or bridge sends no byte past it before we speak (TLS clients speak first).
net::awaitable<Result<unsigned>> read_response_head(beast::tcp_stream& tcp_layer, auto& stream,
                                                    std::chrono::milliseconds timeout,
                                                    std::string_view what) {
  beast::flat_buffer buffer(16 * 1024);
  http::response_parser<http::empty_body> parser;
  parser.header_limit(8 * 1024);
  parser.skip(true);  // a CONNECT or 101 response has no body
  tcp_layer.expires_after(timeout);
  auto [ec, n] = co_await http::async_read(stream, buffer, parser, kUse);
  if (ec) co_return io_error(std::string(what) + "read", ec);
  const unsigned status = parser.get().result_int();
  const bool tunnel = status == 101 || (status >= 200 && status <= 299);
  if (tunnel && buffer.size() != 0) {  // an error status may come with a body: not read
    co_return make_error(ErrorCode::kIo, std::string(what) + "unexpected bytes after the response");
  }
  co_return status;
}

// HTTP CONNECT over a connected `sock` to o.host:o.port; a 2xx answer is required.
net::awaitable<Status> http_connect_handshake(beast::tcp_stream& sock, const ClientOptions& o) {
  const std::string target = bracket(o.host) + ":" + std::to_string(o.port);
  std::string req = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\nUser-Agent: " +
                    std::string(kUserAgent) + "\r\n\r\n";
  PARLEY_CO_TRY(co_await write_all(sock, req, o.connect_timeout, "http connect: "));
  auto status = co_await read_response_head(sock, sock, o.connect_timeout, "http connect: ");
  if (!status) co_return status.error();
  if (*status < 200 || *status > 299) {
    co_return make_error(ErrorCode::kIo, "http connect: proxy answered " + std::to_string(*status));
  }
  co_return Status::ok();
}

Status check_route(const ClientOptions& o) {
  const Route& r = o.route;
  if (r.kind == Route::Kind::kDirect) return Status::ok();
  if (r.via_host.empty() || r.via_port == 0) {
    return make_error(ErrorCode::kInvalidArgument, "client: the route needs via_host and via_port");
  }
  if (r.kind == Route::Kind::kBridge) {
    if (r.bridge_pin_sha256.size() != 32) {
      return make_error(ErrorCode::kInvalidArgument, "client: bridge_pin_sha256 must be 32 bytes");
    }
    if (r.bridge_path.empty() || r.bridge_path.front() != '/') {
      return make_error(ErrorCode::kInvalidArgument, "client: bad bridge_path");
    }
  }
  return Status::ok();
}

// The TCP byte stream to o.host:o.port: direct, or through a SOCKS5 / HTTP CONNECT proxy.
net::awaitable<Status> open_byte_stream(beast::tcp_stream& sock, const ClientOptions& o) {
  switch (o.route.kind) {
    case Route::Kind::kDirect:
      co_return co_await tcp_connect(sock, o.host, o.port, o.connect_timeout, "");
    case Route::Kind::kSocks5:
      PARLEY_CO_TRY(co_await tcp_connect(sock, o.route.via_host, o.route.via_port, o.connect_timeout,
                                      "socks5: proxy "));
      co_return co_await socks5_handshake(sock, o);
    case Route::Kind::kHttpConnect:
      PARLEY_CO_TRY(co_await tcp_connect(sock, o.route.via_host, o.route.via_port, o.connect_timeout,
                                      "http connect: proxy "));
      co_return co_await http_connect_handshake(sock, o);
    case Route::Kind::kBridge:
      break;
  }
  co_return make_error(ErrorCode::kInternal, "client: bridge route on a direct stream");
}

// Bridge: TCP + TLS to the bridge (pinned with bridge_pin_sha256), then a WebSocket-looking
// upgrade request on the bridge's secret path; after `101` the outer TLS stream is a byte pipe
// to parleyd.
net::awaitable<Status> open_bridge(TlsStream& outer, const ClientOptions& o) {
  const Route& r = o.route;
  auto& tcp_layer = beast::get_lowest_layer(outer);
  PARLEY_CO_TRY(co_await tcp_connect(tcp_layer, r.via_host, r.via_port, o.connect_timeout,
                                  "bridge: "));
  if (!r.bridge_sni.empty()) {
    SSL_ctrl(outer.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(r.bridge_sni.c_str()));
  }
  tcp_layer.expires_after(o.connect_timeout);
  auto [hec] = co_await outer.async_handshake(ssl::stream_base::client, kUse);
  if (hec) co_return io_error("bridge: tls handshake", hec);
  PARLEY_CO_TRY(check_pin(outer.native_handle(), r.bridge_pin_sha256,
                       "bridge certificate pin mismatch"));
  websocket::detail::sec_ws_key_type key;
  websocket::detail::make_sec_ws_key(key);
  std::string host = bracket(r.bridge_sni.empty() ? r.via_host : r.bridge_sni);
  if (r.via_port != 443) host += ":" + std::to_string(r.via_port);
  const std::string req = "GET " + r.bridge_path + " HTTP/1.1\r\nHost: " + host +
                          "\r\nUser-Agent: " + std::string(kUserAgent) +
                          "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
                          std::string(key.data(), key.size()) + "\r\n\r\n";
  tcp_layer.expires_after(o.connect_timeout);
  auto [wec, wn] = co_await net::async_write(outer, net::buffer(req), kUse);
  if (wec) co_return io_error("bridge: write", wec);
  auto status = co_await read_response_head(tcp_layer, outer, o.connect_timeout, "bridge: ");
  if (!status) co_return status.error();
  if (*status != 101) {
    co_return make_error(ErrorCode::kIo, "bridge: no upgrade (" + std::to_string(*status) + ")");
  }
  co_return Status::ok();
}

// Obtains the byte stream the route names, runs the TLS handshake with parleyd over it and
// checks the pin, each step bounded by options.connect_timeout.
template <class Tls>
net::awaitable<Status> connect_tls(Tls& stream, const ClientOptions& o) {
  if (o.pin_sha256.size() != 32) {
    co_return make_error(ErrorCode::kInvalidArgument, "client: pin_sha256 must be 32 bytes");
  }
  PARLEY_CO_TRY(check_route(o));
  if constexpr (kThroughBridge<Tls>) {
    PARLEY_CO_TRY(co_await open_bridge(stream.next_layer().next_layer(), o));
  } else {
    PARLEY_CO_TRY(co_await open_byte_stream(stream.tcp(), o));
    PARLEY_CO_TRY(stream.start_tls());
  }
  if (!o.sni.empty()) {
    SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(o.sni.c_str()));
  }
  SSL* ssl = stream.native_handle();
  const std::string key =
      o.resume_tls ? resumption_key(o.pin_sha256, o.host, o.port, o.sni) : std::string();
  if (o.resume_tls) offer_session(ssl, key);
  expire_after(stream, o.connect_timeout);
  auto [hec] = co_await stream.async_handshake(ssl::stream_base::client, kUse);
  if (hec) co_return io_error("tls handshake", hec);
  PARLEY_CO_TRY(check_pin(ssl, o.pin_sha256, "certificate pin mismatch"));
  if (o.resume_tls) keep_sessions(ssl, key);
  co_return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// WsClient

// What BlockingWsClient needs of a WsClientImpl, whatever its stream type.
class WsClientCore : public WsClient {
 public:
  virtual void start(std::function<void(Result<std::shared_ptr<WsClient>>)> on_connected) = 0;
  virtual void send_text_for_test(std::shared_ptr<const std::string> message) = 0;
  // For BlockingWsClient (same thread as the io_context). Idle: every message sent has been
  // handed to the socket (none queued, none waiting in the cork).
  virtual bool idle() const = 0;
  virtual bool finished() const = 0;
};

// Tls is TcpTls (direct, SOCKS5, HTTP CONNECT) or Tls2Stream (through a bridge).
template <class Tls>
class WsClientImpl final : public WsClientCore,
                           public std::enable_shared_from_this<WsClientImpl<Tls>> {
 public:
  WsClientImpl(net::io_context& io, ClientOptions options, MessageHandler on_message,
               CloseHandler on_close)
      : options_(std::move(options)),
        ex_(io.get_executor()),
        tls_ctx_(client_tls_context()),
        on_message_(std::move(on_message)),
        on_close_(std::move(on_close)),
        ws_(std::make_unique<WsStream<Tls>>(
            std::shared_ptr<Tls>(make_stream<Tls>(ex_, *tls_ctx_)))) {}

  void start(std::function<void(Result<std::shared_ptr<WsClient>>)> on_connected) override {
    net::co_spawn(ex_, run(this->shared_from_this(), std::move(on_connected)),
                  [](std::exception_ptr) {});
  }

  void send(std::shared_ptr<const std::string> message) override {
    if (!message) return;
    // On the io_context's thread (a callback sending its answer): queue it now, in order.
    if (ex_.running_in_this_thread()) return enqueue(std::move(message));
    net::post(ex_, [self = this->shared_from_this(), m = std::move(message)]() mutable {
      self->enqueue(std::move(m));
    });
  }

  void close() override {
    net::post(ex_, [self = this->shared_from_this()] { self->do_close(); });
  }

  // Tests of the server's refusal of text frames: switches this connection to text frames.
  void send_text_for_test(std::shared_ptr<const std::string> message) override {
    net::post(ex_, [self = this->shared_from_this(), m = std::move(message)]() mutable {
      self->ws_->text(true);
      self->enqueue(std::move(m));
    });
  }

  bool idle() const override { return queue_.empty() && !writing_ && ws_->next_layer().flushed(); }
  bool finished() const override { return finished_; }
  // Read after on_connected (the handshake is over and does not change again).
  bool tls_resumed() const override {
    return SSL_session_reused(ws_->next_layer().next_layer().native_handle()) == 1;
  }

 private:
  // The coroutine owns the client (`self`) until it ends.
  static net::awaitable<void> run(
      std::shared_ptr<WsClientImpl> self,
      std::function<void(Result<std::shared_ptr<WsClient>>)> on_connected) {
    co_await self->run_inner(self, std::move(on_connected));
  }

  net::awaitable<void> run_inner(
      std::shared_ptr<WsClientImpl> self,
      std::function<void(Result<std::shared_ptr<WsClient>>)> on_connected) {
    Status why;
    try {
      Tls& tls = ws_->next_layer().next_layer();
      Status st = co_await connect_tls(tls, options_);
      if (st.is_ok()) {
        expire_never(tls);
        websocket::stream_base::timeout to =
            websocket::stream_base::timeout::suggested(beast::role_type::client);
        to.handshake_timeout = options_.connect_timeout;
        if (options_.idle_timeout.count() > 0) {
          // A frozen link: Beast pings after idle_timeout / 2 of silence and fails the read
          // with beast::error::timeout when nothing (no frame, no pong) came for idle_timeout.
          to.idle_timeout = options_.idle_timeout;
          to.keep_alive_pings = true;
        }
        ws_->set_option(to);
        ws_->set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
          req.set(http::field::user_agent, kUserAgent);
        }));
        ws_->read_message_max(options_.max_message_size);
        ws_->binary(true);
        auto [ec] = co_await ws_->async_handshake(host_header(options_), options_.ws_path, kUse);
        if (ec) st = io_error("websocket handshake", ec);
      }
      if (!st.is_ok()) {
        finished_ = true;
        close_stream(tls);
        if (on_connected) on_connected(st);
        co_return;
      }
      connected_ = true;
      if (on_connected) on_connected(std::shared_ptr<WsClient>(self));
      beast::flat_buffer buffer;
      for (;;) {
        auto [ec, n] = co_await ws_->async_read(buffer, kUse);
        if (ec) {
          why = close_status(ec);
          break;
        }
        if (!ws_->got_binary()) {
          buffer.clear();
          continue;  // the server speaks binary only; ignore anything else
        }
        auto data = buffer.cdata();
        if (on_message_) on_message_(std::string_view(static_cast<const char*>(data.data()), data.size()));
        buffer.clear();
      }
    } catch (...) {
      why = make_error(ErrorCode::kInternal, "websocket client failed");
    }
    finished_ = true;
    close_stream(ws_->next_layer().next_layer());
    queue_.clear();
    queued_ = 0;
    if (connected_ && on_close_) {
      auto cb = std::move(on_close_);
      on_close_ = nullptr;
      cb(why.is_ok() ? make_error(ErrorCode::kIo, "closed") : why);
    }
  }

  Status close_status(const error_code& ec) {
    if (!local_error_.is_ok()) return local_error_;
    if (ec == beast::error::timeout) return make_error(ErrorCode::kIo, "link stalled");
    // A close frame received counts even when echoing it back failed (the server may have
    // dropped the TCP connection right after sending it).
    if (ec == websocket::error::closed || ws_->reason().code != websocket::close_code::none) {
      const auto& r = ws_->reason();
      std::string msg = "closed (" + std::to_string(r.code) + ")";
      if (!r.reason.empty()) msg += ": " + std::string(r.reason.c_str(), r.reason.size());
      return make_error(ErrorCode::kIo, msg);
    }
    return io_error("connection lost", ec);
  }

  void enqueue(std::shared_ptr<const std::string> m) {
    if (finished_ || closing_) return;
    if (queued_ != 0 && queued_ + m->size() > options_.write_queue_limit) {
      local_error_ = make_error(ErrorCode::kResourceExhausted, "write queue full");
      do_close();
      return;
    }
    queued_ += m->size();
    queue_.push_back(std::move(m));
    if (!writing_) write_next();
  }

  void write_next() {
    // While the cork has room, each message goes into it at once, masked (internal/ws_frames.h);
    // once it is full (or a flush failed), Beast's async_write takes over and waits.
    while (!queue_.empty() && !finished_ && ws_->is_open()) {
      const std::string& m = *queue_.front();
      const auto key = mask_keys_.next();
      if (!key || !append_frame(ws_->next_layer(), m, ws_->text(), key)) break;
      queued_ -= m.size();
      queue_.pop_front();
    }
    if (queue_.empty() || finished_) {
      writing_ = false;
      if (closing_ && !close_sent_ && !finished_) start_close();
      return;
    }
    writing_ = true;
    ws_->async_write(net::buffer(*queue_.front()),
                     [self = this->shared_from_this()](error_code ec, std::size_t) {
                       if (!self->queue_.empty()) {
                         self->queued_ -= self->queue_.front()->size();
                         self->queue_.pop_front();
                       }
                       if (ec) {
                         self->writing_ = false;
                         close_stream(self->ws_->next_layer().next_layer());
                         return;
                       }
                       self->write_next();
                     });
  }

  void do_close() {
    if (closing_ || finished_ || !connected_) {
      if (!connected_ && !finished_) close_stream(ws_->next_layer().next_layer());  // abort
      return;
    }
    closing_ = true;
    if (!writing_) start_close();
  }

  void start_close() {
    close_sent_ = true;
    ws_->async_close(websocket::close_code::normal,
                     [self = this->shared_from_this()](error_code ec) {
                       if (ec) close_stream(self->ws_->next_layer().next_layer());
                     });
  }

  const ClientOptions options_;
  // The io_context runs on one thread (client.h), so it serializes a connection's work without
  // a strand, whose executor copies and posts took 9 % of the load generator's samples.
  const net::io_context::executor_type ex_;
  std::shared_ptr<ssl::context> tls_ctx_;
  MessageHandler on_message_;
  CloseHandler on_close_;
  std::unique_ptr<WsStream<Tls>> ws_;

  // Confined to the io_context's thread.
  std::deque<std::shared_ptr<const std::string>> queue_;
  std::size_t queued_ = 0;
  bool writing_ = false;
  MaskKeys mask_keys_;
  bool connected_ = false;
  bool closing_ = false;
  bool close_sent_ = false;
  bool finished_ = false;
  Status local_error_;
};

std::shared_ptr<WsClientCore> make_ws_client(net::io_context& io, ClientOptions options,
                                             WsClient::MessageHandler on_message,
                                             WsClient::CloseHandler on_close) {
  if (options.route.kind == Route::Kind::kBridge) {
    return std::make_shared<WsClientImpl<Tls2Stream>>(io, std::move(options), std::move(on_message),
                                                      std::move(on_close));
  }
  return std::make_shared<WsClientImpl<TcpTls>>(io, std::move(options), std::move(on_message),
                                                std::move(on_close));
}

// ---------------------------------------------------------------------------------------------
// BlockingWsClient: a WsClientImpl on a private io_context, driven from the caller's thread.

class BlockingWsClientImpl final : public BlockingWsClient {
 public:
  explicit BlockingWsClientImpl(const ClientOptions& o) : options_(o) {}
  ~BlockingWsClientImpl() override {
    if (client_ && !client_->finished()) close();
  }

  Status connect() {
    std::optional<Result<std::shared_ptr<WsClient>>> result;
    auto impl = make_ws_client(
        io_, options_,
        [this](std::string_view m) { inbox_.emplace_back(m); },
        [this](const Status& why) { closed_ = why; });
    client_ = impl;
    impl->start([&result](Result<std::shared_ptr<WsClient>> r) { result.emplace(std::move(r)); });
    // Every connect step has its own timeout; this bound is a backstop (a bridge route has
    // up to eight steps: TCP, TLS, upgrade write and read, inner TLS, WebSocket).
    run_until([&] { return result.has_value(); }, 8 * options_.connect_timeout + kSlack);
    if (!result) {
      client_->close();
      run_until([&] { return client_->finished(); }, kSlack);
      return make_error(ErrorCode::kUnavailable, "connect timed out");
    }
    if (!result->has_value()) return result->error();
    return Status::ok();
  }

  bool tls_resumed() const override { return client_ && client_->tls_resumed(); }

  Status send(ByteView message) override {
    if (closed_) return *closed_;
    client_->send(std::make_shared<const std::string>(as_chars(message)));
    run_until([&] { return closed_.has_value() || client_->idle(); },
              std::max<std::chrono::milliseconds>(options_.connect_timeout, kSlack));
    if (closed_) return *closed_;
    if (!client_->idle()) return make_error(ErrorCode::kUnavailable, "send timed out");
    return Status::ok();
  }

  Status send_text_for_test(std::string_view message) override {
    if (closed_) return *closed_;
    client_->send_text_for_test(std::make_shared<const std::string>(message));
    run_until([&] { return closed_.has_value() || client_->idle(); }, kSlack);
    return closed_ ? *closed_ : Status::ok();
  }

  Result<std::string> receive(std::chrono::milliseconds timeout) override {
    run_until([&] { return !inbox_.empty() || closed_.has_value(); }, timeout);
    if (!inbox_.empty()) {
      std::string m = std::move(inbox_.front());
      inbox_.pop_front();
      return m;
    }
    if (closed_) return *closed_;
    return make_error(ErrorCode::kUnavailable, "receive timed out");
  }

  void close() override {
    if (!client_) return;
    client_->close();
    run_until([&] { return client_->finished(); },
              std::max<std::chrono::milliseconds>(options_.connect_timeout, kSlack));
  }

 private:
  static constexpr std::chrono::milliseconds kSlack{2000};

  template <typename Pred>
  void run_until(Pred done, std::chrono::milliseconds timeout) {
    if (timeout.count() <= 0) {
      // No waiting: run only what is ready (e.g. bytes already received), then look.
      if (io_.stopped()) io_.restart();
      io_.poll();
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      if (io_.stopped()) io_.restart();
      io_.run_one_for(deadline - now);
    }
  }

  ClientOptions options_;
  net::io_context io_{1};
  std::shared_ptr<WsClientCore> client_;
  std::deque<std::string> inbox_;
  std::optional<Status> closed_;
};

// ---------------------------------------------------------------------------------------------
// HttpsClient

struct RequestSpec {
  http::verb method = http::verb::get;
  std::string method_string;  // for unknown verbs
  std::string target;
  std::string body;
  std::vector<std::pair<http::field, std::string>> fields;
  std::uint64_t body_limit = kMaxResponseBody;  // a longer response body fails the request
};

template <class Tls>
net::awaitable<Result<HttpResponse>> do_request(const ClientOptions& o, const RequestSpec& spec);

net::awaitable<void> do_request_into(const ClientOptions& o, const RequestSpec& spec,
                                     std::optional<Result<HttpResponse>>& out) {
  if (o.route.kind == Route::Kind::kBridge) {
    out.emplace(co_await do_request<Tls2Stream>(o, spec));
  } else {
    out.emplace(co_await do_request<TcpTls>(o, spec));
  }
}

template <class Tls>
net::awaitable<Result<HttpResponse>> do_request(const ClientOptions& o, const RequestSpec& spec) {
  auto ex = co_await net::this_coro::executor;
  auto ctx = client_tls_context();
  auto stream_ptr = make_stream<Tls>(ex, *ctx);
  Tls& stream = *stream_ptr;
  Status st = co_await connect_tls(stream, o);
  if (!st.is_ok()) co_return st;
  const bool resumed = SSL_session_reused(stream.native_handle()) == 1;
  const auto timeout = std::max<std::chrono::steady_clock::duration>(o.connect_timeout,
                                                                    std::chrono::seconds(30));

  http::request<http::string_body> req;
  if (spec.method == http::verb::unknown) {
    req.method_string(spec.method_string);
  } else {
    req.method(spec.method);
  }
  req.target(spec.target);
  req.version(11);
  req.set(http::field::host, host_header(o));
  req.set(http::field::user_agent, kUserAgent);
  req.set(http::field::connection, "close");
  for (const auto& [f, v] : spec.fields) req.set(f, v);
  req.body() = spec.body;
  if (!spec.body.empty() || spec.method == http::verb::put || spec.method == http::verb::post) {
    req.prepare_payload();
  }
  http::request_serializer<http::string_body> sr(req);
  while (!sr.is_done()) {
    expire_after(stream, timeout);
    auto [ec, n] = co_await http::async_write_some(stream, sr, kUse);
    if (ec) co_return io_error("write", ec);
  }

  // Bounded: the parser limits the header and the body, not a chunk-size line or a trailer.
  beast::flat_buffer buffer(64 * 1024);
  http::response_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(spec.body_limit);
  if (spec.method == http::verb::head) parser.skip(true);
  while (!parser.is_done()) {
    expire_after(stream, timeout);
    auto [ec, n] = co_await http::async_read_some(stream, buffer, parser, kUse);
    if (ec) co_return io_error("read", ec);
  }
  HttpResponse out;
  out.tls_resumed = resumed;
  auto& res = parser.get();
  out.status = res.result_int();
  out.body = std::move(res.body());
  for (const auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  out.content_range = std::string(res[http::field::content_range]);
  if (out.content_range.empty()) out.content_range = std::string(res["Upload-Offset"]);
  expire_after(stream, std::chrono::seconds(2));
  co_await stream.async_shutdown(kUse);
  co_return out;
}

Result<HttpResponse> run_request(const ClientOptions& o, const RequestSpec& spec) {
  net::io_context io{1};
  std::optional<Result<HttpResponse>> result;
  bool failed = false;
  net::co_spawn(io, do_request_into(o, spec, result),
                [&failed](std::exception_ptr e) { failed = e != nullptr; });
  io.run();  // every step above has a timeout
  if (failed || !result) return make_error(ErrorCode::kInternal, "https request failed");
  return std::move(*result);
}

template <class Tls>
net::awaitable<void> raw_exchange(const ClientOptions& o, std::string bytes,
                                  std::chrono::milliseconds read_for, std::string then,
                                  std::optional<Result<std::string>>& out) {
  auto ex = co_await net::this_coro::executor;
  auto ctx = client_tls_context();
  auto stream_ptr = make_stream<Tls>(ex, *ctx);
  Tls& stream = *stream_ptr;
  Status st = co_await connect_tls(stream, o);
  if (!st.is_ok()) {
    out.emplace(st);
    co_return;
  }
  expire_after(stream, o.connect_timeout);
  auto [wec, wn] = co_await net::async_write(stream, net::buffer(bytes), kUse);
  if (wec) {
    out.emplace(io_error("write", wec));
    co_return;
  }
  std::string received;
  const auto deadline = std::chrono::steady_clock::now() + read_for;
  char buf[16 * 1024];
  for (;;) {
    expire_after(stream, deadline - std::chrono::steady_clock::now());
    auto [ec, n] = co_await stream.async_read_some(net::buffer(buf), kUse);
    received.append(buf, n);
    if (ec) break;
    if (!then.empty() && received.find("\r\n\r\n") != std::string::npos) {
      expire_after(stream, o.connect_timeout);
      auto [tec, tn] = co_await net::async_write(stream, net::buffer(then), kUse);
      if (tec) break;
      then.clear();
    }
  }
  close_stream(stream);
  out.emplace(std::move(received));
}

}  // namespace

std::string_view route_kind_name(Route::Kind kind) {
  switch (kind) {
    case Route::Kind::kDirect:
      return "direct";
    case Route::Kind::kSocks5:
      return "socks5";
    case Route::Kind::kHttpConnect:
      return "http-connect";
    case Route::Kind::kBridge:
      return "bridge";
  }
  return "unknown";
}

Result<std::string> HttpsClient::raw_exchange_for_test(std::string_view bytes,
                                                       std::chrono::milliseconds read_for,
                                                       std::string_view then) {
  net::io_context io{1};
  std::optional<Result<std::string>> result;
  if (options_.route.kind == Route::Kind::kBridge) {
    net::co_spawn(io,
                  raw_exchange<Tls2Stream>(options_, std::string(bytes), read_for,
                                           std::string(then), result),
                  [](std::exception_ptr) {});
  } else {
    net::co_spawn(
        io, raw_exchange<TcpTls>(options_, std::string(bytes), read_for, std::string(then), result),
        [](std::exception_ptr) {});
  }
  io.run();
  if (!result) return make_error(ErrorCode::kInternal, "raw exchange failed");
  return std::move(*result);
}

void WsClient::async_connect(net::io_context& io, ClientOptions options, MessageHandler on_message,
                             CloseHandler on_close,
                             std::function<void(Result<std::shared_ptr<WsClient>>)> on_connected) {
  auto impl = make_ws_client(io, std::move(options), std::move(on_message), std::move(on_close));
  impl->start(std::move(on_connected));
}

Result<std::unique_ptr<BlockingWsClient>> BlockingWsClient::connect(const ClientOptions& options) {
  auto client = std::make_unique<BlockingWsClientImpl>(options);
  PARLEY_TRY(client->connect());
  return std::unique_ptr<BlockingWsClient>(std::move(client));
}

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (beast::iequals(k, name)) return v;
  }
  return {};
}

Result<HttpResponse> HttpsClient::put_range(const std::string& path, const std::string& token,
                                            std::uint64_t offset, ByteView data,
                                            std::uint64_t total) {
  RequestSpec spec;
  spec.method = http::verb::put;
  spec.target = path;
  spec.body = std::string(as_chars(data));
  spec.fields.emplace_back(http::field::authorization, "Bearer " + token);
  spec.fields.emplace_back(http::field::content_type, "application/octet-stream");
  if (data.empty()) {
    spec.fields.emplace_back(http::field::content_range, "bytes */" + std::to_string(total));
  } else {
    spec.fields.emplace_back(http::field::content_range,
                             "bytes " + std::to_string(offset) + "-" +
                                 std::to_string(offset + data.size() - 1) + "/" +
                                 std::to_string(total));
  }
  return run_request(options_, spec);
}

Result<HttpResponse> HttpsClient::head(const std::string& path, const std::string& token) {
  RequestSpec spec;
  spec.method = http::verb::head;
  spec.target = path;
  if (!token.empty()) spec.fields.emplace_back(http::field::authorization, "Bearer " + token);
  return run_request(options_, spec);
}

Result<HttpResponse> HttpsClient::get(const std::string& path, std::uint64_t offset,
                                      std::optional<std::uint64_t> length, std::uint64_t max_body) {
  RequestSpec spec;
  spec.method = http::verb::get;
  spec.target = path;
  spec.body_limit = std::min(max_body, kMaxResponseBody);
  if (length && *length == 0) {
    return make_error(ErrorCode::kInvalidArgument, "https: empty range");
  }
  if (offset != 0 || length) {
    std::string range = "bytes=" + std::to_string(offset) + "-";
    if (length) range += std::to_string(offset + *length - 1);
    spec.fields.emplace_back(http::field::range, range);
  }
  return run_request(options_, spec);
}

Result<HttpResponse> HttpsClient::request(const std::string& method, const std::string& path,
                                          const std::string& body) {
  RequestSpec spec;
  spec.method = http::string_to_verb(method);
  if (spec.method == http::verb::unknown) spec.method_string = method;
  spec.target = path;
  spec.body = body;
  return run_request(options_, spec);
}

}  // namespace parley::transport
