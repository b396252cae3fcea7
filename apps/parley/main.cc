// parley: the command-line client (docs/cli.md). A thin layer over client::Client: parse the
// command, open the profile, call one method, print the result.
//
// Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad usage.
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include "apps/parley/daemon.h"
#include "apps/parley/json_output.h"
#include "apps/parley/terminal_text.h"

#include "client/client.h"
#include "wire/frame.h"

namespace {

using parley::Status;
using parley::client::Client;
using parley::cli::to_json;

constexpr const char* kVersion = "parley 0.1.0";

int fail(const Status& s) {
  // An error's text may carry the server's or a peer's words.
  std::fprintf(stderr, "parley: %s\n", parley::cli::for_terminal(s.to_string()).c_str());
  return 1;
}

// Reads a line from the terminal without echo.
std::optional<std::string> prompt_secret(const char* prompt) {
  if (!::isatty(STDIN_FILENO)) return std::nullopt;
  std::fprintf(stderr, "%s", prompt);
  termios old{};
  ::tcgetattr(STDIN_FILENO, &old);
  termios quiet = old;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  std::string line;
  std::getline(std::cin, line);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
  std::fprintf(stderr, "\n");
  return line;
}

// The passphrase: PARLEY_PASSPHRASE, else a prompt when the profile uses one (or, when
// registering, when the user wants one). None: the profile is keyed by its 0600 key file.
std::optional<std::string> passphrase_for(const std::filesystem::path& profile, bool creating) {
  if (const char* env = std::getenv("PARLEY_PASSPHRASE"); env != nullptr) return std::string(env);
  std::error_code ec;
  if (creating) {
    auto p = prompt_secret("passphrase for the new profile (empty: none, a key file is used): ");
    if (!p || p->empty()) return std::nullopt;
    return p;
  }
  if (!std::filesystem::exists(profile / "salt", ec)) return std::nullopt;
  auto p = prompt_secret("passphrase: ");
  if (!p) return std::string();  // no terminal: opening will report the wrong passphrase
  return p;
}

std::string format_time(std::uint64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// A name or one-line text from others, safe to print (terminal_text.h).
std::string shown(std::string_view s) { return parley::cli::for_terminal(s); }

// Seconds as a finite number: CLI11's Range lets "nan" through (every comparison with it is
// false), and converting nan to an integer is undefined.
const CLI::Validator kFinite(
    [](std::string& text) -> std::string {
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      return end != text.c_str() && std::isfinite(v) ? std::string() : "not a finite number";
    },
    "FINITE");

// Progress of large transfers on stderr, when it is a terminal (scripts get clean output).
parley::client::TransferProgress progress_printer(const char* what) {
  if (!::isatty(STDERR_FILENO)) return {};
  return [what, last = -1](std::uint64_t done, std::uint64_t total) mutable {
    if (total < (1u << 20)) return;  // small files: no noise
    const int pct = static_cast<int>(done * 100 / total);
    if (pct == last) return;
    last = pct;
    std::fprintf(stderr, "\r%s %3d%% (%llu / %llu bytes)%s", what, pct,
                 static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                 done >= total ? "\n" : "");
  };
}

}  // namespace

static int run_command(int argc, char** argv) {
  CLI::App app{"parley: end-to-end encrypted messaging from the command line"};
  app.set_version_flag("--version", kVersion);
  app.require_subcommand(1);
  std::string profile_dir;
  app.add_option("--profile", profile_dir, "profile directory (holds keys and history)")->required();
  double connect_timeout_s = 10, idle_timeout_s = 15;
  app.add_option("--connect-timeout", connect_timeout_s,
                 "seconds each step of reaching the server may take, per transport")
      ->check(kFinite)
      ->check(CLI::Range(0.1, 600.0));
  app.add_option("--idle-timeout", idle_timeout_s,
                 "seconds of silence after which a link counts as stalled and is replaced "
                 "(0: never)")
      ->check(kFinite)
      ->check(CLI::Range(0.0, 3600.0));

  std::string invite, name;
  auto* reg = app.add_subcommand("register", "create the profile and register NAME on a server");
  reg->add_option("INVITE", invite, "invite link parley://…")->required();
  reg->add_option("--name", name, "account name (3-32 of a-z 0-9 . _ -)")->required();
  std::string recover;
  reg->add_option("--recover", recover,
                  "take over NAME with its recovery code (a lost device; contacts see a new "
                  "identity)");
  std::vector<std::string> reg_transports;
  reg->add_option("--transport", reg_transports,
                  "another way to reach the server (as `transport add` takes it); repeatable");
  std::string pt_binary;
  reg->add_option("--pt-binary", pt_binary,
                  "the pluggable-transport binary for bridge lines (default: obfs4proxy)");

  bool transports_json = false;
  auto* transports = app.add_subcommand("transports", "list the ways to reach the server");
  transports->add_flag("--json", transports_json, "one JSON object per line");
  auto* transport = app.add_subcommand("transport", "add, remove, enable or disable a transport");
  transport->require_subcommand(1);
  std::vector<std::string> link_words;
  auto* t_add = transport->add_subcommand(
      "add", "add LINK: socks5://[USER:PASS@]HOST:PORT, http://HOST:PORT, a bridge link "
             "parley://...&bridge=1..., or a bridge line \"obfs4 HOST:PORT cert=... iat-mode=0\"");
  t_add->add_option("LINK", link_words, "the link (a bridge line may be given unquoted)")
      ->required();
  t_add->add_option("--pt-binary", pt_binary,
                    "the pluggable-transport binary (default: obfs4proxy; e.g. lyrebird)");
  std::int64_t transport_id = 0;
  auto* t_remove = transport->add_subcommand("remove", "remove transport ID");
  t_remove->add_option("ID", transport_id, "as `parley transports` lists it")->required();
  auto* t_enable = transport->add_subcommand("enable", "enable transport ID");
  t_enable->add_option("ID", transport_id)->required();
  auto* t_disable = transport->add_subcommand("disable", "disable transport ID (it is not tried)");
  t_disable->add_option("ID", transport_id)->required();

  auto* whoami = app.add_subcommand("whoami", "print this profile's address");

  std::string to, text, group_id;
  auto* send = app.add_subcommand("send", "send a message; returns once the server has it");
  send->add_option("ADDRESS", to, "name or name@server (omit with --group)");
  send->add_option("TEXT", text, "the message");
  send->add_option("--group", group_id, "send to the group GROUP_ID instead");
  std::string file;
  send->add_option("--file", file, "attach this file (TEXT becomes its caption)");

  std::string group_name;
  std::vector<std::string> members;
  auto* group = app.add_subcommand("group", "create and manage groups");
  group->require_subcommand(1);
  auto* g_create = group->add_subcommand("create", "create a group; prints its id");
  g_create->add_option("NAME", group_name, "group name")->required();
  g_create->add_option("ADDRESS", members, "members besides you");
  auto* g_add = group->add_subcommand("add", "add members");
  g_add->add_option("GROUP_ID", group_id)->required();
  g_add->add_option("ADDRESS", members)->required();
  auto* g_remove = group->add_subcommand("remove", "remove members (they cannot read what follows)");
  g_remove->add_option("GROUP_ID", group_id)->required();
  g_remove->add_option("ADDRESS", members)->required();
  auto* g_rename = group->add_subcommand("rename", "rename a group");
  g_rename->add_option("GROUP_ID", group_id)->required();
  g_rename->add_option("NAME", group_name, "the new name")->required();
  auto* g_leave = group->add_subcommand("leave", "leave a group");
  g_leave->add_option("GROUP_ID", group_id)->required();
  auto* g_info = group->add_subcommand("info", "name and members of a group");
  g_info->add_option("GROUP_ID", group_id)->required();
  auto* groups = app.add_subcommand("groups", "list your groups");

  bool follow = false, json = false;
  double timeout_s = 10;
  auto* receive = app.add_subcommand("receive", "receive and print waiting messages");
  receive->add_flag("--follow", follow, "keep listening after the queue is drained");
  receive->add_option("--timeout", timeout_s, "seconds to wait (with --follow: to listen)")
      ->check(kFinite)
      ->check(CLI::Range(0.0, 31536000.0));
  receive->add_flag("--json", json, "one JSON object per line");
  std::string download_dir;
  receive->add_option("--download-dir", download_dir, "where received files go (default: PROFILE/files)");

  auto* contacts = app.add_subcommand("contacts", "list known contacts and their key status");

  std::string peer;
  std::size_t limit = 50;
  auto* history = app.add_subcommand("history", "show the conversation with ADDRESS");
  history->add_option("ADDRESS", peer, "name or name@server")->required();
  history->add_option("--limit", limit, "newest messages to show");
  history->add_flag("--json", json, "one JSON object per line");

  auto* safety = app.add_subcommand("safety-number", "the safety number to compare with ADDRESS");
  safety->add_option("ADDRESS", peer, "name or name@server")->required();
  auto* trust = app.add_subcommand("trust", "accept ADDRESS's current identity key");
  trust->add_option("ADDRESS", peer, "name or name@server")->required();

  std::string socket_path;
  auto* daemon = app.add_subcommand("daemon", "serve JSON-RPC 2.0 on a Unix socket (docs/cli.md)");
  daemon->add_option("--socket", socket_path, "path of the Unix socket to create")->required();
  std::string daemon_download_dir;
  daemon->add_option("--download-dir", daemon_download_dir,
                     "where received files go (default: PROFILE/files)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 2.
    return app.exit(e) == 0 ? 0 : 2;
  }

  parley::client::OpenOptions options;
  options.profile_dir = profile_dir;
  // The process exits right after the command: losers of a race still connecting (to a
  // black-holed address, say) are not waited for.
  options.wait_for_race_losers = false;
  options.connect_timeout =
      std::chrono::milliseconds(static_cast<std::int64_t>(connect_timeout_s * 1000));
  options.idle_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(idle_timeout_s * 1000));

  if (reg->parsed()) {
    options.passphrase = passphrase_for(options.profile_dir, true);
    auto client =
        Client::register_account(options, invite, name, recover, reg_transports, pt_binary);
    if (!client) return fail(client.error());
    std::printf("registered %s\n", (*client)->address().c_str());
    // On stderr: scripts keep a one-line stdout; people see it once and write it down.
    std::fprintf(stderr,
                 "recovery code: %s\n"
                 "  Keep it somewhere safe: with it you can take your name back on a new device "
                 "(parley register ... --recover CODE).\n",
                 (*client)->recovery_code().c_str());
    return 0;
  }

  options.passphrase = passphrase_for(options.profile_dir, false);
  auto opened = Client::open(options);
  if (!opened) return fail(opened.error());
  Client& client = **opened;

  if (daemon->parsed()) {
    // Absolute, so that it does not depend on where the daemon's working directory is later.
    std::error_code ec;
    const std::filesystem::path downloads =
        daemon_download_dir.empty() ? std::filesystem::path()
                                    : std::filesystem::absolute(daemon_download_dir, ec);
    if (ec) {
      return fail(parley::make_error(parley::ErrorCode::kInvalidArgument, "bad --download-dir"));
    }
    // A long-lived daemon that re-opens the profile waits for losers instead (their PT children
    // would otherwise pile up).
    options.wait_for_race_losers = true;
    return parley::cli::run_daemon(options, std::move(*opened), socket_path, downloads);
  }
  if (transports->parsed()) {
    auto all = client.transports();
    if (!all) return fail(all.error());
    for (const auto& t : *all) {
      if (transports_json) {
        std::printf("%s\n", parley::cli::dump_line(to_json(t)).c_str());
        continue;
      }
      std::string line = std::to_string(t.id) + " " +
                         std::string(parley::client::transport_kind_name(t.kind));
      if (!t.link.empty()) line += " " + t.link;
      if (!t.pt_binary.empty()) line += " (" + t.pt_binary + ")";
      if (!t.enabled) line += " [disabled]";
      if (t.preferred) line += " [preferred]";
      line += " last: " + (t.last_result.empty() ? std::string("never tried") : t.last_result);
      if (t.last_attempt_ms > 0) {
        line += " (" + format_time(static_cast<std::uint64_t>(t.last_attempt_ms)) + ")";
      }
      std::printf("%s\n", shown(line).c_str());  // a link may come from a peer's message
    }
    return 0;
  }
  if (t_add->parsed()) {
    std::string link;
    for (const auto& w : link_words) link += (link.empty() ? "" : " ") + w;
    auto id = client.add_transport(link, pt_binary);
    if (!id) return fail(id.error());
    std::printf("added transport %lld\n", static_cast<long long>(*id));
    return 0;
  }
  if (t_remove->parsed() || t_enable->parsed() || t_disable->parsed()) {
    Status s = t_remove->parsed() ? client.remove_transport(transport_id)
                                  : client.set_transport_enabled(transport_id, t_enable->parsed());
    if (!s.is_ok()) return fail(s);
    return 0;
  }
  if (whoami->parsed()) {
    std::printf("%s\n", client.address().c_str());
    return 0;
  }
  if (send->parsed()) {
    // send ADDRESS TEXT | send --group GID TEXT | send ADDRESS --file PATH [TEXT] |
    // send --group GID --file PATH [TEXT]: with --group the first positional is the text.
    const bool grouped = !group_id.empty();
    const std::string target = grouped ? group_id : to;
    const std::string body = grouped ? to : text;
    if (target.empty() || (grouped && !text.empty()) || (file.empty() && body.empty())) {
      std::fprintf(stderr,
                   "parley: usage: send ADDRESS TEXT | send --group GROUP_ID TEXT | "
                   "send ADDRESS --file PATH [TEXT]\n");
      return 2;
    }
    Status s;
    if (!file.empty()) {
      s = client.send_file(target, grouped, file, body, progress_printer("upload"));
    } else {
      s = grouped ? client.send_group_text(target, body) : client.send_text(target, body);
    }
    if (!s.is_ok()) return fail(s);
    return 0;
  }
  if (g_create->parsed()) {
    auto id = client.group_create(group_name, members);
    if (!id) return fail(id.error());
    std::printf("%s\n", id->c_str());
    return 0;
  }
  if (g_add->parsed() || g_remove->parsed() || g_leave->parsed() || g_rename->parsed()) {
    Status s = g_add->parsed()      ? client.group_add(group_id, members)
               : g_remove->parsed() ? client.group_remove(group_id, members)
               : g_rename->parsed() ? client.group_rename(group_id, group_name)
                                    : client.group_leave(group_id);
    if (!s.is_ok()) return fail(s);
    return 0;
  }
  if (g_info->parsed() || groups->parsed()) {
    std::vector<parley::client::GroupInfo> list;
    if (g_info->parsed()) {
      auto one = client.group_info(group_id);
      if (!one) return fail(one.error());
      list.push_back(std::move(*one));
    } else {
      auto all = client.groups();
      if (!all) return fail(all.error());
      list = std::move(*all);
    }
    for (const auto& g : list) {
      std::printf("%s %s%s:", g.id.c_str(), shown(g.name).c_str(), g.left ? " (left)" : "");
      for (const auto& m : g.members) std::printf(" %s", shown(m).c_str());
      std::printf("\n");
    }
    return 0;
  }
  if (receive->parsed()) {
    parley::client::ReceiveOptions ro;
    ro.follow = follow;
    ro.download_dir = download_dir;
    ro.progress = progress_printer("download");
    ro.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000));
    ro.on_reconnect = [](const Status& why) {
      std::fprintf(stderr, "parley: the link failed (%s); reconnecting\n",
                   shown(why.to_string()).c_str());
    };
    Status s = client.receive(ro, [&](const parley::client::IncomingMessage& m) {
      if (json) {
        std::printf("%s\n", parley::cli::dump_line(to_json(m)).c_str());
      } else if (!m.event.empty()) {
        std::printf("[%s] group %s: %s\n", format_time(m.timestamp).c_str(),
                    shown(*m.group).c_str(), shown(m.event).c_str());
      } else if (!m.error.empty()) {
        std::printf("[%s] %s (device %u): undecryptable: %s\n",
                    format_time(static_cast<std::uint64_t>(m.server_timestamp)).c_str(),
                    shown(m.from).c_str(), m.device, shown(m.error).c_str());
      } else {
        if (m.identity_changed) {
          std::printf("! the safety number with %s changed (parley safety-number %s)\n",
                      shown(m.from).c_str(), shown(m.from).c_str());
        }
        std::printf("[%s] %s%s%s: %s\n", format_time(m.timestamp).c_str(), shown(m.from).c_str(),
                    m.group ? " in " : "", m.group ? shown(*m.group).c_str() : "",
                    parley::cli::for_terminal(m.text, /*multiline=*/true).c_str());
        // A message that is exactly a bridge link: say how to use it (never added by itself).
        if (auto t = parley::client::parse_transport_link(m.text);
            t && t->kind == parley::client::TransportKind::kBridge) {
          std::printf("  (a bridge link: parley --profile %s transport add '%s')\n",
                      shown(profile_dir).c_str(), shown(t->text).c_str());
        }
        if (m.attachment && m.attachment->error.empty()) {
          std::printf("  file %s (%llu bytes) saved as %s\n", shown(m.attachment->name).c_str(),
                      static_cast<unsigned long long>(m.attachment->size),
                      shown(m.attachment->path).c_str());
        } else if (m.attachment) {
          std::printf("  file %s (%llu bytes) could not be fetched: %s\n",
                      shown(m.attachment->name).c_str(),
                      static_cast<unsigned long long>(m.attachment->size),
                      shown(m.attachment->error).c_str());
        }
      }
      std::fflush(stdout);
    });
    if (!s.is_ok()) return fail(s);
    return 0;
  }
  if (contacts->parsed()) {
    auto all = client.contacts();
    if (!all) return fail(all.error());
    for (const auto& c : *all) {
      std::printf(
          "%s device %u %s\n", shown(c.address.name).c_str(), c.address.device_id,
          c.identity_changed ? "identity-changed" : (c.verified ? "verified" : "unverified"));
    }
    return 0;
  }
  if (history->parsed()) {
    auto entries = client.history(peer, limit);
    if (!entries) return fail(entries.error());
    for (const auto& h : *entries) {
      if (json) {
        std::printf("%s\n", parley::cli::dump_line(to_json(h)).c_str());
      } else {
        std::printf("[%s] %s %s: %s%s\n", format_time(h.timestamp).c_str(), h.outgoing ? ">" : "<",
                    h.outgoing ? "me" : shown(h.peer).c_str(),
                    h.error.empty() ? parley::cli::for_terminal(h.text, /*multiline=*/true).c_str()
                                    : "(undecryptable) ",
                    shown(h.error).c_str());
      }
    }
    return 0;
  }
  if (safety->parsed()) {
    auto number = client.safety_number(peer);
    if (!number) return fail(number.error());
    std::string grouped;
    for (std::size_t i = 0; i < number->size(); ++i) {
      if (i > 0 && i % 5 == 0) grouped += (i % 30 == 0) ? "\n" : " ";
      grouped += (*number)[i];
    }
    std::printf("%s\n", grouped.c_str());
    return 0;
  }
  if (trust->parsed()) {
    if (Status s = client.trust(peer); !s.is_ok()) return fail(s);
    std::printf("trusted %s\n", peer.c_str());
    return 0;
  }
  return 2;
}

int main(int argc, char** argv) {
  // A peer's or server's frame with a string that is not UTF-8 must not print libprotobuf's
  // complaint into the terminal or the JSON output: it goes to spdlog at debug level, which is
  // off. spdlog writes to stderr, never into the output on stdout.
  spdlog::set_default_logger(spdlog::stderr_logger_mt("parley"));
  parley::wire::route_protobuf_logs();
  const int rc = run_command(argc, argv);
  // The profile is closed by now. Threads of abandoned race losers may still be inside a TLS
  // handshake: exit without running static destructors (OpenSSL's cleanup) under them.
  std::fflush(nullptr);
  std::_Exit(rc);
}
