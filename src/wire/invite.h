#pragma once
// Invite links: everything a client needs to reach a server (docs/protocol.md, "Invite links").
//
//   parley://HOST:PORT/?v=1&name=SERVER&pin=PIN&path=PATH[&invite=TOKEN]
//
// HOST is a DNS name, an IPv4 address or a bracketed IPv6 address; PIN is the SHA-256 of the
// server's TLS certificate (DER) as 64 hex characters; PATH the secret WebSocket path,
// percent-encoded; SERVER the server part of addresses; TOKEN a registration token when
// registration is by invitation. Unknown parameters are ignored (forward compatibility);
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
};

std::string format_invite(const Invite& invite);
Result<Invite> parse_invite(std::string_view link);

}  // namespace parley::wire
