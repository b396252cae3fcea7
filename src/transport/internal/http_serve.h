#pragma once
// Internal to src/transport: the plain-HTTP side of a connection (the static site and the
// attachment endpoints). Coroutines running on the connection's strand; they never throw on
// peer input and report whether the connection may be kept alive.

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <string_view>

#include "transport/internal/asio.h"
#include "transport/internal/tls_socket.h"
#include "transport/internal/upload_writers.h"
#include "transport/server.h"
#include "transport/static_site.h"

namespace parley::transport::internal {

struct HttpContext {
  const ServerOptions& options;
  const StaticSite& site;
  HttpFiles* files;  // may be null: no attachments
  // The server's count of max_connections' slots: a file held open through a transfer is a
  // second descriptor, and takes a second slot (as a bridge's upstream does).
  std::atomic<std::size_t>& slots;
  UploadWriters& writers;                    // which PUT may write each attachment
  std::atomic<std::size_t>& file_transfers;  // files open for transfers (Server::file_transfers)
};

// Takes one of `max` slots; false when none is free.
inline bool take_slot(std::atomic<std::size_t>& slots, std::size_t max) {
  std::size_t cur = slots.load();
  do {
    if (cur >= max) return false;
  } while (!slots.compare_exchange_weak(cur, cur + 1));
  return true;
}

using HeaderParser = http::request_parser<http::empty_body>;

// The deadline of each HTTP read and write (the first request's read has handshake_timeout):
// idle_timeout, or 120 s when that is zero (WebSockets then never idle out, but an HTTP
// connection never waits for ever).
inline std::chrono::seconds http_idle(const ServerOptions& opt) {
  return opt.idle_timeout.count() > 0 ? opt.idle_timeout : std::chrono::seconds(120);
}

// A request the peer got wrong (Beast's parse errors), as opposed to a connection that ended
// or timed out: the former gets 400, the latter nothing.
inline bool is_http_parse_error(const boost::system::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

// Serves the static site for a request whose header `hp` has been read (any body is read and
// discarded, up to a small limit). Returns true when the connection may serve another request.
net::awaitable<bool> serve_site(TlsSocket& stream, beast::flat_buffer& buffer, HeaderParser& hp,
                                const HttpContext& cx);

// Serves PUT/GET/HEAD of attachment `id` (the path below "<ws_path>/att/").
net::awaitable<bool> serve_attachment(TlsSocket& stream, beast::flat_buffer& buffer,
                                      HeaderParser& hp, std::string_view id,
                                      const HttpContext& cx);

// Writes a site page (error pages included) as the answer to a request.
net::awaitable<bool> write_site_response(TlsSocket& stream, const SiteResponse& page,
                                         unsigned version, bool keep_alive, bool head,
                                         const HttpContext& cx);

}  // namespace parley::transport::internal
