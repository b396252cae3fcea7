#pragma once
// Client-side TLS session resumption, for the one client SSL_CTX of the process.
//
// A resumed handshake skips what costs most in a full one: the server's certificate (sent,
// parsed and decoded by the client) and its signature (made by the server, checked by the
// client). It still runs an ephemeral key exchange (TLS 1.3 psk_dhe_ke), so it keeps forward
// secrecy.
//
// Trust: a session is kept only from a connection whose certificate pin was checked, and only
// offered again under the same key (pin, host, port, SNI). A resumed session carries the
// certificate of the handshake that created it, so the pin check after a resumed handshake
// still checks the pinned certificate; and only a server that holds the ticket's key can
// complete the handshake. A server that cannot (one whose ticket keys are kept in memory only,
// after a restart; see ticket_keys.h) falls back to a full handshake, with no error.
//
// The cache is in memory, one session per key (the newest the server sent), at most
// kMaxResumptionKeys keys; each connection offers its own copy. OpenSSL does not offer a
// ticket past its lifetime.

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/bytes.h"

namespace parley::transport::internal {

constexpr std::size_t kMaxResumptionKeys = 256;

// Sets a client context up to hand the sessions its connections receive to the cache. Once per
// context, before any connection of it.
void enable_session_resumption(SSL_CTX* ctx);

// The cache key of a server: its pin, where it is reached and the name sent to it.
std::string resumption_key(const Bytes& pin, std::string_view host, std::uint16_t port,
                           std::string_view sni);

// Before the handshake: offers a copy of the session kept under `key`, if there is one.
void offer_session(SSL* ssl, const std::string& key);

// After the handshake and the pin check: sessions the server sends on this connection from now
// on (TLS 1.3 tickets) are kept under `key`; a TLS 1.2 session, complete at the end of the
// handshake, is kept at once.
void keep_sessions(SSL* ssl, const std::string& key);

}  // namespace parley::transport::internal
