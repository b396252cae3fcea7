// parleyd's session logic (server/session.h) on a script of WebSocket messages from up to two
// clients (session_input.h has the format), over a real SQLite store in a fresh directory and
// a real Service, as parleyd runs them. The WebSocket connection is the one stand-in: it
// records what the server sends, which is what the transport would write.
//
// Invariants: nothing crashes, leaks or reaches undefined behaviour, and
// - every frame the server sends decodes, and is a response or a push; the challenge comes
//   first and once;
// - a response answers a request sent on that connection (no more answers to an id than
//   requests with it), with a status the protocol defines, never 500, and 503 only while the
//   server drains (the store is healthy, the disk has no reserve); this holds for each send of
//   a MultiSend too;
// - once the server has caught up, every request on a connection still open has had its answer
//   and none is counted in flight;
// - an envelope reaches only a connection that logged in, and carries content some client sent:
//   the server never makes up or alters ciphertext;
// - when every connection has closed, none is counted open or logged in.
//
// An input runs the same way every time, so that a crash reproduces: the store takes one
// operation at a time, each finished before the harness goes on (so its thread never races the
// harness, and batches never differ), acknowledged rows are deleted only at close, and the
// io_context runs its handlers one at a time, in order. The price: the store's group commits of
// several operations, and their rollbacks, are not fuzzed here (store_test covers them).
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <unistd.h>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/rng.h"
#include "crypto/primitives.h"
#include "fuzz_support.h"
#include "server/metrics.h"
#include "server/names.h"
#include "server/service.h"
#include "server/session.h"
#include "session_input.h"
#include "store/internal/sqlite_store.h"
#include "store/store.h"

namespace parley::fuzz {
namespace {

namespace fs = std::filesystem;
using server::Service;
using wire::Frame;

// Forwards to the real store one operation at a time, and counts the operations it has not
// answered yet, so that the harness knows when the server has caught up.
class CountingStore final : public store::Store {
 public:
  explicit CountingStore(store::Store& inner)
      : inner_(inner), harness_thread_(std::this_thread::get_id()) {}

  // Waits (at most 10 s) until every operation has been answered.
  bool wait_idle() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [this] { return outstanding_ == 0; });
  }

  void create_account(store::NewAccount a, store::Callback<store::Account> done) override {
    inner_.create_account(std::move(a), counted(std::move(done)));
  }
  void find_account(std::string name,
                    store::Callback<std::optional<store::Account>> done) override {
    inner_.find_account(std::move(name), counted(std::move(done)));
  }
  void create_invite(std::string token, std::int64_t expires_ms, store::Done done) override {
    inner_.create_invite(std::move(token), expires_ms, counted(std::move(done)));
  }
  void upload_keys(std::int64_t account, std::uint32_t device, Bytes auth,
                   std::optional<store::SignedPreKey> spk, std::vector<store::PreKey> keys,
                   store::Callback<std::uint32_t> done) override {
    inner_.upload_keys(account, device, std::move(auth), std::move(spk), std::move(keys),
                       counted(std::move(done)));
  }
  void pre_key_count(std::int64_t account, std::uint32_t device,
                     store::Callback<std::uint32_t> done) override {
    inner_.pre_key_count(account, device, counted(std::move(done)));
  }
  void take_bundles(std::int64_t account, std::uint32_t device,
                    store::Callback<std::vector<store::Bundle>> done) override {
    inner_.take_bundles(account, device, counted(std::move(done)));
  }
  void store_messages(store::SendBatch batch, store::Callback<store::SendOutcome> done) override {
    inner_.store_messages(std::move(batch), counted(std::move(done)));
  }
  void fetch_queue(std::int64_t account, std::uint32_t device, std::int64_t after_seq,
                   std::size_t limit, std::size_t max_bytes,
                   store::Callback<std::vector<store::QueuedEnvelope>> done) override {
    inner_.fetch_queue(account, device, after_seq, limit, max_bytes, counted(std::move(done)));
  }
  void ack(std::int64_t account, std::uint32_t device, std::vector<Bytes> ids,
           store::Callback<std::uint32_t> done) override {
    inner_.ack(account, device, std::move(ids), counted(std::move(done)));
  }
  void create_attachment(store::Attachment a, store::AttachmentQuota quota,
                         store::Callback<store::AttachmentOutcome> done) override {
    inner_.create_attachment(std::move(a), quota, counted(std::move(done)));
  }
  void find_attachment(std::string id,
                       store::Callback<std::optional<store::Attachment>> done) override {
    inner_.find_attachment(std::move(id), counted(std::move(done)));
  }
  void set_attachment_progress(std::string id, std::uint64_t have,
                               store::Callback<std::uint64_t> done) override {
    inner_.set_attachment_progress(std::move(id), have, counted(std::move(done)));
  }
  void expire(std::int64_t now_ms, std::int64_t max_age_ms, std::int64_t dedup_ms,
              store::Callback<std::vector<std::string>> done) override {
    inner_.expire(now_ms, max_age_ms, dedup_ms, counted(std::move(done)));
  }
  std::int64_t expiry_clock_at_open_ms() const override { return inner_.expiry_clock_at_open_ms(); }
  store::Stats stats() const override { return inner_.stats(); }
  void close() override { inner_.close(); }

 private:
  // Waits for the operations before (from the harness's thread: the store's own thread must
  // not wait for itself), then counts this one.
  template <typename F>
  F counted(F done) {
    if (std::this_thread::get_id() == harness_thread_) PARLEY_FUZZ_CHECK(wait_idle());
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++outstanding_;
    }
    return [this, done = std::move(done)](auto r) {
      if (done) done(std::move(r));
      std::lock_guard<std::mutex> lock(mu_);
      --outstanding_;
      cv_.notify_all();
    };
  }

  store::Store& inner_;
  const std::thread::id harness_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  int outstanding_ = 0;
};

// What one client connection saw and asked; the transport's part of a connection.
class Connection final : public transport::WsConnection {
 public:
  explicit Connection(boost::asio::any_io_executor ex) : ex_(std::move(ex)) {}

  bool send(std::shared_ptr<const std::string> message) override {
    if (closed_) return false;
    sent_.push_back(std::move(message));
    return true;
  }
  void close(std::string_view reason) override {
    if (closed_) return;
    closed_ = true;
    if (verbose())
      std::fprintf(stderr, "  server closed: %.*s\n", static_cast<int>(reason.size()),
                   reason.data());
  }
  const std::string& remote_ip() const override { return ip_; }
  std::size_t queued_bytes() const override { return 0; }
  const boost::asio::any_io_executor& executor() const override { return ex_; }

  bool closed() const { return closed_; }
  // Frames sent since the last call.
  std::vector<std::shared_ptr<const std::string>> take_sent() { return std::exchange(sent_, {}); }

 private:
  boost::asio::any_io_executor ex_;
  const std::string ip_ = "192.0.2.1";
  bool closed_ = false;
  std::vector<std::shared_ptr<const std::string>> sent_;
};

// One client slot: the connection open on it now, and what the checks need to know about it.
struct Client {
  std::shared_ptr<Connection> conn;
  std::unique_ptr<transport::WsHandler> handler;
  Bytes nonce;                              // from the challenge
  std::map<std::uint64_t, int> unanswered;  // request id -> requests not yet answered
  std::vector<std::string> pushed_ids;      // server ids pushed, in order
  bool challenged = false;
  bool logged_in = false;
};

// The server's side of one input: a store in a fresh directory, a Service, its io_context.
class World {
 public:
  // `empty_db`: a database as parleyd's first start leaves it (migrating a new one took 80 %
  // of an input's time).
  World(const fs::path& dir, const fs::path& empty_db, std::uint8_t config_byte) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy_file(empty_db, dir / "parley.db");
    // parleyd's options, but for a dedup index of 1,024 entries instead of a million (one
    // that small also forgets, and the store must then find resends in the database).
    store::internal::SqliteOptions options;
    options.dedup_entries = 1024;
    // Acknowledged rows are deleted after a second of real time, or at close: only at close.
    options.ack_flush_delay = std::chrono::hours(24);
    auto opened = store::internal::open_sqlite_store((dir / "parley.db").string(), options);
    PARLEY_FUZZ_CHECK(opened.has_value());
    sqlite_ = std::move(*opened);
    store_ = std::make_unique<CountingStore>(*sqlite_);

    server::ServerConfig config;
    config.data_dir = dir.string();
    config.server_name = "fuzz.example";
    config.login_timeout_s = 0;  // no timer outlives the input
    switch (config_byte & 3) {
      case kSessionOpen:
        config.registration = server::RegistrationPolicy::kOpen;
        break;
      case kSessionInviteOnly:
        config.registration = server::RegistrationPolicy::kInvite;
        break;
      default:
        config.registration = server::RegistrationPolicy::kPow;
        break;
    }
    config.pow_difficulty = kSessionPowDifficulty;
    // No disk reserve: attachment slots do not depend on the free memory of the machine
    // running the fuzzer.
    config.attachment_min_free_disk_mb = 0;
    if (config_byte & kSessionSmallQueues) config.queue_max_count = 4;
    if (config_byte & kSessionFewInflight) config.max_inflight_requests = 2;
    if (config_byte & kSessionSmallBurst) config.ip_request_burst = 8;
    service_ = std::make_unique<Service>(io_, std::move(config), *store_, clock_, rng_, metrics_);

    bool made = false;
    store_->create_invite(std::string(kSessionInvite), clock_.now_ms() + 3'600'000,
                          [&made](Status s) { made = s.is_ok(); });
    PARLEY_FUZZ_CHECK(store_->wait_idle() && made);
  }

  ~World() {
    settle();  // the requests of connections still open are answered
    for (int i = 0; i < 2; ++i) close_client(i);
    settle();
    PARLEY_FUZZ_CHECK(service_->requests_in_flight() == 0);
    PARLEY_FUZZ_CHECK(metrics_.connections.load() == 0);
    PARLEY_FUZZ_CHECK(metrics_.authenticated.load() == 0);
    store_->close();
    PARLEY_FUZZ_CHECK(store_->wait_idle());
  }

  void message(int i, std::string_view bytes) {
    Client& c = open_client(i);
    std::string rewritten;
    if (auto frame = wire::decode_frame(bytes)) {
      if (complete(c, *frame)) {
        rewritten = *wire::encode_frame(*frame, wire::Padding::kNone);
        bytes = rewritten;
      }
      if (frame->has_request()) ++c.unanswered[frame->request().id()];
      note_contents(*frame);
    }
    c.handler->on_message(bytes);
    // What the message asked of the store is done before anything else happens, so that an
    // input runs the same way every time (a crash reproduces): the store's thread never races
    // the next message or handler. Its answers wait on the io_context until a settle.
    PARLEY_FUZZ_CHECK(store_->wait_idle());
    collect();
  }

  void close_client(int i) {
    Client& c = clients_[i];
    if (!c.handler) return;
    c.handler->on_close();
    c = Client{};
    PARLEY_FUZZ_CHECK(store_->wait_idle());
  }

  // Runs the io_context's handlers one at a time, each followed by the store operations it
  // started, until neither has anything left to do.
  void settle() {
    for (int round = 0; round < 100'000; ++round) {
      PARLEY_FUZZ_CHECK(store_->wait_idle());
      io_.restart();
      const std::size_t ran = io_.poll_one();
      PARLEY_FUZZ_CHECK(store_->wait_idle());
      collect();
      if (ran == 0) {
        // Caught up: a connection still open has its answers, and so nothing is in flight
        // (a closed connection took its own count with it).
        for (const Client& c : clients_) {
          if (!c.handler) continue;
          for (const auto& [id, n] : c.unanswered) PARLEY_FUZZ_CHECK(n == 0);
        }
        PARLEY_FUZZ_CHECK(service_->requests_in_flight() == 0);
        return;
      }
    }
    PARLEY_FUZZ_CHECK(!"the server never caught up");
  }

  void drain() {
    service_->set_draining();
    draining_ = true;
  }
  void advance(std::uint16_t seconds) { clock_.advance_ms(std::int64_t{seconds} * 1000); }
  // Housekeeping's store call, under sessions that may hold expired envelopes unacknowledged.
  void expire() {
    bool done = false;
    store_->expire(clock_.now_ms(), kSessionExpiryAgeMs, kSessionExpiryAgeMs,
                   [&done](Result<std::vector<std::string>> r) { done = r.has_value(); });
    PARLEY_FUZZ_CHECK(store_->wait_idle() && done);
  }

 private:
  Client& open_client(int i) {
    Client& c = clients_[i];
    if (c.handler) return c;
    c.conn = std::make_shared<Connection>(io_.get_executor());
    c.handler = server::make_session_handler(*service_, c.conn->remote_ip());
    c.handler->on_open(c.conn);
    collect();
    PARLEY_FUZZ_CHECK(c.challenged);
    return c;
  }

  // Fills in what the fuzzer cannot forge (session_input.h); true if the frame changed.
  bool complete(const Client& c, Frame& f) {
    bool changed = false;
    auto ack_ids = [&](wire::AckRequest& ack) {
      for (std::string& id : *ack.mutable_server_ids()) {
        if (id.size() != 1 || c.pushed_ids.empty()) continue;
        id = c.pushed_ids[static_cast<std::uint8_t>(id[0]) % c.pushed_ids.size()];
        changed = true;
      }
    };
    if (f.has_ack()) ack_ids(*f.mutable_ack());
    if (!f.has_request()) return changed;
    wire::Request& r = *f.mutable_request();
    if (r.has_ack()) ack_ids(*r.mutable_ack());
    if (r.has_register_() && r.register_().challenge_signature().empty()) {
      wire::RegisterRequest& reg = *r.mutable_register_();
      if (reg.auth_public_key().empty())
        reg.set_auth_public_key(std::string(as_chars(key_.public_key)));
      if (auto folded = server::fold_name(reg.name())) {
        reg.set_challenge_signature(sign(c, *folded, 1));
        changed = true;
      }
    }
    if (r.has_login() && r.login().challenge_signature().empty()) {
      wire::LoginRequest& login = *r.mutable_login();
      if (auto folded = server::fold_name(login.name())) {
        login.set_challenge_signature(sign(c, *folded, login.device_id()));
        changed = true;
      }
    }
    return changed;
  }

  std::string sign(const Client& c, const std::string& name, std::uint32_t device) const {
    const auto signature = key_.sign(wire::auth_transcript(c.nonce, name, device));
    return std::string(as_chars(signature));
  }

  // Every ciphertext a client sent: the only content an envelope may carry.
  void note_contents(const Frame& f) {
    if (!f.has_request()) return;
    auto note = [this](const wire::SendRequest& s) {
      for (const auto& m : s.messages()) contents_.insert(m.content());
    };
    if (f.request().has_send()) note(f.request().send());
    if (f.request().has_multi_send()) {
      for (const auto& s : f.request().multi_send().sends()) note(s);
    }
  }

  // Checks what the server sent each connection, and answers a close by the server as the
  // transport does (on_close, once).
  void collect() {
    for (int i = 0; i < 2; ++i) {
      Client& c = clients_[i];
      if (!c.conn) continue;
      for (const auto& bytes : c.conn->take_sent()) check_sent(c, *bytes);
      if (c.conn->closed()) close_client(i);
    }
  }

  void check_sent(Client& c, const std::string& bytes) {
    auto frame = wire::decode_frame(bytes);
    PARLEY_FUZZ_CHECK(frame.has_value());
    PARLEY_FUZZ_CHECK(frame->has_response() || frame->has_push());
    if (frame->has_response()) {
      const wire::Response& r = frame->response();
      auto it = c.unanswered.find(r.id());
      PARLEY_FUZZ_CHECK(it != c.unanswered.end() && it->second > 0);
      --it->second;
      check_status(r.status());
      if (r.has_multi_send()) {
        for (const auto& e : r.multi_send().results()) check_status(e.status());
      }
      if (verbose() && r.status() != wire::kStatusOk) {
        std::fprintf(stderr, "  response %llu: %u %s\n", static_cast<unsigned long long>(r.id()),
                     r.status(), r.message().c_str());
      }
      if (r.has_login()) {
        PARLEY_FUZZ_CHECK(r.status() == wire::kStatusOk && !c.logged_in);
        c.logged_in = true;
      }
      return;
    }
    const wire::Push& p = frame->push();
    if (p.has_challenge()) {
      PARLEY_FUZZ_CHECK(!c.challenged && p.challenge().nonce().size() == 32);
      c.challenged = true;
      c.nonce = to_bytes(p.challenge().nonce());
      return;
    }
    PARLEY_FUZZ_CHECK(c.challenged);
    auto envelope = [&](const wire::Envelope& e) {
      PARLEY_FUZZ_CHECK(c.logged_in);
      PARLEY_FUZZ_CHECK(e.server_id().size() == 16);
      PARLEY_FUZZ_CHECK(contents_.count(e.content()) == 1);
      c.pushed_ids.push_back(e.server_id());
      if (verbose())
        std::fprintf(stderr, "  envelope from %s: %zu bytes\n", e.source().c_str(),
                     e.content().size());
    };
    if (p.has_envelope()) envelope(p.envelope());
    if (p.has_envelopes()) {
      for (const auto& e : p.envelopes().envelopes()) envelope(e);
    }
    if (p.has_queue_empty()) PARLEY_FUZZ_CHECK(c.logged_in);
  }

  // A status the protocol defines. Never 500, and 503 only while draining: this store does
  // not fail, and the disk has no reserve.
  void check_status(std::uint32_t s) const {
    PARLEY_FUZZ_CHECK(known_status(s));
    PARLEY_FUZZ_CHECK(s != wire::kStatusUnavailable || draining_);
  }

  static bool known_status(std::uint32_t s) {
    switch (s) {
      case wire::kStatusOk:
      case wire::kStatusBadRequest:
      case wire::kStatusUnauthorized:
      case wire::kStatusForbidden:
      case wire::kStatusNotFound:
      case wire::kStatusConflict:
      case wire::kStatusTooLarge:
      case wire::kStatusRateLimited:
      case wire::kStatusUnavailable:
        return true;
      default:
        return false;
    }
  }

  boost::asio::io_context io_;
  ManualClock clock_{1'800'000'000'000};
  DeterministicRng rng_{0x5e55'1011};
  server::Metrics metrics_;
  std::unique_ptr<store::Store> sqlite_;
  std::unique_ptr<CountingStore> store_;
  std::unique_ptr<Service> service_;
  Client clients_[2];
  bool draining_ = false;
  std::set<std::string> contents_;
  const crypto::Ed25519KeyPair key_ = [] {
    auto k = crypto::Ed25519KeyPair::from_seed(Bytes(32, 0x4b));
    PARLEY_FUZZ_CHECK(k.has_value());
    return std::move(*k);
  }();
};

// A directory of this process's own (in memory where there is /dev/shm), removed at exit: a
// new database for each input, and the migrated empty one they are copied from.
struct Scratch {
  fs::path root;
  fs::path world;
  fs::path empty_db;

  Scratch() {
    const char* shm = "/dev/shm";
    const fs::path base = fs::is_directory(shm) ? fs::path(shm) : fs::temp_directory_path();
    const std::string prefix = "parley_fuzz_session.";
    // Those of runs that crashed or were killed (no exit handler ran): their process is gone.
    // Only where /proc shows this process (else every run would look gone).
    std::error_code ec;
    const bool proc = fs::exists("/proc/self/stat", ec);
    for (fs::directory_iterator it(base, ec), end; proc && !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string pid = name.substr(prefix.size());
      std::error_code ignored;
      if (!pid.empty() && pid.find_first_not_of("0123456789") == std::string::npos &&
          !fs::exists("/proc/" + pid, ignored)) {
        fs::remove_all(it->path(), ignored);
      }
    }
    root = base / (prefix + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root / "empty");
    world = root / "world";
    empty_db = root / "empty" / "parley.db";
    auto made = store::open_sqlite_store(empty_db.string());
    PARLEY_FUZZ_CHECK(made.has_value());
    (*made)->close();
    std::atexit([] {
      std::error_code ignored;
      fs::remove_all(scratch().root, ignored);
    });
  }
  static const Scratch& scratch() {
    static const Scratch* s = new Scratch;  // never destroyed: the exit handler reads it
    return *s;
  }
};

}  // namespace
}  // namespace parley::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace parley::fuzz;
  if (size < 1) return 0;
  static const bool quiet = [] {
    if (!verbose()) spdlog::set_level(spdlog::level::warn);  // "event=register" per input
    parley::wire::route_protobuf_logs();  // as parleyd does: no line per non-UTF-8 string
    return true;
  }();
  (void)quiet;
  const Scratch& scratch = Scratch::scratch();
  World world(scratch.world, scratch.empty_db, data[0]);
  std::size_t at = 1;
  while (at + 3 <= size) {
    const std::uint8_t op = data[at];
    const std::size_t length = std::size_t{data[at + 1]} << 8 | data[at + 2];
    at += 3;
    const int client = (op >> 2) & 1;
    switch (static_cast<SessionOp>(op & 3)) {
      case SessionOp::kMessage: {
        if (length > size - at) return 0;  // ~World still checks what has run
        world.message(client, std::string_view(reinterpret_cast<const char*>(data + at), length));
        at += length;
        break;
      }
      case SessionOp::kClose:
        world.close_client(client);
        break;
      case SessionOp::kSettle:
        if (client == 1) world.drain();
        world.settle();
        break;
      case SessionOp::kAdvance:
        world.advance(static_cast<std::uint16_t>(length));
        if (client == 1) world.expire();
        break;
    }
  }
  return 0;
}
