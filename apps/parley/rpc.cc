#include "apps/parley/rpc.h"

#include <filesystem>
#include <functional>
#include <initializer_list>
#include <string_view>
#include <utility>
#include <vector>

#include "apps/parley/json_output.h"

namespace parley::cli {
namespace {

using nlohmann::json;

// What a method produced: a result, or an error object (code, message, optional data).
struct Outcome {
  json result;
  std::optional<json> error;
};

Outcome fail(int code, std::string message, json data = nullptr) {
  json e{{"code", code}, {"message", std::move(message)}};
  if (!data.is_null()) e["data"] = std::move(data);
  return Outcome{nullptr, std::move(e)};
}

Outcome fail(const Status& s) {
  return fail(kRpcOperationFailed, s.to_string(),
              json{{"code", std::string(error_code_name(s.code()))},
                   {"number", static_cast<int>(s.code())}});
}

Outcome ok(json result) { return Outcome{std::move(result), std::nullopt}; }

// The parameters of one call, checked as they are read: the first problem is kept in error_.
class Params {
 public:
  explicit Params(const json& params) : params_(params) {}

  // Refuses any key not in `allowed` (a misspelt optional parameter is an error, not ignored).
  void only(std::initializer_list<std::string_view> allowed) {
    for (const auto& [key, value] : params_.items()) {
      bool known = false;
      for (std::string_view a : allowed) known = known || key == a;
      if (!known) set_error("unknown parameter \"" + key + "\"");
    }
  }
  bool has(const char* key) const { return params_.contains(key); }
  std::string string(const char* key) {
    auto it = params_.find(key);
    if (it == params_.end()) {
      set_error(std::string("missing parameter \"") + key + "\"");
      return {};
    }
    if (!it->is_string()) {
      set_error(std::string("parameter \"") + key + "\" must be a string");
      return {};
    }
    return it->get_ref<const std::string&>();
  }
  // An optional string; nullopt when absent (or ill-typed, which is an error).
  std::optional<std::string> optional_string(const char* key) {
    if (!has(key)) return std::nullopt;
    std::string s = string(key);
    if (error_) return std::nullopt;
    return s;
  }
  // An array of strings; absent is an error when `required`, else an empty list. With
  // `non_empty`, an empty array is an error too.
  std::vector<std::string> strings(const char* key, bool required, bool non_empty) {
    auto it = params_.find(key);
    if (it == params_.end()) {
      if (required) set_error(std::string("missing parameter \"") + key + "\"");
      return {};
    }
    if (!it->is_array()) {
      set_error(std::string("parameter \"") + key + "\" must be an array of strings");
      return {};
    }
    if (non_empty && it->empty()) {
      set_error(std::string("parameter \"") + key + "\" must not be empty");
      return {};
    }
    std::vector<std::string> out;
    for (const json& v : *it) {
      if (!v.is_string()) {
        set_error(std::string("parameter \"") + key + "\" must be an array of strings");
        return {};
      }
      out.push_back(v.get<std::string>());
    }
    return out;
  }
  // Records a problem found by the method itself (e.g. conflicting parameters).
  void refuse(std::string why) { set_error(std::move(why)); }
  // An optional integer in [lo, hi]; `fallback` when absent.
  std::int64_t integer(const char* key, std::int64_t lo, std::int64_t hi, std::int64_t fallback) {
    auto it = params_.find(key);
    if (it == params_.end()) return fallback;
    if (it->is_number_unsigned() && it->get<std::uint64_t>() <= static_cast<std::uint64_t>(hi) &&
        static_cast<std::int64_t>(it->get<std::uint64_t>()) >= lo) {
      return static_cast<std::int64_t>(it->get<std::uint64_t>());
    }
    if (it->is_number_integer() && !it->is_number_unsigned() && it->get<std::int64_t>() >= lo &&
        it->get<std::int64_t>() <= hi) {
      return it->get<std::int64_t>();
    }
    set_error(std::string("parameter \"") + key + "\" must be an integer from " +
              std::to_string(lo) + " to " + std::to_string(hi));
    return fallback;
  }
  const std::optional<std::string>& error() const { return error_; }

 private:
  void set_error(std::string e) {
    if (!error_) error_ = std::move(e);
  }
  const json& params_;
  std::optional<std::string> error_;
};

Outcome invalid(const Params& p) { return fail(kRpcInvalidParams, *p.error()); }

Outcome m_whoami(client::Client& c, Params& p) {
  p.only({});
  if (p.error()) return invalid(p);
  return ok({{"address", c.address()}});
}

// send {to | group, text, file?}: a 1:1 or group message; with "file" (an absolute path) the
// file is uploaded and sent, and "text" (optional then) is its caption.
Outcome m_send(client::Client& c, Params& p) {
  p.only({"to", "group", "text", "file"});
  const bool to_group = p.has("group");
  if (to_group && p.has("to")) p.refuse("give \"to\" or \"group\", not both");
  if (!to_group && !p.has("to")) p.refuse("missing parameter \"to\" (or \"group\")");
  const std::string target = to_group ? p.string("group") : p.string("to");
  const std::optional<std::string> file = p.optional_string("file");
  const std::string text = file ? p.optional_string("text").value_or("") : p.string("text");
  if (file && !std::filesystem::path(*file).is_absolute()) {
    // The daemon's working directory is not the caller's: a relative path would be ambiguous.
    p.refuse("parameter \"file\" must be an absolute path");
  }
  if (p.error()) return invalid(p);
  Status s;
  if (file) {
    s = c.send_file(target, to_group, *file, text, {});
  } else {
    s = to_group ? c.send_group_text(target, text) : c.send_text(target, text);
  }
  if (!s.is_ok()) return fail(s);
  return ok({{"ok", true}});
}

json group_json(const client::GroupInfo& g) {
  return json{{"id", g.id}, {"name", g.name}, {"members", g.members}, {"left", g.left}};
}

Outcome m_group_create(client::Client& c, Params& p) {
  p.only({"name", "members"});
  const std::string name = p.string("name");
  const std::vector<std::string> members = p.strings("members", false, false);
  if (p.error()) return invalid(p);
  auto id = c.group_create(name, members);
  if (!id) return fail(id.error());
  return ok({{"id", *id}});
}

// group_add and group_remove: {group, members[]} (at least one member).
Outcome m_group_change(client::Client& c, Params& p, bool add) {
  p.only({"group", "members"});
  const std::string group = p.string("group");
  const std::vector<std::string> members = p.strings("members", true, true);
  if (p.error()) return invalid(p);
  Status s = add ? c.group_add(group, members) : c.group_remove(group, members);
  if (!s.is_ok()) return fail(s);
  return ok({{"ok", true}});
}
Outcome m_group_add(client::Client& c, Params& p) { return m_group_change(c, p, true); }
Outcome m_group_remove(client::Client& c, Params& p) { return m_group_change(c, p, false); }

Outcome m_group_rename(client::Client& c, Params& p) {
  p.only({"group", "name"});
  const std::string group = p.string("group");
  const std::string name = p.string("name");
  if (p.error()) return invalid(p);
  if (Status s = c.group_rename(group, name); !s.is_ok()) return fail(s);
  return ok({{"ok", true}});
}

Outcome m_group_leave(client::Client& c, Params& p) {
  p.only({"group"});
  const std::string group = p.string("group");
  if (p.error()) return invalid(p);
  if (Status s = c.group_leave(group); !s.is_ok()) return fail(s);
  return ok({{"ok", true}});
}

Outcome m_group_info(client::Client& c, Params& p) {
  p.only({"group"});
  const std::string group = p.string("group");
  if (p.error()) return invalid(p);
  auto info = c.group_info(group);
  if (!info) return fail(info.error());
  return ok(group_json(*info));
}

Outcome m_groups(client::Client& c, Params& p) {
  p.only({});
  if (p.error()) return invalid(p);
  auto all = c.groups();
  if (!all) return fail(all.error());
  json list = json::array();
  for (const auto& g : *all) list.push_back(group_json(g));
  return ok(std::move(list));
}

Outcome m_contacts(client::Client& c, Params& p) {
  p.only({});
  if (p.error()) return invalid(p);
  auto all = c.contacts();
  if (!all) return fail(all.error());
  json list = json::array();
  for (const auto& contact : *all) {
    list.push_back({{"address", contact.address.name},
                    {"device", contact.address.device_id},
                    {"verified", contact.verified},
                    {"identity_changed", contact.identity_changed}});
  }
  return ok(std::move(list));
}

// history {address, limit?}: `address` is a contact's address or a group id.
Outcome m_history(client::Client& c, Params& p) {
  p.only({"address", "limit"});
  std::string address = p.string("address");
  const std::int64_t limit = p.integer("limit", 1, kRpcMaxHistoryLimit, 50);
  if (p.error()) return invalid(p);
  auto entries = c.history(address, static_cast<std::size_t>(limit));
  if (!entries) return fail(entries.error());
  json list = json::array();
  for (const auto& h : *entries) list.push_back(to_json(h));
  return ok(std::move(list));
}

Outcome m_safety_number(client::Client& c, Params& p) {
  p.only({"address"});
  std::string address = p.string("address");
  if (p.error()) return invalid(p);
  auto number = c.safety_number(address);
  if (!number) return fail(number.error());
  return ok({{"safety_number", *number}});
}

Outcome m_trust(client::Client& c, Params& p) {
  p.only({"address"});
  std::string address = p.string("address");
  if (p.error()) return invalid(p);
  if (Status s = c.trust(address); !s.is_ok()) return fail(s);
  return ok({{"ok", true}});
}

using Method = Outcome (*)(client::Client&, Params&);

Method find_method(std::string_view name) {
  static constexpr std::pair<std::string_view, Method> kMethods[] = {
      {"whoami", m_whoami},
      {"send", m_send},
      {"contacts", m_contacts},
      {"history", m_history},
      {"safety_number", m_safety_number},
      {"trust", m_trust},
      {"group_create", m_group_create},
      {"group_add", m_group_add},
      {"group_remove", m_group_remove},
      {"group_rename", m_group_rename},
      {"group_leave", m_group_leave},
      {"group_info", m_group_info},
      {"groups", m_groups},
  };
  for (const auto& [n, m] : kMethods) {
    if (n == name) return m;
  }
  return nullptr;
}

bool valid_id(const json& id) { return id.is_string() || id.is_number() || id.is_null(); }

// Executes `request` on `client`, or (client null) fails a valid request with `why`.
std::optional<json> execute_one(client::Client* client, const Status& why, const json& request) {
  if (!request.is_object()) return rpc_error(nullptr, kRpcInvalidRequest, "not a request object");
  auto id_it = request.find("id");
  const bool notification = id_it == request.end();
  if (!notification && !valid_id(*id_it)) {
    return rpc_error(nullptr, kRpcInvalidRequest, "id must be a string, a number or null");
  }
  const json id = notification ? json(nullptr) : *id_it;
  auto version = request.find("jsonrpc");
  if (version == request.end() || !version->is_string() || *version != "2.0") {
    return rpc_error(id, kRpcInvalidRequest, "\"jsonrpc\" must be \"2.0\"");
  }
  auto method = request.find("method");
  if (method == request.end() || !method->is_string()) {
    return rpc_error(id, kRpcInvalidRequest, "\"method\" must be a string");
  }
  Outcome out;
  const Method m = find_method(method->get_ref<const std::string&>());
  auto params_it = request.find("params");
  static const json kNoParams = json::object();
  if (m == nullptr) {
    out = fail(kRpcMethodNotFound, "unknown method");
  } else if (params_it != request.end() && !params_it->is_object()) {
    out = fail(kRpcInvalidParams, "params must be an object");
  } else if (client == nullptr) {
    out = fail(why);
  } else {
    Params params(params_it != request.end() ? *params_it : kNoParams);
    out = m(*client, params);
  }
  if (notification) return std::nullopt;
  if (out.error) return json{{"jsonrpc", "2.0"}, {"error", std::move(*out.error)}, {"id", id}};
  return json{{"jsonrpc", "2.0"}, {"result", std::move(out.result)}, {"id", id}};
}

std::optional<json> execute_all(client::Client* client, const Status& why, const json& message) {
  if (!message.is_array()) return execute_one(client, why, message);
  if (message.empty()) return rpc_error(nullptr, kRpcInvalidRequest, "empty batch");
  if (message.size() > kRpcMaxBatch) {
    return rpc_error(nullptr, kRpcInvalidRequest,
                     "a batch holds at most " + std::to_string(kRpcMaxBatch) + " requests");
  }
  json responses = json::array();
  for (const json& request : message) {
    if (auto r = execute_one(client, why, request)) responses.push_back(std::move(*r));
  }
  if (responses.empty()) return std::nullopt;
  return responses;
}

}  // namespace

json rpc_error(const json& id, int code, const std::string& message) {
  return json{{"jsonrpc", "2.0"}, {"error", {{"code", code}, {"message", message}}}, {"id", id}};
}

std::optional<json> execute_rpc(client::Client& client, const json& message) {
  return execute_all(&client, Status::ok(), message);
}

std::optional<json> fail_rpc(const json& message, const Status& why) {
  return execute_all(nullptr, why, message);
}

json message_notification(const client::IncomingMessage& m) {
  return json{{"jsonrpc", "2.0"}, {"method", "message"}, {"params", to_json(m)}};
}

}  // namespace parley::cli
