#include "command_line.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <tuple>

#include "wire/frame.h"

namespace parley::parleyd {
namespace {

std::string version_text() {
  return "parleyd 0.1.0 (wire " + std::to_string(wire::kWireVersion) + ")";
}

// HOST:PORT values are parsed after both passes (a file's value stays unless a flag is given).
struct HostPortFlags {
  std::string listen, admin, policy, bridge_to, obfs4;
};

// Every flag, bound to `cfg`: a pass of CLI11 writes only the flags given.
void add_flags(CLI::App& app, server::ServerConfig& cfg, std::string& config_file,
               HostPortFlags& text) {
  app.set_version_flag("--version", version_text());
  app.add_option("--config", config_file, "TOML configuration file (flags override it)");
  app.add_option("--data", cfg.data_dir, "data directory (created on first start)");
  app.add_option("--listen", text.listen, "HOST:PORT to listen on (TLS); port 0 picks a free one");
  app.add_option("--admin", text.admin, "HOST:PORT for /metrics (plain HTTP; keep it private)");
  app.add_option("--name", cfg.server_name, "server name in addresses (default: listen host)");
  app.add_option("--public-host", cfg.public_host, "host written into invite links");
  app.add_option("--public-port", cfg.public_port, "port written into invite links");
  app.add_option("--cert", cfg.cert_file, "PEM certificate (default: generated self-signed)");
  app.add_option("--key", cfg.key_file, "PEM private key for --cert");
  app.add_option("--site", cfg.site_dir, "directory of the public website (default: built-in)");
  app.add_option("--io-threads", cfg.io_threads, "threads serving connections (0: one per core)");
  app.add_option("--registration", text.policy, "registration policy: open, invite or pow");
  app.add_option("--pow-difficulty", cfg.pow_difficulty, "leading zero bits for pow registration")
      ->check(CLI::Range(0u, server::kMaxPowDifficulty));
  app.add_option("--queue-max-count", cfg.queue_max_count, "envelopes per device queue");
  app.add_option("--queue-max-bytes", cfg.queue_max_bytes, "bytes per device queue");
  app.add_option("--queue-sender-share-percent", cfg.queue_sender_share_percent,
                 "of a device queue one sender may hold (1 to 100)");
  app.add_option("--max-connections", cfg.max_connections, "simultaneous connections");
  app.add_option("--attachment-max-bytes", cfg.attachment_max_bytes, "largest attachment");
  app.add_option("--bridge-to", text.bridge_to,
                 "run as a bridge to the parleyd at HOST:PORT (no store, no accounts)");
  app.add_option("--bridge-sni", cfg.bridge_sni, "TLS server name clients send to this bridge");
  app.add_flag("--bridge-proxy-header", cfg.bridge_proxy_header,
               "open each upstream connection with a PROXY v2 header naming the client");
  app.add_option("--proxy-from", cfg.proxy_from,
                 "a relay (IP address or network; repeatable) whose connections open with a "
                 "PROXY header (version 1 or 2)");
  app.add_option("--admin-from", cfg.admin_from,
                 "who may connect to the admin listener (IP address or network; repeatable; "
                 "default: loopback only)");
  app.add_option("--obfs4", text.obfs4,
                 "run obfs4proxy in server mode on HOST:PORT in front of this");
  app.add_option("--pt-binary", cfg.pt_binary, "the pluggable-transport binary (obfs4proxy)");
}

CommandLine stop(int status) { return CommandLine{std::nullopt, status}; }

}  // namespace

CommandLine parse_command_line(int argc, char** argv) {
  CLI::App app{"parleyd: the parley server (stores and forwards ciphertext only)"};
  server::ServerConfig cfg;
  std::string config_file;
  HostPortFlags text;
  add_flags(app, cfg, config_file, text);
  try {
    app.parse(argc, argv);  // the first pass finds --config (and answers --help, bad flags)
    if (!config_file.empty()) {
      // Start again from the defaults with the file over them, then the flags over the file:
      // the second pass writes only the flags given, so each key has one source. (A key the
      // file sets and no flag gives keeps the file's value.)
      server::ServerConfig from_file;
      if (Status s = server::load_config_file(config_file, from_file); !s.is_ok()) {
        std::fprintf(stderr, "parleyd: %s\n", s.to_string().c_str());
        return stop(2);
      }
      cfg = std::move(from_file);
      text = HostPortFlags{};
      app.parse(argc, argv);
    }
  } catch (const CLI::ParseError& e) {
    return stop(app.exit(e));
  }

  for (auto [flag, value, target] : {std::tuple{"--bridge-to", &text.bridge_to, &cfg.bridge_to},
                                     std::tuple{"--obfs4", &text.obfs4, &cfg.obfs4}}) {
    if (value->empty()) continue;
    auto hp = server::parse_optional_host_port(*value, target == &cfg.bridge_to);
    if (!hp) {
      std::fprintf(stderr, "parleyd: %s: expected HOST:PORT\n", flag);
      return stop(2);
    }
    *target = *hp;
  }
  for (auto [flag, value, target] : {std::tuple{"--listen", &text.listen, &cfg.listen},
                                     std::tuple{"--admin", &text.admin, &cfg.admin}}) {
    if (value->empty()) continue;
    auto hp = server::parse_host_port(*value);
    if (!hp) {
      std::fprintf(stderr, "parleyd: %s: %s\n", flag, hp.error().message().c_str());
      return stop(2);
    }
    *target = *hp;
  }
  if (!text.policy.empty()) {
    auto p = server::parse_policy(text.policy);
    if (!p) {
      std::fprintf(stderr, "parleyd: --registration: %s\n", p.error().message().c_str());
      return stop(2);
    }
    cfg.registration = *p;
  }
  if (cfg.data_dir.empty()) {
    std::fprintf(stderr, "parleyd: --data DIR is required (or server.data in --config)\n");
    return stop(2);
  }
  // The checks across keys, once file and flags are applied: a flag may mend what the file
  // alone gets wrong, or move a bound past another key's (--attachment-max-bytes).
  if (Status s = server::validate_config(cfg); !s.is_ok()) {
    std::fprintf(stderr, "parleyd: %s\n", s.to_string().c_str());
    return stop(2);
  }
  return CommandLine{std::move(cfg), 0};
}

}  // namespace parley::parleyd
