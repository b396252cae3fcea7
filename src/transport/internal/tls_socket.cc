#include "transport/internal/tls_socket.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <boost/asio/ssl/error.hpp>

#include <cerrno>
#include <climits>
#include <new>

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

}  // namespace

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
  if (server) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
  }
  // Read whole TCP segments into OpenSSL's buffer (one recv for several records); write and
  // report records as they go (a partial write is a short count, not a failure).
  SSL_set_read_ahead(ssl, 1);
  SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                        SSL_MODE_RELEASE_BUFFERS);
  return std::unique_ptr<TlsSocket>(new TlsSocket(std::move(sock), ssl));
}

TlsSocket::TlsSocket(net::ip::tcp::socket sock, SSL* ssl)
    : sock_(std::move(sock)), ssl_(ssl), deadline_(sock_.get_executor()) {}

TlsSocket::~TlsSocket() {
  dl_->alive = false;
  SSL_free(ssl_);
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
