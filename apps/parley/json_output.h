#pragma once
// JSON shapes shared by `parley receive/history --json` and the daemon's JSON-RPC results
// (docs/cli.md): one function per value type, so both front ends print the same fields.
// Header-only; no state; safe from any thread.

#include <nlohmann/json.hpp>
#include <string>

#include "client/client.h"

namespace parley::cli {

// A received message: from, device, timestamp, server_timestamp, text, group (null for 1:1),
// error (only when undecryptable), identity_changed (only when set).
inline nlohmann::json to_json(const client::IncomingMessage& m) {
  nlohmann::json j;
  j["from"] = m.from;
  j["device"] = m.device;
  j["timestamp"] = m.timestamp;
  j["server_timestamp"] = m.server_timestamp;
  j["text"] = m.text;
  j["group"] = m.group ? nlohmann::json(*m.group) : nlohmann::json(nullptr);
  if (!m.error.empty()) j["error"] = m.error;
  if (m.identity_changed) j["identity_changed"] = true;
  if (!m.event.empty()) j["event"] = m.event;  // a group change
  if (m.attachment) {
    nlohmann::json a{{"name", m.attachment->name}, {"size", m.attachment->size},
                     {"sha256", m.attachment->sha256}, {"path", m.attachment->path}};
    if (!m.attachment->error.empty()) a["error"] = m.attachment->error;
    j["attachment"] = std::move(a);
  }
  return j;
}

// A history entry: direction ("in"/"out"), peer, timestamp, text, status, error (only when set).
inline nlohmann::json to_json(const client::HistoryEntry& h) {
  nlohmann::json j{{"direction", h.outgoing ? "out" : "in"}, {"peer", h.peer},
                   {"timestamp", h.timestamp}, {"text", h.text}, {"status", h.status}};
  if (!h.error.empty()) j["error"] = h.error;
  return j;
}

// A transport: id, kind, link ("" for direct), pt_binary (only when set), enabled, preferred,
// last_result ("" never tried, "ok", or the error), last_attempt_ms, last_success_ms (0: never).
inline nlohmann::json to_json(const client::TransportRecord& t) {
  nlohmann::json j{{"id", t.id},
                   {"kind", std::string(client::transport_kind_name(t.kind))},
                   {"link", t.link},
                   {"enabled", t.enabled},
                   {"preferred", t.preferred},
                   {"last_result", t.last_result},
                   {"last_attempt_ms", t.last_attempt_ms},
                   {"last_success_ms", t.last_success_ms}};
  if (!t.pt_binary.empty()) j["pt_binary"] = t.pt_binary;
  return j;
}

// One line of output: compact JSON without a newline. Invalid UTF-8 in a string (a peer's text
// is arbitrary bytes) is replaced by U+FFFD instead of throwing.
inline std::string dump_line(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace parley::cli
