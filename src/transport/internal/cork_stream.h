#pragma once
// Internal to src/transport: CorkStream, a write-coalescing layer between a WebSocket stream and
// its TLS stream.
//
// Without it every WebSocket message is one TLS record and one sendmsg: a server answering a
// send, pushing an envelope and answering an ack pays three of each. With it, a write copies
// the bytes into a buffer and completes at once; one flush, posted to the connection's strand,
// writes everything gathered since in one TLS write. While a flush is in flight new writes
// gather for the next one, so the busier a connection is the larger its writes become.
//
// The owner may hold() the buffer while it writes a run of messages and release() it after
// the last: a held buffer is flushed only when full. A flush is posted through the io_context
// given to set_flush_executor (when set), so it runs after every handler already queued there,
// and a burst of store callbacks for one connection leaves in one write.
//
// Input in hand: when the peer's messages arrived together (several in one TCP segment), each
// is read without waiting for the socket, and the writes they cause (a client's next sends, an
// echo) would each leave with a flush of their own, since the flush is queued ahead of the next
// read's completion. When the next layer says a read is under way that completes without
// waiting (TlsSocket::read_ready()), the flush is queued again behind it instead, at most
// kMaxYields times in a row and while less than kLimit is buffered, so what the whole burst
// causes leaves in one write. A read that must wait for the socket ends the yielding at once,
// so a lone message's answer is not held back.
//
// Bounds: at most kLimit bytes wait beside the flush in flight (a larger single write is taken
// whole, so a message is never split across flushes needlessly); a writer that finds the buffer
// full waits for the flush. A slow reader therefore holds at most about 2 × kLimit plus one
// message here; the connection's own queue limit bounds the rest. Idle connections keep no
// buffer: both are released when a flush finds nothing more to write.
//
// Errors: the first failed flush is remembered; every later and waiting write completes with it.
// Teardown (the WebSocket close) first waits for the buffered bytes to be written, then tears
// down the next layer. All of it runs on the next layer's executor (the connection's strand),
// as Beast's own operations do; the type is not thread-safe.

#include <boost/asio/buffer.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/async_base.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include <array>
#include <cstddef>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace parley::transport::internal {

template <class Next>
class CorkStream {
 public:
  using next_layer_type = Next;
  using executor_type = typename Next::executor_type;
  static constexpr std::size_t kLimit = 64 * 1024;
  static constexpr int kMaxYields = 64;

  // The next layer is shared with the flush in flight, which keeps it alive until the write
  // completes (its operation refers to it), even when this CorkStream is gone by then.
  explicit CorkStream(std::shared_ptr<Next> next) : st_(std::make_shared<State>()) {
    st_->next = std::move(next);
  }
  CorkStream(CorkStream&&) = delete;
  ~CorkStream() {
    st_->gone = true;
    st_->waiters.clear();  // their handlers are abandoned, as when a socket is destroyed
  }

  Next& next_layer() { return *st_->next; }
  const Next& next_layer() const { return *st_->next; }
  executor_type get_executor() { return st_->next->get_executor(); }

  // Where flushes are posted first (then dispatched to the next layer's executor). Any thread
  // may run it; the flush itself always runs on the next layer's executor.
  void set_flush_executor(executor_type ex) { st_->flush_ex = std::move(ex); }

  // Nothing is buffered, waiting for a flush or being written.
  bool flushed() const { return !st_->flushing && !st_->flush_posted && st_->pending.empty(); }

  // While held, buffered bytes wait until release() (or until the buffer is full).
  void hold() { st_->held = true; }
  void release() {
    st_->held = false;
    schedule_flush(st_);
  }

  template <class MutableBuffers, class Handler>
  auto async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    return st_->next->async_read_some(buffers, std::forward<Handler>(handler));
  }

  template <class ConstBuffers, class Handler>
  auto async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    return boost::asio::async_initiate<Handler, void(boost::system::error_code, std::size_t)>(
        [this](auto h, const ConstBuffers& b) {
          using Op = WriteOp<std::decay_t<decltype(h)>, ConstBuffers>;
          Op::start(Op(std::move(h), get_executor(), st_, b));
        },
        handler, buffers);
  }

  // The synchronous form of a write, for the owner's own framing: appends `head` then `body`
  // to the buffer as one piece and schedules the flush, when the buffer has room and no flush
  // failed. Returns the copy of `body` in the buffer, which the caller may change in place
  // until it returns to the executor (a WebSocket client masks it); nullopt (nothing taken)
  // otherwise: async_write_some then waits for room or reports the error. Saves a write
  // operation and a posted completion per message.
  std::optional<boost::asio::mutable_buffer> try_append(boost::asio::const_buffer head,
                                                        boost::asio::const_buffer body) {
    State& s = *st_;
    if (s.error || s.gone || s.pending.size() >= kLimit) return std::nullopt;
    const std::array<boost::asio::const_buffer, 2> pieces{head, body};
    char* out = append(st_, pieces);
    return boost::asio::mutable_buffer(out + head.size(), body.size());
  }

  // Completes with void(error_code) once everything buffered has been written (or with the
  // error that stopped it). Bound it with the next layer's deadline.
  template <class Handler>
  auto async_flush(Handler&& handler) {
    return boost::asio::async_initiate<Handler, void(boost::system::error_code)>(
        [this](auto h) { when_flushed([h = std::move(h), st = st_]() mutable { h(st->error); }); },
        handler);
  }

  // Runs `handler(error_code)` once everything buffered has been written (or failed), then
  // tears down the next layer. Found by Beast through argument-dependent lookup.
  template <class Handler>
  friend void async_teardown(boost::beast::role_type role, CorkStream& stream, Handler&& handler) {
    auto h = std::forward<Handler>(handler);
    stream.when_flushed([role, &stream, h = std::move(h)]() mutable {
      using boost::beast::websocket::async_teardown;
      async_teardown(role, *stream.st_->next, std::move(h));
    });
  }
  friend void teardown(boost::beast::role_type role, CorkStream& stream,
                       boost::system::error_code& ec) {
    // Synchronous close is never used by parley; whatever is still buffered is dropped.
    using boost::beast::websocket::teardown;
    teardown(role, *stream.st_->next, ec);
  }

 private:
  // Something that waits on the strand for room in the buffer or for the flush to end.
  struct Waiter {
    virtual ~Waiter() = default;
    virtual void resume() = 0;
  };
  struct State {
    std::shared_ptr<Next> next;
    bool gone = false;      // the CorkStream is gone: nothing more is written
    std::string pending;    // gathered for the next flush
    std::string in_flight;  // being written
    bool flushing = false;
    bool flush_posted = false;
    bool held = false;
    int yields = 0;  // flushes queued again in a row behind reads of input in hand
    std::optional<executor_type> flush_ex;
    boost::system::error_code error;
    // A list, not a deque: libstdc++'s deque allocates over 500 bytes even when empty, and
    // every connection has one of these, nearly always empty.
    std::list<std::unique_ptr<Waiter>> waiters;
  };

  template <class F>
  struct FnWaiter final : Waiter {
    explicit FnWaiter(F fn) : f(std::move(fn)) {}
    void resume() override { f(); }
    F f;
  };
  template <class F>
  static void wait(State& s, F f) {
    s.waiters.push_back(std::make_unique<FnWaiter<F>>(std::move(f)));
  }

  template <class Handler, class ConstBuffers>
  class WriteOp : public boost::beast::async_base<Handler, executor_type> {
   public:
    WriteOp(Handler&& h, executor_type ex, std::shared_ptr<State> st, const ConstBuffers& b)
        : boost::beast::async_base<Handler, executor_type>(std::move(h), ex),
          st_(std::move(st)),
          buffers_(b) {}
    WriteOp(WriteOp&&) = default;

    // `cont`: false from the initiating call (the handler is then posted, never run inline).
    static void start(WriteOp&& op, bool cont = false) {
      State& s = *op.st_;
      if (s.error) return op.complete(cont, s.error, std::size_t{0});
      if (s.gone) return op.complete(cont, boost::asio::error::operation_aborted, std::size_t{0});
      const std::size_t size = boost::asio::buffer_size(op.buffers_);
      if (size != 0 && s.pending.size() >= kLimit) {
        wait(s, [op = std::move(op)]() mutable { start(std::move(op), true); });
        return;
      }
      append(op.st_, op.buffers_);
      op.complete(cont, boost::system::error_code{}, size);
    }

   private:
    std::shared_ptr<State> st_;
    ConstBuffers buffers_;
  };

  // Copies `buffers` to the end of the pending bytes and schedules the flush (the caller has
  // checked for room); returns where the copy begins.
  template <class ConstBuffers>
  static char* append(const std::shared_ptr<State>& st, const ConstBuffers& buffers) {
    const std::size_t size = boost::asio::buffer_size(buffers);
    const std::size_t at = st->pending.size();
    st->pending.resize(at + size);
    char* out = st->pending.data() + at;
    boost::asio::buffer_copy(boost::asio::buffer(out, size), buffers);
    schedule_flush(st);
    return out;
  }

  static bool may_flush(const State& s) { return !s.held || s.pending.size() >= kLimit; }

  // Whether the next layer is reading input already in hand (see the top of this file).
  static bool input_in_hand(const State& s) {
    if constexpr (requires(const Next& n) { n.read_ready(); }) {
      return s.next->read_ready();
    } else {
      return false;
    }
  }

  // The flush runs after the handlers already queued, so their writes join it.
  static void schedule_flush(const std::shared_ptr<State>& st) {
    if (st->flushing || st->flush_posted || st->gone || st->pending.empty()) return;
    if (!may_flush(*st)) return;
    post_flush(st);
  }

  // Writes now, or queues the flush again behind a read of input in hand (the top of this file).
  static void flush_unless_reading(const std::shared_ptr<State>& st) {
    if (input_in_hand(*st) && st->yields < kMaxYields && st->pending.size() < kLimit) {
      ++st->yields;
      post_flush(st);
      return;
    }
    st->yields = 0;
    start_flush(st);
  }

  static void post_flush(const std::shared_ptr<State>& st) {
    st->flush_posted = true;
    auto run = [st] {
      st->flush_posted = false;
      if (may_flush(*st) && !st->gone) flush_unless_reading(st);
    };
    if (st->flush_ex) {
      boost::asio::post(*st->flush_ex, [run = std::move(run), ex = st->next->get_executor()] {
        boost::asio::dispatch(ex, std::move(run));
      });
    } else {
      boost::asio::post(st->next->get_executor(), std::move(run));
    }
  }

  static void start_flush(const std::shared_ptr<State>& st) {
    State& s = *st;
    if (s.flushing || s.pending.empty() || s.error || s.gone) return;
    s.in_flight.swap(s.pending);
    s.flushing = true;
    boost::asio::async_write(*s.next, boost::asio::buffer(s.in_flight),
                             [st](boost::system::error_code ec, std::size_t) { flushed(st, ec); });
  }

  static void flushed(const std::shared_ptr<State>& st, boost::system::error_code ec) {
    State& s = *st;
    s.flushing = false;
    if (s.gone) return;
    if (ec && !s.error) s.error = ec;
    if (!s.error && !s.pending.empty()) {
      s.in_flight.clear();  // keeps its capacity: start_flush swaps it in as the next pending
      if (may_flush(s)) flush_unless_reading(st);
    } else {
      std::string().swap(s.in_flight);  // idle or failed: keep no buffer
      std::string().swap(s.pending);
    }
    // Each waiter re-checks and may wait again; new waiters go to the back of the queue.
    std::list<std::unique_ptr<Waiter>> ready;
    ready.swap(s.waiters);
    for (auto& w : ready) {
      if (st->gone) return;
      w->resume();
    }
  }

  // Runs `f` on the strand once nothing is buffered or in flight (or a flush failed).
  template <class F>
  void when_flushed(F f) {
    release();
    State& s = *st_;
    if (s.error || (!s.flushing && s.pending.empty())) {
      boost::asio::post(st_->next->get_executor(), [st = st_, f = std::move(f)]() mutable {
        if (!st->gone) f();
      });
      return;
    }
    auto check = std::make_shared<std::unique_ptr<F>>(std::make_unique<F>(std::move(f)));
    wait_until_flushed(st_, std::move(check));
  }
  template <class F>
  static void wait_until_flushed(const std::shared_ptr<State>& st,
                                 std::shared_ptr<std::unique_ptr<F>> f) {
    wait(*st, [st, f]() mutable {
      if (!st->error && (st->flushing || !st->pending.empty())) {
        wait_until_flushed(st, std::move(f));
        return;
      }
      (**f)();
    });
  }

  std::shared_ptr<State> st_;  // holds the next layer too
};

}  // namespace parley::transport::internal
