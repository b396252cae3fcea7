#pragma once
// Internal to src/transport: the WebSocket upgrade as Beast's accept judges it, for the bridge,
// which answers the 101 itself. Pure function, thread-safe. Pulls in Beast's HTTP types only.

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <optional>
#include <string>

namespace parley::transport::internal {

// The answer Beast's WebSocket accept gives an upgrade request it refuses (its checks in its
// order, its status and body), or nullopt when it would accept. A bridge must refuse what the
// WebSocket server refuses, the same way, and never pass Beast's key encoder
// (make_sec_ws_accept) a key over 24 characters. fuzz_ws_upgrade checks the answers byte for
// byte against Beast's own accept.
std::optional<boost::beast::http::response<boost::beast::http::string_body>> refused_upgrade(
    const boost::beast::http::request<boost::beast::http::empty_body>& req,
    const std::string& server_header);

}  // namespace parley::transport::internal
