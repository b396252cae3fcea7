// The TLS listener: accept loop, per-connection HTTP loop and WebSocket sessions.
#include "transport/server.h"

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <list>
#include <map>
#include <mutex>
#include <optional>

#include "base/saturating.h"
#include "crypto/primitives.h"
#include "transport/client_address.h"
#include "transport/internal/asio.h"
#include "transport/internal/cork_stream.h"
#include "transport/internal/ext_orport.h"
#include "transport/internal/http_serve.h"
#include "transport/internal/message_buffer.h"
#include "transport/internal/proxy_header.h"
#include "transport/internal/ticket_keys.h"
#include "transport/internal/tls_socket.h"
#include "transport/internal/ws_frames.h"
#include "transport/internal/ws_upgrade.h"
#include "transport/static_site.h"

namespace parley::transport {
namespace internal {

Result<std::unique_ptr<ssl::context>> make_server_tls_context(const std::string& cert_pem,
                                                              const std::string& key_pem) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                       ssl::context::no_tlsv1_1 | ssl::context::single_dh_use |
                       ssl::context::no_compression,
                   ec);
  if (ec) return make_error(ErrorCode::kInternal, "tls: context options");
  SSL_CTX* native = ctx->native_handle();
  // The server's order decides, except that a client listing ChaCha20-Poly1305 first (one
  // without AES instructions, as many phones) gets it.
  SSL_CTX_set_options(
      native, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
  // Idle connections hand their record buffers back to OpenSSL (memory per idle connection).
  SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
  // TLS 1.3 connections free their SSL object after the handshake (tls_socket.h).
  TlsSocket::enable_record_handoff(native);
  // No server-side session cache: it kept every connection's session for five minutes (memory
  // per connection, also after it closed). Clients that resume use the stateless tickets.
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  SSL_CTX_ctrl(native, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION, nullptr);
  // TLS 1.3: AES-128-GCM with SHA-256 first, as most sites choose, instead of OpenSSL's
  // default AES-256-GCM with SHA-384: each record costs four fewer AES rounds a block, and each
  // handshake's key schedule (dozens of HMACs) is cheaper with SHA-256 (docs/benchmarks.md).
  if (SSL_CTX_set_ciphersuites(native,
                               "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
                               "TLS_AES_256_GCM_SHA384") != 1) {
    return make_error(ErrorCode::kInternal, "tls: ciphersuites");
  }
  // TLS 1.2: forward-secret AEAD suites only.
  if (SSL_CTX_set_cipher_list(native,
                              "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                              "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                              "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305") != 1) {
    return make_error(ErrorCode::kInternal, "tls: cipher list");
  }
  // ALPN: like an ordinary HTTP/1.1 server, pick "http/1.1" when the client offers it.
  SSL_CTX_set_alpn_select_cb(
      native,
      [](SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
         unsigned int inlen, void*) -> int {
        static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
        unsigned char* selected = nullptr;
        if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof kHttp11, in, inlen) !=
            OPENSSL_NPN_NEGOTIATED) {
          return SSL_TLSEXT_ERR_NOACK;
        }
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
      },
      nullptr);
  ctx->use_certificate_chain(net::buffer(cert_pem), ec);
  if (ec) return make_error(ErrorCode::kInvalidArgument, "tls: certificate does not load");
  ctx->use_private_key(net::buffer(key_pem), ssl::context::pem, ec);
  if (ec) return make_error(ErrorCode::kInvalidArgument, "tls: private key does not load");
  if (SSL_CTX_check_private_key(native) != 1) {
    return make_error(ErrorCode::kInvalidArgument, "tls: key does not match certificate");
  }
  return ctx;
}

}  // namespace internal

namespace {

using namespace internal;  // NOLINT: file-local
namespace websocket = boost::beast::websocket;
// Writes go through CorkStream: a connection's queued frames leave in one TLS write.
using WsStream = websocket::stream<CorkStream<TlsSocket>>;

// Requests one HTTP connection may make, as nginx's keepalive_requests.
constexpr int kMaxHttpRequestsPerConnection = 1000;
// What an HTTP connection's read buffer may hold: a header (8 KiB at most) and what follows it
// in the same reads.
constexpr std::size_t kMaxHttpReadBuffer = 64 * 1024;
// A lingering close (linger()) waits this long at most, as nginx's lingering_timeout, reading
// this much at a time.
constexpr auto kLingerTime = std::chrono::seconds(5);
constexpr std::size_t kLingerChunk = 16 * 1024;

class Connection;

// How a connection's first bytes come: TLS at once, or a relay's preamble naming the client
// first (a PROXY header from a proxy_from address, the Extended ORPort's handshake).
enum class Opening : std::uint8_t { kTls, kProxyHeader, kExtOrPort };

// Everything the connections share. Kept alive by every connection and the accept loop.
struct ServerState {
  ServerState(net::io_context& io_ctx, ServerOptions opts, std::unique_ptr<TicketKeys> keys,
              std::unique_ptr<ssl::context> ctx, WsHandlerFactory f, HttpFiles* fs)
      : io(io_ctx),
        options(std::move(opts)),
        ticket_keys(std::move(keys)),
        tls(std::move(ctx)),
        site(options.site_dir, options.site_seed),
        factory(std::move(f)),
        files(fs),
        acceptor_ex(net::make_strand(io_ctx)),
        acceptor(acceptor_ex) {}

  net::io_context& io;
  const ServerOptions options;
  const std::unique_ptr<TicketKeys> ticket_keys;  // null: no tickets; outlives tls (its callback)
  const std::unique_ptr<ssl::context> tls;
  const StaticSite site;
  const WsHandlerFactory factory;
  HttpFiles* const files;
  std::atomic<std::size_t> connections{0};
  // What max_connections caps: the descriptors connections hold, one each and one more for a
  // bridged connection's upstream.
  std::atomic<std::size_t> slots{0};
  internal::UploadWriters upload_writers;
  std::atomic<std::size_t> file_transfers{0};  // files open for HTTP transfers
  std::atomic<std::uint64_t> tls_full{0}, tls_resumed{0}, tls_failed{0};
  std::atomic<std::uint64_t> pings{0}, idle_closes{0};
  std::atomic<std::uint64_t> refused_slots{0}, refused_handshakes{0}, refused_proxy_headers{0};
  std::atomic<std::uint64_t> refused_connections_per_ip{0};
  std::atomic<std::uint64_t> refused_ext_orport{0};
  std::atomic<std::uint64_t> relayed_proxy_header{0}, relayed_ext_orport{0};
  std::vector<AddressRange> relays;  // options.proxy_from, parsed
  // The Extended ORPort (options.ext_orport_cookie_file): its cookie and its listener, used on
  // acceptor_ex only. No cookie: none.
  SecretBytes ext_cookie;
  std::optional<tcp::acceptor> ext_acceptor;

  std::mutex mu;
  std::list<std::weak_ptr<Connection>> live;  // guarded by mu

  // Connections per client block (client_block(): an IPv4 address, an IPv6 /64): open ones
  // (max_connections_per_ip) and those still in their TLS handshake (max_handshakes_per_ip),
  // each counted only under its cap. A block leaves the map with its last counted connection,
  // so the map holds at most one entry per connection.
  struct BlockCount {
    std::size_t open = 0;
    std::size_t handshakes = 0;
  };
  std::mutex blocks_mu;
  std::map<std::string, BlockCount, std::less<>> blocks;  // guarded by blocks_mu

  net::any_io_executor acceptor_ex;
  tcp::acceptor acceptor;  // used on acceptor_ex only
  std::atomic<bool> accepting{true};
  std::size_t next_worker = 0;  // used on acceptor_ex only

  // Takes one of max_connections' slots; false when none is free.
  bool take_slot() { return internal::take_slot(slots, options.max_connections); }

  // A connection from `ip`, about to start its TLS handshake, is admitted unless its block
  // already has max_connections_per_ip connections open or max_handshakes_per_ip in their
  // handshake (the refusal is counted). Each true is matched by one end_handshake(ip) and one
  // leave(ip).
  bool admit(const std::string& ip) {
    const std::size_t max_open = options.max_connections_per_ip;
    const std::size_t max_handshakes = options.max_handshakes_per_ip;
    if (max_open == 0 && max_handshakes == 0) return true;
    std::string block = client_block(ip);
    std::lock_guard lock(blocks_mu);
    BlockCount& n = blocks[std::move(block)];  // at a cap its count is above 0: the entry stays
    if (max_open != 0 && n.open >= max_open) {
      refused_connections_per_ip.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (max_handshakes != 0 && n.handshakes >= max_handshakes) {
      refused_handshakes.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (max_open != 0) ++n.open;
    if (max_handshakes != 0) ++n.handshakes;
    return true;
  }
  void end_handshake(const std::string& ip) {
    if (options.max_handshakes_per_ip != 0) release(ip, &BlockCount::handshakes);
  }
  void leave(const std::string& ip) {
    if (options.max_connections_per_ip != 0) release(ip, &BlockCount::open);
  }
  void release(const std::string& ip, std::size_t BlockCount::*count) {
    const std::string block = client_block(ip);
    std::lock_guard lock(blocks_mu);
    auto it = blocks.find(block);
    if (it == blocks.end()) return;
    --(it->second.*count);
    if (it->second.open == 0 && it->second.handshakes == 0) blocks.erase(it);
  }

  // Whether connections from `ip` open with a PROXY header (options.proxy_from). The peer's
  // address is parsed once, and not at all when there are no relays.
  bool is_relay(const std::string& ip) const {
    if (relays.empty()) return false;
    const auto peer = AddressRange::parse(ip);
    return peer && std::any_of(relays.begin(), relays.end(),
                               [&peer](const AddressRange& r) { return r.contains(*peer); });
  }

  // Where the next connection runs: its own strand, or the next worker context.
  net::any_io_executor place_next() {
    if (options.workers.empty()) return net::make_strand(io);
    return options.workers[next_worker++ % options.workers.size()]->get_executor();
  }
  // Where a connection's CorkStream posts its flush: a context executor (the connection's own
  // worker context, or the io_context under its strand), so that the flush runs after every
  // handler already queued there.
  net::any_io_executor flush_executor(const net::any_io_executor& conn_ex) {
    return options.workers.empty() ? net::any_io_executor(io.get_executor()) : conn_ex;
  }
};

class Connection final : public WsConnection, public std::enable_shared_from_this<Connection> {
 public:
  // A slot has been taken for the connection, and `remote_ip` admitted (st->admit) if it
  // opens with TLS; a relay's preamble names the address to admit.
  static std::shared_ptr<Connection> create(std::shared_ptr<ServerState> st, tcp::socket sock,
                                            std::string remote_ip, Opening opening) {
    // One allocation for the connection and its count (memory per idle connection).
    auto conn =
        std::make_shared<Connection>(Private{}, st, std::move(sock), std::move(remote_ip), opening);
    std::lock_guard lock(st->mu);
    conn->registration_ = st->live.insert(st->live.end(), conn);
    return conn;
  }

  ~Connection() override {
    {
      std::lock_guard lock(st_->mu);
      st_->live.erase(registration_);
    }
    end_handshake();
    if (admitted_) st_->leave(remote_ip_);
    st_->slots.fetch_sub(upstream_slot_ ? 2 : 1);  // free before connection_count() drops
    st_->connections.fetch_sub(1);
  }

  const net::any_io_executor& executor() const override { return ex_; }

  // The coroutine owns the connection (`self`) until it ends, or until a WebSocket opens: from
  // then on its read callbacks (read_next) own it.
  static net::awaitable<void> run(std::shared_ptr<Connection> self) {
    try {
      // The HTTP loop's frame (its parser and buffer) is gone before the WebSocket or bridge
      // session starts: it would otherwise stay allocated for the connection's whole life.
      std::optional<http::request<http::empty_body>> upgrade = co_await self->http_loop();
      if (upgrade && !self->st_->options.bridge_to_host.empty()) {
        co_await self->bridge_session(std::move(*upgrade));
      } else if (upgrade) {
        // True: the WebSocket is open and its reads go on in callbacks (read_next), which own
        // the connection from here; this coroutine's frames end now.
        if (co_await self->ws_session(std::move(*upgrade))) co_return;
      }
    } catch (...) {
      // Never let anything escape into the io_context; the connection just ends.
    }
    if (self->phase_ == Phase::kWs && !self->handler_closed_) self->finish_ws();
    self->close_socket();
  }

  // From Server::close_all (any thread).
  void shutdown_from_server(std::string reason) {
    net::post(ex_, [self = shared_from_this(), reason = std::move(reason)] {
      if (self->phase_ == Phase::kWs) {
        self->do_close(websocket::close_code::going_away, reason, false);
      } else {
        self->stopping_ = true;
        self->close_socket();
        error_code ignored;
        if (self->bridge_up_) self->bridge_up_->socket().close(ignored);
      }
    });
  }

  // WsConnection
  bool send(std::shared_ptr<const std::string> message) override {
    if (!message || closing_.load()) return false;
    const std::size_t size = message->size();
    const std::size_t limit = st_->options.write_queue_limit;
    std::size_t cur = queued_bytes_.load();
    for (;;) {
      if (cur != 0 && cur + size > limit) {
        if (!closing_.exchange(true)) {
          net::post(ex_, [self = shared_from_this()] {
            self->do_close(websocket::close_code::policy_error, "slow reader", true);
          });
        }
        return false;
      }
      if (queued_bytes_.compare_exchange_weak(cur, cur + size)) break;
    }
    // On the connection's own thread, with no send from another thread still posted ahead of
    // it, the message is queued at once. A posted one keeps its place: the order of send() calls
    // (a session makes them under its lock) is the order on the wire.
    if (posted_sends_.load() == 0 && on_own_thread()) {
      enqueue(std::move(message));
      return true;
    }
    posted_sends_.fetch_add(1);
    net::post(ex_, [self = shared_from_this(), m = std::move(message)]() mutable {
      self->posted_sends_.fetch_sub(1);
      self->enqueue(std::move(m));
    });
    return true;
  }

  void close(std::string_view reason) override {
    closing_.store(true);
    net::post(ex_, [self = shared_from_this(), r = std::string(reason)] {
      self->do_close(websocket::close_code::normal, r, false);
    });
  }

  const std::string& remote_ip() const override { return remote_ip_; }
  std::size_t queued_bytes() const override { return queued_bytes_.load(); }

 private:
  enum class Phase { kHttp, kWsHandshake, kWs, kBridge };

  struct Private {};

 public:
  // Public for make_shared only: nobody outside can name Private, which create() passes.
  Connection(Private, std::shared_ptr<ServerState> st, tcp::socket sock, std::string remote_ip,
             Opening opening)
      : st_(std::move(st)),
        ex_(sock.get_executor()),
        remote_ip_(std::move(remote_ip)),
        admitted_(opening == Opening::kTls),
        handshaking_(opening == Opening::kTls),
        opening_(opening),
        timer_(ex_) {
    auto tls = TlsSocket::accept(std::move(sock), st_->tls->native_handle());
    if (tls.has_value()) tls_ = std::move(*tls);  // else the connection just ends
  }

 private:
  // Whether this thread runs the connection's executor now: its worker context, or (without
  // workers) its strand.
  bool on_own_thread() const {
    if (const auto* io = ex_.target<net::io_context::executor_type>()) {
      return io->running_in_this_thread();
    }
    const auto* strand = ex_.target<net::strand<net::io_context::executor_type>>();
    return strand != nullptr && strand->running_in_this_thread();
  }

  // The TLS handshake is over (or never ran): the connection no longer counts against
  // max_handshakes_per_ip.
  void end_handshake() {
    if (!handshaking_) return;
    handshaking_ = false;
    st_->end_handshake(remote_ip_);
  }

  void close_socket() {
    error_code ignored;
    if (ws_) beast::get_lowest_layer(*ws_).close(ignored);
    if (tls_) tls_->next_layer().close(ignored);
  }

  // A relay's preamble, read byte-exact (not a byte of the TLS behind it) within
  // handshake_timeout: a PROXY header (v1 or v2) from a proxy_from address, or the Extended
  // ORPort's handshake. The client it names becomes remote_ip_ (a LOCAL header keeps the relay's),
  // and its handshake is counted (max_handshakes_per_ip). False: the connection ends, refused.
  net::awaitable<bool> read_preamble() {
    // The deadline closes the socket rather than cancel the operation under way: it may fall
    // between two of the preamble's reads, when none is pending, and the next would then wait
    // with no deadline. `over`: once the preamble is read (even if its last read's handler was
    // already queued when the deadline passed), the TLS handshake has a deadline of its own.
    auto over = std::make_shared<bool>(false);
    timer_.expires_after(st_->options.handshake_timeout);
    timer_.async_wait([tls = tls_, over](error_code ec) {
      if (!ec && !*over) tls->close();
    });
    // Not a conditional expression of two co_awaits: GCC 12 miscompiles that (a double free).
    Result<ProxiedPeer> peer = make_error(ErrorCode::kInternal, "no preamble");
    if (opening_ == Opening::kProxyHeader) {
      peer = co_await read_proxy_header();
    } else {
      peer = co_await ext_orport_handshake();
    }
    *over = true;
    timer_.cancel();
    if (!peer) {
      if (!stopping_) {
        auto& refused = opening_ == Opening::kProxyHeader ? st_->refused_proxy_headers
                                                          : st_->refused_ext_orport;
        refused.fetch_add(1, std::memory_order_relaxed);
      }
      co_return false;
    }
    if (peer->proxied) {
      remote_ip_ = std::move(peer->ip);
      remote_port_ = peer->port;
      auto& relayed =
          opening_ == Opening::kProxyHeader ? st_->relayed_proxy_header : st_->relayed_ext_orport;
      relayed.fetch_add(1, std::memory_order_relaxed);
    }
    if (!st_->admit(remote_ip_)) co_return false;
    admitted_ = true;
    handshaking_ = true;
    co_return true;
  }

  // A PROXY header of either version, read without taking a byte of the TLS behind it.
  net::awaitable<Result<ProxiedPeer>> read_proxy_header() {
    tcp::socket& sock = tls_->next_layer();
    std::uint8_t first = 0;
    auto [pec, pn] =
        co_await sock.async_receive(net::buffer(&first, 1), tcp::socket::message_peek, kUse);
    if (pec) co_return make_error(ErrorCode::kUnavailable, "PROXY header: " + pec.message());
    if (first == kProxyV1Signature[0]) co_return co_await read_proxy_v1(sock);
    Bytes header(kProxyV2FixedSize);
    auto [ec, n] = co_await net::async_read(sock, net::buffer(header), kUse);
    if (ec) co_return make_error(ErrorCode::kUnavailable, "PROXY header: " + ec.message());
    auto rest = proxy_v2_rest_size(header);
    if (!rest) co_return rest.status();
    header.resize(kProxyV2FixedSize + *rest);
    auto [rec, rn] =
        co_await net::async_read(sock, net::buffer(header.data() + kProxyV2FixedSize, *rest), kUse);
    if (rec) co_return make_error(ErrorCode::kUnavailable, "PROXY header: " + rec.message());
    co_return parse_proxy_v2(header);
  }

  // Version 1's line: each round peeks at what has come, and reads exactly up to the CRLF if it
  // is there, or else all of it (bytes before the CRLF are the header's). Each round takes at
  // least a byte, so at most kProxyV1MaxSize rounds; the handshake timeout bounds the wait.
  static net::awaitable<Result<ProxiedPeer>> read_proxy_v1(tcp::socket& sock) {
    std::array<std::uint8_t, kProxyV1MaxSize> line{};
    std::size_t have = 0;
    while (have < line.size()) {
      auto [pec, peeked] = co_await sock.async_receive(
          net::buffer(line.data() + have, line.size() - have), tcp::socket::message_peek, kUse);
      if (pec) co_return make_error(ErrorCode::kUnavailable, "PROXY header: " + pec.message());
      const std::size_t end = proxy_v1_line_size(ByteView(line.data(), have + peeked));
      const std::size_t take = end != 0 ? end - have : peeked;
      auto [rec, rn] = co_await net::async_read(sock, net::buffer(line.data() + have, take), kUse);
      if (rec) co_return make_error(ErrorCode::kUnavailable, "PROXY header: " + rec.message());
      have += take;
      if (end != 0) co_return parse_proxy_v1(ByteView(line.data(), have));
    }
    co_return make_error(ErrorCode::kInvalidArgument,
                         "PROXY header: no end of line within 107 bytes");
  }

  // The server's side of the Extended ORPort handshake; reads exactly what it wants each time.
  net::awaitable<Result<ProxiedPeer>> ext_orport_handshake() {
    tcp::socket& sock = tls_->next_layer();
    ExtOrPortHandshake::Nonce nonce;
    crypto::SystemRng().fill(nonce);
    ExtOrPortHandshake hs(st_->ext_cookie, nonce);
    Bytes out = hs.greeting();
    Bytes in;
    // Each round reads one unit of the protocol; its bounds (kExtOrPortMaxHandshakeBytes) end
    // it long before this does.
    for (std::size_t round = 0; round < 4 * kExtOrPortMaxHandshakeBytes && !hs.done(); ++round) {
      if (!out.empty()) {
        auto [wec, wn] = co_await net::async_write(sock, net::buffer(out), kUse);
        if (wec) co_return make_error(ErrorCode::kUnavailable, "ext-orport: " + wec.message());
      }
      in.resize(hs.wanted());
      auto [rec, rn] = co_await net::async_read(sock, net::buffer(in), kUse);
      if (rec) co_return make_error(ErrorCode::kUnavailable, "ext-orport: " + rec.message());
      auto step = hs.feed(in);
      if (!step) {
        const ByteView reply = hs.failure_reply();
        if (!reply.empty()) {
          co_await net::async_write(sock, net::buffer(reply.data(), reply.size()), kUse);
        }
        co_return step.status();
      }
      out = std::move(step->out);
    }
    if (!hs.done()) co_return make_error(ErrorCode::kInvalidArgument, "ext-orport: too long");
    auto [wec, wn] = co_await net::async_write(sock, net::buffer(out), kUse);  // OKAY
    if (wec) co_return make_error(ErrorCode::kUnavailable, "ext-orport: " + wec.message());
    co_return ProxiedPeer{true, hs.client_ip(), hs.client_port()};
  }

  // Serves HTTP requests until the connection ends (nullopt) or asks for the WebSocket upgrade
  // on the secret path (the request, to be answered by the caller).
  net::awaitable<std::optional<http::request<http::empty_body>>> http_loop() {
    const ServerOptions& opt = st_->options;
    if (!tls_) co_return std::nullopt;
    if (opening_ != Opening::kTls && !co_await read_preamble()) co_return std::nullopt;
    tls_->expires_after(opt.handshake_timeout);
    {
      auto [ec] = co_await tls_->async_handshake(kUse);
      end_handshake();
      if (ec) {
        ++st_->tls_failed;
        co_return std::nullopt;
      }
      ++(tls_->session_reused() ? st_->tls_resumed : st_->tls_full);
    }
    HttpContext cx{opt,        st_->site,           st_->files,
                   st_->slots, st_->upload_writers, st_->file_transfers};
    const std::string att_prefix = opt.ws_path + "/att/";
    // Bounded: the parser limits the header and the body's data, but not a chunk's size line
    // (its extensions) or the trailer after the last chunk, which it keeps whole in here until
    // they end. Full, the read fails with buffer_overflow: a 400, and the connection closes.
    beast::flat_buffer buffer(kMaxHttpReadBuffer);
    bool keep = true;
    bool body_unread = false;  // the last request's body may still be on its way
    // The server ended a connection that the client meant to keep: it may have sent (or be
    // sending) more requests, which closing at once would answer with a reset.
    bool ended_by_server = false;
    for (int served = 0; keep && served < kMaxHttpRequestsPerConnection && !stopping_; ++served) {
      HeaderParser hp;
      hp.header_limit(8 * 1024);
      hp.body_limit(std::numeric_limits<std::uint64_t>::max());  // enforced per endpoint
      tls_->expires_after(served == 0 ? opt.handshake_timeout : http_idle(opt));
      auto [ec, n] = co_await http::async_read_header(*tls_, buffer, hp, kUse);
      if (ec) {
        if (is_http_parse_error(ec) && !stopping_) {
          co_await write_site_response(*tls_, st_->site.error_page(400), 11, false, false, cx);
        }
        keep = false;
        break;
      }
      // Whether a body follows: an answer given before it is all read (a refusal) closes the
      // connection, and the close lingers (linger()).
      body_unread = !hp.is_done();
      auto& req = hp.get();
      // HTTP/1.1 needs exactly one Host (RFC 9112, 3.2); servers answer 400 without it.
      if (req.version() >= 11 && req.count(http::field::host) != 1) {
        co_await write_site_response(*tls_, st_->site.error_page(400), req.version(), false,
                                     req.method() == http::verb::head, cx);
        break;
      }
      const bool client_keeps = req.keep_alive();
      // The last request a connection may make is answered with "Connection: close".
      if (served + 1 == kMaxHttpRequestsPerConnection) req.keep_alive(false);
      std::string_view target = req.target();
      std::string_view path = target.substr(0, target.find('?'));
      if (path == opt.ws_path && websocket::is_upgrade(req) && hp.is_done()) {
        if (buffer.size() != 0) {
          // Bytes after the upgrade request: a conforming client waits for the 101 (it must
          // check Sec-WebSocket-Accept), so this is refused rather than guessed at.
          co_await write_site_response(*tls_, st_->site.error_page(400), req.version(), false,
                                       false, cx);
          break;
        }
        co_return hp.release();
      }
      if (path.size() > att_prefix.size() && path.substr(0, att_prefix.size()) == att_prefix) {
        keep = co_await serve_attachment(*tls_, buffer, hp, path.substr(att_prefix.size()), cx);
      } else {
        keep = co_await serve_site(*tls_, buffer, hp, cx);
      }
      ended_by_server = !keep && client_keeps;
      if (buffer.capacity() > 16 * 1024 && buffer.size() == 0) buffer.shrink_to_fit();
    }
    if (stopping_) co_return std::nullopt;
    // Close like a polite server: TLS close_notify, briefly.
    tls_->expires_after(std::chrono::seconds(2));
    auto [sec] = co_await tls_->async_shutdown(kUse);
    // (Twice the largest body the server takes: its TLS records' overhead, and a margin.)
    if (!sec && (body_unread || ended_by_server) && !stopping_) {
      co_await linger(saturating_add<std::uint64_t>(opt.max_http_body, opt.max_http_body));
    }
    co_return std::nullopt;
  }

  // A lingering close, as nginx's (lingering_close): after an answer given before the request's
  // body was all read (a refused upload part, a body over the site's limit), or when the server
  // ends a connection the client meant to keep (its last allowed request, a refusal; the client
  // may be sending its next requests), closing at once while the client still sends makes the
  // kernel reset the connection, and the client loses the answer (curl reports "Connection
  // reset" instead of the 409 that gives the offset to resume from; a download loses the
  // megabytes still in the socket's buffers). So: stop sending (a FIN after the close_notify), then
  // read and discard what the client still sends, undeciphered, until it closes, for kLingerTime
  // and `max_bytes` at most.
  net::awaitable<void> linger(std::uint64_t max_bytes) {
    tcp::socket& sock = tls_->next_layer();
    error_code ec;
    sock.shutdown(tcp::socket::shutdown_send, ec);
    if (ec) co_return;
    // As in read_preamble: the deadline closes the socket, which ends the read under way.
    auto over = std::make_shared<bool>(false);
    timer_.expires_after(kLingerTime);
    timer_.async_wait([tls = tls_, over](error_code tec) {
      if (!tec && !*over) tls->close();
    });
    auto scratch = std::make_unique<std::uint8_t[]>(kLingerChunk);
    for (std::uint64_t discarded = 0; discarded < max_bytes;) {
      auto [rec, n] = co_await sock.async_read_some(net::buffer(scratch.get(), kLingerChunk), kUse);
      if (rec) break;  // the client closed (or reset), or the deadline passed
      discarded += n;
    }
    *over = true;
    timer_.cancel();
  }

  // A bridge's answer to the upgrade, as parleyd's WebSocket server sends it: the interim
  // answer (if any) in a TLS record of its own, then the final one. (On worker contexts, as
  // parleyd runs, the server's corked stream flushes the interim answer before Beast writes the
  // final one; the TLS socket makes a record of each write.)
  net::awaitable<error_code> write_upgrade_answer(const UpgradeAnswer& answer) {
    for (const std::string* part : {&answer.interim, &answer.response}) {
      if (part->empty()) continue;
      auto [ec, n] = co_await net::async_write(*tls_, net::buffer(*part), kUse);
      if (ec) co_return ec;
    }
    co_return error_code{};
  }

  // Bridge mode: connect to the bridged address, answer 101 like a WebSocket server, then
  // splice bytes both ways until either side ends or idles out. On a failed connect the client
  // sees the connection close (nothing tells a prober more than a dropped upgrade would).
  net::awaitable<void> bridge_session(http::request<http::empty_body> req) {
    const ServerOptions& opt = st_->options;
    phase_ = Phase::kBridge;
    const UpgradeAnswer answer = answer_upgrade(req, opt.server_header);
    if (!answer.accepted) {
      tls_->expires_after(opt.handshake_timeout);
      co_await write_upgrade_answer(answer);
      co_return;
    }
    // The upstream socket is a second descriptor: a second slot of max_connections, kept until
    // the connection ends. None free: the client sees the connection close.
    if (!st_->take_slot()) co_return;
    upstream_slot_ = true;
    auto up = std::make_shared<beast::tcp_stream>(ex_);
    {
      // Shared with the timer's handler: one that expired as the lookup ended may run after
      // this block has left.
      auto resolver = std::make_shared<tcp::resolver>(ex_);
      net::steady_timer timer(ex_);
      timer.expires_after(opt.handshake_timeout);
      timer.async_wait([resolver](error_code ec) {
        if (!ec) resolver->cancel();
      });
      auto [rec, results] = co_await resolver->async_resolve(
          opt.bridge_to_host, std::to_string(opt.bridge_to_port), kUse);
      timer.cancel();
      if (rec || stopping_) co_return;
      up->expires_after(opt.handshake_timeout);
      auto [cec, ep] = co_await up->async_connect(results, kUse);
      if (cec || stopping_) co_return;
      error_code ignored;
      up->socket().set_option(tcp::no_delay(true), ignored);
      if (opt.bridge_proxy_header) {
        const Bytes header = upstream_proxy_header();
        auto [wec, wn] = co_await net::async_write(*up, net::buffer(header), kUse);
        if (wec || stopping_) co_return;
      }
    }
    tls_->expires_after(opt.handshake_timeout);
    {
      const error_code ec = co_await write_upgrade_answer(answer);
      if (ec || stopping_) {
        up->close();
        co_return;
      }
    }
    bridge_up_ = up;
    // upstream -> client in a second coroutine on this strand; client -> upstream here.
    auto self = shared_from_this();
    auto other_done = std::make_shared<bool>(false);
    auto done_signal = std::make_shared<net::steady_timer>(ex_, net::steady_timer::time_point::max());
    net::co_spawn(ex_, pump_to_client(self, up),
                  [other_done, done_signal](std::exception_ptr) {
                    *other_done = true;
                    done_signal->cancel();
                  });
    std::vector<char> buf(16 * 1024);
    // Without a header of its own, a bridge passes on no client stream that opens like a PROXY
    // header of either version: an upstream that wrongly expects one from it would take the
    // client's word for its address. `head`: the stream's first bytes, while they may be one.
    bool checking = !opt.bridge_proxy_header;
    std::array<std::uint8_t, kProxyV2Signature.size()> head{};
    std::size_t head_size = 0;
    for (;;) {
      tls_->expires_after(bridge_idle(opt));
      auto [rec, n] = co_await tls_->async_read_some(net::buffer(buf), kUse);
      if (rec || n == 0) break;
      if (checking) {
        const std::size_t k = std::min(n, head.size() - head_size);
        std::memcpy(head.data() + head_size, buf.data(), k);
        head_size += k;
        const ProxyOpening opening = proxy_opening(ByteView(head.data(), head_size));
        if (opening == ProxyOpening::kYes) break;  // closed before a whole signature goes up
        checking = opening == ProxyOpening::kMaybe;
      }
      up->expires_after(bridge_idle(opt));
      auto [wec, wn] = co_await net::async_write(*up, net::buffer(buf.data(), n), kUse);
      if (wec) break;
    }
    close_bridge();
    if (!*other_done) co_await done_signal->async_wait(kUse);
  }

  // The PROXY v2 header naming this connection's client (remote_ip_, from a PROXY header of
  // its own when the bridge is behind a relay) to the upstream.
  Bytes upstream_proxy_header() {
    tcp::socket& sock = tls_->next_layer();
    error_code ec;
    const tcp::endpoint peer = sock.remote_endpoint(ec);
    const tcp::endpoint local = sock.local_endpoint(ec);
    error_code aec;
    const net::ip::address client = net::ip::make_address(remote_ip_, aec);
    const std::uint16_t port = remote_port_ != 0 ? remote_port_ : peer.port();
    return make_proxy_v2(aec ? peer.address() : client, port, local.address(), local.port());
  }

  static std::chrono::steady_clock::duration bridge_idle(const ServerOptions& opt) {
    if (opt.idle_timeout.count() > 0) return opt.idle_timeout;
    return std::chrono::hours(24);
  }

  static net::awaitable<void> pump_to_client(std::shared_ptr<Connection> self,
                                             std::shared_ptr<beast::tcp_stream> up) {
    const ServerOptions& opt = self->st_->options;
    std::vector<char> buf(16 * 1024);
    for (;;) {
      up->expires_after(bridge_idle(opt));
      auto [rec, n] = co_await up->async_read_some(net::buffer(buf), kUse);
      if (rec || n == 0) break;
      self->tls_->expires_after(bridge_idle(opt));
      auto [wec, wn] = co_await net::async_write(*self->tls_, net::buffer(buf.data(), n), kUse);
      if (wec) break;
    }
    self->close_bridge();
  }

  // Both sides of a bridged connection end together (never a half-close).
  void close_bridge() {
    error_code ignored;
    if (bridge_up_) bridge_up_->socket().close(ignored);
    close_socket();
  }

  // The WebSocket's upgrade; true when it is open and its reads are under way (read_next).
  net::awaitable<bool> ws_session(http::request<http::empty_body> req) {
    const ServerOptions& opt = st_->options;
    phase_ = Phase::kWsHandshake;
    tls_->expires_never();  // from here Beast times the handshakes, keepalive() the silence
    ws_.emplace(std::move(tls_));
    ws_->next_layer().set_flush_executor(st_->flush_executor(ex_));
    // Beast times the upgrade and the closing handshake only. Silence (pings and the idle
    // timeout) is ours (keepalive()): Beast's would re-arm a timer on every read.
    websocket::stream_base::timeout to{};
    to.handshake_timeout = opt.handshake_timeout;
    to.idle_timeout = websocket::stream_base::none();
    to.keep_alive_pings = false;
    ws_->set_option(to);
    ws_->set_option(websocket::permessage_deflate{});  // off
    ws_->set_option(websocket::stream_base::decorator(
        [server = opt.server_header](websocket::response_type& res) {
          res.set(http::field::server, server);
        }));
    ws_->read_message_max(opt.max_message_size);
    ws_->binary(true);
    {
      auto [ec] = co_await ws_->async_accept(req, kUse);
      // The request's header fields are not needed after the upgrade, and this frame lives as
      // long as the connection.
      req = {};
      if (ec || stopping_) {
        // A refused upgrade has been answered (400) into the write buffer: let the answer
        // leave before the connection closes, within the handshake timeout.
        ws_->next_layer().next_layer().expires_after(opt.handshake_timeout);
        co_await ws_->next_layer().async_flush(kUse);
        co_return false;
      }
    }
    try {
      handler_ = st_->factory ? st_->factory(remote_ip_) : nullptr;
    } catch (...) {
      handler_ = nullptr;
    }
    if (!handler_) {
      websocket::close_reason cr(websocket::close_code::try_again_later);
      co_await ws_->async_close(cr, kUse);
      co_return false;
    }
    phase_ = Phase::kWs;
    keepalive();
    guarded([&] { handler_->on_open(shared_from_this()); });
    // The reads go on in callbacks, not in a coroutine: its frames (this one's, run()'s and
    // co_spawn's under them, about 1.4 KB) would stay allocated for the connection's whole life,
    // most of it idle (memory per idle connection, docs/benchmarks.md session 24).
    read_next();
    co_return true;
  }

  // The WebSocket's read loop: one read under way at a time, each completion starting the next.
  void read_next() {
    try {
      ws_->async_read(read_buffer_, [self = shared_from_this()](error_code ec, std::size_t) {
        // Nothing may escape into the io_context (run()'s promise); read_next() comes last in
        // on_read and never throws, so no read is under way when this catches.
        try {
          self->on_read(ec);
        } catch (...) {
          self->end_read();
        }
      });
    } catch (...) {
      end_read();
    }
  }

  void on_read(error_code ec) {
    if (ec) return end_read();
    if (close_started_) {
      // Closing: nothing more reaches the handler.
    } else if (!ws_->got_binary()) {
      do_close(websocket::close_code::unknown_data, "binary frames only", true);
    } else {
      auto data = read_buffer_.cdata();
      std::string_view message(static_cast<const char*>(data.data()), data.size());
      guarded([&] { handler_->on_message(message); });
    }
    read_buffer_.release();
    read_next();
  }

  // The read side ended: the handler is told (finish_ws) and the socket closed.
  void end_read() {
    finish_ws();
    close_socket();
  }

  // Pings and the idle timeout, timed by one timer that wakes only when something is due
  // (never per read): the socket stamps each read with a coarse time (TlsSocket::last_read).
  // A peer silent for ping_interval is pinged, and again every ping_interval while it stays
  // silent; its pong is a read. One silent for idle_timeout is cut off. Either set to zero is off.
  void keepalive() {
    if (close_started_ || read_done_) return;
    const ServerOptions& opt = st_->options;
    if (opt.idle_timeout.count() <= 0 && opt.ping_interval.count() <= 0) return;
    const auto now = std::chrono::steady_clock::now();
    const auto heard = ws_->next_layer().next_layer().last_read();
    auto next = std::chrono::steady_clock::time_point::max();
    if (opt.idle_timeout.count() > 0) {
      if (now - heard >= opt.idle_timeout) {
        st_->idle_closes.fetch_add(1, std::memory_order_relaxed);
        error_code ignored;
        beast::get_lowest_layer(*ws_).close(ignored);  // the pending read fails: finish_ws
        return;
      }
      next = heard + opt.idle_timeout;
    }
    if (opt.ping_interval.count() > 0) {
      auto due = std::max(heard, last_ping_) + opt.ping_interval;
      if (now >= due) {
        ping();
        last_ping_ = now;
        due = now + opt.ping_interval;
      }
      next = std::min(next, due);
    }
    timer_.expires_at(next);
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->keepalive();
    });
  }

  void ping() {
    // Still stuck behind a write the peer does not read: the idle timeout (or the slow-reader
    // limit) ends the connection.
    if (ping_in_flight_) return;
    ping_in_flight_ = true;
    st_->pings.fetch_add(1, std::memory_order_relaxed);
    ws_->async_ping({}, [self = shared_from_this()](error_code) { self->ping_in_flight_ = false; });
  }

  template <typename F>
  void guarded(F&& f) {
    try {
      f();
    } catch (...) {
      do_close(websocket::close_code::internal_error, "internal error", true);
    }
  }

  // The read side ended: release everything and tell the handler, once.
  void finish_ws() {
    read_done_ = true;
    closing_.store(true);
    close_started_ = true;
    error_code ignored;
    timer_.cancel();
    beast::get_lowest_layer(*ws_).close(ignored);
    drop_queued(writing_);
    if (handler_ && !handler_closed_) {
      handler_closed_ = true;
      try {
        handler_->on_close();
      } catch (...) {
      }
      handler_.reset();  // breaks any handler -> connection reference cycle
    }
  }

  void drop_queued(bool keep_front) {
    std::size_t keep = keep_front ? 1 : 0;
    while (queue_.size() > keep) {
      queued_bytes_.fetch_sub(queue_.back()->size());
      queue_.pop_back();
    }
  }

  void enqueue(std::shared_ptr<const std::string> m) {
    if (close_started_ || read_done_ || !ws_) {
      queued_bytes_.fetch_sub(m->size());
      return;
    }
    queue_.push_back(std::move(m));
    if (!writing_) write_next();
  }

  void write_next() {
    // While the cork has room, each message goes into it at once (internal/ws_frames.h); once
    // it is full (or a flush failed), Beast's async_write takes over and waits.
    while (!queue_.empty() && !read_done_ && ws_->is_open()) {
      const std::string& m = *queue_.front();
      if (!append_frame(ws_->next_layer(), m, false, std::nullopt)) break;
      queued_bytes_.fetch_sub(m.size());
      queue_.pop_front();
    }
    if (queue_.empty() || read_done_) {
      writing_ = false;
      ws_->next_layer().release();  // the run of messages is over: flush what it wrote
      if (close_started_ && !close_sent_ && !read_done_) start_close();
      return;
    }
    writing_ = true;
    ws_->next_layer().hold();
    const auto& m = queue_.front();
    ws_->async_write(net::buffer(*m), [self = shared_from_this()](error_code ec, std::size_t) {
      if (!self->queue_.empty()) {
        self->queued_bytes_.fetch_sub(self->queue_.front()->size());
        self->queue_.pop_front();
      }
      if (ec) {
        self->writing_ = false;
        self->drop_queued(false);
        error_code ignored;
        beast::get_lowest_layer(*self->ws_).close(ignored);
        return;
      }
      self->write_next();
    });
  }

  void do_close(websocket::close_code code, std::string_view reason, bool drop) {
    if (phase_ != Phase::kWs || close_started_ || read_done_) return;
    close_started_ = true;
    closing_.store(true);
    close_reason_ = std::make_unique<websocket::close_reason>(code, reason.substr(0, 120));
    if (drop) drop_queued(writing_);
    // A peer that stops reading would hold the close frame behind a stuck write for ever.
    timer_.expires_after(st_->options.handshake_timeout);
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->read_done_) return;
      error_code ignored;
      beast::get_lowest_layer(*self->ws_).close(ignored);
    });
    if (!writing_) start_close();
  }

  void start_close() {
    close_sent_ = true;
    // Only after do_close(), which set close_reason_; Beast serializes it here, at once.
    ws_->async_close(*close_reason_, [self = shared_from_this()](error_code ec) {
      if (ec) {
        error_code ignored;
        beast::get_lowest_layer(*self->ws_).close(ignored);
      }
    });
  }

  std::shared_ptr<ServerState> st_;
  const net::any_io_executor ex_;
  std::string remote_ip_;
  std::list<std::weak_ptr<Connection>>::iterator registration_;

  // Strand-confined state.
  Phase phase_ = Phase::kHttp;
  bool stopping_ = false;
  bool admitted_;     // counted in st_->blocks (max_connections_per_ip) until destroyed
  bool handshaking_;  // counted in st_->blocks (max_handshakes_per_ip) until end_handshake()
  Opening opening_;
  std::uint16_t remote_port_ = 0;   // the client's port, when a PROXY header named it
  bool upstream_slot_ = false;      // bridge mode: a second slot taken for the upstream
  std::shared_ptr<TlsSocket> tls_;  // until the WebSocket takes it
  std::optional<WsStream> ws_;
  std::shared_ptr<beast::tcp_stream> bridge_up_;  // bridge mode, after the 101
  std::unique_ptr<WsHandler> handler_;
  // The message being read; holds no memory between messages (message_buffer.h), so an idle
  // connection waits with none.
  MessageBuffer read_buffer_;
  bool handler_closed_ = false;
  // A list: libstdc++'s deque allocates over 500 bytes even when empty (memory per idle
  // connection); a node per queued message costs less than that.
  std::list<std::shared_ptr<const std::string>> queue_;
  bool writing_ = false;
  bool close_started_ = false;
  bool close_sent_ = false;
  bool read_done_ = false;
  // Set when the close starts: 128 bytes an idle connection need not carry.
  std::unique_ptr<websocket::close_reason> close_reason_;
  // Keep-alive while the WebSocket is open (keepalive()), then the close's deadline (do_close).
  net::steady_timer timer_;
  std::chrono::steady_clock::time_point last_ping_{};
  bool ping_in_flight_ = false;

  // Shared with other threads.
  std::atomic<bool> closing_{false};
  std::atomic<std::size_t> queued_bytes_{0};
  std::atomic<std::size_t> posted_sends_{0};  // send()s posted to ex_ and not yet queued
};

// Accepts on `acceptor` (the main listener, or the Extended ORPort's when `ext_orport`).
net::awaitable<void> accept_loop(std::shared_ptr<ServerState> st, tcp::acceptor& acceptor,
                                 bool ext_orport) {
  net::steady_timer backoff(st->acceptor_ex);
  while (st->accepting.load()) {
    auto [ec, sock] = co_await acceptor.async_accept(st->place_next(), kUse);
    if (!st->accepting.load() || !acceptor.is_open()) break;
    if (ec) {
      if (ec == net::error::operation_aborted) break;
      // EMFILE and friends: pause instead of spinning.
      backoff.expires_after(std::chrono::milliseconds(50));
      co_await backoff.async_wait(kUse);
      continue;
    }
    error_code ignored;
    if (!st->take_slot()) {
      st->refused_slots.fetch_add(1, std::memory_order_relaxed);
      sock.close(ignored);  // over the cap: refused at once
      continue;
    }
    error_code pec;
    const auto peer = sock.remote_endpoint(pec);
    std::string ip = pec ? std::string() : peer.address().to_string();
    Opening opening = Opening::kTls;
    if (ext_orport) {
      opening = Opening::kExtOrPort;
    } else if (!pec && st->is_relay(ip)) {
      opening = Opening::kProxyHeader;
    }
    if (opening == Opening::kTls && !st->admit(ip)) {
      st->slots.fetch_sub(1);
      sock.close(ignored);  // too many connections from this address: refused at once
      continue;
    }
    st->connections.fetch_add(1);
    sock.set_option(tcp::no_delay(true), ignored);
    auto conn = Connection::create(st, std::move(sock), std::move(ip), opening);
    auto ex = conn->executor();
    net::co_spawn(ex, Connection::run(std::move(conn)), [](std::exception_ptr) {});
  }
}

class ServerImpl final : public Server {
 public:
  ServerImpl(std::shared_ptr<ServerState> st, std::uint16_t port, std::uint16_t ext_port)
      : st_(std::move(st)), port_(port), ext_port_(ext_port) {}
  ~ServerImpl() override {
    stop_accepting();
    close_all("going away");
  }

  std::uint16_t port() const override { return port_; }
  std::uint16_t ext_orport_port() const override { return ext_port_; }

  void stop_accepting() override {
    if (!st_->accepting.exchange(false)) return;
    net::post(st_->acceptor_ex, [st = st_] {
      error_code ignored;
      st->acceptor.close(ignored);
      if (st->ext_acceptor) st->ext_acceptor->close(ignored);
    });
  }

  void close_all(std::string_view reason) override {
    std::vector<std::shared_ptr<Connection>> conns;
    {
      std::lock_guard lock(st_->mu);
      conns.reserve(st_->live.size());
      for (auto& w : st_->live) {
        if (auto c = w.lock()) conns.push_back(std::move(c));
      }
    }
    for (auto& c : conns) c->shutdown_from_server(std::string(reason));
  }

  std::size_t connection_count() const override { return st_->connections.load(); }
  std::size_t file_transfers() const override { return st_->file_transfers.load(); }
  TlsHandshakes tls_handshakes() const override {
    return {st_->tls_full.load(), st_->tls_resumed.load(), st_->tls_failed.load()};
  }
  Refusals refusals() const override {
    return {st_->refused_slots.load(), st_->refused_handshakes.load(),
            st_->refused_proxy_headers.load(), st_->refused_ext_orport.load(),
            st_->refused_connections_per_ip.load()};
  }
  Relayed relayed() const override {
    return {st_->relayed_proxy_header.load(), st_->relayed_ext_orport.load()};
  }
  KeepAliveCounts keepalive_counts() const override {
    return {st_->pings.load(), st_->idle_closes.load()};
  }
  Result<bool> rotate_ticket_keys() override {
    if (!st_->ticket_keys) return false;
    return st_->ticket_keys->rotate_if_due();
  }

 private:
  std::shared_ptr<ServerState> st_;
  std::uint16_t port_;
  std::uint16_t ext_port_;
};

}  // namespace

Result<std::unique_ptr<Server>> Server::start(net::io_context& io, ServerOptions options,
                                              WsHandlerFactory ws, HttpFiles* files) {
  if (options.ws_path.size() < 2 || options.ws_path.front() != '/' ||
      options.ws_path.back() == '/' || options.ws_path.find('?') != std::string::npos) {
    return make_error(ErrorCode::kInvalidArgument, "server: ws_path must look like /secret/ws");
  }
  if (options.max_message_size == 0 || options.write_queue_limit == 0) {
    return make_error(ErrorCode::kInvalidArgument, "server: zero limit");
  }
  PARLEY_ASSIGN_OR_RETURN(auto ctx, make_server_tls_context(options.cert_pem, options.key_pem));
  std::unique_ptr<TicketKeys> ticket_keys;
  if (options.tls_tickets) {
    static const SystemClock clock;
    PARLEY_ASSIGN_OR_RETURN(
        ticket_keys, TicketKeys::open(options.ticket_key_file, options.ticket_key_rotation, clock));
    ticket_keys->install(ctx->native_handle());
  } else {
    SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx->native_handle(), 0);
  }

  error_code ec;
  tcp::endpoint endpoint;
  auto addr = net::ip::make_address(options.listen_host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(addr, options.listen_port);
  } else {
    tcp::resolver resolver(io);
    auto results = resolver.resolve(options.listen_host, std::to_string(options.listen_port),
                                    tcp::resolver::passive, ec);
    if (ec || results.empty()) return make_error(ErrorCode::kIo, "server: cannot resolve host");
    endpoint = results.begin()->endpoint();
  }

  std::vector<AddressRange> relays;
  for (const std::string& from : options.proxy_from) {
    auto relay = AddressRange::parse(from);
    if (!relay) {
      return make_error(ErrorCode::kInvalidArgument,
                        "server: proxy_from \"" + from + "\" is not an IP address or network");
    }
    relays.push_back(*relay);
  }
  auto st = std::make_shared<ServerState>(io, std::move(options), std::move(ticket_keys),
                                          std::move(ctx), std::move(ws), files);
  st->relays = std::move(relays);
  st->acceptor.open(endpoint.protocol(), ec);
  if (!ec) st->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) st->acceptor.bind(endpoint, ec);
  if (!ec) st->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return make_error(ErrorCode::kIo, "server: cannot listen: " + ec.message());
  const std::uint16_t port = st->acceptor.local_endpoint(ec).port();
  if (ec) return make_error(ErrorCode::kIo, "server: no local endpoint");
  std::uint16_t ext_port = 0;
  if (!st->options.ext_orport_cookie_file.empty()) {
    PARLEY_ASSIGN_OR_RETURN(st->ext_cookie,
                            create_ext_orport_cookie(st->options.ext_orport_cookie_file));
    auto& ext = st->ext_acceptor.emplace(st->acceptor_ex);
    const tcp::endpoint loopback(net::ip::address_v4::loopback(), 0);
    ext.open(loopback.protocol(), ec);
    if (!ec) ext.bind(loopback, ec);
    if (!ec) ext.listen(net::socket_base::max_listen_connections, ec);
    if (!ec) ext_port = ext.local_endpoint(ec).port();
    if (ec)
      return make_error(ErrorCode::kIo, "server: cannot listen (ext-orport): " + ec.message());
    net::co_spawn(st->acceptor_ex, accept_loop(st, ext, true), [](std::exception_ptr) {});
  }
  net::co_spawn(st->acceptor_ex, accept_loop(st, st->acceptor, false), [](std::exception_ptr) {});
  return std::unique_ptr<Server>(new ServerImpl(std::move(st), port, ext_port));
}

}  // namespace parley::transport
