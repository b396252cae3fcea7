#include "transport/internal/tls_resumption.h"

#include <map>
#include <memory>
#include <mutex>

namespace parley::transport::internal {
namespace {

struct SessionFree {
  void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
};
using SessionPtr = std::unique_ptr<SSL_SESSION, SessionFree>;

// The key a connection keeps its sessions under, in the SSL's ex_data once its pin is checked.
int key_index() {
  static const int index = SSL_get_ex_new_index(
      0, nullptr, nullptr, nullptr,
      [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {  // NOLINT(runtime/int)
        delete static_cast<std::string*>(ptr);
      });
  return index;
}

class SessionCache {
 public:
  void put(const std::string& key, SessionPtr session) {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(key);
    if (it != sessions_.end()) {
      it->second = std::move(session);
      return;
    }
    if (sessions_.size() >= kMaxResumptionKeys) sessions_.erase(sessions_.begin());
    sessions_.emplace(key, std::move(session));
  }
  // A copy of the session under `key`, or null. A copy, not the shared object: OpenSSL
  // changes the session a handshake resumes, and concurrent handshakes that shared one object
  // failed to resume 4-31 % of the time (the load generator's handshake scenario, 64 at once;
  // one at a time: none).
  SessionPtr copy(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(key);
    if (it == sessions_.end()) return nullptr;
    return SessionPtr(SSL_SESSION_dup(it->second.get()));
  }

 private:
  std::mutex mu_;
  std::map<std::string, SessionPtr> sessions_;
};

SessionCache& cache() {
  static SessionCache* c = new SessionCache;  // never destroyed: callbacks may run at exit
  return *c;
}

void keep(const std::string& key, SessionPtr session) {
  if (session && SSL_SESSION_is_resumable(session.get()) == 1) cache().put(key, std::move(session));
}

// OpenSSL's new-session callback: returning 1 takes over the reference.
int on_new_session(SSL* ssl, SSL_SESSION* session) {
  const auto* key = static_cast<const std::string*>(SSL_get_ex_data(ssl, key_index()));
  if (key == nullptr) return 0;  // the pin is not checked (yet): keep nothing
  keep(*key, SessionPtr(session));
  return 1;
}

}  // namespace

void enable_session_resumption(SSL_CTX* ctx) {
  (void)key_index();
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, on_new_session);
}

std::string resumption_key(const Bytes& pin, std::string_view host, std::uint16_t port,
                           std::string_view sni) {
  std::string key = to_hex(pin);
  key += '|';
  key += host;
  key += '|';
  key += std::to_string(port);
  key += '|';
  key += sni;
  return key;
}

void offer_session(SSL* ssl, const std::string& key) {
  SessionPtr own = cache().copy(key);
  if (own) SSL_set_session(ssl, own.get());  // takes its own reference
}

void keep_sessions(SSL* ssl, const std::string& key) {
  delete static_cast<std::string*>(SSL_get_ex_data(ssl, key_index()));
  auto owned = std::make_unique<std::string>(key);
  if (SSL_set_ex_data(ssl, key_index(), owned.get()) == 1) owned.release();
  if (SSL_version(ssl) < TLS1_3_VERSION) keep(key, SessionPtr(SSL_get1_session(ssl)));
}

}  // namespace parley::transport::internal
