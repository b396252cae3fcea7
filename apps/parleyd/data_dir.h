#pragma once
// What parleyd keeps in its data directory besides the database: the secret WebSocket path
// (DIR/ws_path), the seed of the built-in website (DIR/site_seed), the TLS identity (DIR/tls,
// unless --cert and --key are given), and the clock floor read from what DIR holds.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "base/clock.h"
#include "base/rng.h"
#include "crypto/primitives.h"
#include "crypto/x509.h"
#include "server/config.h"

namespace parley::parleyd {

// `bytes` characters of base64url's alphabet, 6 random bits each (no padding), so paths and
// tokens stay URL-safe.
std::string random_token(Rng& rng, std::size_t bytes);

// Creates DIR (0700) and its secrets on first start and loads them (sets cfg.ws_path, fills
// `tls`); returns the certificate's pin. Errors are printed; nullopt means "exit 1".
std::optional<crypto::Sha256Digest> prepare_identity(server::ServerConfig& cfg, Rng& rng,
                                                     crypto::TlsIdentity& tls);

// parleyd's clock floor: the day it was built, or, when the system clock reads earlier than
// that (it has not been set), the database's last write if later: what was stored before a
// restart on such a machine is then not dated after what is stored since. (A clock that reads
// past the build day is trusted: a database written under a clock set ahead must not drag the
// floor into the future.) Read before the store opens the database; see also with_expiry_clock.
std::int64_t clock_floor_ms(const Clock& system, const std::string& data_dir);

// The floor raised to the last expiry's reading kept in the database, when the system clock
// reads earlier than the build day: a machine whose clock was never set wrote its files with
// 1970 times, but its expiry clock ran on from the floor. Raising the floor keeps what is stored
// after the restart dated after what was stored before it. A kept reading more than 20 years
// past the build day is not believed (a damaged database, not a clock): it would date
// everything stored from now on decades ahead.
std::int64_t with_expiry_clock(const Clock& system, std::int64_t floor, std::int64_t kept_ms);

}  // namespace parley::parleyd
