#include "transport/admin.h"

#include <atomic>
#include <optional>
#include <string_view>

#include "transport/client_address.h"
#include "transport/internal/asio.h"

namespace parley::transport {
namespace {

using namespace internal;  // NOLINT: aliases for Asio/Beast

constexpr std::size_t kMaxHeader = 8 * 1024;
constexpr auto kTimeout = std::chrono::seconds(10);

// What the coroutines use, shared with them: a request being served or an accept that
// completes after the AdminServer was destroyed finds it still there.
struct Listener {
  Listener(net::io_context& context, AdminHandler h)
      : io(context), acceptor(net::make_strand(context)), handler(std::move(h)) {}
  net::io_context& io;
  tcp::acceptor acceptor;  // used on its strand once accepting
  AdminHandler handler;
  std::vector<AddressRange> allowed;  // the peers served
  std::atomic<int> open{0};           // connections being served

  bool allows(const std::string& ip) const {
    for (const AddressRange& range : allowed) {
      if (range.contains(ip)) return true;
    }
    return false;
  }
};

// Whether `host` (a Host field's value) names this machine the way an operator's tool does:
// an IPv4 or bracketed IPv6 literal, or "localhost", with or without a port. A name a
// rebinding attacker controls is none of these.
bool is_port(std::string_view port) {
  return !port.empty() && port.size() <= 5 &&
         port.find_first_not_of("0123456789") == std::string_view::npos;
}

bool is_local_host_field(std::string_view host) {
  std::string_view name = host;
  if (!name.empty() && name.front() == '[') {
    const auto close = name.find(']');
    if (close == std::string_view::npos) return false;
    std::string_view rest = name.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !is_port(rest.substr(1)))) return false;
    error_code ec;
    net::ip::make_address_v6(std::string(name.substr(1, close - 1)), ec);
    return !ec;
  }
  const auto colon = name.find(':');
  if (colon != std::string_view::npos) {
    if (!is_port(name.substr(colon + 1))) return false;
    name = name.substr(0, colon);
  }
  if (beast::iequals(name, "localhost")) return true;
  error_code ec;
  net::ip::make_address_v4(std::string(name), ec);
  return !ec;
}

// Counts a connection as open while it lives.
struct OpenConnection {
  explicit OpenConnection(std::shared_ptr<Listener> listener) : l(std::move(listener)) {}
  ~OpenConnection() { l->open.fetch_sub(1); }
  OpenConnection(const OpenConnection&) = delete;
  OpenConnection& operator=(const OpenConnection&) = delete;
  std::shared_ptr<Listener> l;
};

class AdminServerImpl final : public AdminServer {
 public:
  AdminServerImpl(net::io_context& io, AdminHandler handler)
      : l_(std::make_shared<Listener>(io, std::move(handler))) {}
  ~AdminServerImpl() override { stop(); }

  Status allow(const std::vector<std::string>& allowed) {
    if (allowed.empty()) {
      l_->allowed = loopback_ranges();
      return Status::ok();
    }
    for (const std::string& text : allowed) {
      auto range = AddressRange::parse(text);
      if (!range) {
        return make_error(ErrorCode::kInvalidArgument,
                          "admin: \"" + text + "\" is not an IP address or network");
      }
      l_->allowed.push_back(*range);
    }
    return Status::ok();
  }

  Status listen(const std::string& host, std::uint16_t port) {
    error_code ec;
    auto address = net::ip::make_address(host, ec);
    if (ec) return make_error(ErrorCode::kInvalidArgument, "admin: bad address");
    tcp::endpoint ep(address, port);
    tcp::acceptor& acceptor = l_->acceptor;
    acceptor.open(ep.protocol(), ec);
    if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return make_error(ErrorCode::kIo, "admin: cannot listen: " + ec.message());
    port_ = acceptor.local_endpoint().port();
    return Status::ok();
  }

  void run() { net::co_spawn(l_->acceptor.get_executor(), accept_loop(l_), net::detached); }

  std::uint16_t port() const override { return port_; }

  void stop() override {
    net::post(l_->acceptor.get_executor(), [l = l_] {
      error_code ec;
      l->acceptor.close(ec);
    });
  }

 private:
  static net::awaitable<void> accept_loop(std::shared_ptr<Listener> l) {
    net::steady_timer backoff(l->acceptor.get_executor());
    for (;;) {
      auto [ec, socket] = co_await l->acceptor.async_accept(net::make_strand(l->io), kUse);
      if (ec) {
        if (!l->acceptor.is_open()) co_return;
        // EMFILE and friends: pause instead of spinning (as the TLS listener does).
        backoff.expires_after(std::chrono::milliseconds(50));
        co_await backoff.async_wait(kUse);
        continue;
      }
      // Not in the allow-list: closed unanswered (a scanner learns only that the port is open).
      error_code peer_ec;
      const auto peer = socket.remote_endpoint(peer_ec);
      if (peer_ec || !l->allows(peer.address().to_string())) {
        error_code ignored;
        socket.close(ignored);
        continue;
      }
      if (l->open.fetch_add(1) >= kMaxAdminConnections) {
        l->open.fetch_sub(1);
        error_code ignored;
        socket.close(ignored);
        continue;
      }
      net::co_spawn(socket.get_executor(), serve(l, beast::tcp_stream(std::move(socket))),
                    net::detached);
    }
  }

  // The handler's answer, or 503 when none came within kTimeout.
  static net::awaitable<AdminResponse> ask(const std::shared_ptr<Listener>& l,
                                           const net::any_io_executor& ex, std::string method,
                                           std::string target) {
    auto answer = std::make_shared<std::optional<AdminResponse>>();
    auto signal = std::make_shared<net::steady_timer>(ex, kTimeout);
    l->handler(method, target, [ex, answer, signal](AdminResponse r) {
      // Onto the connection's strand, where the coroutine waits.
      net::post(ex, [answer, signal, r = std::move(r)]() mutable {
        if (answer->has_value()) return;
        *answer = std::move(r);
        signal->cancel();
      });
    });
    if (!answer->has_value()) co_await signal->async_wait(kUse);
    if (answer->has_value()) co_return std::move(**answer);
    *answer = AdminResponse{503, "text/plain", "timed out\n"};  // a late reply is dropped
    co_return std::move(**answer);
  }

  static net::awaitable<void> serve(std::shared_ptr<Listener> l, beast::tcp_stream stream) {
    OpenConnection counted(l);
    // Bounded like the listener's (server.cc): the parser does not bound a chunk-size line.
    beast::flat_buffer buffer(2 * kMaxHeader);
    http::request_parser<http::empty_body> parser;
    parser.header_limit(kMaxHeader);
    stream.expires_after(kTimeout);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, kUse);
    (void)n;
    http::response<http::string_body> res;
    if (ec) {
      res.result(http::status::bad_request);
      res.body() = "bad request\n";
    } else if (const auto& req = parser.get(); !is_local_host_field(req[http::field::host]) ||
                                               req.count(http::field::origin) != 0) {
      res.result(http::status::forbidden);
      res.set(http::field::content_type, "text/plain");
      res.body() = "forbidden: Host must be an IP address or localhost, and no Origin\n";
    } else {
      AdminResponse r = co_await ask(l, stream.get_executor(), std::string(req.method_string()),
                                     std::string(req.target()));
      res.result(r.status);
      res.set(http::field::content_type, r.content_type);
      res.body() = std::move(r.body);
    }
    res.version(11);
    res.keep_alive(false);
    res.prepare_payload();
    stream.expires_after(kTimeout);
    auto [wec, wn] = co_await http::async_write(stream, res, kUse);
    (void)wec;
    (void)wn;
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  std::shared_ptr<Listener> l_;
  std::uint16_t port_ = 0;
};

}  // namespace

Result<std::unique_ptr<AdminServer>> AdminServer::start(boost::asio::io_context& io,
                                                        const std::string& host, std::uint16_t port,
                                                        AdminHandler handler,
                                                        const std::vector<std::string>& allowed) {
  auto impl = std::make_unique<AdminServerImpl>(io, std::move(handler));
  PARLEY_TRY(impl->allow(allowed));
  PARLEY_TRY(impl->listen(host, port));
  impl->run();
  return std::unique_ptr<AdminServer>(std::move(impl));
}

}  // namespace parley::transport
