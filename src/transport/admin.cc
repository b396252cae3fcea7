#include "transport/admin.h"

#include <atomic>

#include "transport/internal/asio.h"

namespace parley::transport {
namespace {

using namespace internal;  // NOLINT: aliases for Asio/Beast

constexpr std::size_t kMaxHeader = 8 * 1024;
constexpr auto kTimeout = std::chrono::seconds(10);

class AdminServerImpl final : public AdminServer {
 public:
  AdminServerImpl(net::io_context& io, AdminHandler handler)
      : io_(io), acceptor_(net::make_strand(io)), handler_(std::move(handler)) {}

  Status listen(const std::string& host, std::uint16_t port) {
    error_code ec;
    auto address = net::ip::make_address(host, ec);
    if (ec) return make_error(ErrorCode::kInvalidArgument, "admin: bad address");
    tcp::endpoint ep(address, port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return make_error(ErrorCode::kIo, "admin: cannot listen: " + ec.message());
    port_ = acceptor_.local_endpoint().port();
    return Status::ok();
  }

  void run() { net::co_spawn(acceptor_.get_executor(), accept_loop(), net::detached); }

  std::uint16_t port() const override { return port_; }

  void stop() override {
    net::post(acceptor_.get_executor(), [this] {
      error_code ec;
      acceptor_.close(ec);
    });
  }

 private:
  net::awaitable<void> accept_loop() {
    net::steady_timer backoff(acceptor_.get_executor());
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(net::make_strand(io_), kUse);
      if (ec) {
        if (!acceptor_.is_open()) co_return;
        // EMFILE and friends: pause instead of spinning (as the TLS listener does).
        backoff.expires_after(std::chrono::milliseconds(50));
        co_await backoff.async_wait(kUse);
        continue;
      }
      net::co_spawn(socket.get_executor(), serve(beast::tcp_stream(std::move(socket))),
                    net::detached);
    }
  }

  net::awaitable<void> serve(beast::tcp_stream stream) {
    beast::flat_buffer buffer;
    http::request_parser<http::empty_body> parser;
    parser.header_limit(kMaxHeader);
    stream.expires_after(kTimeout);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, kUse);
    (void)n;
    http::response<http::string_body> res;
    if (ec) {
      res.result(http::status::bad_request);
      res.body() = "bad request\n";
    } else {
      const auto& req = parser.get();
      AdminResponse r = handler_(std::string(req.method_string()), std::string(req.target()));
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

  net::io_context& io_;
  tcp::acceptor acceptor_;
  AdminHandler handler_;
  std::uint16_t port_ = 0;
};

}  // namespace

Result<std::unique_ptr<AdminServer>> AdminServer::start(boost::asio::io_context& io,
                                                        const std::string& host,
                                                        std::uint16_t port, AdminHandler handler) {
  auto impl = std::make_unique<AdminServerImpl>(io, std::move(handler));
  PARLEY_TRY(impl->listen(host, port));
  impl->run();
  return std::unique_ptr<AdminServer>(std::move(impl));
}

}  // namespace parley::transport
