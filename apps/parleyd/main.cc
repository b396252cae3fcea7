// parleyd: the parley server.
//
//   parleyd --data DIR --listen HOST:PORT [--admin HOST:PORT] [--config FILE] [...]
//   parleyd --data DIR --listen HOST:PORT --bridge-to HOST:PORT [...]      (a bridge)
//   ... [--obfs4 HOST:PORT [--pt-binary PATH]]    (obfs4proxy in front, for both)
//
// First start creates DIR (0700), the SQLite database, a TLS key and self-signed certificate
// (unless --cert/--key are given) and a random WebSocket path. Every start prints one line
//   invite: parley://HOST:PORT/?v=1&name=...&pin=...&path=...[&invite=TOKEN][&obfs4=...]
// on stdout; a bridge (no database, no accounts: docs/operations.md) prints instead
//   bridge: parley://HOST:PORT/?v=1&bridge=1&pin=...&path=...[&sni=NAME][&obfs4=...]
// With --obfs4, obfs4proxy runs as a child in server mode (pt-spec v1) with this listener as
// its ORPORT; it exits with parleyd. SIGTERM or SIGINT drains gracefully: no new connections, every queued store
// operation committed, connections closed with "server restarting", exit status 0.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>
#include <thread>
#include <tuple>

#include "base/private_file.h"
#include "crypto/primitives.h"
#include "crypto/x509.h"
#include "server/attachments.h"
#include "server/config.h"
#include "server/housekeeping.h"
#include "server/metrics.h"
#include "server/service.h"
#include "store/store.h"
#include "transport/admin.h"
#include "transport/io_pool.h"
#include "transport/pt.h"
#include "transport/server.h"
#include "wire/frame.h"
#include "wire/invite.h"

namespace fs = std::filesystem;
using namespace parley;  // NOLINT: a main() file

namespace {

constexpr const char* kVersion = "parleyd 0.1.0 (wire 1)";
constexpr std::int64_t kInviteLifetimeMs = 7ll * 24 * 3600 * 1000;

Result<std::string> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, "cannot read " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string random_token(Rng& rng, std::size_t bytes) {
  // base64url without padding, so paths and tokens stay URL-safe.
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  Bytes b(bytes);
  rng.fill(b);
  std::string out;
  for (std::uint8_t v : b) out.push_back(kAlphabet[v & 63]);
  return out;
}

// Creates DIR and its secrets on first start; loads them afterwards.
Status prepare_data_dir(server::ServerConfig& cfg, Rng& rng, crypto::TlsIdentity& tls) {
  std::error_code ec;
  fs::create_directories(cfg.data_dir, ec);
  if (ec) return make_error(ErrorCode::kIo, "cannot create " + cfg.data_dir);
  ::chmod(cfg.data_dir.c_str(), 0700);
  const fs::path dir(cfg.data_dir);
  const fs::path ws_file = dir / "ws_path";
  if (!fs::exists(ws_file)) {
    PARLEY_TRY(write_private_file(ws_file.string(), "/" + random_token(rng, 22) + "\n"));
  }
  PARLEY_ASSIGN_OR_RETURN(std::string ws, read_file(ws_file));
  while (!ws.empty() && (ws.back() == '\n' || ws.back() == '\r')) ws.pop_back();
  if (ws.size() < 8 || ws.front() != '/') return make_error(ErrorCode::kInvalidArgument, "bad " + ws_file.string());
  cfg.ws_path = ws;

  // DIR/tls holds the generated certificate and key, and the ticket keys (also with --cert).
  const fs::path tls_dir = dir / "tls";
  fs::create_directories(tls_dir, ec);
  if (ec) return make_error(ErrorCode::kIo, "cannot create " + tls_dir.string());
  ::chmod(tls_dir.c_str(), 0700);
  if (!cfg.cert_file.empty() || !cfg.key_file.empty()) {
    if (cfg.cert_file.empty() || cfg.key_file.empty()) {
      return make_error(ErrorCode::kInvalidArgument, "--cert and --key go together");
    }
    PARLEY_ASSIGN_OR_RETURN(tls.cert_pem, read_file(cfg.cert_file));
    PARLEY_ASSIGN_OR_RETURN(tls.key_pem, read_file(cfg.key_file));
    return Status::ok();
  }
  if (!fs::exists(tls_dir / "cert.pem") || !fs::exists(tls_dir / "key.pem")) {
    PARLEY_ASSIGN_OR_RETURN(crypto::TlsIdentity fresh,
                            crypto::generate_self_signed(cfg.public_host, 3650));
    PARLEY_TRY(write_private_file((tls_dir / "key.pem").string(), fresh.key_pem));
    PARLEY_TRY(write_private_file((tls_dir / "cert.pem").string(), fresh.cert_pem));
    spdlog::info("event=tls_identity_created");
  }
  PARLEY_ASSIGN_OR_RETURN(tls.cert_pem, read_file(tls_dir / "cert.pem"));
  PARLEY_ASSIGN_OR_RETURN(tls.key_pem, read_file(tls_dir / "key.pem"));
  return Status::ok();
}

// Stores a new invitation token; `done` gets it once committed (on the store's thread).
void mint_invite(store::Store& store, Rng& rng, const Clock& clock,
                 std::function<void(Result<std::string>)> done) {
  std::string token = random_token(rng, 24);
  store.create_invite(token, clock.now_ms() + kInviteLifetimeMs,
                      [token, done = std::move(done)](Status s) {
                        if (!s.is_ok()) return done(std::move(s));
                        done(token);
                      });
}

std::string bracket(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

// obfs4proxy (or another PT binary) in server mode on cfg.obfs4, in front of our own TLS
// listener on `port`. Its keys live in DIR/pt, so its cert (in the links) survives restarts.
// The Extended ORPort's cookie, which obfs4proxy reads to prove itself there.
std::string ext_orport_cookie_file(const server::ServerConfig& cfg) {
  return (fs::path(cfg.data_dir) / "pt" / "extended_orport_auth_cookie").string();
}

// obfs4proxy in server mode, in front of `server`: it names each client on the server's
// Extended ORPort, so that per-IP limits see the client and not loopback.
Result<std::unique_ptr<transport::PtServer>> start_obfs4(const server::ServerConfig& cfg,
                                                         const transport::Server& server) {
  const std::uint16_t port = server.port();
  std::string orhost = cfg.listen.host;
  if (orhost.empty() || orhost == "0.0.0.0") orhost = "127.0.0.1";
  if (orhost == "::") orhost = "::1";
  transport::PtServerOptions o;
  o.binary = cfg.pt_binary;
  o.bind_addr = bracket(cfg.obfs4.host) + ":" + std::to_string(cfg.obfs4.port);
  o.orport = bracket(orhost) + ":" + std::to_string(port);
  o.state_dir = (fs::path(cfg.data_dir) / "pt").string();
  o.ext_orport = "127.0.0.1:" + std::to_string(server.ext_orport_port());
  o.auth_cookie_file = ext_orport_cookie_file(cfg);
  auto pt = transport::PtServer::start(o);
  if (pt) {
    spdlog::info("event=pt_started transport=obfs4 port={} pid={}", (*pt)->port(), (*pt)->pid());
  }
  return pt;
}

// The data directory, the TLS identity and its pin, as a server and a bridge both need them.
// Errors are printed; nullopt means "exit 1".
std::optional<crypto::Sha256Digest> prepare_identity(server::ServerConfig& cfg, Rng& rng,
                                                     crypto::TlsIdentity& tls) {
  if (Status s = prepare_data_dir(cfg, rng, tls); !s.is_ok()) {
    std::fprintf(stderr, "parleyd: %s\n", s.to_string().c_str());
    return std::nullopt;
  }
  auto pin = crypto::certificate_pin(tls.cert_pem);
  if (!pin) {
    std::fprintf(stderr, "parleyd: certificate: %s\n", pin.error().to_string().c_str());
    return std::nullopt;
  }
  return *pin;
}

// The TLS listener and, with --obfs4, the PT in front of it: what a server and a bridge share.
// Errors are printed; nullopt means "exit 1".
struct Front {
  std::unique_ptr<transport::Server> server;
  std::unique_ptr<transport::PtServer> pt;
};
std::optional<Front> start_front(boost::asio::io_context& io, const server::ServerConfig& cfg,
                                 transport::ServerOptions opts, transport::WsHandlerFactory factory,
                                 transport::HttpFiles* files) {
  opts.tls_tickets = cfg.tls_tickets != server::TlsTickets::kOff;
  if (cfg.tls_tickets == server::TlsTickets::kFile) {
    opts.ticket_key_file = (fs::path(cfg.data_dir) / "tls" / "ticket-keys").string();
  }
  opts.ticket_key_rotation = std::chrono::hours(cfg.tls_ticket_rotation_hours);
  if (!cfg.obfs4.host.empty()) {
    std::error_code ec;
    fs::create_directories(fs::path(cfg.data_dir) / "pt", ec);  // the PT's state directory
    opts.ext_orport_cookie_file = ext_orport_cookie_file(cfg);
  }
  auto server = transport::Server::start(io, opts, std::move(factory), files);
  if (!server) {
    std::fprintf(stderr, "parleyd: listen %s:%u: %s\n", cfg.listen.host.c_str(), cfg.listen.port,
                 server.error().to_string().c_str());
    return std::nullopt;
  }
  Front front;
  front.server = std::move(*server);
  if (!cfg.obfs4.host.empty()) {
    auto started = start_obfs4(cfg, *front.server);
    if (!started) {
      std::fprintf(stderr, "parleyd: --obfs4: %s\n", started.error().to_string().c_str());
      return std::nullopt;
    }
    front.pt = std::move(*started);
  }
  return front;
}

// The link's obfs4 parameters from the running PT (its public address when it listens on
// every interface).
void add_obfs4(wire::Invite& inv, const transport::PtServer* pt, const server::ServerConfig& cfg) {
  if (pt == nullptr || pt->args().empty()) return;
  const bool any = pt->host() == "0.0.0.0" || pt->host() == "::";
  inv.obfs4_host = any ? cfg.public_host : pt->host();
  inv.obfs4_port = pt->port();
  inv.obfs4_args = pt->args();
}

// Every ten minutes: a new TLS ticket key when the newest has sealed for a rotation period.
void rotate_ticket_keys_every(boost::asio::steady_timer& timer, transport::Server& server) {
  timer.expires_after(std::chrono::minutes(10));
  timer.async_wait([&timer, &server](boost::system::error_code ec) {
    if (ec) return;
    auto rotated = server.rotate_ticket_keys();
    if (!rotated) {
      spdlog::warn("event=tls_ticket_keys_not_written error=\"{}\"", rotated.error().to_string());
    } else if (*rotated) {
      spdlog::info("event=tls_ticket_key_rotated");
    }
    rotate_ticket_keys_every(timer, server);
  });
}

// Runs `then` once `done()` holds, or at `deadline`, looking every 20 ms with `timer`.
void wait_until(boost::asio::steady_timer& timer, std::function<bool()> done,
                std::chrono::steady_clock::time_point deadline, std::function<void()> then) {
  if (done() || std::chrono::steady_clock::now() > deadline) return then();
  timer.expires_after(std::chrono::milliseconds(20));
  timer.async_wait([&timer, done = std::move(done), deadline,
                    then = std::move(then)](boost::system::error_code) mutable {
    wait_until(timer, std::move(done), deadline, std::move(then));
  });
}

// Stops `io` once the server has no connection left, or after 5 s.
void wait_for_connections(boost::asio::steady_timer& timer, transport::Server& server,
                          boost::asio::io_context& io) {
  wait_until(
      timer, [&server] { return server.connection_count() == 0; },
      std::chrono::steady_clock::now() + std::chrono::seconds(5), [&io] { io.stop(); });
}

// A second SIGTERM or SIGINT during a drain ends the process at once: everything it
// acknowledged is committed already (as after a kill -9), only answers in flight are lost.
void exit_on_second_signal(boost::asio::signal_set& signals) {
  signals.async_wait([](boost::system::error_code ec, int sig) {
    if (ec) return;
    spdlog::warn("event=exit_now signal={}", sig);
    spdlog::default_logger()->flush();  // not shutdown(): io threads may still be logging
    std::_Exit(1);
  });
}

std::int64_t build_day_ms() { return static_cast<std::int64_t>(PARLEY_BUILD_DAY_S) * 1000; }

// parleyd's clock floor: the day it was built, or, when the system clock reads earlier than
// that (it has not been set), the database's last write if later: what was stored before a
// restart on such a machine is then not dated after what is stored since. (A clock that reads
// past the build day is trusted: a database written under a clock set ahead must not drag the
// floor into the future.) Read before the store opens the database; see also with_expiry_clock.
std::int64_t clock_floor_ms(const Clock& system, const std::string& data_dir) {
  std::int64_t floor = build_day_ms();
  if (system.now_ms() >= floor) return floor;
  for (const char* name : {"parley.db", "parley.db-wal"}) {
    std::error_code ec;
    const auto written = fs::last_write_time(fs::path(data_dir) / name, ec);
    if (ec) continue;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::file_clock::to_sys(written).time_since_epoch())
                        .count();
    floor = std::max<std::int64_t>(floor, ms);
  }
  return floor;
}

// The floor raised to the last expiry's reading kept in the database, when the system clock reads
// earlier than the build day: a machine whose clock was never set wrote its files with 1970
// times, but its expiry clock ran on from the floor. Raising the floor keeps what is stored after
// the restart dated after what was stored before it. A kept reading more than 20 years past the
// build day is not believed (a damaged database, not a clock): it would date everything stored
// from now on decades ahead.
std::int64_t with_expiry_clock(const Clock& system, std::int64_t floor, std::int64_t kept_ms) {
  constexpr std::int64_t kBelievableMs = std::int64_t{20} * 366 * 24 * 3600 * 1000;
  if (system.now_ms() >= build_day_ms()) return floor;
  if (kept_ms > build_day_ms() + kBelievableMs) {
    spdlog::warn(
        "event=expiry_clock_ignored reason=\"the kept reading is decades past the build "
        "day\"");
    return floor;
  }
  return std::max(floor, kept_ms);
}

unsigned io_thread_count(std::uint32_t configured) {
  return configured != 0 ? configured : std::max(1u, std::thread::hardware_concurrency());
}

int run(server::ServerConfig cfg) {
  crypto::SystemRng rng;
  const SystemClock system_clock;
  const std::int64_t files_floor_ms = clock_floor_ms(system_clock, cfg.data_dir);
  if (cfg.server_name.empty()) cfg.server_name = cfg.listen.host;
  if (cfg.public_host.empty()) cfg.public_host = cfg.listen.host;

  crypto::TlsIdentity tls;
  auto pin = prepare_identity(cfg, rng, tls);
  if (!pin) return 1;
  auto store = store::open_sqlite_store((fs::path(cfg.data_dir) / "parley.db").string());
  if (!store) {
    std::fprintf(stderr, "parleyd: database: %s\n", store.error().to_string().c_str());
    return 1;
  }
  const FlooredClock clock(system_clock, with_expiry_clock(system_clock, files_floor_ms,
                                                           (*store)->expiry_clock_at_open_ms()));

  // Connections are spread over `pool`, one thread per context; `io` (the first of them, run
  // by this thread) also runs the acceptor, the admin listener, signals and housekeeping.
  boost::asio::io_context io(1);
  transport::IoPool pool(io, io_thread_count(cfg.io_threads));
  server::Metrics metrics;
  server::Service service(io, cfg, **store, clock, rng, metrics);
  transport::ServerOptions opts;
  opts.listen_host = cfg.listen.host;
  opts.listen_port = cfg.listen.port;
  opts.cert_pem = tls.cert_pem;
  opts.key_pem = tls.key_pem;
  opts.workers = pool.contexts();
  service.fill_transport_options(opts);
  auto front = start_front(io, cfg, opts, service.handler_factory(), &service.http_files());
  if (!front) return 1;
  auto& server = front->server;
  auto& pt = front->pt;
  const std::uint16_t port = server->port();

  std::unique_ptr<transport::AdminServer> admin;
  if (!cfg.admin.host.empty()) {
    auto a = transport::AdminServer::start(
        io, cfg.admin.host, cfg.admin.port,
        [&](const std::string& method, const std::string& target, transport::AdminReply reply) {
          if (method == "GET" && target == "/metrics") {
            return reply({200, "text/plain; version=0.0.4",
                          metrics.render_prometheus((*store)->stats(), server->tls_handshakes(),
                                                    server->keepalive_counts(), server->refusals(),
                                                    server->relayed()) +
                              "# HELP parley_requests_in_flight Requests read and not yet "
                              "answered (a drain waits for none).\n"
                              "# TYPE parley_requests_in_flight gauge\n"
                              "parley_requests_in_flight " +
                              std::to_string(service.requests_in_flight()) + "\n"});
          }
          if (method == "POST" && target == "/invite") {
            wire::Invite inv;
            inv.host = cfg.public_host;
            inv.port = cfg.public_port ? cfg.public_port : port;
            inv.server_name = cfg.server_name;
            inv.pin_sha256 = Bytes(pin->begin(), pin->end());
            inv.ws_path = cfg.ws_path;
            add_obfs4(inv, pt.get(), cfg);
            return mint_invite(
                **store, rng, clock, [inv, reply](Result<std::string> token) mutable {
                  if (!token) {
                    return reply({500, "text/plain", "could not create an invite\n"});
                  }
                  inv.invite_token = *token;
                  reply({200, "text/plain", wire::format_invite(inv) + "\n"});
                });
          }
          if (method == "GET" && target == "/health") {
            // A load balancer's check fails while the server drains: send no one new here.
            if (service.draining()) return reply({503, "text/plain", "draining\n"});
            return reply({200, "text/plain", "ok\n"});
          }
          reply({404, "text/plain", "not found\n"});
        });
    if (!a) {
      std::fprintf(stderr, "parleyd: admin %s:%u: %s\n", cfg.admin.host.c_str(), cfg.admin.port,
                   a.error().to_string().c_str());
      return 1;
    }
    admin = std::move(*a);
  }

  wire::Invite invite;
  invite.host = cfg.public_host;
  invite.port = cfg.public_port ? cfg.public_port : port;
  invite.server_name = cfg.server_name;
  invite.pin_sha256 = Bytes(pin->begin(), pin->end());
  invite.ws_path = cfg.ws_path;
  add_obfs4(invite, pt.get(), cfg);
  if (cfg.registration == server::RegistrationPolicy::kInvite) {
    std::promise<Result<std::string>> minted;  // before the io threads serve anyone
    mint_invite(**store, rng, clock,
                [&minted](Result<std::string> t) { minted.set_value(std::move(t)); });
    auto token = minted.get_future().get();
    if (!token) {
      std::fprintf(stderr, "parleyd: invite: %s\n", token.error().to_string().c_str());
      return 1;
    }
    invite.invite_token = *token;
  }
  std::printf("invite: %s\n", wire::format_invite(invite).c_str());
  if (admin) std::printf("admin: http://%s:%u/metrics\n", cfg.admin.host.c_str(), admin->port());
  std::fflush(stdout);
  spdlog::info("event=started port={} registration={} threads={}", port,
               server::policy_name(cfg.registration), io_thread_count(cfg.io_threads));

  // Housekeeping: expire old envelopes, dedup keys, invites and attachments, now and every 10
  // minutes, by a clock that does not follow the system clock's jumps ahead.
  const BootClock boot_clock;
  server::Housekeeping housekeeping(service, clock, boot_clock);
  housekeeping.start();
  boost::asio::steady_timer ticket_rotation(io);
  rotate_ticket_keys_every(ticket_rotation, *server);

  boost::asio::steady_timer drain_timer(io);
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](boost::system::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("event=draining signal={}", sig);
    server->stop_accepting();
    service.set_draining();
    housekeeping.stop();
    ticket_rotation.cancel();
    exit_on_second_signal(signals);
    // Answer the requests in flight (for 0.5 s at least, so that what clients sent with the
    // signal is read and refused; 5 s at most), close the connections, wait (bounded) until
    // every connection has ended (so each session is released), then stop.
    const auto start = std::chrono::steady_clock::now();
    wait_until(
        drain_timer,
        [&service, start] {
          return std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(500) &&
                 service.requests_in_flight() <= 0;
        },
        start + std::chrono::seconds(5),
        [&] {
          spdlog::info("event=closing_connections requests_in_flight={}",
                       service.requests_in_flight());
          server->close_all("server restarting");
          if (admin) admin->stop();
          wait_for_connections(drain_timer, *server, io);
        });
  });

  // Once io runs (and only once nothing above can fail: the sweep's answers post to io).
  boost::asio::post(io, [&service] { server::sweep_orphan_attachment_files(service); });
  pool.run();
  (*store)->close();  // commits everything still queued
  pt.reset();         // obfs4proxy ends with us
  spdlog::info("event=stopped");
  return 0;
}

// A bridge: the same TLS listener and website as parleyd, no store and no accounts; its secret
// path splices to cfg.bridge_to (transport::ServerOptions::bridge_to_host).
int run_bridge(server::ServerConfig cfg) {
  crypto::SystemRng rng;
  if (cfg.public_host.empty()) cfg.public_host = cfg.listen.host;
  crypto::TlsIdentity tls;
  auto pin = prepare_identity(cfg, rng, tls);
  if (!pin) return 1;
  // Connections are spread over `pool`, one thread per context; `io` (the first of them, run
  // by this thread) also runs the acceptor, the admin listener, signals and housekeeping.
  boost::asio::io_context io(1);
  transport::IoPool pool(io, io_thread_count(cfg.io_threads));
  transport::ServerOptions opts;
  opts.listen_host = cfg.listen.host;
  opts.listen_port = cfg.listen.port;
  opts.cert_pem = tls.cert_pem;
  opts.key_pem = tls.key_pem;
  opts.workers = pool.contexts();
  // What parleyd's own Service sets, so that the website answers the same.
  server::fill_listener_options(cfg, opts);
  opts.bridge_to_host = cfg.bridge_to.host;
  opts.bridge_to_port = cfg.bridge_to.port;
  opts.bridge_proxy_header = cfg.bridge_proxy_header;
  auto front = start_front(io, cfg, opts, nullptr, nullptr);
  if (!front) return 1;
  auto& server = front->server;
  auto& pt = front->pt;
  const std::uint16_t port = server->port();
  std::unique_ptr<transport::AdminServer> admin;
  if (!cfg.admin.host.empty()) {
    auto a = transport::AdminServer::start(
        io, cfg.admin.host, cfg.admin.port,
        [&](const std::string& method, const std::string& target, transport::AdminReply reply) {
          if (method == "GET" && target == "/health") return reply({200, "text/plain", "ok\n"});
          if (method == "GET" && target == "/metrics") {
            return reply({200, "text/plain; version=0.0.4",
                          "# TYPE parley_bridge_connections gauge\nparley_bridge_connections " +
                              std::to_string(server->connection_count()) + "\n" +
                              server::render_front(server->refusals(), server->relayed())});
          }
          reply({404, "text/plain", "not found\n"});
        });
    if (!a) {
      std::fprintf(stderr, "parleyd: admin %s:%u: %s\n", cfg.admin.host.c_str(), cfg.admin.port,
                   a.error().to_string().c_str());
      return 1;
    }
    admin = std::move(*a);
  }
  wire::Invite link;
  link.is_bridge = true;
  link.host = cfg.public_host;
  link.port = cfg.public_port ? cfg.public_port : port;
  link.pin_sha256 = Bytes(pin->begin(), pin->end());
  link.ws_path = cfg.ws_path;
  link.sni = cfg.bridge_sni;
  add_obfs4(link, pt.get(), cfg);
  std::printf("bridge: %s\n", wire::format_invite(link).c_str());
  if (admin) std::printf("admin: http://%s:%u/metrics\n", cfg.admin.host.c_str(), admin->port());
  std::fflush(stdout);
  spdlog::info("event=started mode=bridge port={} to={}:{}", port, cfg.bridge_to.host,
               cfg.bridge_to.port);

  boost::asio::steady_timer ticket_rotation(io);
  rotate_ticket_keys_every(ticket_rotation, *server);
  boost::asio::steady_timer drain_timer(io);
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](boost::system::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("event=draining signal={}", sig);
    ticket_rotation.cancel();
    server->stop_accepting();
    exit_on_second_signal(signals);
    server->close_all("server restarting");
    if (admin) admin->stop();
    wait_for_connections(drain_timer, *server, io);
  });
  pool.run();
  pt.reset();
  spdlog::info("event=stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ::umask(077);                // the data directory holds keys: private to the service user
  ::signal(SIGPIPE, SIG_IGN);  // a closed stdout or socket is an error value, not a crash
  // A write past the file-size limit (ulimit -f, systemd's LimitFSIZE=) fails with EFBIG, which
  // the store reports like a full disk, instead of killing the server.
  ::signal(SIGXFSZ, SIG_IGN);
  auto logger = spdlog::stderr_color_mt("parleyd");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  wire::route_protobuf_logs();  // a client's non-UTF-8 string: a debug line, not a raw one

  CLI::App app{"parleyd: the parley server (stores and forwards ciphertext only)"};
  app.set_version_flag("--version", kVersion);
  server::ServerConfig cfg;
  std::string config_file, listen, admin, policy, bridge_to, obfs4;
  app.add_option("--config", config_file, "TOML configuration file (flags override it)");
  app.add_option("--data", cfg.data_dir, "data directory (created on first start)");
  app.add_option("--listen", listen, "HOST:PORT to listen on (TLS); port 0 picks a free one");
  app.add_option("--admin", admin, "HOST:PORT for /metrics (plain HTTP; keep it private)");
  app.add_option("--name", cfg.server_name, "server name in addresses (default: listen host)");
  app.add_option("--public-host", cfg.public_host, "host written into invite links");
  app.add_option("--public-port", cfg.public_port, "port written into invite links");
  app.add_option("--cert", cfg.cert_file, "PEM certificate (default: generated self-signed)");
  app.add_option("--key", cfg.key_file, "PEM private key for --cert");
  app.add_option("--site", cfg.site_dir, "directory of the public website (default: built-in)");
  app.add_option("--io-threads", cfg.io_threads, "threads serving connections (0: one per core)");
  app.add_option("--registration", policy, "registration policy: open, invite or pow");
  app.add_option("--pow-difficulty", cfg.pow_difficulty, "leading zero bits for pow registration")
      ->check(CLI::Range(0u, server::kMaxPowDifficulty));
  app.add_option("--queue-max-count", cfg.queue_max_count, "envelopes per device queue");
  app.add_option("--queue-max-bytes", cfg.queue_max_bytes, "bytes per device queue");
  app.add_option("--max-connections", cfg.max_connections, "simultaneous connections");
  app.add_option("--attachment-max-bytes", cfg.attachment_max_bytes, "largest attachment");
  app.add_option("--bridge-to", bridge_to,
                 "run as a bridge to the parleyd at HOST:PORT (no store, no accounts)");
  app.add_option("--bridge-sni", cfg.bridge_sni, "TLS server name clients send to this bridge");
  app.add_flag("--bridge-proxy-header", cfg.bridge_proxy_header,
               "open each upstream connection with a PROXY v2 header naming the client");
  app.add_option("--proxy-from", cfg.proxy_from,
                 "a relay (IP address or network; repeatable) whose connections open with a "
                 "PROXY header (version 1 or 2)");
  app.add_option("--obfs4", obfs4, "run obfs4proxy in server mode on HOST:PORT in front of this");
  app.add_option("--pt-binary", cfg.pt_binary, "the pluggable-transport binary (obfs4proxy)");
  CLI11_PARSE(app, argc, argv);

  // Precedence: defaults < config file < flags. Re-apply flags over the file's values.
  if (!config_file.empty()) {
    server::ServerConfig from_file;
    if (Status s = server::load_config_file(config_file, from_file); !s.is_ok()) {
      std::fprintf(stderr, "parleyd: %s\n", s.to_string().c_str());
      return 2;
    }
    // A flag given on the command line wins, even when it equals the built-in default.
    auto keep = [&](const char* flag, auto& value, const auto& file_value) {
      if (app.get_option(flag)->count() == 0) value = file_value;
    };
    keep("--data", cfg.data_dir, from_file.data_dir);
    keep("--name", cfg.server_name, from_file.server_name);
    keep("--public-host", cfg.public_host, from_file.public_host);
    keep("--public-port", cfg.public_port, from_file.public_port);
    keep("--cert", cfg.cert_file, from_file.cert_file);
    keep("--key", cfg.key_file, from_file.key_file);
    keep("--site", cfg.site_dir, from_file.site_dir);
    keep("--io-threads", cfg.io_threads, from_file.io_threads);
    keep("--pow-difficulty", cfg.pow_difficulty, from_file.pow_difficulty);
    keep("--queue-max-count", cfg.queue_max_count, from_file.queue_max_count);
    keep("--queue-max-bytes", cfg.queue_max_bytes, from_file.queue_max_bytes);
    keep("--max-connections", cfg.max_connections, from_file.max_connections);
    keep("--attachment-max-bytes", cfg.attachment_max_bytes, from_file.attachment_max_bytes);
    // Keys without a flag come from the file as they are.
    cfg.tls_tickets = from_file.tls_tickets;
    cfg.tls_ticket_rotation_hours = from_file.tls_ticket_rotation_hours;
    cfg.queue_max_age_days = from_file.queue_max_age_days;
    cfg.max_message_bytes = from_file.max_message_bytes;
    cfg.write_queue_bytes = from_file.write_queue_bytes;
    cfg.max_handshakes_per_ip = from_file.max_handshakes_per_ip;
    cfg.max_connections_per_ip = from_file.max_connections_per_ip;
    cfg.idle_timeout_s = from_file.idle_timeout_s;
    cfg.login_timeout_s = from_file.login_timeout_s;
    cfg.ping_interval_s = from_file.ping_interval_s;
    cfg.max_inflight_requests = from_file.max_inflight_requests;
    cfg.ip_request_rate = from_file.ip_request_rate;
    cfg.ip_request_burst = from_file.ip_request_burst;
    cfg.ip_connect_rate = from_file.ip_connect_rate;
    cfg.ip_connect_burst = from_file.ip_connect_burst;
    cfg.account_send_rate = from_file.account_send_rate;
    cfg.account_send_burst = from_file.account_send_burst;
    cfg.register_rate_per_ip = from_file.register_rate_per_ip;
    cfg.register_burst_per_ip = from_file.register_burst_per_ip;
    cfg.attachment_expiry_days = from_file.attachment_expiry_days;
    cfg.attachment_account_quota_bytes = from_file.attachment_account_quota_bytes;
    cfg.attachment_min_free_disk_mb = from_file.attachment_min_free_disk_mb;
    if (listen.empty()) cfg.listen = from_file.listen;
    if (admin.empty()) cfg.admin = from_file.admin;
    if (policy.empty()) cfg.registration = from_file.registration;
    if (bridge_to.empty()) cfg.bridge_to = from_file.bridge_to;
    if (obfs4.empty()) cfg.obfs4 = from_file.obfs4;
    keep("--bridge-sni", cfg.bridge_sni, from_file.bridge_sni);
    keep("--bridge-proxy-header", cfg.bridge_proxy_header, from_file.bridge_proxy_header);
    keep("--proxy-from", cfg.proxy_from, from_file.proxy_from);
    keep("--pt-binary", cfg.pt_binary, from_file.pt_binary);
  }
  for (auto [flag, text, target] : {std::tuple{"--bridge-to", &bridge_to, &cfg.bridge_to},
                                    std::tuple{"--obfs4", &obfs4, &cfg.obfs4}}) {
    if (text->empty()) continue;
    auto hp = server::parse_optional_host_port(*text, target == &cfg.bridge_to);
    if (!hp) {
      std::fprintf(stderr, "parleyd: %s: expected HOST:PORT\n", flag);
      return 2;
    }
    *target = *hp;
  }
  if (!listen.empty()) {
    auto hp = server::parse_host_port(listen);
    if (!hp) {
      std::fprintf(stderr, "parleyd: --listen: %s\n", hp.error().message().c_str());
      return 2;
    }
    cfg.listen = *hp;
  }
  if (!admin.empty()) {
    auto hp = server::parse_host_port(admin);
    if (!hp) {
      std::fprintf(stderr, "parleyd: --admin: %s\n", hp.error().message().c_str());
      return 2;
    }
    cfg.admin = *hp;
  }
  if (!policy.empty()) {
    auto p = server::parse_policy(policy);
    if (!p) {
      std::fprintf(stderr, "parleyd: --registration: %s\n", p.error().message().c_str());
      return 2;
    }
    cfg.registration = *p;
  }
  if (cfg.data_dir.empty()) {
    std::fprintf(stderr, "parleyd: --data DIR is required (or server.data in --config)\n");
    return 2;
  }
  // The checks across keys, once file and flags are applied: a flag may mend what the file
  // alone gets wrong, or move a bound past another key's (--attachment-max-bytes).
  if (Status s = server::validate_config(cfg); !s.is_ok()) {
    std::fprintf(stderr, "parleyd: %s\n", s.to_string().c_str());
    return 2;
  }
  if (!cfg.bridge_to.host.empty()) return run_bridge(std::move(cfg));
  return run(std::move(cfg));
}
