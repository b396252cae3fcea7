#pragma once
// The links parleyd prints and the admin listener hands out (docs/protocol.md, "Invite
// links"): what a client needs to reach this server or bridge, and invitation tokens.

#include <cstdint>
#include <functional>
#include <string>

#include "base/clock.h"
#include "base/result.h"
#include "base/rng.h"
#include "crypto/primitives.h"
#include "server/config.h"
#include "store/store.h"
#include "transport/pt.h"
#include "wire/invite.h"

namespace parley::parleyd {

// How long a minted invitation token is valid.
inline constexpr std::int64_t kInviteLifetimeMs = 7ll * 24 * 3600 * 1000;

// The link to this listener (bound to `port`): public host and port, name, certificate pin,
// WebSocket path and, with obfs4proxy in front (`pt` not null), its parameters. No token.
wire::Invite listener_link(const server::ServerConfig& cfg, const crypto::Sha256Digest& pin,
                           std::uint16_t port, const transport::PtServer* pt);

// Stores a new invitation token, valid kInviteLifetimeMs from `clock`'s now; `done` gets it
// once committed (on the store's thread).
void mint_invite(store::Store& store, Rng& rng, const Clock& clock,
                 std::function<void(Result<std::string>)> done);

}  // namespace parley::parleyd
