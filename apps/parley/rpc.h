#pragma once
// The daemon's JSON-RPC 2.0 methods (docs/cli.md, "daemon"): validation of one parsed message
// and its execution against a Client. No I/O of its own and no threads: the daemon calls
// execute_rpc on the one thread that owns the Client.
//
// Error codes (JSON-RPC 2.0 plus one application code):
//   -32700 parse error      (produced by the daemon's reader, see rpc_error)
//   -32600 invalid request  (not an object, no "jsonrpc":"2.0", no string "method", bad id,
//                            empty or oversized batch)
//   -32601 method not found
//   -32602 invalid params   (params not an object, a missing/ill-typed/unknown parameter)
//   1      the operation failed: message is Status::to_string() ("not_found: ..."), data holds
//          {"code": <stable ErrorCode name>, "number": <its numeric value>}

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "client/client.h"

namespace parley::cli {

inline constexpr int kRpcParseError = -32700;
inline constexpr int kRpcInvalidRequest = -32600;
inline constexpr int kRpcMethodNotFound = -32601;
inline constexpr int kRpcInvalidParams = -32602;
inline constexpr int kRpcOperationFailed = 1;

// A batch holds at most this many requests.
inline constexpr std::size_t kRpcMaxBatch = 100;
// history's "limit" is between 1 and this (default 50, like `parley history`).
inline constexpr std::int64_t kRpcMaxHistoryLimit = 10000;

// {"jsonrpc":"2.0","error":{"code":code,"message":message},"id":id}
nlohmann::json rpc_error(const nlohmann::json& id, int code, const std::string& message);

// Validates and executes `message` (one request or a batch). Returns the response to send, or
// nullopt when none is due (a JSON-RPC notification, i.e. a request without "id", or a batch of
// them). Never throws; a failing operation becomes an error response.
std::optional<nlohmann::json> execute_rpc(client::Client& client, const nlohmann::json& message);

// The response to `message` (a request or a batch) when no Client is available: every request
// fails with `why` (code 1); nullopt when nothing is due.
std::optional<nlohmann::json> fail_rpc(const nlohmann::json& message, const Status& why);

// The notification for an incoming message: {"jsonrpc":"2.0","method":"message","params":{...}}.
nlohmann::json message_notification(const client::IncomingMessage& m);

}  // namespace parley::cli
