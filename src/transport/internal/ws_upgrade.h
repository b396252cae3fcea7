#pragma once
// Internal to src/transport: a WebSocket upgrade answered as parleyd's WebSocket server answers
// it (Beast's async_accept with its Server header and permessage-deflate off), for the bridge,
// which answers the upgrade itself and must not be told apart from a server by it. Pure
// function, thread-safe. Pulls in Beast's HTTP types only.

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>

#include <string>

namespace parley::transport::internal {

struct UpgradeAnswer {
  // What Beast writes: the interim "100 Continue" when the request expects one (else empty),
  // then the refusal (400; 426 for another WebSocket version) or the 101. parleyd's WebSocket
  // server sends them in a TLS record each, and so must a bridge.
  std::string interim;
  std::string response;
  bool accepted = false;
};

// Beast's checks in its order, its statuses, bodies and header fields in its order. A key over
// 24 characters is refused before Beast's key encoder could be passed it. fuzz_ws_upgrade
// checks the bytes against Beast's own async_accept.
UpgradeAnswer answer_upgrade(const boost::beast::http::request<boost::beast::http::empty_body>& req,
                             const std::string& server_header);

}  // namespace parley::transport::internal
