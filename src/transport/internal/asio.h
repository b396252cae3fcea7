#pragma once
// Internal to src/transport: the Boost.Asio/Beast includes and aliases shared by the
// transport's translation units, and small helpers around them. Never include this from a
// public header (it pulls in Beast, which is expensive to compile).

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "transport/internal/http_util.h"

namespace parley::transport::internal {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using error_code = boost::system::error_code;

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// `co_await op(..., kUse)` yields a tuple (error_code, ...) instead of throwing.
inline constexpr auto kUse = net::as_tuple(net::use_awaitable);

// A server TLS context: TLS 1.2 and 1.3 only, forward-secret AEAD suites, no compression or
// renegotiation, ALPN "http/1.1". kInvalidArgument when the certificate or key does not load
// or do not match.
Result<std::unique_ptr<ssl::context>> make_server_tls_context(const std::string& cert_pem,
                                                              const std::string& key_pem);

}  // namespace parley::transport::internal
