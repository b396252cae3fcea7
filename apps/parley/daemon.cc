#include "apps/parley/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "apps/parley/json_output.h"
#include "apps/parley/rpc.h"

namespace parley::cli {
namespace {

namespace asio = boost::asio;
using Local = asio::local::stream_protocol;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Bounds on what a connected program can make the daemon hold.
constexpr std::size_t kMaxLine = std::size_t{1} << 20;        // bytes, without the '\n'
constexpr std::size_t kMaxConnections = 64;
constexpr int kMaxInFlight = 16;                              // calls per connection; reading pauses
constexpr std::size_t kMaxQueuedBytes = std::size_t{64} << 20;  // unread output per connection
// Server error (JSON-RPC's implementation-defined range) sent to a connection over the limit.
constexpr int kRpcTooManyConnections = -32000;

// The client thread receives in slices this long and runs queued calls between them: a call
// waits at most about one slice before it starts (Client::receive cannot be woken early). Each
// slice costs a little CPU, so with no program connected the slices are longer.
constexpr milliseconds kReceiveSlice{2};
constexpr milliseconds kIdleReceiveSlice{100};
// After a failed receive (server unreachable): jittered exponential back-off.
constexpr milliseconds kFirstBackoff{250};
constexpr milliseconds kMaxBackoff{5000};
// After this many receive failures in a row the profile is re-opened: a fresh Client with no
// connection state. (Client::receive keeps a dead server connection when the outbox flush at its
// start fails, so without this a daemon with a queued message never reconnects.)
constexpr int kReopenAfterFailures = 3;

void log(const char* format, const std::string& arg) {
  std::fprintf(stderr, "parley daemon: ");
  std::fprintf(stderr, format, arg.c_str());
  std::fprintf(stderr, "\n");
}

using Line = std::shared_ptr<const std::string>;

Line make_line(const nlohmann::json& j) {
  auto s = std::make_shared<std::string>(dump_line(j));
  s->push_back('\n');
  return s;
}

class Session;

// Calls handed from the I/O thread to the client thread. Thread-safe.
class CallQueue {
 public:
  struct Call {
    std::weak_ptr<Session> session;  // locked on the I/O thread only
    nlohmann::json message;
  };

  void push(Call call) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      calls_.push_back(std::move(call));
    }
    cv_.notify_one();
  }
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
  }
  bool stopping() {
    std::lock_guard lock(mu_);
    return stopping_;
  }
  // Everything queued; waits up to `wait` for the first call (or stop) when there is none.
  std::deque<Call> take(milliseconds wait) {
    std::unique_lock lock(mu_);
    if (wait.count() > 0) cv_.wait_for(lock, wait, [&] { return !calls_.empty() || stopping_; });
    return std::exchange(calls_, {});
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Call> calls_;  // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
};

class Server;

// One connected program. Used on the I/O thread only; owned by the handlers of its pending
// operations and by the server's session set.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Local::socket socket, Server& server) : socket_(std::move(socket)), server_(server) {}

  void start() { read_next(); }
  // Queues a line for writing; a program that leaves kMaxQueuedBytes unread is disconnected.
  void deliver(Line line);
  // A call of this session finished on the client thread (`response`: none for a notification).
  void call_done(std::optional<std::string> response);
  void close();

 private:
  void read_next();
  void on_read(const error_code& ec, std::size_t n);
  void write_next();
  void finish_if_drained();

  Local::socket socket_;
  Server& server_;
  asio::streambuf in_{kMaxLine + 1};
  std::deque<Line> out_;
  std::size_t out_bytes_ = 0;
  int in_flight_ = 0;
  bool reading_ = false;
  bool writing_ = false;
  bool read_done_ = false;  // end of input, or an oversized line: close once drained
  bool closed_ = false;
};

// The listening socket, the sessions and the signals. Used on the I/O thread only (after open).
class Server {
 public:
  Server(asio::io_context& io, CallQueue& calls) : io_(io), calls_(calls), signals_(io) {}
  ~Server() { remove_socket_file(); }

  // Prepares and binds `path` (called before the I/O thread starts).
  Status open(const std::string& path);
  void start();
  void broadcast(const Line& line) {
    for (const auto& s : sessions_) s->deliver(line);
  }
  void submit(const std::shared_ptr<Session>& session, nlohmann::json message) {
    calls_.push(CallQueue::Call{session, std::move(message)});
  }
  void forget(const std::shared_ptr<Session>& session) {
    sessions_.erase(session);
    connections_.store(sessions_.size(), std::memory_order_relaxed);
  }
  // How many programs are connected (read from any thread).
  std::size_t connections() const { return connections_.load(std::memory_order_relaxed); }
  void stop();

 private:
  void accept_next();
  void remove_socket_file();

  asio::io_context& io_;
  CallQueue& calls_;
  asio::signal_set signals_;
  std::optional<Local::acceptor> acceptor_;
  std::set<std::shared_ptr<Session>> sessions_;
  std::atomic<std::size_t> connections_{0};
  std::string path_;
  bool own_file_ = false;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

// ---- Session ------------------------------------------------------------------------------------

void Session::read_next() {
  if (closed_ || reading_ || read_done_ || in_flight_ >= kMaxInFlight) return;
  reading_ = true;
  asio::async_read_until(socket_, in_, '\n',
                         [self = shared_from_this()](const error_code& ec, std::size_t n) {
                           self->on_read(ec, n);
                         });
}

void Session::on_read(const error_code& ec, std::size_t n) {
  reading_ = false;
  if (closed_) return;
  if (ec == asio::error::not_found) {  // kMaxLine bytes without a newline
    deliver(make_line(rpc_error(nullptr, kRpcParseError, "line longer than 1 MiB")));
    read_done_ = true;
    finish_if_drained();
    return;
  }
  if (ec) {
    // End of input: answer what is in flight, then close. Any other error: the peer is gone.
    if (ec == asio::error::eof) {
      read_done_ = true;
      finish_if_drained();
    } else {
      close();
    }
    return;
  }
  std::string line(asio::buffers_begin(in_.data()), asio::buffers_begin(in_.data()) + static_cast<std::ptrdiff_t>(n) - 1);
  in_.consume(n);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.find_first_not_of(" \t") != std::string::npos) {
    nlohmann::json message = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (message.is_discarded()) {
      deliver(make_line(rpc_error(nullptr, kRpcParseError, "not valid JSON")));
    } else {
      ++in_flight_;
      server_.submit(shared_from_this(), std::move(message));
    }
  }
  read_next();
}

void Session::call_done(std::optional<std::string> response) {
  --in_flight_;
  if (closed_) return;
  if (response) deliver(std::make_shared<const std::string>(std::move(*response)));
  read_next();
  finish_if_drained();
}

void Session::deliver(Line line) {
  if (closed_) return;
  if (out_bytes_ + line->size() > kMaxQueuedBytes) {
    std::fprintf(stderr, "parley daemon: a connection leaves its output unread; closing it\n");
    close();
    return;
  }
  out_bytes_ += line->size();
  out_.push_back(std::move(line));
  write_next();
}

void Session::write_next() {
  if (closed_ || writing_ || out_.empty()) return;
  writing_ = true;
  asio::async_write(socket_, asio::buffer(*out_.front()),
                    [self = shared_from_this()](const error_code& ec, std::size_t) {
                      self->writing_ = false;
                      if (self->closed_) return;
                      if (ec) {
                        self->close();
                        return;
                      }
                      self->out_bytes_ -= self->out_.front()->size();
                      self->out_.pop_front();
                      self->write_next();
                      self->finish_if_drained();
                    });
}

void Session::finish_if_drained() {
  if (read_done_ && in_flight_ == 0 && out_.empty() && !writing_) close();
}

void Session::close() {
  if (closed_) return;
  closed_ = true;
  error_code ignored;
  socket_.shutdown(Local::socket::shutdown_both, ignored);
  socket_.close(ignored);
  out_.clear();
  server_.forget(shared_from_this());
}

// ---- Server -------------------------------------------------------------------------------------

Status Server::open(const std::string& path) {
  path_ = path;
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "the socket path must be 1 to " +
                          std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes long");
  }
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return make_error(ErrorCode::kAlreadyExists, path + " exists and is not a socket");
    }
    // Is anybody listening? A non-blocking connect fails with ECONNREFUSED on a stale file (and
    // with EAGAIN, not blocking, when a live daemon's backlog is full).
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0) return make_error(ErrorCode::kIo, std::string("socket: ") + std::strerror(errno));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    const int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    const int err = errno;
    ::close(probe);
    if (rc == 0 || err == EAGAIN || err == EINPROGRESS) {
      return make_error(ErrorCode::kAlreadyExists, "a daemon is already running on " + path);
    }
    if (err != ECONNREFUSED) {
      return make_error(ErrorCode::kIo, "cannot probe " + path + ": " + std::strerror(err));
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return make_error(ErrorCode::kIo, "cannot remove the stale " + path + ": " + std::strerror(errno));
    }
  } else if (errno != ENOENT) {
    return make_error(ErrorCode::kIo, "cannot use " + path + ": " + std::strerror(errno));
  }

  error_code ec;
  acceptor_.emplace(io_);
  acceptor_->open(Local(), ec);
  if (!ec) {
    // Created 0600 from the start (umask), not chmod-ed after others could connect.
    const mode_t old = ::umask(0177);
    acceptor_->bind(Local::endpoint(path), ec);
    ::umask(old);
  }
  if (ec == asio::error::address_in_use) {
    return make_error(ErrorCode::kAlreadyExists, "a daemon is already running on " + path);
  }
  if (ec) return make_error(ErrorCode::kIo, "cannot bind " + path + ": " + ec.message());
  if (::lstat(path.c_str(), &st) == 0) {
    own_file_ = true;
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  if (::chmod(path.c_str(), 0600) != 0) {
    return make_error(ErrorCode::kIo, "cannot chmod " + path + ": " + std::strerror(errno));
  }
  acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return make_error(ErrorCode::kIo, "cannot listen on " + path + ": " + ec.message());
  return Status::ok();
}

void Server::start() {
  signals_.add(SIGINT);
  signals_.add(SIGTERM);
  signals_.async_wait([this](const error_code& ec, int) {
    if (!ec) stop();
  });
  accept_next();
}

void Server::accept_next() {
  acceptor_->async_accept([this](const error_code& ec, Local::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_->is_open()) return;
    if (!ec) {
      if (sessions_.size() >= kMaxConnections) {
        // Small enough for the socket buffer of a fresh connection: never blocks.
        const Line refusal =
            make_line(rpc_error(nullptr, kRpcTooManyConnections, "too many connections"));
        error_code ignored;
        socket.non_blocking(true, ignored);
        asio::write(socket, asio::buffer(*refusal), ignored);
        socket.close(ignored);
      } else {
        auto session = std::make_shared<Session>(std::move(socket), *this);
        sessions_.insert(session);
        connections_.store(sessions_.size(), std::memory_order_relaxed);
        session->start();
      }
    } else {
      // EMFILE and the like: keep serving the connections we have.
      std::fprintf(stderr, "parley daemon: accept: %s\n", ec.message().c_str());
    }
    accept_next();
  });
}

void Server::stop() {
  error_code ignored;
  signals_.cancel(ignored);
  if (acceptor_) acceptor_->close(ignored);
  remove_socket_file();
  auto sessions = sessions_;  // close() erases from sessions_
  for (const auto& s : sessions) s->close();
  calls_.stop();
}

void Server::remove_socket_file() {
  if (!own_file_) return;
  own_file_ = false;
  // Only our own file: after a stale-file takeover by someone else it is not ours any more.
  struct stat st{};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    ::unlink(path_.c_str());
  }
}

// ---- The client thread --------------------------------------------------------------------------

// Runs queued calls and receive slices until the server stops. `client` is null while the
// profile could not be re-opened; calls then fail with that reason.
void serve_client(const client::OpenOptions& options, const std::filesystem::path& download_dir,
                  std::unique_ptr<client::Client>& client, asio::io_context& io, Server& server,
                  CallQueue& calls) {
  std::minstd_rand jitter(std::random_device{}());
  milliseconds backoff = kFirstBackoff;
  Clock::time_point retry_at{};
  int failures = 0;
  Status reopen_error;
  auto notify = [&](const client::IncomingMessage& m) {
    asio::post(io, [&server, line = make_line(message_notification(m))] { server.broadcast(line); });
  };
  while (!calls.stopping()) {
    const auto now = Clock::now();
    const milliseconds wait =
        now < retry_at ? std::chrono::ceil<milliseconds>(retry_at - now) : milliseconds(0);
    for (CallQueue::Call& call : calls.take(wait)) {
      std::optional<nlohmann::json> response =
          client ? execute_rpc(*client, call.message) : fail_rpc(call.message, reopen_error);
      std::optional<std::string> line;
      if (response) line = dump_line(*response) + "\n";
      asio::post(io, [session = std::move(call.session), l = std::move(line)]() mutable {
        if (auto s = session.lock()) s->call_done(std::move(l));
      });
    }
    if (Clock::now() < retry_at) continue;
    if (!client || failures >= kReopenAfterFailures) {
      client.reset();  // the profile's database is closed before it is opened again
      auto reopened = client::Client::open(options);
      if (reopened) {
        client = std::move(*reopened);
        failures = 0;
      } else {
        reopen_error = reopened.error();
      }
    }
    Status s = reopen_error;
    if (client) {
      client::ReceiveOptions slice;
      slice.follow = true;
      slice.download_dir = download_dir;
      slice.timeout = server.connections() > 0 ? kReceiveSlice : kIdleReceiveSlice;
      s = client->receive(slice, notify);
    }
    if (s.is_ok()) {
      if (failures > 0) std::fprintf(stderr, "parley daemon: receiving again\n");
      failures = 0;
      backoff = kFirstBackoff;
      continue;
    }
    const auto half = static_cast<unsigned>(backoff.count() / 2);
    const milliseconds delay(half + jitter() % (half + 1));
    std::fprintf(stderr, "parley daemon: receive failed (%s); retrying in %lld ms\n",
                 s.to_string().c_str(), static_cast<long long>(delay.count()));
    ++failures;
    retry_at = Clock::now() + delay;
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

}  // namespace

int run_daemon(const client::OpenOptions& options, std::unique_ptr<client::Client> client,
               const std::string& socket_path, const std::filesystem::path& download_dir) {
  // A program that disconnects while we write must not kill the daemon.
  ::signal(SIGPIPE, SIG_IGN);
  asio::io_context io(1);
  CallQueue calls;
  Server server(io, calls);
  if (Status s = server.open(socket_path); !s.is_ok()) {
    log("%s", s.to_string());
    return 1;
  }
  server.start();
  auto guard = asio::make_work_guard(io);
  std::thread io_thread([&io] { io.run(); });
  std::printf("parley daemon: %s listening on %s\n", client->address().c_str(), socket_path.c_str());
  std::fflush(stdout);
  serve_client(options, download_dir, client, io, server, calls);
  guard.reset();
  io_thread.join();
  return 0;
}

}  // namespace parley::cli
