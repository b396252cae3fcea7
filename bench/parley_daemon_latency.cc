// parley-daemon-latency: end-to-end latency of one message between two `parley daemon`s.
//
// Starts its own parleyd on loopback (a fresh temporary directory), registers alice and bob with
// the real `parley` CLI, starts a daemon for each and connects to their sockets. Then, N times and
// one message at a time: writes a `send` request to alice's socket and waits for the `message`
// notification on bob's socket. The time from writing the request to reading the notification is
// one sample (it covers JSON-RPC on both sockets, the daemons' client threads, encryption,
// parleyd storing and pushing, decryption and storing on bob's side). Prints p50/p99/mean/max.
//
//   parley-daemon-latency --parleyd build/apps/parleyd/parleyd --parley build/apps/parley/parley
//                         [-n 1000] [--warmup 20]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "tests/client/cli_support.h"
#include "tests/server/harness.h"

namespace {

using namespace parley::testing;
using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

int usage() {
  std::fprintf(stderr,
               "usage: parley-daemon-latency --parleyd PATH --parley PATH [-n N] [--warmup N]\n");
  return 2;
}

double percentile(const std::vector<double>& sorted, double p) {
  const auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

// One message alice -> bob: milliseconds from the request to the notification, or < 0 on error.
double one_message(RpcConnection& alice, RpcConnection& bob, int i) {
  const std::string text = "latency " + std::to_string(i);
  const nlohmann::json request{{"jsonrpc", "2.0"}, {"id", i}, {"method", "send"},
                               {"params", {{"to", "bob"}, {"text", text}}}};
  const auto start = Clock::now();
  if (!alice.send_line(request.dump()).is_ok()) return -1;
  auto n = bob.next_notification(seconds(30));
  const auto end = Clock::now();
  if (!n || (*n)["params"]["text"] != text) {
    std::fprintf(stderr, "message %d: %s\n", i, n ? n->dump().c_str() : n.status().to_string().c_str());
    return -1;
  }
  auto response = alice.response(i, seconds(30));
  if (!response || !response->contains("result")) {
    std::fprintf(stderr, "send %d: %s\n", i,
                 response ? response->dump().c_str() : response.status().to_string().c_str());
    return -1;
  }
  return std::chrono::duration<double, std::milli>(end - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  int n = 1000, warmup = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    if (a == "--parleyd") {
      ::setenv("PARLEYD", argv[++i], 1);
    } else if (a == "--parley") {
      ::setenv("PARLEY", argv[++i], 1);
    } else if (a == "-n") {
      n = std::atoi(argv[++i]);
    } else if (a == "--warmup") {
      warmup = std::atoi(argv[++i]);
    } else {
      return usage();
    }
  }
  if (n <= 0 || warmup < 0 || std::getenv("PARLEYD") == nullptr || std::getenv("PARLEY") == nullptr) {
    return usage();
  }

  TempDir dir;
  // Both daemons share 127.0.0.1: the per-IP and per-account request limits (200 requests/s per
  // IP as shipped) would throttle a benchmark sending as fast as it can, so they are raised.
  // Durability and everything else stay as shipped.
  const std::string config = dir.path() + "/parleyd.toml";
  if (std::FILE* f = std::fopen(config.c_str(), "w"); f != nullptr) {
    std::fputs("[limits]\nip_request_rate = 1000000000.0\nip_request_burst = 1000000000.0\n"
               "account_send_rate = 1000000000.0\naccount_send_burst = 1000000000.0\n",
               f);
    std::fclose(f);
  }
  auto server = Parleyd::start(dir.path(), {"--config", config});
  if (!server) {
    std::fprintf(stderr, "parleyd: %s\n", server.status().to_string().c_str());
    return 1;
  }
  std::vector<std::unique_ptr<ParleyProcess>> daemons;
  std::vector<std::unique_ptr<RpcConnection>> sockets;
  for (const std::string name : {"alice", "bob"}) {
    const std::string profile = dir.path() + "/p-" + name;
    Ran r = run_parley({"--profile", profile, "register", (*server)->invite_link(), "--name", name});
    if (r.exit_code != 0) {
      std::fprintf(stderr, "register %s: %s", name.c_str(), r.err.c_str());
      return 1;
    }
    const std::string socket = dir.path() + "/" + name + ".sock";
    auto d = ParleyProcess::spawn({"--profile", profile, "daemon", "--socket", socket},
                                  dir.path() + "/" + name + ".log");
    if (!d) return 1;
    daemons.push_back(std::move(*d));
    auto c = RpcConnection::connect(socket);
    if (!c) {
      std::fprintf(stderr, "connect %s: %s\n", socket.c_str(), c.status().to_string().c_str());
      return 1;
    }
    sockets.push_back(std::move(*c));
  }

  for (int i = 0; i < warmup; ++i) {
    if (one_message(*sockets[0], *sockets[1], i) < 0) return 1;
  }
  std::vector<double> ms;
  ms.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    const double t = one_message(*sockets[0], *sockets[1], warmup + i);
    if (t < 0) return 1;
    ms.push_back(t);
  }
  const double mean = std::accumulate(ms.begin(), ms.end(), 0.0) / static_cast<double>(ms.size());
  std::sort(ms.begin(), ms.end());
  std::printf("messages %d (after %d warm-up), one at a time, alice daemon -> bob daemon\n", n, warmup);
  std::printf("send request -> message notification: p50 %.2f ms  p99 %.2f ms  mean %.2f ms  max %.2f ms\n",
              percentile(ms, 50), percentile(ms, 99), mean, ms.back());
  for (auto& d : daemons) d->terminate();
  return 0;
}
