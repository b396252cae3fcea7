// parley-client-drain: how long a client takes to drain and decrypt a queue of N messages.
//
// Starts its own parleyd on loopback (fresh temporary directory). Registers bob with the real
// client (libparley: SQLCipher profile, key file, real keys), then closes him. A sender ("alice",
// an in-memory Signal party driving the wire directly, so that queueing 10,000 messages takes
// seconds rather than minutes) builds a session from bob's bundle and queues N messages of about
// 100 bytes of text. Then, timed: bob's profile is opened and Client::receive runs until the
// server reports the queue empty; every message is decrypted, stored and acknowledged. Prints
// the wall time (goal: 10,000 messages in <= 1 s) and the figures behind it.
//
//   parley-client-drain --parleyd build/apps/parleyd/parleyd [-n 10000]
#include <sys/resource.h>

#include <time.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "client/client.h"
#include "client/content.h"
#include "crypto/primitives.h"
#include "protocol/in_memory_stores.h"
#include "protocol/session_builder.h"
#include "protocol/session_cipher.h"
#include "tests/server/harness.h"

#include <unistd.h>

namespace {

using namespace parley;
using Clock = std::chrono::steady_clock;

// CPU seconds (user + system) of this process, and of process `pid` from /proc.
double own_cpu() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
double proc_cpu(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(f, line);
  std::istringstream in(line.substr(line.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int run(const std::string& parleyd, int n) {
  ::setenv("PARLEYD", parleyd.c_str(), 1);
  testing::TempDir dir;
  // One sender queues N messages as fast as the wire allows: the per-account and per-IP rate
  // limits are raised (durability and everything else stay as shipped).
  const std::string config = dir.path() + "/parleyd.toml";
  if (std::FILE* f = std::fopen(config.c_str(), "w"); f != nullptr) {
    std::fputs("[limits]\nqueue_max_count = 10000000\nip_request_rate = 1000000000.0\n"
               "ip_request_burst = 1000000000.0\naccount_send_rate = 1000000000.0\n"
               "account_send_burst = 1000000000.0\n",
               f);
    std::fclose(f);
  }
  auto server = testing::Parleyd::start(dir.path(), {"--config", config});
  if (!server) {
    std::fprintf(stderr, "parleyd: %s\n", server.error().to_string().c_str());
    return 1;
  }
  client::OpenOptions bob_options;
  bob_options.profile_dir = dir.path() + "/bob";
  {
    auto bob = client::Client::register_account(bob_options, (*server)->invite_link(), "bob");
    if (!bob) {
      std::fprintf(stderr, "register bob: %s\n", bob.error().to_string().c_str());
      return 1;
    }
  }

  // The sender: a registered wire account with a real in-memory Signal party behind it.
  testing::TestClient wire_alice((*server)->client_options(), 7);
  if (!wire_alice.connect().is_ok() || !wire_alice.register_account("alice").has_value()) {
    std::fprintf(stderr, "register alice failed\n");
    return 1;
  }
  crypto::SystemRng rng;
  protocol::InMemoryParty alice(protocol::generate_identity_key_pair(rng),
                                protocol::generate_registration_id(rng));
  const protocol::ProtocolAddress bob_address{"bob@127.0.0.1", 1};
  {
    wire::Request r;
    r.mutable_fetch_bundles()->set_name("bob");
    auto resp = wire_alice.call(r);
    if (!resp || resp->status() != 0 || resp->bundles().bundles_size() != 1) {
      std::fprintf(stderr, "fetch bob's bundle failed\n");
      return 1;
    }
    const auto& b = resp->bundles().bundles(0);
    protocol::PreKeyBundle bundle;
    bundle.registration_id = b.registration_id();
    bundle.device_id = b.device_id();
    bundle.identity_key = *crypto::PublicKey::deserialize(as_bytes(b.identity_key()));
    bundle.signed_pre_key = *crypto::PublicKey::deserialize(as_bytes(b.signed_pre_key().public_key()));
    bundle.signed_pre_key_id = b.signed_pre_key().id();
    bundle.signed_pre_key_signature = to_bytes(b.signed_pre_key().signature());
    bundle.pre_key_id = b.pre_key().id();
    bundle.pre_key = *crypto::PublicKey::deserialize(as_bytes(b.pre_key().public_key()));
    protocol::SessionBuilder builder(alice.stores(), bob_address, rng);
    if (!builder.process_bundle(bundle).is_ok()) {
      std::fprintf(stderr, "process bob's bundle failed\n");
      return 1;
    }
  }
  std::uint32_t bob_registration = 0;
  {
    wire::Request r;
    r.mutable_devices()->set_name("bob");
    auto resp = wire_alice.call(r);
    if (!resp || resp->devices().devices_size() != 1) return 1;
    bob_registration = resp->devices().devices(0).registration_id();
  }
  const auto queue_start = Clock::now();
  protocol::SessionCipher cipher(alice.stores(), bob_address, rng);
  for (int i = 0; i < n; ++i) {
    client::Content c;
    c.set_timestamp(static_cast<std::uint64_t>(1700000000000 + i));
    c.mutable_data()->set_text("message " + std::to_string(i) + std::string(90, '.'));
    auto ct = cipher.encrypt(client::encode_content(c));
    if (!ct) return 1;
    Bytes id(16);
    rng.fill(id);
    wire::Request r;
    auto* send = r.mutable_send();
    send->set_destination("bob");
    send->set_client_message_id(std::string(as_chars(id)));
    auto* m = send->add_messages();
    m->set_device_id(1);
    m->set_registration_id(bob_registration);
    m->set_type(static_cast<std::uint32_t>(ct->type));
    m->set_content(std::string(as_chars(ct->serialized)));
    auto resp = wire_alice.call(r);
    if (!resp || resp->status() != 0) {
      std::fprintf(stderr, "send %d failed\n", i);
      return 1;
    }
  }
  std::printf("queued %d messages for bob in %.1f s\n", n, seconds_since(queue_start));

  // Timed: a fresh process's work from opening the profile to the drained queue.
  const auto start = Clock::now();
  const double cpu0 = own_cpu(), server_cpu0 = proc_cpu((*server)->pid());
  auto bob = client::Client::open(bob_options);
  if (!bob) {
    std::fprintf(stderr, "open bob: %s\n", bob.error().to_string().c_str());
    return 1;
  }
  const double opened = seconds_since(start);
  int received = 0, failed = 0;
  client::ReceiveOptions options;
  options.timeout = std::chrono::seconds(600);
  Status s = (*bob)->receive(options, [&](const client::IncomingMessage& m) {
    if (m.error.empty()) {
      ++received;
    } else {
      ++failed;
    }
  });
  const double total = seconds_since(start);
  {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    const double end_mono = static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
    // For profiling the drain alone (perf record -k CLOCK_MONOTONIC, perf report --time A,B).
    std::printf("drain window (CLOCK_MONOTONIC): %.6f,%.6f\n", end_mono - total, end_mono);
  }
  const double client_cpu = own_cpu() - cpu0, server_cpu = proc_cpu((*server)->pid()) - server_cpu0;
  if (!s.is_ok()) {
    std::fprintf(stderr, "receive: %s\n", s.to_string().c_str());
    return 1;
  }
  std::printf("drained %d messages (%d undecryptable) in %.3f s (profile open %.3f s): "
              "%.0f messages/s, %.1f us per message; goal 10,000 in <= 1 s: %s\n",
              received, failed, total, opened, received / total, total * 1e6 / received,
              (received >= 10000 && total <= 1.0) ? "met" : "NOT met");
  std::printf("CPU during the drain: client %.3f s (%.1f us per message), parleyd %.3f s\n",
              client_cpu, client_cpu * 1e6 / received, server_cpu);
  return received == n ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string parleyd;
  int n = 10000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--parleyd") == 0 && i + 1 < argc) {
      parleyd = argv[++i];
    } else if (std::strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
      n = std::atoi(argv[++i]);
    } else {
      parleyd.clear();
      break;
    }
  }
  if (parleyd.empty() || n <= 0) {
    std::fprintf(stderr, "usage: parley-client-drain --parleyd PATH [-n N]\n");
    return 2;
  }
  return run(parleyd, n);
}
