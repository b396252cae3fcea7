// TlsSocket after the handoff (tls_socket.h): records read, opened, sealed and written here,
// with the keys in TlsRecords. Every byte read is the peer's and untrusted: a record that is
// malformed, oversize or does not authenticate ends the connection with the alert RFC 8446
// names for it, and every later operation fails the same way.
#include <sys/socket.h>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "transport/internal/tls_socket_state.h"

namespace parley::transport::internal {

namespace {

namespace net = boost::asio;
using error_code = boost::system::error_code;

// Alerts as error codes: the value is the alert's description, plus kReceived when the peer
// sent it rather than this side.
constexpr int kReceived = 256;

// boost's error_category has a protected non-virtual destructor by design (categories are
// never deleted through it).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class AlertCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "parley.tls"; }
  std::string message(int value) const override {
    const bool received = value >= kReceived;
    std::string what;
    switch (value % kReceived) {
      case TlsRecords::kUnexpectedMessage:
        what = "unexpected message";
        break;
      case TlsRecords::kBadRecordMac:
        what = "bad record MAC";
        break;
      case TlsRecords::kRecordOverflow:
        what = "record overflow";
        break;
      case TlsRecords::kDecodeError:
        what = "decode error";
        break;
      case TlsRecords::kIllegalParameter:
        what = "illegal parameter";
        break;
      case TlsRecords::kInternalError:
        what = "internal error";
        break;
      default:
        what = "alert " + std::to_string(value % kReceived);
        break;
    }
    return std::string(received ? "TLS alert received: " : "TLS alert sent: ") + what;
  }
};
#pragma GCC diagnostic pop

const boost::system::error_category& alert_category() {
  static const AlertCategory category;
  return category;
}

// user_canceled (RFC 8446 section 6.1): a warning, not an error.
constexpr std::uint8_t kUserCanceled = 90;

bool retryable(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

// A read buffer of Records::kReadBuffer bytes. Each io thread keeps one spare, so that a
// connection waking up does not cost a 17 KB allocation and its page faults every time.
std::unique_ptr<std::uint8_t[]>& spare_read_buffer() {
  thread_local std::unique_ptr<std::uint8_t[]> spare;
  return spare;
}

std::unique_ptr<std::uint8_t[]> take_read_buffer() {
  auto& spare = spare_read_buffer();
  if (spare) return std::move(spare);
  return std::unique_ptr<std::uint8_t[]>(new std::uint8_t[kRecordReadBuffer]);
}

}  // namespace

void TlsSocket::release_read_buffer() {
  Records& rs = *records_;
  if (!rs.rbuf || rs.plain_size != 0 || rs.rpos != rs.rend) return;
  rs.rpos = rs.rend = rs.plain_pos = 0;
  auto& spare = spare_read_buffer();
  if (!spare) {
    spare = std::move(rs.rbuf);
  } else {
    rs.rbuf.reset();
  }
}

TlsSocket::Step TlsSocket::record_step(Kind kind, void* data, std::size_t size) {
  Step r;
  if (records_->failed) {
    r.ec = records_->failed;
    return r;
  }
  switch (kind) {
    case Kind::kHandshake:
      return r;
    case Kind::kRead:
      return record_read(static_cast<std::uint8_t*>(data), size);
    case Kind::kWrite:
      return record_write(static_cast<const std::uint8_t*>(data), size);
    case Kind::kShutdown:
      return record_shutdown();
  }
  return r;
}

TlsSocket::Step TlsSocket::record_fail(std::uint8_t alert, bool sent) {
  Records& rs = *records_;
  // A fatal alert goes out when nothing else is half sent; it is best effort, as the
  // connection ends either way.
  if (sent && !rs.write_sealed && rs.wpos == rs.wend && !rs.close_notify_sent) {
    const std::uint8_t body[2] = {2, alert};  // fatal
    std::uint8_t record[2 + TlsRecords::kOverhead];
    if (auto n = rs.keys->seal(TlsRecords::kAlert, body, sizeof body, record)) {
      [[maybe_unused]] const ssize_t ignored =
          ::send(sock_.native_handle(), record, *n, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
  }
  rs.failed = error_code(alert + (sent ? 0 : kReceived), alert_category());
  Step r;
  r.ec = rs.failed;
  return r;
}

// A handshake message after the handshake: only KeyUpdate is expected from a client (the
// server asks for no post-handshake authentication). It must end its record, since the keys
// change after it. False with `alert` set for anything else.
bool TlsSocket::record_post_handshake(const std::uint8_t* msg, std::size_t size,
                                      std::uint8_t* alert) {
  Records& rs = *records_;
  if (size < 4 || msg[0] != SSL3_MT_KEY_UPDATE) {
    *alert = size < 4 ? TlsRecords::kDecodeError : TlsRecords::kUnexpectedMessage;
    return false;
  }
  const std::size_t length = (std::size_t{msg[1]} << 16) | (std::size_t{msg[2]} << 8) | msg[3];
  if (length != 1 || size < 5) {
    *alert = TlsRecords::kDecodeError;
    return false;
  }
  if (size != 5) {  // RFC 8446 section 5.1: a key change must end its record
    *alert = TlsRecords::kUnexpectedMessage;
    return false;
  }
  if (msg[4] > 1) {  // update_not_requested (0) or update_requested (1)
    *alert = TlsRecords::kIllegalParameter;
    return false;
  }
  if (!rs.keys->update_read_key().is_ok()) {
    *alert = TlsRecords::kInternalError;
    return false;
  }
  if (msg[4] == 1) {
    rs.key_update_owed = true;
    // Answered now when no write is under way (and sent as far as the socket takes it);
    // otherwise before the next write's data. Several requests get one answer.
    if (!rs.write_sealed && rs.wpos == rs.wend && !rs.close_notify_sent) {
      if (!seal_key_update()) {
        *alert = TlsRecords::kInternalError;
        return false;
      }
      const Step flushed = record_flush(0);
      if (flushed.ec) {
        *alert = TlsRecords::kInternalError;
        return false;
      }
    }
  }
  return true;
}

// Room for `n` more bytes in the write buffer, after what is sealed and not yet sent (kept,
// moved to the front).
void TlsSocket::write_room(std::size_t n) {
  Records& rs = *records_;
  const std::size_t pending = rs.wend - rs.wpos;
  if (rs.wcap < pending + n) {
    std::unique_ptr<std::uint8_t[]> grown(new std::uint8_t[pending + n]);
    if (pending != 0) std::memcpy(grown.get(), rs.wbuf.get() + rs.wpos, pending);
    rs.wbuf = std::move(grown);
    rs.wcap = pending + n;
  } else if (rs.wpos != 0) {
    std::memmove(rs.wbuf.get(), rs.wbuf.get() + rs.wpos, pending);
  }
  rs.wpos = 0;
  rs.wend = pending;
}

// Seals one record of `n` bytes after what the write buffer holds.
bool TlsSocket::seal_append(std::uint8_t type, const std::uint8_t* data, std::size_t n) {
  Records& rs = *records_;
  write_room(n + TlsRecords::kOverhead);
  auto sealed =
      rs.keys->seal(static_cast<TlsRecords::ContentType>(type), data, n, rs.wbuf.get() + rs.wend);
  if (!sealed) return false;
  rs.wend += *sealed;
  return true;
}

// Appends our KeyUpdate (update_not_requested), then moves to the next write key.
bool TlsSocket::seal_key_update() {
  Records& rs = *records_;
  const std::uint8_t msg[5] = {SSL3_MT_KEY_UPDATE, 0, 0, 1, 0};
  if (!seal_append(TlsRecords::kHandshake, msg, sizeof msg) ||
      !rs.keys->update_write_key().is_ok()) {
    return false;
  }
  rs.key_update_owed = false;
  return true;
}

TlsSocket::Step TlsSocket::record_read(std::uint8_t* data, std::size_t size) {
  Records& rs = *records_;
  Step r;
  if (size == 0) return r;
  // Each round hands plaintext out, opens a record, or reads from the socket; the rounds that
  // open records without plaintext (KeyUpdate, empty records) are bounded by the bytes read.
  for (;;) {
    if (rs.plain_size > 0) {
      const std::size_t n = std::min(size, rs.plain_size);
      std::memcpy(data, rs.rbuf.get() + rs.plain_pos, n);
      rs.plain_pos += n;
      rs.plain_size -= n;
      release_read_buffer();
      last_read_ = coarse_now();
      r.n = n;
      return r;
    }
    if (rs.peer_closed) {
      r.ec = net::error::eof;
      return r;
    }
    const std::size_t avail = rs.rend - rs.rpos;
    std::size_t need = 0;
    if (rs.rbuf) {
      if (auto fault = TlsRecords::check_header(rs.rbuf.get() + rs.rpos, avail, &need)) {
        return record_fail(fault->alert, true);
      }
    }
    if (need != 0 && avail >= need) {
      std::uint8_t* record = rs.rbuf.get() + rs.rpos;
      const TlsRecords::OpenResult opened = rs.keys->open(record, need);
      if (!opened.opened) return record_fail(opened.fault.alert, true);
      rs.rpos += need;
      const std::uint8_t* content = record + TlsRecords::kHeaderSize;
      const std::size_t length = opened.opened->size;
      switch (opened.opened->type) {
        case TlsRecords::kApplicationData:
          rs.plain_pos = static_cast<std::size_t>(content - rs.rbuf.get());
          rs.plain_size = length;  // may be 0: an empty record, allowed and skipped
          if (length != 0) {
            rs.empty_records = 0;
            continue;
          }
          if (++rs.empty_records > Records::kMaxEmptyRecords) {
            return record_fail(TlsRecords::kUnexpectedMessage, true);
          }
          release_read_buffer();
          continue;
        case TlsRecords::kAlert:
          if (length != 2) return record_fail(TlsRecords::kDecodeError, true);
          if (content[1] == TlsRecords::kCloseNotify) {
            rs.peer_closed = true;
            release_read_buffer();
            r.ec = net::error::eof;
            return r;
          }
          if (content[1] == kUserCanceled) {  // a warning; its close_notify follows
            if (++rs.empty_records > Records::kMaxEmptyRecords) {
              return record_fail(TlsRecords::kUnexpectedMessage, true);
            }
            release_read_buffer();
            continue;
          }
          return record_fail(content[1], false);
        case TlsRecords::kHandshake: {
          if (++rs.empty_records > Records::kMaxEmptyRecords) {
            return record_fail(TlsRecords::kUnexpectedMessage, true);
          }
          std::uint8_t alert = 0;
          if (!record_post_handshake(content, length, &alert)) return record_fail(alert, true);
          release_read_buffer();
          continue;
        }
        default:
          return record_fail(TlsRecords::kUnexpectedMessage, true);
      }
    }
    // A record is incomplete: read more.
    if (rs.drained) {
      rs.drained = false;
      release_read_buffer();
      r.want = Want::kRead;
      return r;
    }
    if (!rs.rbuf) {
      rs.rbuf = take_read_buffer();
      rs.rpos = rs.rend = 0;
    } else if (rs.rpos != 0) {
      std::memmove(rs.rbuf.get(), rs.rbuf.get() + rs.rpos, avail);
      rs.rpos = 0;
      rs.rend = avail;
    }
    const std::size_t space = kRecordReadBuffer - rs.rend;
    const ssize_t got = ::recv(sock_.native_handle(), rs.rbuf.get() + rs.rend, space, 0);
    if (got > 0) {
      rs.rend += static_cast<std::size_t>(got);
      rs.drained = static_cast<std::size_t>(got) < space;
      continue;
    }
    if (got == 0) {  // TCP ended without close_notify: the stream was cut
      rs.failed = net::ssl::error::stream_truncated;
      r.ec = rs.failed;
      return r;
    }
    if (retryable(errno)) {
      release_read_buffer();
      r.want = Want::kRead;
      return r;
    }
    rs.failed = error_code(errno, boost::system::system_category());
    r.ec = rs.failed;
    return r;
  }
}

// Sends what is sealed. `done` is what the operation reports once all of it is out.
TlsSocket::Step TlsSocket::record_flush(std::size_t done) {
  Records& rs = *records_;
  Step r;
  while (rs.wpos < rs.wend) {
    const ssize_t n =
        ::send(sock_.native_handle(), rs.wbuf.get() + rs.wpos, rs.wend - rs.wpos, MSG_NOSIGNAL);
    if (n > 0) {
      rs.wpos += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && retryable(errno)) {
      r.want = Want::kWrite;
      return r;
    }
    rs.failed = n < 0 ? error_code(errno, boost::system::system_category())
                      : error_code(net::error::connection_reset);
    r.ec = rs.failed;
    return r;
  }
  rs.wbuf.reset();
  rs.wcap = rs.wpos = rs.wend = 0;
  r.n = done;
  return r;
}

TlsSocket::Step TlsSocket::record_write(const std::uint8_t* data, std::size_t size) {
  Records& rs = *records_;
  if (!rs.write_sealed) {
    if (size == 0) return Step{};
    if (rs.close_notify_sent) return Step{Want::kDone, net::error::broken_pipe, 0};
    if (rs.keys->write_key_worn()) rs.key_update_owed = true;
    if (rs.key_update_owed && !seal_key_update()) {
      return record_fail(TlsRecords::kInternalError, true);
    }
    const std::size_t take = std::min(size, Records::kWriteBatch);
    const std::size_t count = (take + TlsRecords::kMaxPlaintext - 1) / TlsRecords::kMaxPlaintext;
    write_room(take + count * TlsRecords::kOverhead);  // once for the whole batch
    for (std::size_t off = 0; off < take; off += TlsRecords::kMaxPlaintext) {
      const std::size_t n = std::min(TlsRecords::kMaxPlaintext, take - off);
      if (!seal_append(TlsRecords::kApplicationData, data + off, n)) {
        return record_fail(TlsRecords::kInternalError, true);
      }
    }
    rs.write_sealed = true;
    rs.taken = take;
  }
  Step r = record_flush(rs.taken);
  if (r.want == Want::kDone) rs.write_sealed = false;
  return r;
}

// close_notify, sent once; the peer's is not awaited (as SSL_shutdown's first call).
TlsSocket::Step TlsSocket::record_shutdown() {
  Records& rs = *records_;
  if (!rs.close_notify_sent) {
    if (rs.write_sealed) return Step{Want::kDone, net::error::in_progress, 0};
    const std::uint8_t body[2] = {1, TlsRecords::kCloseNotify};  // warning, close_notify
    if (!seal_append(TlsRecords::kAlert, body, sizeof body)) {
      return record_fail(TlsRecords::kInternalError, true);
    }
    rs.close_notify_sent = true;
    rs.write_sealed = true;
    rs.taken = 0;
  }
  Step r = record_flush(0);
  if (r.want == Want::kDone) rs.write_sealed = false;
  return r;
}

}  // namespace parley::transport::internal
