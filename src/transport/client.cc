// Client side: pinned TLS, WebSocket (async and blocking) and HTTPS requests for attachments.
#include "transport/client.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <deque>

#include "crypto/x509.h"
#include "transport/internal/asio.h"

namespace parley::transport {
namespace {

using namespace internal;  // NOLINT: file-local
namespace websocket = boost::beast::websocket;
using WsStream = websocket::stream<TlsStream>;

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
  return ctx;
}

Status check_pin(TlsStream& stream, const Bytes& pin) {
  X509* cert = SSL_get1_peer_certificate(stream.native_handle());
  if (cert == nullptr) return make_error(ErrorCode::kPermissionDenied, "certificate pin mismatch");
  unsigned char* der = nullptr;
  const int len = i2d_X509(cert, &der);
  X509_free(cert);
  if (len <= 0 || der == nullptr) {
    return make_error(ErrorCode::kPermissionDenied, "certificate pin mismatch");
  }
  auto digest = crypto::certificate_pin_der(ByteView(der, static_cast<std::size_t>(len)));
  OPENSSL_free(der);
  if (!digest || pin.size() != digest->size()) {
    return make_error(ErrorCode::kPermissionDenied, "certificate pin mismatch");
  }
  unsigned char diff = 0;
  for (std::size_t i = 0; i < pin.size(); ++i) diff |= static_cast<unsigned char>(pin[i] ^ (*digest)[i]);
  if (diff != 0) return make_error(ErrorCode::kPermissionDenied, "certificate pin mismatch");
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

// Resolves, connects, runs the TLS handshake and checks the pin, each step bounded by
// options.connect_timeout.
net::awaitable<Status> connect_tls(TlsStream& stream, const ClientOptions& o) {
  if (o.pin_sha256.size() != 32) {
    co_return make_error(ErrorCode::kInvalidArgument, "client: pin_sha256 must be 32 bytes");
  }
  if (o.route.kind != Route::Kind::kDirect) {
    co_return make_error(ErrorCode::kUnimplemented,
                         "client: route " + std::string(route_kind_name(o.route.kind)) +
                             " not supported yet");
  }
  auto ex = co_await net::this_coro::executor;
  auto resolver = std::make_shared<tcp::resolver>(ex);
  auto timer = std::make_shared<net::steady_timer>(ex);
  timer->expires_after(o.connect_timeout);
  timer->async_wait([resolver](error_code ec) {
    if (!ec) resolver->cancel();
  });
  auto [rec, results] = co_await resolver->async_resolve(o.host, std::to_string(o.port), kUse);
  timer->cancel();
  if (rec) co_return io_error("resolve", rec);

  auto& tcp_layer = beast::get_lowest_layer(stream);
  tcp_layer.expires_after(o.connect_timeout);
  auto [cec, ep] = co_await tcp_layer.async_connect(results, kUse);
  if (cec) co_return io_error("connect", cec);
  error_code ignored;
  tcp_layer.socket().set_option(tcp::no_delay(true), ignored);

  if (!o.sni.empty()) {
    SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(o.sni.c_str()));
  }
  tcp_layer.expires_after(o.connect_timeout);
  auto [hec] = co_await stream.async_handshake(ssl::stream_base::client, kUse);
  if (hec) co_return io_error("tls handshake", hec);
  co_return check_pin(stream, o.pin_sha256);
}

// ---------------------------------------------------------------------------------------------
// WsClient

class WsClientImpl final : public WsClient, public std::enable_shared_from_this<WsClientImpl> {
 public:
  WsClientImpl(net::io_context& io, ClientOptions options, MessageHandler on_message,
               CloseHandler on_close)
      : options_(std::move(options)),
        ex_(net::make_strand(io)),
        tls_ctx_(make_client_tls_context()),
        on_message_(std::move(on_message)),
        on_close_(std::move(on_close)),
        ws_(std::in_place, ex_, *tls_ctx_) {}

  void start(std::function<void(Result<std::shared_ptr<WsClient>>)> on_connected) {
    net::co_spawn(ex_, run(shared_from_this(), std::move(on_connected)),
                  [](std::exception_ptr) {});
  }

  void send(std::shared_ptr<const std::string> message) override {
    if (!message) return;
    net::post(ex_, [self = shared_from_this(), m = std::move(message)]() mutable {
      self->enqueue(std::move(m));
    });
  }

  void close() override {
    net::post(ex_, [self = shared_from_this()] { self->do_close(); });
  }

  // Tests of the server's refusal of text frames: switches this connection to text frames.
  void send_text_for_test(std::shared_ptr<const std::string> message) {
    net::post(ex_, [self = shared_from_this(), m = std::move(message)]() mutable {
      self->ws_->text(true);
      self->enqueue(std::move(m));
    });
  }

  // For BlockingWsClient (same thread as the io_context).
  bool idle() const { return queue_.empty() && !writing_; }
  bool finished() const { return finished_; }

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
      Status st = co_await connect_tls(ws_->next_layer(), options_);
      if (st.is_ok()) {
        beast::get_lowest_layer(*ws_).expires_never();
        websocket::stream_base::timeout to =
            websocket::stream_base::timeout::suggested(beast::role_type::client);
        to.handshake_timeout = options_.connect_timeout;
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
        error_code ignored;
        beast::get_lowest_layer(*ws_).socket().close(ignored);
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
    error_code ignored;
    beast::get_lowest_layer(*ws_).socket().close(ignored);
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
    if (queue_.empty() || finished_) {
      writing_ = false;
      if (closing_ && !close_sent_ && !finished_) start_close();
      return;
    }
    writing_ = true;
    ws_->async_write(net::buffer(*queue_.front()),
                     [self = shared_from_this()](error_code ec, std::size_t) {
                       if (!self->queue_.empty()) {
                         self->queued_ -= self->queue_.front()->size();
                         self->queue_.pop_front();
                       }
                       if (ec) {
                         self->writing_ = false;
                         error_code ignored;
                         beast::get_lowest_layer(*self->ws_).socket().close(ignored);
                         return;
                       }
                       self->write_next();
                     });
  }

  void do_close() {
    if (closing_ || finished_ || !connected_) {
      if (!connected_ && !finished_) {  // still connecting: abort
        error_code ignored;
        beast::get_lowest_layer(*ws_).socket().close(ignored);
      }
      return;
    }
    closing_ = true;
    if (!writing_) start_close();
  }

  void start_close() {
    close_sent_ = true;
    ws_->async_close(websocket::close_code::normal, [self = shared_from_this()](error_code ec) {
      if (ec) {
        error_code ignored;
        beast::get_lowest_layer(*self->ws_).socket().close(ignored);
      }
    });
  }

  const ClientOptions options_;
  const net::any_io_executor ex_;
  std::shared_ptr<ssl::context> tls_ctx_;
  MessageHandler on_message_;
  CloseHandler on_close_;
  std::optional<WsStream> ws_;

  // Strand-confined.
  std::deque<std::shared_ptr<const std::string>> queue_;
  std::size_t queued_ = 0;
  bool writing_ = false;
  bool connected_ = false;
  bool closing_ = false;
  bool close_sent_ = false;
  bool finished_ = false;
  Status local_error_;
};

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
    auto impl = std::make_shared<WsClientImpl>(
        io_, options_,
        [this](std::string_view m) { inbox_.emplace_back(m); },
        [this](const Status& why) { closed_ = why; });
    client_ = impl;
    impl->start([&result](Result<std::shared_ptr<WsClient>> r) { result.emplace(std::move(r)); });
    // Every connect step has its own timeout; this bound is a backstop.
    run_until([&] { return result.has_value(); }, 4 * options_.connect_timeout + kSlack);
    if (!result) {
      client_->close();
      run_until([&] { return client_->finished(); }, kSlack);
      return make_error(ErrorCode::kUnavailable, "connect timed out");
    }
    if (!result->has_value()) return result->error();
    return Status::ok();
  }

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
  std::shared_ptr<WsClientImpl> client_;
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
};

net::awaitable<Result<HttpResponse>> do_request(const ClientOptions& o, const RequestSpec& spec);

net::awaitable<void> do_request_into(const ClientOptions& o, const RequestSpec& spec,
                                     std::optional<Result<HttpResponse>>& out) {
  out.emplace(co_await do_request(o, spec));
}

net::awaitable<Result<HttpResponse>> do_request(const ClientOptions& o, const RequestSpec& spec) {
  auto ex = co_await net::this_coro::executor;
  auto ctx = make_client_tls_context();
  TlsStream stream(ex, *ctx);
  Status st = co_await connect_tls(stream, o);
  if (!st.is_ok()) co_return st;
  auto& tcp_layer = beast::get_lowest_layer(stream);
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
    tcp_layer.expires_after(timeout);
    auto [ec, n] = co_await http::async_write_some(stream, sr, kUse);
    if (ec) co_return io_error("write", ec);
  }

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(std::uint64_t{256} * 1024 * 1024);
  if (spec.method == http::verb::head) parser.skip(true);
  while (!parser.is_done()) {
    tcp_layer.expires_after(timeout);
    auto [ec, n] = co_await http::async_read_some(stream, buffer, parser, kUse);
    if (ec) co_return io_error("read", ec);
  }
  HttpResponse out;
  auto& res = parser.get();
  out.status = res.result_int();
  out.body = std::move(res.body());
  for (const auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  out.content_range = std::string(res[http::field::content_range]);
  if (out.content_range.empty()) out.content_range = std::string(res["Upload-Offset"]);
  tcp_layer.expires_after(std::chrono::seconds(2));
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

net::awaitable<void> raw_exchange(const ClientOptions& o, std::string bytes,
                                  std::chrono::milliseconds read_for, std::string then,
                                  std::optional<Result<std::string>>& out) {
  auto ex = co_await net::this_coro::executor;
  auto ctx = make_client_tls_context();
  TlsStream stream(ex, *ctx);
  Status st = co_await connect_tls(stream, o);
  if (!st.is_ok()) {
    out.emplace(st);
    co_return;
  }
  auto& tcp_layer = beast::get_lowest_layer(stream);
  tcp_layer.expires_after(o.connect_timeout);
  auto [wec, wn] = co_await net::async_write(stream, net::buffer(bytes), kUse);
  if (wec) {
    out.emplace(io_error("write", wec));
    co_return;
  }
  std::string received;
  const auto deadline = std::chrono::steady_clock::now() + read_for;
  char buf[16 * 1024];
  for (;;) {
    tcp_layer.expires_at(deadline);
    auto [ec, n] = co_await stream.async_read_some(net::buffer(buf), kUse);
    received.append(buf, n);
    if (ec) break;
    if (!then.empty() && received.find("\r\n\r\n") != std::string::npos) {
      tcp_layer.expires_after(o.connect_timeout);
      auto [tec, tn] = co_await net::async_write(stream, net::buffer(then), kUse);
      if (tec) break;
      then.clear();
    }
  }
  error_code ignored;
  tcp_layer.socket().close(ignored);
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
  net::co_spawn(io, raw_exchange(options_, std::string(bytes), read_for, std::string(then), result),
                [](std::exception_ptr) {});
  io.run();
  if (!result) return make_error(ErrorCode::kInternal, "raw exchange failed");
  return std::move(*result);
}

void WsClient::async_connect(net::io_context& io, ClientOptions options, MessageHandler on_message,
                             CloseHandler on_close,
                             std::function<void(Result<std::shared_ptr<WsClient>>)> on_connected) {
  auto impl = std::make_shared<WsClientImpl>(io, std::move(options), std::move(on_message),
                                             std::move(on_close));
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
                                      std::optional<std::uint64_t> length) {
  RequestSpec spec;
  spec.method = http::verb::get;
  spec.target = path;
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
