#include "transport/internal/tls_socket.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <boost/asio/ssl/error.hpp>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <string_view>

#include "base/bytes.h"
#include "transport/internal/tls_socket_state.h"

namespace parley::transport::internal {

namespace {

namespace net = boost::asio;
using error_code = boost::system::error_code;

// A socket BIO that never raises SIGPIPE (send with MSG_NOSIGNAL) and reports EAGAIN as
// "retry", which SSL_get_error turns into WANT_READ / WANT_WRITE.
//
// A recv that returns less than was asked for has emptied the socket. The next read then
// reports "retry" at once instead of calling recv only to get EAGAIN: the wait that follows
// (TlsSocket::Op's async_wait) re-arms the descriptor, which reports data that came in between.
// That saves one system call each time a connection's traffic pauses.
struct BioState {
  int fd = -1;
  bool drained = false;  // the last recv came back short
};

BioState& bio_state(BIO* b) { return *static_cast<BioState*>(BIO_get_data(b)); }

bool retryable(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

// Empties this thread's OpenSSL error queue, which SSL_get_error needs empty before each call.
// OpenSSL 3.0's ERR_clear_error costs about 2,000 instructions even on an empty queue (it frees
// two null pointers for each of its 16 slots), more than decrypting a small record: look first.
void clear_openssl_errors() {
  if (ERR_peek_error() != 0) ERR_clear_error();
}

int bio_write(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  const ssize_t n = ::send(bio_state(b).fd, data, static_cast<std::size_t>(len), MSG_NOSIGNAL);
  if (n < 0 && retryable(errno)) BIO_set_retry_write(b);
  return static_cast<int>(n);
}

int bio_read(BIO* b, char* data, int len) {
  BIO_clear_retry_flags(b);
  BioState& st = bio_state(b);
  if (st.drained) {
    st.drained = false;
    errno = EAGAIN;
    BIO_set_retry_read(b);
    return -1;
  }
  const ssize_t n = ::recv(st.fd, data, static_cast<std::size_t>(len), 0);
  if (n < 0 && retryable(errno)) BIO_set_retry_read(b);
  st.drained = n > 0 && n < len;
  return static_cast<int>(n);
}

long bio_ctrl(BIO*, int cmd, long, void*) {  // NOLINT(runtime/int): OpenSSL's signature
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int bio_create(BIO* b) {
  BIO_set_data(b, new (std::nothrow) BioState());
  if (BIO_get_data(b) == nullptr) return 0;
  BIO_set_init(b, 1);
  return 1;
}

int bio_destroy(BIO* b) {
  delete static_cast<BioState*>(BIO_get_data(b));
  BIO_set_data(b, nullptr);
  return 1;
}

const BIO_METHOD* socket_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "parley socket");
    if (m == nullptr) return m;
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    BIO_meth_set_destroy(m, bio_destroy);
    return m;
  }();
  return method;
}

// The handoff's callbacks find the handshake's Capture through this ex_data slot.
int capture_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// A context's records per key (set_records_per_key), kept in the pointer itself; null: the
// default.
int records_per_key_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// The secret of a key log line, decoded with base's from_hex; the plain copy is wiped. Empty on
// bad hex.
SecretBytes secret_from_hex(std::string_view hex) {
  std::optional<Bytes> plain = from_hex(hex);
  if (!plain) return SecretBytes();
  SecretBytes secret{ByteView(*plain)};
  secure_zero(plain->data(), plain->size());
  return secret;
}

}  // namespace

// OpenSSL's key log line: "LABEL <client random hex> <secret hex>". Only the two application
// traffic secrets are kept; OpenSSL wipes the line after the call.
void TlsSocket::key_log(const SSL* ssl, const char* line) {
  auto* capture = static_cast<Capture*>(SSL_get_ex_data(ssl, capture_index()));
  if (capture == nullptr || line == nullptr) return;
  const std::string_view text(line);
  const std::size_t last_space = text.rfind(' ');
  if (last_space == std::string_view::npos) return;
  SecretBytes* into = nullptr;
  if (text.starts_with("CLIENT_TRAFFIC_SECRET_0 ")) into = &capture->client_secret;
  if (text.starts_with("SERVER_TRAFFIC_SECRET_0 ")) into = &capture->server_secret;
  if (into != nullptr) *into = secret_from_hex(text.substr(last_space + 1));
}

// Counts the records OpenSSL writes under the server's application secret (its header
// callback, once per record made), and notes a KeyUpdate, which the count cannot follow.
void TlsSocket::handshake_message(int write_p, int, int content_type, const void* buf,
                                  std::size_t len, SSL*, void* arg) {
  auto* capture = static_cast<Capture*>(arg);
  if (capture == nullptr || write_p == 0 || len == 0) return;
  if (content_type == SSL3_RT_HEADER && !capture->server_secret.empty()) {
    ++capture->records_sealed;
  } else if (content_type == SSL3_RT_HANDSHAKE &&
             static_cast<const std::uint8_t*>(buf)[0] == SSL3_MT_KEY_UPDATE) {
    capture->unexpected = true;
  }
}

void TlsSocket::enable_record_handoff(SSL_CTX* ctx) {
  SSL_CTX_set_keylog_callback(ctx, &TlsSocket::key_log);
}

void TlsSocket::set_records_per_key(SSL_CTX* ctx, std::uint32_t n) {
  SSL_CTX_set_ex_data(ctx, records_per_key_index(),
                      reinterpret_cast<void*>(static_cast<std::uintptr_t>(n)));
}

Result<std::unique_ptr<TlsSocket>> TlsSocket::accept(net::ip::tcp::socket sock, SSL_CTX* ctx) {
  return make(std::move(sock), ctx, true);
}

Result<std::unique_ptr<TlsSocket>> TlsSocket::connect(net::ip::tcp::socket sock, SSL_CTX* ctx) {
  return make(std::move(sock), ctx, false);
}

Result<std::unique_ptr<TlsSocket>> TlsSocket::make(net::ip::tcp::socket sock, SSL_CTX* ctx,
                                                   bool server) {
  error_code ec;
  sock.non_blocking(true, ec);
  if (ec) return make_error(ErrorCode::kIo, "tls: socket cannot be made non-blocking");
  const BIO_METHOD* method = socket_method();
  if (method == nullptr) return make_error(ErrorCode::kInternal, "tls: no BIO method");
  SSL* ssl = SSL_new(ctx);
  if (ssl == nullptr) return make_error(ErrorCode::kInternal, "tls: SSL_new failed");
  BIO* bio = BIO_new(method);
  if (bio == nullptr) {
    SSL_free(ssl);
    return make_error(ErrorCode::kInternal, "tls: BIO_new failed");
  }
  bio_state(bio).fd = sock.native_handle();
  SSL_set_bio(ssl, bio, bio);  // the SSL owns the BIO
  std::unique_ptr<Capture> capture;
  if (server) {
    SSL_set_accept_state(ssl);
    if (SSL_CTX_get_keylog_callback(ctx) == &TlsSocket::key_log) {
      capture = std::make_unique<Capture>();
      if (SSL_set_ex_data(ssl, capture_index(), capture.get()) != 1) {
        SSL_free(ssl);
        return make_error(ErrorCode::kInternal, "tls: SSL_set_ex_data failed");
      }
      SSL_set_msg_callback(ssl, &TlsSocket::handshake_message);
      SSL_set_msg_callback_arg(ssl, capture.get());
    }
  } else {
    SSL_set_connect_state(ssl);
  }
  // Read whole TCP segments into OpenSSL's buffer (one recv for several records); write and
  // report records as they go (a partial write is a short count, not a failure). A handshake
  // that may hand its records over reads exactly record by record instead, so that no byte
  // after the client's Finished is left in OpenSSL's buffer when it is freed; read-ahead is
  // turned on after the handshake when the SSL stays.
  SSL_set_read_ahead(ssl, capture ? 0 : 1);
  SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                        SSL_MODE_RELEASE_BUFFERS);
  auto s = std::unique_ptr<TlsSocket>(new TlsSocket(std::move(sock), ssl));
  s->capture_ = std::move(capture);
  return s;
}

void TlsSocket::finish_handshake() {
  reused_ = SSL_session_reused(ssl_) == 1;
  std::unique_ptr<Capture> capture = std::move(capture_);
  if (!capture) return;
  SSL_set_msg_callback(ssl_, nullptr);
  SSL_set_msg_callback_arg(ssl_, nullptr);
  SSL_set_ex_data(ssl_, capture_index(), nullptr);
  std::optional<TlsRecords::Suite> suite;
  if (SSL_version(ssl_) == TLS1_3_VERSION) {
    if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl_)) {
      suite = TlsRecords::suite_for(static_cast<std::uint16_t>(SSL_CIPHER_get_id(c) & 0xffff));
    }
  }
  // Nothing may be left in OpenSSL's hands: no byte read ahead. (Nothing is half written: the
  // handshake returns only once its last record is sent.) A client that negotiated a smaller
  // max_fragment_length (RFC 6066) stays with OpenSSL, which honours it; TlsRecords writes full
  // records.
  const bool idle = SSL_has_pending(ssl_) == 0;
  const bool full_records = SSL_SESSION_get_max_fragment_length(SSL_get0_session(ssl_)) ==
                            TLSEXT_max_fragment_length_DISABLED;
  if (suite && idle && full_records && !capture->unexpected) {
    const auto per_key = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(
        SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl_), records_per_key_index())));
    auto keys = TlsRecords::make(*suite, capture->client_secret.view(),
                                 capture->server_secret.view(), 0, capture->records_sealed,
                                 per_key != 0 ? per_key : TlsRecords::kRecordsPerKey);
    if (keys) {
      auto records = std::make_unique<Records>();
      records->keys = std::move(*keys);
      records->drained = bio_state(SSL_get_rbio(ssl_)).drained;
      records_ = std::move(records);
      SSL_free(ssl_);
      ssl_ = nullptr;
      return;
    }
  }
  SSL_set_read_ahead(ssl_, 1);
}

TlsSocket::TlsSocket(net::ip::tcp::socket sock, SSL* ssl)
    : sock_(std::move(sock)), ssl_(ssl), deadline_(sock_.get_executor()) {}

TlsSocket::~TlsSocket() {
  dl_->alive = false;
  if (ssl_ != nullptr) SSL_free(ssl_);
}

void TlsSocket::expires_after(std::chrono::steady_clock::duration d) {
  dl_->timed_out = false;
  const std::uint64_t generation = ++dl_->generation;
  deadline_.expires_after(d);
  deadline_.async_wait([this, dl = dl_, generation](error_code ec) {
    // Re-armed, cancelled or destroyed: `this` is not touched.
    if (ec || !dl->alive || dl->generation != generation) return;
    dl->timed_out = true;
    error_code ignored;
    sock_.cancel(ignored);
  });
}

void TlsSocket::expires_never() {
  ++dl_->generation;
  dl_->timed_out = false;
  deadline_.cancel();
}

void TlsSocket::close() {
  error_code ignored;
  deadline_.cancel();
  sock_.shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  sock_.close(ignored);
}

TlsSocket::Step TlsSocket::step(Kind kind, void* data, std::size_t size) {
  Step r;
  if (!sock_.is_open()) {
    r.ec = net::error::bad_descriptor;
    return r;
  }
  if (records_) return record_step(kind, data, size);
  clear_openssl_errors();
  errno = 0;
  int ret = 0;
  std::size_t n = 0;
  const std::size_t capped = size > INT_MAX ? INT_MAX : size;
  switch (kind) {
    case Kind::kHandshake:
      ret = SSL_do_handshake(ssl_);
      break;
    case Kind::kRead:
      if (capped == 0) return r;
      ret = SSL_read_ex(ssl_, data, capped, &n);
      break;
    case Kind::kWrite:
      if (capped == 0) return r;
      ret = SSL_write_ex(ssl_, data, capped, &n);
      break;
    case Kind::kShutdown:
      ret = SSL_shutdown(ssl_);
      if (ret >= 0) return r;  // 0: close_notify sent; the peer's is not awaited
      break;
  }
  if (ret == 1) {
    r.n = n;
    if (kind == Kind::kRead) last_read_ = coarse_now();
    if (kind == Kind::kHandshake) finish_handshake();
    return r;
  }
  const int saved_errno = errno;  // set by the BIO (cleared below before each call)
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ:
      r.want = Want::kRead;
      break;
    case SSL_ERROR_WANT_WRITE:
      r.want = Want::kWrite;
      break;
    case SSL_ERROR_ZERO_RETURN:
      r.ec = net::error::eof;  // the peer's close_notify
      break;
    case SSL_ERROR_SYSCALL:
      r.ec = saved_errno != 0 ? error_code(saved_errno, boost::system::system_category())
                              : error_code(net::ssl::error::stream_truncated);
      break;
    default: {
      const unsigned long err = ERR_get_error();  // NOLINT(runtime/int)
      if (ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        r.ec = net::ssl::error::stream_truncated;
      } else {
        r.ec = error_code(static_cast<int>(err), net::error::get_ssl_category());
      }
      break;
    }
  }
  clear_openssl_errors();
  return r;
}

}  // namespace parley::transport::internal
