#pragma once
// `parley daemon`: the Client's operations as JSON-RPC 2.0 methods on a Unix stream socket, and
// incoming messages pushed to every connected program as notifications (docs/cli.md, "daemon";
// the methods and error codes are in rpc.h).
//
// Framing: newline-delimited JSON. Each message, in both directions, is one JSON value (a request
// object or a batch array) on one line ending in '\n' (JSON encodes newlines inside strings as
// \n, so a line never contains a raw one). A line longer than 1 MiB is answered with a parse
// error and the connection is closed. At most 64 connections at once.
//
// The socket file is created mode 0600. An existing socket file is replaced only when nothing
// listens on it; if a daemon already serves the path, run_daemon refuses to start. The file is
// removed when the daemon stops (SIGINT or SIGTERM).
//
// Threads: the calling thread drives the client (Client is not thread-safe), alternating between
// queued calls and short receive slices; socket I/O runs on one internal Asio thread.
//
// Server outages: a failed receive is logged to stderr and retried with jittered back-off (up to
// 5 s); calls are answered meanwhile. After a few failures in a row the daemon re-opens the
// profile with the same options (a fresh Client without connection state).

#include <filesystem>
#include <memory>
#include <string>

#include "client/client.h"

namespace parley::cli {

// Serves `socket_path` until SIGINT or SIGTERM. Returns the process exit code: 0 after a clean
// stop, 1 when the socket cannot be set up (another daemon serves it, the path is not a socket or
// is too long, or the directory is not writable); the reason goes to stderr.
// `client` was opened with `options` (kept for re-opening) and is owned by the daemon. Received
// files are saved in `download_dir` (empty: PROFILE/files, the Client's default).
int run_daemon(const client::OpenOptions& options, std::unique_ptr<client::Client> client,
               const std::string& socket_path, const std::filesystem::path& download_dir);

}  // namespace parley::cli
