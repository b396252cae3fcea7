#include "transport/internal/ws_upgrade.h"

#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/websocket/detail/hybi13.hpp>
#include <boost/beast/websocket/error.hpp>

#include <string_view>

namespace parley::transport::internal {

namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;

std::optional<http::response<http::string_body>> refused_upgrade(
    const http::request<http::empty_body>& req, const std::string& server_header) {
  using websocket::error;
  auto refuse = [&](error e, http::status status) {  // Beast's fields, in its order
    http::response<http::string_body> res{status, req.version()};
    if (status == http::status::upgrade_required) res.set(http::field::sec_websocket_version, "13");
    res.body() = boost::system::error_code(e).message();
    res.prepare_payload();
    res.set(http::field::server, server_header);
    return res;
  };
  auto bad = [&](error e) { return refuse(e, http::status::bad_request); };
  auto has_token = [&](http::field f, std::string_view token) {
    auto it = req.find(f);
    return it != req.end() && http::token_list{it->value()}.exists(token);
  };
  if (req.version() != 11) return bad(error::bad_http_version);
  if (req.method() != http::verb::get) return bad(error::bad_method);
  if (req.count(http::field::host) == 0) return bad(error::no_host);
  if (req.count(http::field::connection) == 0) return bad(error::no_connection);
  if (!has_token(http::field::connection, "upgrade")) return bad(error::no_connection_upgrade);
  if (req.count(http::field::upgrade) == 0) return bad(error::no_upgrade);
  if (!has_token(http::field::upgrade, "websocket")) return bad(error::no_upgrade_websocket);
  auto key = req.find(http::field::sec_websocket_key);
  if (key == req.end()) return bad(error::no_sec_key);
  if (key->value().size() > websocket::detail::sec_ws_key_type::static_capacity) {
    return bad(error::bad_sec_key);
  }
  auto version = req.find(http::field::sec_websocket_version);
  if (version == req.end()) return bad(error::no_sec_version);
  if (version->value() != "13") {
    return refuse(error::bad_sec_version, http::status::upgrade_required);
  }
  return std::nullopt;
}

}  // namespace parley::transport::internal
