#include "links.h"

#include <utility>

#include "data_dir.h"

namespace parley::parleyd {

wire::Invite listener_link(const server::ServerConfig& cfg, const crypto::Sha256Digest& pin,
                           std::uint16_t port, const transport::PtServer* pt) {
  wire::Invite link;
  link.host = cfg.public_host;
  link.port = cfg.public_port ? cfg.public_port : port;
  link.server_name = cfg.server_name;
  link.pin_sha256 = Bytes(pin.begin(), pin.end());
  link.ws_path = cfg.ws_path;
  // obfs4's parameters from the running PT (its public address when it listens on every
  // interface).
  if (pt != nullptr && !pt->args().empty()) {
    const bool any = pt->host() == "0.0.0.0" || pt->host() == "::";
    link.obfs4_host = any ? cfg.public_host : pt->host();
    link.obfs4_port = pt->port();
    link.obfs4_args = pt->args();
  }
  return link;
}

void mint_invite(store::Store& store, Rng& rng, const Clock& clock,
                 std::function<void(Result<std::string>)> done) {
  std::string token = random_token(rng, 24);
  store.create_invite(token, clock.now_ms() + kInviteLifetimeMs,
                      [token, done = std::move(done)](Status s) {
                        if (!s.is_ok()) return done(std::move(s));
                        done(token);
                      });
}

}  // namespace parley::parleyd
