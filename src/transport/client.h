#pragma once
// Client side of the wire: TLS (with certificate pinning) + WebSocket on the secret path, and
// HTTPS requests for attachments. Used by the test client, the load generator and libparley.
//
// Pinning: the connection is refused (kPermissionDenied, "certificate pin mismatch") unless the
// SHA-256 of the server's leaf certificate (DER) equals ClientOptions::pin_sha256. There is no
// CA validation: the pin from the invite link is the trust anchor.
//
// Routes (docs/reach.md): the byte stream to host:port is obtained directly, through a SOCKS5
// or HTTP CONNECT proxy, or through a parleyd bridge; the pinned TLS + WebSocket always runs
// end-to-end with parleyd over it. Through a Tor pluggable transport (transport/pt.h) the route
// is kSocks5 to the PT's local SOCKS endpoint, and host:port is the server's PT address.
// Client streams are never half-closed (obfs4proxy closes both directions on a half-close).

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace parley::transport {

// How the byte stream to ClientOptions::host:port is obtained. The TLS + WebSocket that runs
// over it is always end-to-end with parleyd and pinned with ClientOptions::pin_sha256.
struct Route {
  enum class Kind { kDirect, kSocks5, kHttpConnect, kBridge };
  Kind kind = Kind::kDirect;
  std::string via_host;            // the proxy / bridge address (kSocks5, kHttpConnect, kBridge)
  std::uint16_t via_port = 0;
  std::string socks_username;      // kSocks5: RFC 1929 user/pass auth when non-empty (a Tor PT
  std::string socks_password;      //   passes its args here: "cert=...;iat-mode=0", password
                                   //   "\0"; over 255 bytes the username continues into the
                                   //   password, as the PT spec says)
  Bytes bridge_pin_sha256;         // kBridge: pin of the bridge's own TLS certificate (32 bytes)
  std::string bridge_path;         // kBridge: the bridge's secret path
  std::string bridge_sni;          // kBridge: SNI for the outer TLS (empty: none)
};

// A short name of a route kind for logs and listings: "direct", "socks5", "http-connect",
// "bridge".
std::string_view route_kind_name(Route::Kind kind);

struct ClientOptions {
  using Route = transport::Route;
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string ws_path;               // from the invite link
  Bytes pin_sha256;                  // 32 bytes; required
  std::string sni;                   // TLS server name to send; empty: none
  std::chrono::milliseconds connect_timeout{10000};
  std::size_t max_message_size = 256 * 1024;
  std::size_t write_queue_limit = 4 * 1024 * 1024;  // WsClient: bytes queued before it closes
                                                    // itself (kResourceExhausted)
  // How the byte stream is obtained (direct by default). Every proxy and bridge step is bounded
  // by connect_timeout. Errors: kIo ("socks5: proxy refused: connection refused", "http
  // connect: proxy answered 403", "bridge: no upgrade (404)", ...), kPermissionDenied for a
  // pin mismatch of the bridge ("bridge certificate pin mismatch") or of the server.
  Route route;
  // Application-level liveness for links that freeze silently: when non-zero, the WebSocket
  // client pings after idle_timeout / 2 without traffic and closes with kIo "link stalled" when
  // nothing at all (no frame, no pong) arrived for idle_timeout. Zero: no such check.
  std::chrono::milliseconds idle_timeout{0};
  // TLS session resumption: offer the session (ticket) this process last got from the same
  // server (same pin, host, port and SNI), and keep the ones it sends once its pin is checked.
  // A server that cannot resume (restarted) gets a full handshake. A resumed handshake sends no
  // certificate and makes no signature. Off: every handshake is a full one (the load generator
  // measures both).
  bool resume_tls = true;
};

// An asynchronous WebSocket client connection (for the load generator and the client daemon).
// The io_context must be run by one thread: a connection's callbacks and all its work run there,
// without a strand or locks. send() and close() may be called from any thread; a send() made on
// that thread (from a callback) is queued at once, one from elsewhere is posted to it.
class WsClient {
 public:
  virtual ~WsClient() = default;
  using MessageHandler = std::function<void(std::string_view message)>;
  using CloseHandler = std::function<void(const Status& why)>;

  // Exactly one of: on_connected(error) (nothing else is called), or on_connected(client)
  // followed by on_message calls and finally one on_close (kIo with the peer's close code and
  // reason, or the local error).
  static void async_connect(boost::asio::io_context& io, ClientOptions options,
                            MessageHandler on_message, CloseHandler on_close,
                            std::function<void(Result<std::shared_ptr<WsClient>>)> on_connected);
  virtual void send(std::shared_ptr<const std::string> message) = 0;
  virtual void close() = 0;
  // Whether the TLS handshake resumed an earlier session (ClientOptions::resume_tls).
  virtual bool tls_resumed() const = 0;
};

// A blocking WebSocket client with timeouts (tests, the CLI). Not thread-safe.
class BlockingWsClient {
 public:
  virtual ~BlockingWsClient() = default;
  static Result<std::unique_ptr<BlockingWsClient>> connect(const ClientOptions& options);
  virtual Status send(ByteView message) = 0;
  // Sends a text frame (the server refuses them; tests of that refusal only).
  virtual Status send_text_for_test(std::string_view message) = 0;
  // Next binary message. kUnavailable on timeout (the connection stays usable) or kIo when the
  // connection closed (the close reason is in the message). A zero timeout does not wait: it
  // returns a message only if one has already arrived.
  virtual Result<std::string> receive(std::chrono::milliseconds timeout) = 0;
  virtual void close() = 0;
  // Whether the TLS handshake resumed an earlier session (ClientOptions::resume_tls).
  virtual bool tls_resumed() const = 0;
};

// Blocking HTTPS requests for attachments, over a fresh pinned TLS connection each.
struct HttpResponse {
  unsigned status = 0;
  std::string body;
  std::string content_range;  // response header, if any (else the Upload-Offset header)
  std::vector<std::pair<std::string, std::string>> headers;  // all response fields, in order
  bool tls_resumed = false;  // the request's TLS handshake resumed an earlier session
  // The value of a response field (case-insensitive name); empty when absent.
  std::string header(std::string_view name) const;
};
// The largest response body an HttpsClient reads.
inline constexpr std::uint64_t kMaxResponseBody = std::uint64_t{256} << 20;

class HttpsClient {
 public:
  explicit HttpsClient(ClientOptions options) : options_(std::move(options)) {}
  // PUT bytes [offset, offset + data.size()) of a `total`-byte upload, with a bearer token.
  Result<HttpResponse> put_range(const std::string& path, const std::string& token,
                                 std::uint64_t offset, ByteView data, std::uint64_t total);
  // HEAD: the server's view of an upload (Content-Length of what is stored so far, via
  // Upload-Offset header returned in `content_range`).
  Result<HttpResponse> head(const std::string& path, const std::string& token);
  // GET with an optional byte range [offset, offset + length). A response body over `max_body`
  // (at most kMaxResponseBody) fails the request, unread: a server that sends more than was
  // asked for cannot make the client hold it.
  Result<HttpResponse> get(const std::string& path, std::uint64_t offset = 0,
                           std::optional<std::uint64_t> length = std::nullopt,
                           std::uint64_t max_body = kMaxResponseBody);
  // A raw request (tests of the static site and of bad input).
  Result<HttpResponse> request(const std::string& method, const std::string& path,
                               const std::string& body = "");
  // Tests only: sends `bytes` verbatim over a fresh pinned TLS connection, returns whatever the
  // server sends within `read_for` (or until it closes), then drops the connection without a
  // TLS close (like a cut line). A non-empty `then` is sent once the response so far holds a
  // complete header ("\r\n\r\n").
  Result<std::string> raw_exchange_for_test(std::string_view bytes,
                                            std::chrono::milliseconds read_for,
                                            std::string_view then = {});

 private:
  ClientOptions options_;
};

}  // namespace parley::transport
