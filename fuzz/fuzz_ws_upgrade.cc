// The bridge's judgement of a WebSocket upgrade (transport/internal/ws_upgrade.h) against
// Beast's own accept, on any request Beast's HTTP parser takes from the input.
//
// Invariants: nothing crashes; refused_upgrade() refuses exactly the requests Beast's accept
// refuses, with the very bytes Beast writes (same Server header); what it lets through has a
// key Beast's encoder takes (at most 24 characters).
#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <cstdint>
#include <sstream>
#include <string>

#include "fuzz_support.h"
#include "transport/internal/ws_upgrade.h"

namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;

namespace {

constexpr const char* kServer = "parley-fuzz";

std::string serialize(const http::response<http::string_body>& res) {
  std::ostringstream out;
  out << res;
  return out.str();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  http::request_parser<http::empty_body> parser;
  parser.eager(true);
  boost::beast::error_code ec;
  const std::size_t used = parser.put(boost::asio::buffer(data, size), ec);
  if (ec || !parser.is_done() || used == 0) return 0;
  const http::request<http::empty_body>& req = parser.get();

  const auto refusal = parley::transport::internal::refused_upgrade(req, kServer);

  boost::asio::io_context io;
  boost::beast::test::stream server(io), client(io);
  server.connect(client);
  websocket::stream<boost::beast::test::stream&> ws(server);
  ws.set_option(websocket::stream_base::decorator(
      [](websocket::response_type& res) { res.set(http::field::server, kServer); }));
  boost::beast::error_code accepted;
  ws.accept(req, accepted);
  const std::string written = client.str();

  if (refusal) {
    PARLEY_FUZZ_CHECK(accepted.failed());
    PARLEY_FUZZ_CHECK(serialize(*refusal) == written);
  } else {
    PARLEY_FUZZ_CHECK(!accepted.failed());
    PARLEY_FUZZ_CHECK(req[http::field::sec_websocket_key].size() <= 24);
    PARLEY_FUZZ_CHECK(written.rfind("HTTP/1.1 101 ", 0) == 0);
  }
  return 0;
}
