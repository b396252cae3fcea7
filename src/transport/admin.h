#pragma once
// The admin listener: plain HTTP/1.1 for operators (GET /metrics, POST /invite, GET /health).
// Bind it to loopback or a private network only: it has no TLS and no authentication.
// Requests are tiny and bounded (8 KB header, no body); each connection serves one request.

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/result.h"

namespace parley::transport {

struct AdminResponse {
  unsigned status = 200;
  std::string content_type = "text/plain";
  std::string body;
};
// Called on an io thread for each request; must be thread-safe.
using AdminHandler =
    std::function<AdminResponse(const std::string& method, const std::string& target)>;

class AdminServer {
 public:
  virtual ~AdminServer() = default;
  static Result<std::unique_ptr<AdminServer>> start(boost::asio::io_context& io,
                                                    const std::string& host, std::uint16_t port,
                                                    AdminHandler handler);
  virtual std::uint16_t port() const = 0;
  virtual void stop() = 0;
};

}  // namespace parley::transport
