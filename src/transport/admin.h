#pragma once
// The admin listener: plain HTTP/1.1 for operators (GET /metrics, POST /invite, GET /health).
// Bind it to loopback or a private network only: it has no TLS and no authentication. Only
// peers in its allow-list (loopback by default) are served; others are closed unanswered.
// Requests are tiny and bounded (8 KB header, no body); each connection serves one request, and
// at most kMaxAdminConnections are open at once (more are closed at once).
// A web page the operator visits must not reach it: a request whose Host is not an IP address
// or "localhost" (DNS rebinding), or that carries an Origin (a browser's cross-site request),
// gets 403 and never reaches the handler.

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"

namespace parley::transport {

struct AdminResponse {
  unsigned status = 200;
  std::string content_type = "text/plain";
  std::string body;
};
// Called on an io thread for each request; must be thread-safe. It answers by calling `reply`
// once, from any thread, at once or later (a store write): the io thread is not held. A
// request not answered within 10 s gets 503.
using AdminReply = std::function<void(AdminResponse)>;
using AdminHandler =
    std::function<void(const std::string& method, const std::string& target, AdminReply reply)>;

inline constexpr int kMaxAdminConnections = 64;

class AdminServer {
 public:
  virtual ~AdminServer() = default;
  // `allowed`: the peers served (IP addresses or networks, "10.0.0.0/8"); empty: loopback
  // (127.0.0.0/8 and ::1). kInvalidArgument for an entry that is neither.
  static Result<std::unique_ptr<AdminServer>> start(boost::asio::io_context& io,
                                                    const std::string& host, std::uint16_t port,
                                                    AdminHandler handler,
                                                    const std::vector<std::string>& allowed = {});
  virtual std::uint16_t port() const = 0;
  virtual void stop() = 0;
};

}  // namespace parley::transport
