#include "transport/internal/ws_upgrade.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/detail/hybi13.hpp>
#include <boost/beast/websocket/error.hpp>

#include <sstream>
#include <string_view>

namespace parley::transport::internal {

namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;

namespace {

template <typename Message>
void append(std::string& out, const Message& m) {
  std::ostringstream s;
  s << m;
  out += s.str();
}

// The final answer, as Beast's build_response makes it (its field order; the Server header is
// the decorator's, set last), and whether it accepts.
std::pair<http::response<http::string_body>, bool> final_answer(
    const http::request<http::empty_body>& req, const std::string& server_header) {
  using websocket::error;
  auto refuse = [&](error e, http::status status) {
    http::response<http::string_body> res{status, req.version()};
    if (status == http::status::upgrade_required) res.set(http::field::sec_websocket_version, "13");
    res.body() = boost::system::error_code(e).message();
    res.prepare_payload();
    res.set(http::field::server, server_header);
    return std::pair{std::move(res), false};
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
  http::response<http::string_body> res{http::status::switching_protocols, req.version()};
  res.set(http::field::upgrade, "websocket");
  res.set(http::field::connection, "upgrade");
  websocket::detail::sec_ws_accept_type accept;
  websocket::detail::make_sec_ws_accept(accept, key->value());
  res.set(http::field::sec_websocket_accept, std::string_view(accept.data(), accept.size()));
  res.set(http::field::server, server_header);
  return std::pair{std::move(res), true};
}

}  // namespace

UpgradeAnswer answer_upgrade(const http::request<http::empty_body>& req,
                             const std::string& server_header) {
  auto [res, accepted] = final_answer(req, server_header);
  UpgradeAnswer answer;
  answer.accepted = accepted;
  auto expect = req.find(http::field::expect);
  if (expect != req.end() && boost::beast::iequals(expect->value(), "100-continue")) {
    // Beast 1.81's async_accept means to send Server and its payload fields here, but writes the
    // interim response from a moved-from message: the status line alone is what goes out
    // (TransportTest.ABridgeRefusesTheUpgradesTheWebSocketServerRefuses and fuzz_ws_upgrade
    // compare with the Beast this is built with).
    http::response<http::empty_body> interim{http::status::continue_, res.version()};
    append(answer.interim, interim);
  }
  append(answer.response, res);
  return answer;
}

}  // namespace parley::transport::internal
