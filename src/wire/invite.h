#pragma once
// Invite links: everything a client needs to reach a server (docs/protocol.md, "Invite links").
//
//   parley://HOST:PORT/?v=1&name=SERVER&pin=PIN&path=PATH[&invite=TOKEN]
//            [&obfs4=OHOST:OPORT&obfs4args=ARGS]
//   parley://BHOST:BPORT/?v=1&bridge=1&pin=BPIN&path=BPATH[&sni=NAME][&obfs4=...&obfs4args=...]
//
// HOST is a DNS name, an IPv4 address or a bracketed IPv6 address; PIN is the SHA-256 of the
// server's TLS certificate (DER) as 64 hex characters; PATH the secret WebSocket path,
// percent-encoded; SERVER the server part of addresses; TOKEN a registration token when
// registration is by invitation. obfs4 / obfs4args: the server's Tor pluggable-transport
// endpoint (obfs4proxy in server mode in front of it) and its arguments as printed in the
// transport's SMETHOD line ("cert=...,iat-mode=0"), percent-encoded. A bridge link
// (bridge=1) names a parleyd bridge instead of a server: HOST, PORT, PIN and PATH are the
// bridge's, name is not needed, and sni is the TLS server name to send to it. Unknown parameters are ignored (forward compatibility);
// missing or malformed required ones are refused with kInvalidArgument naming the problem.

#include <cstdint>
#include <string>

#include "base/bytes.h"
#include "base/result.h"

namespace parley::wire {

struct Invite {
  std::string host;
  std::uint16_t port = 0;
  std::string server_name;
  Bytes pin_sha256;  // 32 bytes
  std::string ws_path;
  std::string invite_token;  // may be empty
  // The server's (or bridge's) obfs4 endpoint: all empty / 0 when it runs none.
  std::string obfs4_host;
  std::uint16_t obfs4_port = 0;
  std::string obfs4_args;  // "cert=...,iat-mode=0"
  // A bridge link: host, port, pin_sha256 and ws_path are the bridge's; server_name may be
  // empty. sni is the TLS server name to send to the bridge (empty: none).
  bool is_bridge = false;
  std::string sni;
};

std::string format_invite(const Invite& invite);
Result<Invite> parse_invite(std::string_view link);

}  // namespace parley::wire
