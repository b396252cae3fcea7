// The bridge's answer to a WebSocket upgrade (transport/internal/ws_upgrade.h) against what
// parleyd's WebSocket server writes (Beast's async_accept with the server's decorator and
// permessage-deflate off), on any request Beast's HTTP parser takes from the input.
//
// Invariants: nothing crashes; answer_upgrade() accepts exactly what async_accept accepts and
// its bytes are the very bytes async_accept writes (an interim 100 Continue included), so a
// prober cannot tell a bridge from a server by its upgrade; what it accepts has a key Beast's
// encoder takes (at most 24 characters).
#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "transport/internal/ws_upgrade.h"

namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;

namespace {

const std::string kServer = "parley-fuzz";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  http::request_parser<http::empty_body> parser;
  parser.eager(true);
  boost::beast::error_code ec;
  const std::size_t used = parser.put(boost::asio::buffer(data, size), ec);
  if (ec || !parser.is_done() || used == 0) return 0;
  const http::request<http::empty_body>& req = parser.get();

  const auto answer = parley::transport::internal::answer_upgrade(req, kServer);

  boost::asio::io_context io;
  boost::beast::test::stream server(io), client(io);
  server.connect(client);
  websocket::stream<boost::beast::test::stream&> ws(server);
  ws.set_option(websocket::permessage_deflate{});
  ws.set_option(websocket::stream_base::decorator(
      [](websocket::response_type& res) { res.set(http::field::server, kServer); }));
  bool done = false;
  boost::beast::error_code accepted;
  ws.async_accept(req, [&](boost::beast::error_code e) {
    accepted = e;
    done = true;
  });
  io.run();
  PARLEY_FUZZ_CHECK(done);
  const std::string written = client.str();

  PARLEY_FUZZ_CHECK(answer.accepted == !accepted.failed());
  const std::string bytes = answer.interim + answer.response;
  if (bytes != written) {
    std::fprintf(stderr, "answer_upgrade wrote:\n%s\nasync_accept wrote:\n%s\n", bytes.c_str(),
                 written.c_str());
  }
  PARLEY_FUZZ_CHECK(bytes == written);
  PARLEY_FUZZ_CHECK(answer.interim.empty() ||
                    std::string_view(answer.interim).ends_with(" 100 Continue\r\n\r\n"));
  if (answer.accepted) {
    PARLEY_FUZZ_CHECK(req[http::field::sec_websocket_key].size() <= 24);
    PARLEY_FUZZ_CHECK(written.find("HTTP/1.1 101 ") != std::string::npos);
  }
  return 0;
}
