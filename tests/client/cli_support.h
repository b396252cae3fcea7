#pragma once
// Support for the client's end-to-end tests and the daemon benchmark: runs the real `parley`
// binary (PARLEY environment variable), keeps `parley daemon` processes, and talks JSON-RPC to a
// daemon's Unix socket. Every wait is bounded in time. Not thread-safe; one thread per object.

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/result.h"

namespace parley::testing {

// Path of the built parley (PARLEY environment variable, set by CTest).
std::string parley_path();

struct Ran {
  int exit_code = -1;  // -1: killed (timeout or signal)
  std::string out;
  std::string err;
};

// Runs `parley args...` with extra environment, bounded by `timeout`; stdin is /dev/null and
// PARLEY_PASSPHRASE is unset unless `env` sets it.
Ran run_parley(const std::vector<std::string>& args,
               const std::map<std::string, std::string>& env = {},
               std::chrono::milliseconds timeout = std::chrono::seconds(60));

// A long-running `parley args...` (e.g. a daemon); stdout and stderr go to `log_path`.
// The destructor kills it (SIGKILL) if it still runs.
class ParleyProcess {
 public:
  static Result<std::unique_ptr<ParleyProcess>> spawn(const std::vector<std::string>& args,
                                                      const std::string& log_path);
  ~ParleyProcess();
  pid_t pid() const { return pid_; }
  // Waits (≤ timeout) for the exit; the exit code, or -1 (a signal, or still running).
  int wait(std::chrono::milliseconds timeout);
  // SIGTERM and wait.
  int terminate(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  bool running();

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = -1;
};

// One connection to a daemon's socket (newline-delimited JSON-RPC 2.0).
class RpcConnection {
 public:
  // Connects, retrying until `timeout` (the daemon may still be starting).
  static Result<std::unique_ptr<RpcConnection>> connect(
      const std::string& socket_path, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  ~RpcConnection();

  Status send_line(const std::string& line);  // appends '\n'
  // The next line from the daemon (without '\n'); kIo when the daemon closed the connection,
  // kUnavailable on timeout.
  Result<std::string> read_line(std::chrono::milliseconds timeout);
  // Sends a request with a fresh numeric id and returns its response object (notifications that
  // arrive meanwhile are kept for next_notification()).
  Result<nlohmann::json> call(const std::string& method,
                              const nlohmann::json& params = nlohmann::json::object(),
                              std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // The next response with `id` (after a send_line of a hand-written request).
  Result<nlohmann::json> response(const nlohmann::json& id, std::chrono::milliseconds timeout);
  // The next notification (a message without an id).
  Result<nlohmann::json> next_notification(std::chrono::milliseconds timeout);

 private:
  explicit RpcConnection(int fd) : fd_(fd) {}
  // The next line, parsed.
  Result<nlohmann::json> next_json(std::chrono::milliseconds timeout);

  int fd_ = -1;
  std::string buffer_;
  std::deque<nlohmann::json> notifications_;
  std::int64_t next_id_ = 1;
};

// The JSON objects of a command's output, one per line (lines that are not objects, such as
// notes, are skipped).
std::vector<nlohmann::json> json_lines(const std::string& out);

}  // namespace parley::testing
