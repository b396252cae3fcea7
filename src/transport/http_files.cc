// The plain-HTTP endpoints: the static site and resumable attachment upload/download.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "base/private_file.h"
#include "transport/internal/http_serve.h"

namespace parley::transport::internal {
namespace {

constexpr std::size_t kChunk = 64 * 1024;
constexpr std::uint64_t kSiteBodyLimit = 64 * 1024;  // bodies sent to the site are discarded

// A file held open through a transfer, with the slot of max_connections its descriptor takes
// (HttpContext::slots). Open only when a slot is free: a descriptor that max_connections did not
// count could take the process past its open-file limit, where accept() fails for everyone (a
// review held 141 downloads, each a socket and a file, and new clients no longer got in).
class Fd {
 public:
  // Takes a slot, then runs `open` (returns a descriptor or -1).
  template <class Open>
  Fd(const HttpContext& cx, Open open) : slots_(cx.slots), transfers_(cx.file_transfers) {
    if (!take_slot(slots_, cx.options.max_connections)) {
      full_ = true;
      return;
    }
    errno = 0;  // `open` may fail after a call that set it (a site file's checks)
    fd_ = open();
    if (fd_ < 0) {
      // Out of descriptors or memory is being full too; a file gone since it was looked up
      // (expiry removed an attachment's) is not found; anything else is a failure.
      full_ = errno == EMFILE || errno == ENFILE || errno == ENOMEM;
      gone_ = errno == ENOENT;
      slots_.fetch_sub(1);
      return;
    }
    transfers_.fetch_add(1);
  }
  ~Fd() { close(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  // Not opened for want of a slot or a descriptor: the server is full (503), not failing
  // (500); the file is gone: 404.
  unsigned error_status() const { return full_ ? 503 : gone_ ? 404 : 500; }
  // Closes explicitly; false when close() reports an error (data may not be stored).
  bool close() {
    int fd = fd_;
    if (fd < 0) return true;
    fd_ = -1;
    const bool closed = ::close(fd) == 0;
    transfers_.fetch_sub(1);
    slots_.fetch_sub(1);
    return closed;
  }

 private:
  std::atomic<std::size_t>& slots_;
  std::atomic<std::size_t>& transfers_;
  int fd_ = -1;
  bool full_ = false;
  bool gone_ = false;
};

// Awaits an HttpFiles call: `start(done)` begins it, and `done` may run on any thread (the
// store's), also before `start` returns. The answer is posted to the coroutine's executor, which
// wakes it with a timer's cancel; the io thread serves others meanwhile. No answer within
// options.files_timeout (a store stuck on a failing disk): kUnavailable, so that the request, its
// slot and its descriptor are not held for good; a late answer then finds only `wait`.
template <typename T, typename Start>
net::awaitable<T> files_call(const HttpContext& cx, Start start) {
  struct Wait {
    Wait(const net::any_io_executor& ex, std::chrono::milliseconds timeout) : wake(ex, timeout) {}
    net::steady_timer wake;
    std::optional<T> answer;
  };
  const net::any_io_executor ex = co_await net::this_coro::executor;
  auto wait = std::make_shared<Wait>(ex, cx.options.files_timeout);
  start(HttpFiles::Done<T>([ex, wait](T r) {
    net::post(ex, [wait, r = std::move(r)]() mutable {
      wait->answer.emplace(std::move(r));
      wait->wake.cancel();
    });
  }));
  while (!wait->answer) {
    auto [ec] = co_await wait->wake.async_wait(kUse);
    if (!ec && !wait->answer) co_return make_error(ErrorCode::kUnavailable, "store busy");
  }
  co_return std::move(*wait->answer);
}

void set_common(http::response_header<>& h, const HttpContext& cx) {
  h.set(http::field::date, http_date_now());
  if (!cx.options.server_header.empty()) h.set(http::field::server, cx.options.server_header);
}

// The deadline of the next read or write: http_idle (never zero).
void expire(TlsSocket& s, const HttpContext& cx) { s.expires_after(http_idle(cx.options)); }

// A response as the bytes that go on the wire, header and body together. Beast's serializer
// hands a stream each header field as a buffer of its own, and TlsSocket makes a record of each
// write: a page went out in 8 to 11 records, where nginx sends one (a pattern a prober sees).
template <class Body>
std::string wire_bytes(http::response<Body>& res) {
  http::response_serializer<Body> sr(res);
  std::string out;
  beast::error_code ec;
  while (!ec && !sr.is_done()) {
    sr.next(ec, [&](beast::error_code&, const auto& buffers) {
      for (const auto b : beast::buffers_range_ref(buffers)) {
        out.append(static_cast<const char*>(b.data()), b.size());
      }
      sr.consume(beast::buffer_bytes(buffers));
    });
  }
  return out;
}

// Writes `bytes` in one write (as few records as their size allows); false on error.
net::awaitable<bool> write_bytes(TlsSocket& s, const std::string& bytes, const HttpContext& cx) {
  expire(s, cx);
  auto [ec, n] = co_await net::async_write(s, net::buffer(bytes), kUse);
  co_return !ec;
}

// An in-memory response.
net::awaitable<bool> write_simple(TlsSocket& s, http::response<http::string_body>& res,
                                  bool keep_alive, const HttpContext& cx) {
  set_common(res.base(), cx);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  co_return co_await write_bytes(s, wire_bytes(res), cx) && keep_alive;
}

// The header of a response whose body (if any) is written separately.
std::string header_bytes(http::response<http::empty_body>& res, std::uint64_t content_length,
                         bool keep_alive, const HttpContext& cx) {
  set_common(res.base(), cx);
  res.keep_alive(keep_alive);
  res.content_length(content_length);
  return wire_bytes(res);
}

// Sends `header`, then [offset, offset + length) of an open file; the header leaves with the
// first part of the body.
net::awaitable<bool> write_file(TlsSocket& s, std::string header, int fd, std::uint64_t offset,
                                std::uint64_t length, const HttpContext& cx) {
  if (length == 0) co_return co_await write_bytes(s, header, cx);  // an empty file
  auto chunk = std::make_unique<char[]>(header.size() + kChunk);
  std::size_t ahead = header.size();
  header.copy(chunk.get(), ahead);
  while (length > 0) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(length, kChunk));
    ssize_t got = ::pread(fd, chunk.get() + ahead, want, static_cast<off_t>(offset));
    if (got <= 0) {
      // The file shrank or could not be read: the response is cut short. The connection ends
      // without a close_notify, so that the client sees a cut, not an answer that ended (as
      // nginx does).
      s.close();
      co_return false;
    }
    expire(s, cx);
    auto [ec, n] = co_await net::async_write(
        s, net::buffer(chunk.get(), ahead + static_cast<std::size_t>(got)), kUse);
    if (ec) co_return false;
    ahead = 0;
    offset += static_cast<std::uint64_t>(got);
    length -= static_cast<std::uint64_t>(got);
  }
  co_return true;
}

// How reading a request body ended.
enum class BodyRead {
  kRead,
  kTooLarge,  // over the limit (413)
  kBad,       // the peer's framing was wrong: a bad chunk, say (400)
  kBroken,    // the connection ended or timed out: nothing to answer
};

// Reads and discards a request body of at most `limit` bytes (a body sent to the site). The
// whole body has one deadline, handshake_timeout, as a connection's first request has: a
// header that announces a body and then a byte every so often must not hold the connection
// and its buffers for http_idle at each read (a review held 300 connections at 80 KB each for
// 120 s with a 48-byte POST header). The discard buffer is small and never zeroed.
net::awaitable<BodyRead> drain_body(TlsSocket& s, beast::flat_buffer& buffer, HeaderParser& hp,
                                    std::uint64_t limit, const HttpContext& cx) {
  if (hp.is_done()) co_return BodyRead::kRead;
  if (hp.content_length() && *hp.content_length() > limit) co_return BodyRead::kTooLarge;
  http::request_parser<http::buffer_body> bp(std::move(hp));
  bp.body_limit(limit);
  constexpr std::size_t kDiscard = 4096;
  auto chunk = std::make_unique_for_overwrite<char[]>(kDiscard);
  s.expires_after(cx.options.handshake_timeout);
  while (!bp.is_done()) {
    bp.get().body().data = chunk.get();
    bp.get().body().size = kDiscard;
    auto [ec, n] = co_await http::async_read(s, buffer, bp, kUse);
    if (ec == http::error::need_buffer) continue;
    if (ec == http::error::body_limit) co_return BodyRead::kTooLarge;
    if (ec) co_return is_http_parse_error(ec) ? BodyRead::kBad : BodyRead::kBroken;
  }
  co_return BodyRead::kRead;
}

// The answer to a body that could not be read (BodyRead other than kRead), closing; false.
net::awaitable<bool> refuse_body(TlsSocket& s, BodyRead read, unsigned version, bool head,
                                 const HttpContext& cx) {
  if (read == BodyRead::kBroken) co_return false;
  const unsigned status = read == BodyRead::kTooLarge ? 413 : 400;
  co_await write_site_response(s, cx.site.error_page(status), version, false, head, cx);
  co_return false;
}

// 401 with the challenge RFC 9110 (11.6.1) asks for: the upload slot's bearer token. Closes.
net::awaitable<bool> unauthorized(TlsSocket& s, unsigned version, const HttpContext& cx) {
  http::response<http::string_body> res{http::status::unauthorized, version};
  res.set(http::field::www_authenticate, "Bearer");
  co_return co_await write_simple(s, res, false, cx);
}

// An error page; `head`: the answer to a HEAD request (the header only).
net::awaitable<bool> error_response(TlsSocket& s, unsigned status, unsigned version,
                                    const HttpContext& cx, bool head = false) {
  co_return co_await write_site_response(s, cx.site.error_page(status), version, false, head, cx);
}

unsigned status_for(const Status& st) {
  switch (st.code()) {
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kPermissionDenied: return 403;
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kMalformed: return 400;
    case ErrorCode::kTooLarge:
      return 413;
    case ErrorCode::kIo:  // the store could not write (a full or failing disk): try later
    case ErrorCode::kResourceExhausted:  // the store has too many operations queued: try later
    case ErrorCode::kUnavailable: return 503;
    default: return 500;
  }
}

// A response with no body and a few extra fields (upload status answers).
// `upload_offset` >= 0 adds the Upload-Offset field (and Range for 308).
net::awaitable<bool> write_status(TlsSocket& s, unsigned status, unsigned version, bool keep_alive,
                                  std::int64_t upload_offset, const HttpContext& cx) {
  http::response<http::string_body> res{static_cast<http::status>(status), version};
  if (upload_offset >= 0) {
    res.set("Upload-Offset", std::to_string(upload_offset));
    if (status == 308 && upload_offset > 0) {
      res.set(http::field::range, "bytes=0-" + std::to_string(upload_offset - 1));
    }
  }
  res.set(http::field::cache_control, "no-store");
  co_return co_await write_simple(s, res, keep_alive, cx);
}

// PUT <ws_path>/att/<id> with Content-Range "bytes START-END/TOTAL".
net::awaitable<bool> put_attachment(TlsSocket& s, beast::flat_buffer& buffer, HeaderParser& hp,
                                    std::string id, const HttpContext& cx) {
  const auto& req = hp.get();  // not used after the parser moves into `bp` below
  const unsigned version = req.version();
  const bool keep = req.keep_alive();
  auto token = bearer_token(req[http::field::authorization]);
  if (!token) co_return co_await unauthorized(s, version, cx);
  // Joined before the offset is read, taken once this part will write (its token, range and
  // file are good): a newer part that writes supersedes this one (upload_writers.h); a status
  // query or a refused part supersedes no one.
  UploadWriters::Claim claim(cx.writers, id);
  auto upload = co_await files_call<Result<HttpFiles::Upload>>(
      cx, [&](auto done) { cx.files->begin_upload(id, std::string(*token), std::move(done)); });
  if (!upload) {
    co_return co_await error_response(s, status_for(upload.error()), version, cx);
  }
  auto range = parse_content_range(req[http::field::content_range]);
  if (!range || range->total != upload->size) {
    co_return co_await error_response(s, 400, version, cx);
  }
  if (!hp.content_length()) co_return co_await error_response(s, 411, version, cx);
  const std::uint64_t length = *hp.content_length();
  if (length > cx.options.max_http_body) co_return co_await error_response(s, 413, version, cx);
  const std::uint64_t have = upload->have;
  if (!range->start) {
    // "bytes */TOTAL" with no body: a status query.
    if (length != 0) co_return co_await error_response(s, 400, version, cx);
    if (have == upload->size) {
      co_return co_await write_status(s, 200, version, keep, -1, cx);
    }
    co_return co_await write_status(s, 308, version, keep, static_cast<std::int64_t>(have), cx);
  }
  if (*range->start != have) {
    co_return co_await write_status(s, 409, version, false, static_cast<std::int64_t>(have), cx);
  }
  if (*range->end - *range->start + 1 != length) {
    co_return co_await error_response(s, 400, version, cx);
  }

  // A file the server cannot open or write now (a full disk, no descriptor or slot free) is refused
  // like a send the store cannot write: 503, nothing of the part kept, resume later. Only a first
  // part makes the file: past it, a file that is gone went with its slot (expiry), 404.
  const int create = have == 0 ? O_CREAT : 0;
  Fd fd(cx, [&] { return ::open(upload->path.c_str(), O_WRONLY | create | O_CLOEXEC, 0600); });
  if (!fd.ok()) {
    co_return co_await error_response(s, fd.error_status() == 404 ? 404 : 503, version, cx);
  }
  claim.take();

  if (beast::iequals(req[http::field::expect], "100-continue")) {
    http::response<http::empty_body> cont{http::status::continue_, version};
    if (!co_await write_bytes(s, wire_bytes(cont), cx)) co_return false;
  }

  http::request_parser<http::buffer_body> bp(std::move(hp));
  bp.body_limit(cx.options.max_http_body);
  auto chunk = std::make_unique<char[]>(kChunk);
  std::uint64_t written = 0;
  bool cut = false;
  bool io_error = false;
  bool superseded = false;
  while (!bp.is_done()) {
    bp.get().body().data = chunk.get();
    bp.get().body().size = kChunk;
    expire(s, cx);
    auto [ec, n] = co_await http::async_read(s, buffer, bp, kUse);
    if (ec && ec != http::error::need_buffer) {
      cut = true;
    }
    const std::size_t got = kChunk - bp.get().body().size;
    switch (claim.pwrite_all(fd.get(), chunk.get(), got, have + written)) {
      case UploadWriters::Claim::Write::kWritten:
        written += got;
        break;
      case UploadWriters::Claim::Write::kSuperseded:
        superseded = true;
        break;
      case UploadWriters::Claim::Write::kFailed:
        io_error = true;
        break;
    }
    if (cut || io_error || superseded) break;
  }
  if (written > length) io_error = true;  // cannot happen: the parser enforces Content-Length
  // Make what arrived durable before recording it, also when the transfer was cut: the client
  // resumes from the recorded offset.
  if (::fsync(fd.get()) != 0) io_error = true;
  if (!fd.close()) io_error = true;
  // Until some progress is recorded, the file may be new: its directory is synced too, so that
  // a power cut cannot lose the name of a file whose bytes are recorded as written.
  if (have == 0 && !io_error && !sync_parent_directory(upload->path).is_ok()) io_error = true;
  const std::uint64_t now_have = have + written;
  // A newer part took over (this one is stale): it resumes from what was recorded, so this one
  // records nothing, and its client asks for the offset (409 without one, as for a part out of
  // step).
  const bool stale = superseded || (!io_error && !claim.may_record(now_have == upload->size));
  if (have == 0 && (stale || io_error || (cut && written == 0))) {
    // A first part that records nothing may still have made the file again after expiry
    // deleted its slot: recording 0 (which changes nothing) has finish_upload remove the file
    // when the slot is gone.
    (void)co_await files_call<Result<std::uint64_t>>(
        cx, [&](auto done) { cx.files->finish_upload(id, 0, std::move(done)); });
  }
  if (stale) {
    if (cut) co_return false;
    co_return co_await write_status(s, 409, version, false, -1, cx);
  }
  if (io_error) {
    if (cut) co_return false;
    co_return co_await error_response(s, 503, version, cx);  // as for open() above
  }
  if (cut) {
    if (written > 0) {
      // The connection is gone: the client asks for the offset when it resumes.
      auto recorded = co_await files_call<Result<std::uint64_t>>(
          cx, [&](auto done) { cx.files->finish_upload(id, now_have, std::move(done)); });
      if (!recorded) claim.not_recorded();
    }
    co_return false;
  }
  // What is recorded may be more than this part reached: another connection of the client went
  // further (this one was stale). The answer is the attachment's state, not this part's.
  auto recorded = co_await files_call<Result<std::uint64_t>>(
      cx, [&](auto done) { cx.files->finish_upload(id, now_have, std::move(done)); });
  if (!recorded) {
    claim.not_recorded();  // the next part may write again
    co_return co_await error_response(s, status_for(recorded.error()), version, cx);
  }
  if (*recorded == upload->size) co_return co_await write_status(s, 200, version, keep, -1, cx);
  co_return co_await write_status(s, 308, version, keep, static_cast<std::int64_t>(*recorded), cx);
}

// HEAD with a bearer token: the upload's state.
net::awaitable<bool> head_upload(TlsSocket& s, std::string_view id, std::string_view token,
                                 unsigned version, bool keep, const HttpContext& cx) {
  auto upload = co_await files_call<Result<HttpFiles::Upload>>(cx, [&](auto done) {
    cx.files->begin_upload(std::string(id), std::string(token), std::move(done));
  });
  if (!upload) {
    http::response<http::empty_body> res{static_cast<http::status>(status_for(upload.error())),
                                         version};
    bool ok = co_await write_bytes(s, header_bytes(res, 0, keep, cx), cx);
    co_return ok && keep;
  }
  http::response<http::empty_body> res{http::status::ok, version};
  res.set("Upload-Offset", std::to_string(upload->have));
  res.set("Upload-Length", std::to_string(upload->size));
  res.set(http::field::cache_control, "no-store");
  bool ok = co_await write_bytes(s, header_bytes(res, 0, keep, cx), cx);
  co_return ok && keep;
}

// GET/HEAD of a complete attachment, with an optional single byte range.
net::awaitable<bool> get_attachment(TlsSocket& s, std::string_view id, std::string_view range_hdr,
                                    unsigned version, bool keep, bool head,
                                    const HttpContext& cx) {
  auto dl = co_await files_call<Result<HttpFiles::Download>>(
      cx, [&](auto done) { cx.files->open_download(std::string(id), std::move(done)); });
  if (!dl) {
    co_return co_await write_site_response(s, cx.site.error_page(status_for(dl.error())), version,
                                           keep, head, cx);
  }
  Fd fd(cx, [&] { return ::open(dl->path.c_str(), O_RDONLY | O_CLOEXEC); });
  if (!fd.ok()) co_return co_await error_response(s, fd.error_status(), version, cx, head);
  const std::uint64_t size = dl->size;
  std::uint64_t first = 0;
  std::uint64_t count = size;
  http::response<http::empty_body> res{http::status::ok, version};
  if (!range_hdr.empty()) {
    if (auto r = parse_range(range_hdr, size)) {
      if (!r->satisfiable) {
        http::response<http::string_body> bad{http::status::range_not_satisfiable, version};
        bad.set(http::field::content_range, "bytes */" + std::to_string(size));
        co_return co_await write_simple(s, bad, keep, cx);
      }
      first = r->first;
      count = r->last - r->first + 1;
      res.result(http::status::partial_content);
      res.set(http::field::content_range, "bytes " + std::to_string(r->first) + "-" +
                                              std::to_string(r->last) + "/" +
                                              std::to_string(size));
    }
  }
  res.set(http::field::content_type, "application/octet-stream");
  res.set(http::field::accept_ranges, "bytes");
  res.set(http::field::cache_control, "private, max-age=0");
  std::string header = header_bytes(res, count, keep, cx);
  if (head) co_return co_await write_bytes(s, header, cx) && keep;
  co_return co_await write_file(s, std::move(header), fd.get(), first, count, cx) && keep;
}

}  // namespace

net::awaitable<bool> write_site_response(TlsSocket& s, const SiteResponse& page, unsigned version,
                                         bool keep_alive, bool head, const HttpContext& cx) {
  const auto status = static_cast<http::status>(page.status);
  auto fill = [&](http::response_header<>& h) {
    if (!page.content_type.empty()) h.set(http::field::content_type, page.content_type);
    if (!page.last_modified.empty()) h.set(http::field::last_modified, page.last_modified);
    if (!page.etag.empty()) h.set(http::field::etag, page.etag);
    if (!page.allow.empty()) h.set(http::field::allow, page.allow);
  };
  if (page.status == 304) {
    http::response<http::empty_body> res{status, version};
    fill(res.base());
    set_common(res.base(), cx);
    res.keep_alive(keep_alive);
    co_return co_await write_bytes(s, wire_bytes(res), cx) && keep_alive;
  }
  if (page.file_path.empty()) {
    if (head) {
      http::response<http::empty_body> res{status, version};
      fill(res.base());
      co_return co_await write_bytes(s, header_bytes(res, page.body.size(), keep_alive, cx), cx) &&
          keep_alive;
    }
    http::response<http::string_body> res{status, version};
    fill(res.base());
    res.body() = page.body;
    co_return co_await write_simple(s, res, keep_alive, cx);
  }
  Fd fd(cx, [&] { return open_site_file(page); });
  if (!fd.ok()) {
    co_return co_await write_site_response(s, cx.site.error_page(fd.error_status()), version, false,
                                           head, cx);
  }
  http::response<http::empty_body> res{status, version};
  fill(res.base());
  std::string header = header_bytes(res, page.file_size, keep_alive, cx);
  if (head) co_return co_await write_bytes(s, header, cx) && keep_alive;
  co_return co_await write_file(s, std::move(header), fd.get(), 0, page.file_size, cx) &&
      keep_alive;
}

net::awaitable<bool> serve_site(TlsSocket& s, beast::flat_buffer& buffer, HeaderParser& hp,
                                const HttpContext& cx) {
  const auto& req = hp.get();
  const unsigned version = req.version();
  bool keep = req.keep_alive();
  const std::string method(req.method_string());
  const std::string target(req.target());
  const std::string inm(req[http::field::if_none_match]);
  const bool head = req.method() == http::verb::head;
  if (!hp.is_done()) {
    const BodyRead read = co_await drain_body(s, buffer, hp, kSiteBodyLimit, cx);
    if (read != BodyRead::kRead) co_return co_await refuse_body(s, read, version, head, cx);
  }
  SiteResponse page = cx.site.handle(method, target, inm);
  co_return co_await write_site_response(s, page, version, keep, head, cx);
}

net::awaitable<bool> serve_attachment(TlsSocket& s, beast::flat_buffer& buffer, HeaderParser& hp,
                                      std::string_view id, const HttpContext& cx) {
  const auto& req = hp.get();
  const unsigned version = req.version();
  const bool keep = req.keep_alive();
  if (cx.files == nullptr || !valid_attachment_id(id)) {
    co_return co_await serve_site(s, buffer, hp, cx);
  }
  switch (req.method()) {
    case http::verb::put:
      co_return co_await put_attachment(s, buffer, hp, std::string(id), cx);
    case http::verb::get:
    case http::verb::head: {
      const bool head = req.method() == http::verb::head;
      if (!hp.is_done()) co_return co_await error_response(s, 400, version, cx, head);
      auto auth = req[http::field::authorization];
      if (head && !auth.empty()) {
        auto token = bearer_token(auth);
        if (!token) co_return co_await unauthorized(s, version, cx);
        co_return co_await head_upload(s, id, *token, version, keep, cx);
      }
      co_return co_await get_attachment(s, id, req[http::field::range], version, keep, head, cx);
    }
    default: {
      if (!hp.is_done()) {
        const BodyRead read = co_await drain_body(s, buffer, hp, kSiteBodyLimit, cx);
        if (read != BodyRead::kRead) co_return co_await refuse_body(s, read, version, false, cx);
      }
      SiteResponse page = cx.site.error_page(405);
      page.allow = "GET, HEAD, PUT";
      co_return co_await write_site_response(s, page, version, keep, false, cx);
    }
  }
}

}  // namespace parley::transport::internal
