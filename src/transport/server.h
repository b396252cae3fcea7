#pragma once
// The TLS listener of parleyd: one port that looks like an ordinary HTTPS website.
//
//   GET /... (anything not below the secret prefix)  -> the static site (site_dir or built-in)
//   GET  <ws_path> with Upgrade: websocket           -> a WsConnection handed to the WsHandler
//   PUT/GET/HEAD <ws_path>/att/<id>                  -> attachment upload/download (HttpFiles)
//   anything else                                    -> the static site's 404 page
//
// Threading: Server accepts on the io_context it is given (any number of threads). Each
// connection runs on its own strand there, or on one of ServerOptions::workers (an IoPool);
// WsHandler callbacks for one connection never run concurrently.
// Every limit is enforced here: handshake and idle timeouts, pings, frame and body size caps,
// a bounded write queue per connection, a cap on connections and one on the connections from
// one address that are still in their TLS handshake.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace parley::transport {

// A server-side WebSocket connection. Thread-safe: send() and close() may be called from any
// thread (from another thread they post to the connection's executor; send() on the
// connection's own thread queues at once unless a posted send is still ahead of it).
class WsConnection {
 public:
  virtual ~WsConnection() = default;
  // Queues one binary message. Returns false and drops the message when the connection is
  // closing or its write queue is above the configured byte limit (the slow reader is then
  // closed with reason "slow reader"): a slow peer never grows server memory without bound.
  // Messages leave in the order of the send() calls.
  virtual bool send(std::shared_ptr<const std::string> message) = 0;
  // Sends a close frame with `reason` (a short, non-secret string) and shuts down.
  virtual void close(std::string_view reason) = 0;
  virtual const std::string& remote_ip() const = 0;
  // Bytes queued and not yet written.
  virtual std::size_t queued_bytes() const = 0;
  // Where the connection's handlers run (its strand, or its IoPool context): work posted here
  // never runs concurrently with the WsHandler's callbacks.
  virtual const boost::asio::any_io_executor& executor() const = 0;
};

// Implemented by the server logic, one instance per WebSocket connection.
class WsHandler {
 public:
  virtual ~WsHandler() = default;
  // Called once, first, on the connection's strand. `conn` stays valid until on_close returns;
  // keep a weak_ptr to send later from other threads.
  virtual void on_open(std::shared_ptr<WsConnection> conn) = 0;
  // One binary message (at most ServerOptions::max_message_size bytes). Text messages never
  // reach the handler: the transport closes the connection with "binary frames only".
  virtual void on_message(std::string_view message) = 0;
  // Called once, last.
  virtual void on_close() = 0;
};

using WsHandlerFactory = std::function<std::unique_ptr<WsHandler>(const std::string& remote_ip)>;

// Attachment storage seen by the HTTP layer. Each call completes through `done`, exactly once,
// on any thread, possibly before the call returns; the request resumes on its connection's
// thread, so an io thread never waits for the store. Implementations must be thread-safe.
// The HttpFiles object passed to Server::start must outlive the io_context's handlers, and the
// answers it still owes (parleyd keeps it until the store has closed).
class HttpFiles {
 public:
  virtual ~HttpFiles() = default;
  template <typename T>
  using Done = std::function<void(T)>;
  struct Upload {
    std::string path;        // file to write
    std::uint64_t size = 0;  // declared total size
    std::uint64_t have = 0;  // bytes already stored (resume point)
  };
  // Authorizes an upload of attachment `id` with bearer `token`. kNotFound / kPermissionDenied.
  virtual void begin_upload(std::string id, std::string token, Done<Result<Upload>> done) = 0;
  // Records that the file now holds `have` bytes; answers with the bytes recorded after, which
  // may be more (another connection went further). Complete when that is the size.
  virtual void finish_upload(std::string id, std::uint64_t have,
                             Done<Result<std::uint64_t>> done) = 0;
  struct Download {
    std::string path;
    std::uint64_t size = 0;
  };
  // A complete attachment; kNotFound otherwise (also when expired).
  virtual void open_download(std::string id, Done<Result<Download>> done) = 0;
};

struct ServerOptions {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 0;     // 0: pick a free port (see Server::port())
  std::string cert_pem;              // PEM certificate chain
  std::string key_pem;               // PEM private key
  // TLS 1.3 session tickets (internal/ticket_keys.h, docs/protocol.md "TLS session
  // resumption"). Their keys are kept in ticket_key_file (mode 0600), so that clients resume
  // across a restart; empty: in memory only. Server::rotate_ticket_keys() replaces them every
  // ticket_key_rotation. tls_tickets false: no tickets, so no client resumes.
  bool tls_tickets = true;
  std::string ticket_key_file;
  std::chrono::seconds ticket_key_rotation{std::chrono::hours(12)};
  std::string ws_path;               // secret path, e.g. "/k3J9.../ws"; attachments below it
  std::string site_dir;              // static site files; empty: the built-in site
  std::string site_seed;             // what the built-in site is made from (parleyd: DIR/site_seed)
  std::size_t max_message_size = 256 * 1024;
  std::size_t max_http_body = 64 * 1024 * 1024;  // one attachment PUT request
  std::size_t write_queue_limit = 1024 * 1024;   // bytes queued per connection
  std::size_t max_connections = 19000;           // descriptors: a bridged connection takes two
  // Connections from one client block (client_address.h: an IPv4 address, an IPv6 /64) that have
  // not finished their TLS handshake (each may take handshake_timeout); one more is closed at
  // once, like one over max_connections. 0: no cap.
  std::size_t max_handshakes_per_ip = 64;
  // Connections open at once from one client block, in any phase; one more is closed at once,
  // before any TLS, so that one address cannot hold every slot with idle connections. 0: no cap.
  std::size_t max_connections_per_ip = 1000;
  // PROXY protocol v1 or v2 (docs/protocol.md "PROXY protocol"): connections from these IP
  // addresses (a parleyd bridge with bridge_proxy_header, a load balancer) must open with a PROXY
  // header of either version within handshake_timeout, and the client it names is the
  // connection's address from then on: for the per-IP caps, remote_ip() and so every per-IP
  // limit above the transport. A
  // connection from one of them without a valid header is closed (Refusals::proxy_header).
  // From any other address no header is read: its first bytes are TLS. Entries are addresses or
  // networks ("10.0.0.0/8", client_address.h's AddressRange); Server::start refuses any other
  // (kInvalidArgument).
  std::vector<std::string> proxy_from;
  // Tor's Extended ORPort (internal/ext_orport.h, docs/operations.md "obfs4"), for a pluggable
  // transport in front of this server (obfs4proxy: TOR_PT_EXTENDED_SERVER_PORT and
  // TOR_PT_AUTH_COOKIE_FILE). Non-empty: Server::start writes a fresh cookie file here (mode
  // 0600) and listens on 127.0.0.1 (Server::ext_orport_port()) too. A connection there proves it
  // read the cookie and names its client (USERADDR) within handshake_timeout; the client's TLS
  // follows as on the main listener, and the connection is the named client (for
  // the per-IP caps and remote_ip()). One that fails is closed (Refusals::ext_orport).
  std::string ext_orport_cookie_file;
  // How long an attachment request waits for an HttpFiles answer before it is answered 503.
  std::chrono::milliseconds files_timeout{10000};
  std::chrono::seconds handshake_timeout{10};
  // A WebSocket that reads nothing at all (pongs count) this long is closed; 0: never. Each HTTP
  // read and write (but the first request's read) has this deadline, or 120 s when it is 0.
  std::chrono::seconds idle_timeout{120};
  std::chrono::seconds ping_interval{30};  // a WebSocket silent this long is pinged, and
                                           // again each interval while silent; 0: none
  std::string server_header;  // "Server" response header; empty: none (the WebSocket 101
                              // response then carries an empty one)
  // Bridge mode (parleyd --bridge-to, docs/operations.md): a request on ws_path with WebSocket
  // upgrade headers gets "101 Switching Protocols", and from then on the decrypted byte stream
  // is spliced both ways to a fresh TCP connection to bridge_to_host:bridge_to_port (16 KB
  // buffered each way, idle_timeout per read and write, both sides closed together, counted twice
  // in max_connections from the upstream's connect: two descriptors). The WsHandlerFactory is
  // unused; everything else (the website, its headers and error pages) is answered exactly as in
  // normal mode. Empty host: normal mode.
  std::string bridge_to_host;
  std::uint16_t bridge_to_port = 0;
  // Bridge mode: each upstream connection opens with a PROXY v2 header naming the client (for
  // an upstream parleyd whose proxy_from lists this bridge's address).
  bool bridge_proxy_header = false;
  // io_contexts each run by exactly one thread (an IoPool's): connections are spread over them
  // round-robin and stay on theirs, without a strand. Empty: each connection gets a strand on
  // the io_context given to Server::start, which any number of threads may run.
  std::vector<boost::asio::io_context*> workers;
};

class Server {
 public:
  virtual ~Server() = default;
  // Binds and starts accepting. Errors: kIo (bind failed), kInvalidArgument (bad TLS material).
  static Result<std::unique_ptr<Server>> start(boost::asio::io_context& io, ServerOptions options,
                                               WsHandlerFactory ws, HttpFiles* files);
  virtual std::uint16_t port() const = 0;
  // The Extended ORPort's port on 127.0.0.1 (ServerOptions::ext_orport_cookie_file); 0: none.
  virtual std::uint16_t ext_orport_port() const = 0;
  // Stops accepting new connections (graceful drain); existing ones continue.
  virtual void stop_accepting() = 0;
  // Closes every connection with `reason`.
  virtual void close_all(std::string_view reason) = 0;
  virtual std::size_t connection_count() const = 0;
  // Files being sent or received over HTTP (site pages, attachment downloads and uploads).
  virtual std::size_t file_transfers() const = 0;
  // TLS handshakes since the start: full ones, resumed ones (a client's session ticket) and
  // failed ones (bad TLS, a timeout, a peer that went away).
  struct TlsHandshakes {
    std::uint64_t full = 0;
    std::uint64_t resumed = 0;
    std::uint64_t failed = 0;
  };
  virtual TlsHandshakes tls_handshakes() const = 0;
  // WebSocket keep-alive since the start: pings sent to silent peers (ping_interval), and
  // connections cut at the idle timeout.
  struct KeepAliveCounts {
    std::uint64_t pings = 0;
    std::uint64_t idle_closes = 0;
  };
  virtual KeepAliveCounts keepalive_counts() const = 0;
  // Connections closed before their TLS handshake since the start: no max_connections slot
  // free, too many of the block's connections already in their TLS handshake
  // (max_handshakes_per_ip) or open (max_connections_per_ip), or a connection from a
  // proxy_from address without a valid PROXY header.
  struct Refusals {
    std::uint64_t max_connections = 0;
    std::uint64_t handshakes_per_ip = 0;
    std::uint64_t proxy_header = 0;
    std::uint64_t ext_orport = 0;  // an Extended ORPort connection that failed its handshake
    std::uint64_t connections_per_ip = 0;
  };
  virtual Refusals refusals() const = 0;
  // Connections since the start whose client a relay named: by a PROXY header (a LOCAL one
  // not counted), or on the Extended ORPort (obfs4).
  struct Relayed {
    std::uint64_t proxy_header = 0;
    std::uint64_t ext_orport = 0;
  };
  virtual Relayed relayed() const = 0;
  // Begins a new ticket key when the newest has sealed tickets for ticket_key_rotation (the
  // caller runs this now and then; parleyd from its housekeeping). Returns whether it did; kIo
  // when ticket_key_file could not be written (the new key is used all the same). False when
  // tls_tickets is off.
  virtual Result<bool> rotate_ticket_keys() = 0;
};

}  // namespace parley::transport
