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
// its ORPORT; it exits with parleyd. SIGTERM or SIGINT drains gracefully: no new connections, every
// queued store operation committed, connections closed with "server restarting", exit status 0.
//
// Here: the listeners, the admin routes, signals and the drain. The command line is
// command_line.h's; DIR's secrets and the clock floor, data_dir.h's; the links, links.h's.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <future>
#include <optional>
#include <thread>

#include "command_line.h"
#include "crypto/primitives.h"
#include "crypto/x509.h"
#include "data_dir.h"
#include "links.h"
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
using namespace parley;           // NOLINT: a main() file
using namespace parley::parleyd;  // NOLINT: a main() file

namespace {

std::string bracket(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

// The Extended ORPort's cookie, which obfs4proxy reads to prove itself there.
std::string ext_orport_cookie_file(const server::ServerConfig& cfg) {
  return (fs::path(cfg.data_dir) / "pt" / "extended_orport_auth_cookie").string();
}

// obfs4proxy (or another PT binary) in server mode on cfg.obfs4, in front of `server`: it names
// each client on the server's Extended ORPort, so that per-IP limits see the client and not
// loopback. Its keys live in DIR/pt, so its cert (in the links) survives restarts.
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
                                                    server->relayed())});
          }
          if (method == "POST" && target == "/invite") {
            wire::Invite inv = listener_link(cfg, *pin, port, pt.get());
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
        },
        cfg.admin_from);
    if (!a) {
      std::fprintf(stderr, "parleyd: admin %s:%u: %s\n", cfg.admin.host.c_str(), cfg.admin.port,
                   a.error().to_string().c_str());
      return 1;
    }
    admin = std::move(*a);
  }

  wire::Invite invite = listener_link(cfg, *pin, port, pt.get());
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
    // Answer the requests in flight and finish the file transfers under way (for 0.5 s at
    // least, so that what clients sent with the signal is read and refused; 5 s at most; a
    // transfer cut then resumes with a Range request), close the connections, wait (bounded)
    // until every connection has ended (so each session is released), then stop.
    const auto start = std::chrono::steady_clock::now();
    wait_until(
        drain_timer,
        [&service, &server, start] {
          return std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(500) &&
                 service.requests_in_flight() <= 0 && server->file_transfers() == 0;
        },
        start + std::chrono::seconds(5),
        [&] {
          spdlog::info("event=closing_connections requests_in_flight={} file_transfers={}",
                       service.requests_in_flight(), server->file_transfers());
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
        },
        cfg.admin_from);
    if (!a) {
      std::fprintf(stderr, "parleyd: admin %s:%u: %s\n", cfg.admin.host.c_str(), cfg.admin.port,
                   a.error().to_string().c_str());
      return 1;
    }
    admin = std::move(*a);
  }
  wire::Invite link = listener_link(cfg, *pin, port, pt.get());
  link.is_bridge = true;
  link.server_name.clear();  // a bridge names no server: it serves the one behind it
  link.sni = cfg.bridge_sni;
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

  parleyd::CommandLine command_line = parleyd::parse_command_line(argc, argv);
  if (!command_line.config) return command_line.exit_status;
  server::ServerConfig cfg = std::move(*command_line.config);
  if (!cfg.bridge_to.host.empty()) return run_bridge(std::move(cfg));
  return run(std::move(cfg));
}
