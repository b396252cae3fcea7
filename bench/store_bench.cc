// parley-bench-store: the server's SQLite store alone, through its public asynchronous API, on a
// fresh database (durability as shipped: WAL, synchronous=FULL, group commit by one writer).
//
//   parley-bench-store [--dir DIR] [--devices 500] [--messages 200000] [--size 200]
//                      [--inflight 8192]
//
// Phases, each timed on its own and reported with the process's CPU time per operation:
//   enqueue  store_messages of one 200-byte envelope (with a client message id: dedup on) to
//            devices in turn, `inflight` operations outstanding;
//   drain    every device fetches its queue 256 at a time and acknowledges each page;
//   online   a send followed by the acknowledgement of what it stored (the steady state of
//            online pairs), `inflight` pairs outstanding;
//   storm    after `messages` more are queued (not timed), every device drains at once, as
//            after an outage: a fetch of 256 per device outstanding, each page acknowledged and
//            followed by the next fetch, as parleyd's sessions do. Meanwhile one send every
//            millisecond (to a device that is not draining) reports how long it waited:
//            p50/p99/max from submission to its callback.
// The figures bound what parleyd can reach with its store: every message costs one enqueue and
// one acknowledgement.

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/rng.h"
#include "store/store.h"

namespace {

using namespace parley;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string dir;
  std::size_t devices = 500;
  std::size_t messages = 200000;
  std::size_t size = 200;
  std::size_t inflight = 8192;
};

// Fixture bytes (benchmark only: not secret). Used from the submitting thread alone.
DeterministicRng g_rng(42);
Bytes random_bytes(std::size_t n) {
  Bytes b(n);
  g_rng.fill(b);
  return b;
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Counts completions and bounds how many operations are outstanding.
class Window {
 public:
  explicit Window(std::size_t limit) : limit_(limit) {}
  void acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return outstanding_ < limit_; });
    ++outstanding_;
  }
  void release(bool ok) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --outstanding_;
      if (!ok) ++failures_;
    }
    cv_.notify_all();
  }
  void drain() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return outstanding_ == 0; });
  }
  std::size_t failures() {
    std::lock_guard<std::mutex> lock(mu_);
    return failures_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t limit_;
  std::size_t outstanding_ = 0;
  std::size_t failures_ = 0;
};

class Phase {
 public:
  explicit Phase(const char* name) : name_(name), wall_(Clock::now()), cpu_(cpu_seconds()) {}
  void report(std::size_t ops, const char* unit, std::size_t failures) {
    const double wall = std::chrono::duration<double>(Clock::now() - wall_).count();
    const double cpu = cpu_seconds() - cpu_;
    std::printf("%-8s %9zu %-13s in %7.3f s: %9.0f /s, %6.2f us CPU each%s\n", name_, ops, unit,
                wall, static_cast<double>(ops) / wall, cpu * 1e6 / static_cast<double>(ops),
                failures ? "  (FAILURES)" : "");
    if (failures) std::printf("         %zu operations failed\n", failures);
  }

 private:
  const char* name_;
  Clock::time_point wall_;
  double cpu_;
};

store::SendBatch make_send(std::int64_t sender, std::int64_t account, std::size_t size,
                           std::int64_t now) {
  store::SendBatch b;
  b.sender_account = sender;
  b.sender_device = 1;
  b.client_message_id = random_bytes(16);
  b.destination_account = account;
  b.now_ms = now;
  store::Delivery d;
  d.account_id = account;
  d.device_id = 1;
  d.registration_id = 1;  // as make_account registers it
  d.envelope.server_id = random_bytes(16);
  d.envelope.timestamp_ms = now;
  d.envelope.source = "sender";
  d.envelope.source_device = 1;
  d.envelope.type = 1;
  d.envelope.content = random_bytes(size);
  b.deliveries.push_back(std::move(d));
  return b;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

store::NewAccount make_account(std::string name) {
  store::NewAccount a;
  a.name = std::move(name);
  a.folded_name = a.name;
  a.device.registration_id = 1;
  a.device.auth_public_key = random_bytes(32);
  a.device.identity_key = random_bytes(33);
  a.device.signed_pre_key = {1, random_bytes(33), random_bytes(64)};
  a.now_ms = now_ms();
  return a;
}

// Queues `o.messages` sends, one envelope each, to the devices in turn (`o.inflight`
// outstanding); returns how many failed.
std::size_t enqueue(store::Store& db, const std::vector<std::int64_t>& accounts, const Options& o) {
  Window w(o.inflight);
  const std::int64_t now = now_ms();
  for (std::size_t i = 0; i < o.messages; ++i) {
    w.acquire();
    db.store_messages(
        make_send(accounts[(i + 1) % o.devices], accounts[i % o.devices], o.size, now),
        [&](Result<store::SendOutcome> r) {
          w.release(r && r->kind == store::SendOutcome::Kind::kStored);
        });
  }
  w.drain();
  return w.failures();
}

int run(const Options& o) {
  auto opened = store::open_sqlite_store(o.dir + "/parley.db");
  if (!opened) {
    std::fprintf(stderr, "open: %s\n", opened.error().to_string().c_str());
    return 1;
  }
  std::unique_ptr<store::Store> db = std::move(*opened);

  std::vector<std::int64_t> accounts;
  {
    Window w(o.inflight);
    std::mutex mu;
    for (std::size_t i = 0; i < o.devices; ++i) {
      w.acquire();
      db->create_account(make_account("user" + std::to_string(i)), [&](Result<store::Account> r) {
        if (r) {
          std::lock_guard<std::mutex> lock(mu);
          accounts.push_back(r->id);
        }
        w.release(r.has_value());
      });
    }
    w.drain();
  }
  if (accounts.size() != o.devices) {
    std::fprintf(stderr, "could not create the accounts\n");
    return 1;
  }

  {  // enqueue
    Phase p("enqueue");
    const std::size_t failures = enqueue(*db, accounts, o);
    p.report(o.messages, "envelopes", failures);
  }

  {  // drain: each device pages through its queue, acknowledging every page
    Phase p("drain");
    std::atomic<std::size_t> drained{0};
    Window w(64);
    for (std::int64_t account : accounts) {
      std::int64_t after = 0;
      for (;;) {
        std::mutex mu;
        std::condition_variable cv;
        std::optional<Result<std::vector<store::QueuedEnvelope>>> page;
        db->fetch_queue(account, 1, after, 256, store::kNoByteLimit,
                        [&](Result<std::vector<store::QueuedEnvelope>> r) {
                          std::lock_guard<std::mutex> lock(mu);
                          page.emplace(std::move(r));
                          cv.notify_one();
                        });
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return page.has_value(); });
        if (!*page || (*page)->empty()) break;
        std::vector<Bytes> ids;
        for (const auto& q : **page) ids.push_back(q.envelope.server_id);
        after = (*page)->back().seq;
        const std::size_t n = ids.size();
        w.acquire();
        db->ack(account, 1, std::move(ids), [&, n](Result<std::uint32_t> r) {
          if (r) drained += *r;
          w.release(r && *r == n);
        });
      }
    }
    w.drain();
    p.report(drained.load(), "envelopes", w.failures() + (o.messages - drained.load()));
  }

  {  // online: send, then acknowledge what was stored
    Window w(o.inflight);
    Phase p("online");
    const std::int64_t now = now_ms();
    for (std::size_t i = 0; i < o.messages; ++i) {
      w.acquire();
      const std::int64_t account = accounts[i % o.devices];
      store::SendBatch b = make_send(accounts[(i + 1) % o.devices], account, o.size, now);
      store::Store* s = db.get();
      db->store_messages(std::move(b), [&w, s, account](Result<store::SendOutcome> r) mutable {
        if (!r || r->kind != store::SendOutcome::Kind::kStored || r->server_ids.size() != 1) {
          w.release(false);
          return;
        }
        s->ack(account, 1, {std::move(r->server_ids[0])},
               [&w](Result<std::uint32_t> a) { w.release(a && *a == 1); });
      });
    }
    w.drain();
    p.report(o.messages, "send+ack pairs", w.failures());
  }
  {  // storm: every device drains at once while sends keep coming
    if (enqueue(*db, accounts, o) != 0) {
      std::fprintf(stderr, "storm: could not queue the messages\n");
      return 1;
    }
    std::atomic<std::size_t> drained{0}, failures{0}, devices_left{o.devices}, acks_left{0};
    // The probe's destination: an account of its own, which does not drain.
    std::int64_t probe_to = 0;
    {
      std::promise<std::int64_t> id;
      db->create_account(make_account("probe"),
                         [&](Result<store::Account> r) { id.set_value(r ? r->id : 0); });
      probe_to = id.get_future().get();
      if (probe_to == 0) {
        std::fprintf(stderr, "could not create the probe's account\n");
        return 1;
      }
    }
    // One device's drain: fetch a page, acknowledge it, fetch the next (callbacks run on the
    // store's thread, as parleyd's would post them on).
    std::function<void(std::int64_t, std::int64_t)> next_page = [&](std::int64_t account,
                                                                    std::int64_t after) {
      db->fetch_queue(account, 1, after, 256, store::kNoByteLimit,
                      [&, account](Result<std::vector<store::QueuedEnvelope>> r) {
                        if (!r || r->empty()) {
                          if (!r) ++failures;
                          --devices_left;
                          return;
                        }
                        std::vector<Bytes> ids;
                        for (const auto& q : *r) ids.push_back(q.envelope.server_id);
                        const std::int64_t last = r->back().seq;
                        const std::size_t n = ids.size();
                        ++acks_left;
                        db->ack(account, 1, std::move(ids), [&, n](Result<std::uint32_t> a) {
                          if (a) drained += *a;
                          if (!a || *a != n) ++failures;
                          --acks_left;
                        });
                        next_page(account, last);
                      });
    };
    Phase p("storm");
    for (std::int64_t account : accounts) next_page(account, 0);
    // The probe: a send every millisecond to an account that is not draining, timed until its
    // callback.
    std::mutex mu;
    std::vector<double> waits_ms;
    std::atomic<int> probes_left{0};
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    while (devices_left.load() > 0 && Clock::now() < deadline) {
      const auto t0 = Clock::now();
      ++probes_left;
      db->store_messages(make_send(accounts[0], probe_to, o.size, now_ms()),
                         [&, t0](Result<store::SendOutcome> r) {
                           const double ms =
                               std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
                           {
                             std::lock_guard<std::mutex> lock(mu);
                             waits_ms.push_back(ms);
                           }
                           if (!r) ++failures;
                           --probes_left;
                         });
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    while ((probes_left.load() > 0 || acks_left.load() > 0) && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (devices_left.load() > 0 || probes_left.load() > 0 || acks_left.load() > 0) {
      std::fprintf(stderr, "storm: not done after 120 s\n");
      std::_Exit(1);  // callbacks still refer to this frame
    }
    p.report(drained.load(), "envelopes", failures.load() + (o.messages - drained.load()));
    std::lock_guard<std::mutex> lock(mu);
    std::sort(waits_ms.begin(), waits_ms.end());
    auto at = [&](double q) {
      return waits_ms.empty()
                 ? 0.0
                 : waits_ms[std::min(
                       waits_ms.size() - 1,
                       static_cast<std::size_t>(q * static_cast<double>(waits_ms.size())))];
    };
    std::printf(
        "         %zu sends during the storm waited p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
        waits_ms.size(), at(0.5), at(0.99), waits_ms.empty() ? 0.0 : waits_ms.back());
  }
  const store::Stats st = db->stats();
  std::printf(
      "commits %llu, operations %llu (%.0f per commit); checkpoints %llu beside the "
      "writer, %llu by the writer itself (the WAL outgrew them)\n",
      static_cast<unsigned long long>(st.commits),
      static_cast<unsigned long long>(st.committed_ops),
      st.commits ? static_cast<double>(st.committed_ops) / static_cast<double>(st.commits) : 0.0,
      static_cast<unsigned long long>(st.checkpoints),
      static_cast<unsigned long long>(st.writer_checkpoints));
  db->close();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  auto number = [&](int& i) -> std::size_t {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", argv[i]);
      std::exit(2);
    }
    return static_cast<std::size_t>(std::strtoull(argv[++i], nullptr, 10));
  };
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--dir" && i + 1 < argc) {
      o.dir = argv[++i];
    } else if (a == "--devices") {
      o.devices = number(i);
    } else if (a == "--messages") {
      o.messages = number(i);
    } else if (a == "--size") {
      o.size = number(i);
    } else if (a == "--inflight") {
      o.inflight = number(i);
    } else {
      std::fprintf(stderr,
                   "usage: parley-bench-store [--dir DIR] [--devices N] [--messages N] "
                   "[--size BYTES] [--inflight N]\n");
      return 2;
    }
  }
  if (o.devices == 0 || o.messages == 0 || o.inflight == 0) {
    std::fprintf(stderr, "devices, messages and inflight must be > 0\n");
    return 2;
  }
  bool temporary = false;
  if (o.dir.empty()) {
    char tmpl[] = "/tmp/parley-bench-store-XXXXXX";
    if (!mkdtemp(tmpl)) return 1;
    o.dir = tmpl;
    temporary = true;
  }
  std::printf("parley-bench-store: %zu devices, %zu messages of %zu bytes, %zu in flight, %s\n",
              o.devices, o.messages, o.size, o.inflight, o.dir.c_str());
  const int rc = run(o);
  if (temporary) std::filesystem::remove_all(o.dir);
  return rc;
}
