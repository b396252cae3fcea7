#pragma once
// Transports: the ways a profile knows to reach its server (docs/cli.md "transports",
// docs/reach.md "The client"). Each is one row of the profile's `transports` table: a kind, its
// parameters as canonical link text, the last result, and whether it won last time.
//
//   direct                              the server's own address (always there; can be disabled)
//   socks5://[USER:PASS@]HOST:PORT      a SOCKS5 proxy (RFC 1928, user/pass per RFC 1929)
//   http://HOST:PORT                    an HTTP CONNECT proxy
//   parley://BHOST:BPORT/?v=1&bridge=1&pin=...&path=...[&sni=...]   a parleyd bridge
//   obfs4 HOST:PORT cert=... iat-mode=N a Tor pluggable transport (PT v1 managed client; the
//                                       transport name is the first word, obfs4 by default)
//
// Whatever the route, TLS runs end to end with parleyd and is pinned with the server's pin.
// Parsing is pure; TransportPool starts PT binaries (lazily, once per process) and is the only
// part that touches processes. Thread-safety: parse/format functions are pure; TransportPool is
// thread-safe (the race prepares candidates on several threads).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "base/result.h"
#include "transport/client.h"
#include "transport/pt.h"
#include "wire/invite.h"

namespace parley::client {

enum class TransportKind { kDirect, kSocks5, kHttpConnect, kBridge, kPluggable };

// "direct", "socks5", "http", "bridge", "pt": the names stored in the profile and shown by
// `parley transports`.
std::string_view transport_kind_name(TransportKind kind);
std::optional<TransportKind> transport_kind_from_name(std::string_view name);

// A parsed transport link.
struct TransportLink {
  TransportKind kind = TransportKind::kDirect;
  std::string text;   // canonical form (what the profile stores and lists)
  std::string host;   // proxy, bridge, or PT server address
  std::uint16_t port = 0;
  std::string username, password;  // socks5 (may be empty)
  std::string pt_name;             // pt: "obfs4", ...
  std::string pt_args;             // pt: "cert=...,iat-mode=0" (comma-separated, as in SMETHOD)
  Bytes bridge_pin;                // bridge: the pin of the bridge's own certificate
  std::string bridge_path;         // bridge: its secret path
  std::string bridge_sni;          // bridge: the SNI to send it (may be empty)
};

// Parses one link (forms above; surrounding spaces ignored). kInvalidArgument with a message
// that says what is wrong; nothing else.
Result<TransportLink> parse_transport_link(std::string_view link);

// The transport that a server invite's obfs4 parameters describe (`&obfs4=HOST:PORT&obfs4args=
// cert=...,iat-mode=0`) as a bridge line "obfs4 HOST:PORT cert=... iat-mode=0"; none when the
// invite has none (or they do not make a valid bridge line).
std::optional<std::string> obfs4_link_of(const wire::Invite& invite);

// One stored transport.
// How to reach the server of `server` directly: address, secret path, pin, and the TLS server
// name. The name sent is the invite's `sni` if it has one, else the server's name when that is a
// DNS name (what any HTTPS client to that site would send; a ClientHello without a name is
// itself unusual), else none. A censor that blocks the name blocks this path, and the race moves
// on to the profile's other transports.
transport::ClientOptions server_options(const wire::Invite& server);

struct TransportRecord {
  std::int64_t id = 0;
  TransportKind kind = TransportKind::kDirect;
  std::string link;       // canonical link; empty for direct
  std::string pt_binary;  // pt: the binary to start (empty: obfs4proxy)
  bool enabled = true;
  bool preferred = false;  // the last winner of a race
  std::string last_result;  // "" never tried, "ok", or the error of the last attempt
  std::int64_t last_attempt_ms = 0;
  std::int64_t last_success_ms = 0;
};

// Starts PT client binaries on demand and keeps them (one per binary and transport name) until
// it is destroyed. Thread-safe: start-ups are serialized under a mutex.
class TransportPool {
 public:
  // `state_dir`: where PT binaries keep their state (TOR_PT_STATE_LOCATION), one subdirectory
  // each.
  explicit TransportPool(std::filesystem::path state_dir) : state_dir_(std::move(state_dir)) {}

  // The client options to reach `server` over `record` (`server` holds the direct host, port,
  // pin and path; connect_timeout and idle_timeout are taken from it). May block while a PT
  // binary starts. kInvalidArgument for a record whose link no longer parses; start() errors of
  // the PT.
  Result<transport::ClientOptions> options_for(const TransportRecord& record,
                                               const transport::ClientOptions& server);

 private:
  Result<transport::Route> pt_route(const std::string& binary, const std::string& name,
                                    const std::string& args);

  std::filesystem::path state_dir_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<transport::PtClient>> pts_;  // guarded by mu_
};

}  // namespace parley::client
