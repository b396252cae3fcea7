#pragma once
// Tor pluggable transports in managed-proxy mode (pt-spec v1), without Tor: parley starts the
// PT binary itself (obfs4proxy by default; lyrebird, webtunnel or any binary that speaks the
// spec works the same), hands it its configuration in TOR_PT_* environment variables and reads
// its stdout (VERSION, CMETHOD / SMETHOD lines, ... DONE, or an *-ERROR line).
//
//   client: TOR_PT_CLIENT_TRANSPORTS=obfs4 -> "CMETHOD obfs4 socks5 127.0.0.1:PORT": parley
//           speaks SOCKS5 to that port with the server's transport arguments as the RFC 1929
//           username (commas become ';') and CONNECTs to the server's PT address.
//   server: TOR_PT_SERVER_TRANSPORTS=obfs4, TOR_PT_SERVER_BINDADDR=obfs4-HOST:PORT,
//           TOR_PT_ORPORT=parleyd's own TLS address (and TOR_PT_EXTENDED_SERVER_PORT,
//           TOR_PT_AUTH_COOKIE_FILE: parleyd's Extended ORPort, where the transport names each
//           client) -> "SMETHOD obfs4 HOST:PORT ARGS:cert=..."
//
// Ownership: a PtClient / PtServer owns its child process. The child gets a pipe on its stdin
// and TOR_PT_EXIT_ON_STDIN_CLOSE=1, so it exits when this process dies for any reason; the
// destructor also closes that pipe, sends SIGTERM, waits up to 2 s, then SIGKILLs and reaps it.
// The child's stderr is inherited (PT logs go where ours go). Not thread-safe; the accessors
// are plain reads of immutable state after start().
//
// Errors of start(): kInvalidArgument (bad options), kNotFound (binary missing), kUnavailable
// (no usable line within start_timeout), kIo (spawn or pipe failure, child exited early, or it
// reported CMETHOD-ERROR / SMETHOD-ERROR / ENV-ERROR / VERSION-ERROR, with its message).

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "base/result.h"
#include "transport/client.h"

namespace parley::transport {

struct PtClientOptions {
  std::string binary = "obfs4proxy";  // a path, or a name looked up in PATH
  std::string transport = "obfs4";
  std::string state_dir;  // TOR_PT_STATE_LOCATION; created if missing; required
  std::chrono::milliseconds start_timeout{10000};
};

class PtClient {
 public:
  static Result<std::unique_ptr<PtClient>> start(const PtClientOptions& options);
  ~PtClient();
  PtClient(const PtClient&) = delete;
  PtClient& operator=(const PtClient&) = delete;

  // The transport's local SOCKS5 endpoint, from its CMETHOD line.
  const std::string& socks_host() const { return socks_host_; }
  std::uint16_t socks_port() const { return socks_port_; }
  pid_t pid() const { return pid_; }

  // A kSocks5 route through this PT to a server whose transport arguments are `args`
  // ("cert=...,iat-mode=0" as in an SMETHOD ARGS: or a bridge line; commas become ';' in the
  // SOCKS username, the password is one NUL byte, or the rest when args exceed 255 bytes).
  // ClientOptions::host/port must then be the server's PT address (HOST:PORT of its SMETHOD).
  Route route(const std::string& args) const;

 private:
  PtClient() = default;
  std::string socks_host_;
  std::uint16_t socks_port_ = 0;
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
};

struct PtServerOptions {
  std::string binary = "obfs4proxy";
  std::string transport = "obfs4";
  std::string bind_addr;  // HOST:PORT the transport listens on (TOR_PT_SERVER_BINDADDR)
  std::string orport;     // HOST:PORT of parleyd's TLS listener (TOR_PT_ORPORT)
  // HOST:PORT of parleyd's Extended ORPort (TOR_PT_EXTENDED_SERVER_PORT) and its cookie file
  // (TOR_PT_AUTH_COOKIE_FILE): the transport then names each client there instead of
  // connecting to `orport` (ServerOptions::ext_orport_cookie_file). Empty: not used.
  std::string ext_orport;
  std::string auth_cookie_file;
  std::string state_dir;  // TOR_PT_STATE_LOCATION (holds the server's obfs4 keys); required
  std::chrono::milliseconds start_timeout{10000};
};

class PtServer {
 public:
  static Result<std::unique_ptr<PtServer>> start(const PtServerOptions& options);
  ~PtServer();
  PtServer(const PtServer&) = delete;
  PtServer& operator=(const PtServer&) = delete;

  // The address the transport listens on, from its SMETHOD line.
  const std::string& host() const { return host_; }
  std::uint16_t port() const { return port_; }
  // The transport's arguments for clients ("cert=...,iat-mode=0" from SMETHOD ARGS:; empty
  // when the transport has none).
  const std::string& args() const { return args_; }
  pid_t pid() const { return pid_; }

 private:
  PtServer() = default;
  std::string host_;
  std::uint16_t port_ = 0;
  std::string args_;
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
};

// Parses "HOST:PORT" or "[V6]:PORT" (port 1..65535). kInvalidArgument otherwise.
Result<std::pair<std::string, std::uint16_t>> parse_host_port(std::string_view text);

}  // namespace parley::transport
