// `parley daemon` end to end: real parleyd and parley daemon processes, driven through their
// Unix sockets with newline-delimited JSON-RPC 2.0 (docs/cli.md, "daemon").
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/bytes.h"
#include "crypto/primitives.h"
#include "tests/client/cli_support.h"
#include "tests/server/harness.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// SHA-256 of a file, hex ("" when it cannot be read).
std::string file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  crypto::Sha256 h;
  std::vector<char> buf(1 << 16);
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
    h.update(ByteView(reinterpret_cast<const std::uint8_t*>(buf.data()),
                      static_cast<std::size_t>(in.gcount())));
  }
  const auto d = h.finish();
  return to_hex(ByteView(d.data(), d.size()));
}

// The error code of a JSON-RPC error response (0 when it is not one).
int error_code(const json& response) {
  if (!response.is_object() || !response.contains("error")) return 0;
  return response["error"]["code"].get<int>();
}

class DaemonTest : public ::testing::Test {
 protected:
  void start_server() {
    if (port_ == 0) port_ = free_port();
    auto d = Parleyd::start(dir_.path(), {"--listen", "127.0.0.1:" + std::to_string(port_)});
    ASSERT_TRUE(d.has_value()) << d.status().to_string();
    server_ = std::move(*d);
  }
  std::string profile(const std::string& name) const { return dir_.path() + "/p-" + name; }
  std::string socket_path(const std::string& name) const { return dir_.path() + "/" + name + ".sock"; }
  std::string log_path(const std::string& name) const { return dir_.path() + "/" + name + ".log"; }

  void register_user(const std::string& name) {
    Ran r = run_parley({"--profile", profile(name), "register", server_->invite_link(), "--name", name});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // Starts `name`'s daemon on `socket` (default: socket_path(name)) with `extra` options.
  std::unique_ptr<ParleyProcess> daemon(const std::string& name, std::string socket = "",
                                        const std::vector<std::string>& extra = {}) {
    if (socket.empty()) socket = socket_path(name);
    std::vector<std::string> args = {"--profile", profile(name), "daemon", "--socket", socket};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = ParleyProcess::spawn(args, log_path(name));
    EXPECT_TRUE(p.has_value());
    return p ? std::move(*p) : nullptr;
  }
  std::unique_ptr<RpcConnection> connect(const std::string& name) {
    auto c = RpcConnection::connect(socket_path(name));
    EXPECT_TRUE(c.has_value()) << c.status().to_string() << "\n" << read_file(log_path(name));
    return c ? std::move(*c) : nullptr;
  }
  // A raw request line and the line that answers it.
  json exchange(RpcConnection& c, const std::string& line) {
    EXPECT_TRUE(c.send_line(line).is_ok());
    auto reply = c.read_line(20s);
    EXPECT_TRUE(reply.has_value()) << reply.status().to_string();
    if (!reply) return nullptr;
    json j = json::parse(*reply, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << *reply;
    return j;
  }

  TempDir dir_;
  std::uint16_t port_ = 0;
  std::unique_ptr<Parleyd> server_;
};

TEST_F(DaemonTest, MethodsAndNotificationsBetweenTwoDaemons) {
  start_server();
  register_user("alice");
  register_user("bob");
  auto alice_daemon = daemon("alice");
  auto bob_daemon = daemon("bob");
  auto a = connect("alice");
  auto b = connect("bob");
  auto b2 = connect("bob");  // a second program on bob's socket
  ASSERT_TRUE(a && b && b2);

  auto who = a->call("whoami");
  ASSERT_TRUE(who.has_value()) << who.status().to_string();
  EXPECT_EQ((*who)["jsonrpc"], "2.0");
  EXPECT_EQ((*who)["result"]["address"], "alice@127.0.0.1");
  who = b2->call("whoami");
  ASSERT_TRUE(who.has_value());
  EXPECT_EQ((*who)["result"]["address"], "bob@127.0.0.1");

  // A newline and non-ASCII inside the text: the framing is one JSON value per line.
  const std::string text = "hello bob\nsecond line, caf\xc3\xa9 \xe2\x9c\x93";
  auto sent = a->call("send", {{"to", "bob"}, {"text", text}});
  ASSERT_TRUE(sent.has_value()) << sent.status().to_string();
  EXPECT_EQ((*sent)["result"], json({{"ok", true}})) << sent->dump();
  for (RpcConnection* c : {b.get(), b2.get()}) {
    auto n = c->next_notification(20s);
    ASSERT_TRUE(n.has_value()) << n.status().to_string() << "\n" << read_file(log_path("bob"));
    EXPECT_EQ((*n)["jsonrpc"], "2.0");
    EXPECT_EQ((*n)["method"], "message");
    EXPECT_FALSE(n->contains("id"));
    const json& m = (*n)["params"];
    EXPECT_EQ(m["from"], "alice@127.0.0.1");
    EXPECT_EQ(m["device"], 1);
    EXPECT_EQ(m["text"], text);
    EXPECT_TRUE(m["group"].is_null());
    EXPECT_GT(m["timestamp"].get<std::uint64_t>(), 0u);
    EXPECT_GT(m["server_timestamp"].get<std::int64_t>(), 0);
    EXPECT_FALSE(m.contains("error"));
  }

  ASSERT_TRUE(b->call("send", {{"to", "alice@127.0.0.1"}, {"text", "hi alice"}}).has_value());
  auto n = a->next_notification(20s);
  ASSERT_TRUE(n.has_value()) << n.status().to_string();
  EXPECT_EQ((*n)["params"]["text"], "hi alice");
  // Nobody is told about their own messages, and nothing arrives twice.
  EXPECT_FALSE(a->next_notification(300ms).has_value());
  EXPECT_FALSE(b->next_notification(300ms).has_value());

  auto history = a->call("history", {{"address", "bob"}});
  ASSERT_TRUE(history.has_value());
  const json& h = (*history)["result"];
  ASSERT_EQ(h.size(), 2u) << history->dump();
  EXPECT_EQ(h[0]["direction"], "out");
  EXPECT_EQ(h[0]["peer"], "bob@127.0.0.1");
  EXPECT_EQ(h[0]["text"], text);
  EXPECT_EQ(h[1]["direction"], "in");
  EXPECT_EQ(h[1]["text"], "hi alice");
  history = a->call("history", {{"address", "bob"}, {"limit", 1}});
  ASSERT_TRUE(history.has_value());
  ASSERT_EQ((*history)["result"].size(), 1u);
  EXPECT_EQ((*history)["result"][0]["text"], "hi alice");  // the newest

  auto sa = a->call("safety_number", {{"address", "bob"}});
  auto sb = b->call("safety_number", {{"address", "alice"}});
  ASSERT_TRUE(sa.has_value() && sb.has_value());
  const std::string number = (*sa)["result"]["safety_number"];
  EXPECT_EQ(number, (*sb)["result"]["safety_number"]);
  EXPECT_EQ(std::count_if(number.begin(), number.end(), ::isdigit), 60);

  auto contacts = a->call("contacts");
  ASSERT_TRUE(contacts.has_value());
  ASSERT_EQ((*contacts)["result"].size(), 1u) << contacts->dump();
  EXPECT_EQ((*contacts)["result"][0]["address"], "bob@127.0.0.1");
  EXPECT_EQ((*contacts)["result"][0]["verified"], false);
  auto trusted = a->call("trust", {{"address", "bob"}});
  ASSERT_TRUE(trusted.has_value());
  EXPECT_EQ((*trusted)["result"], json({{"ok", true}})) << trusted->dump();
  contacts = a->call("contacts");
  ASSERT_TRUE(contacts.has_value());
  EXPECT_EQ((*contacts)["result"][0]["verified"], true);

  EXPECT_EQ(alice_daemon->terminate(), 0);
  EXPECT_EQ(bob_daemon->terminate(), 0);
}

TEST_F(DaemonTest, BadInputGetsErrorsAndTheDaemonKeepsServing) {
  start_server();
  register_user("alice");
  auto d = daemon("alice");
  auto c = connect("alice");
  ASSERT_TRUE(c);

  json r = exchange(*c, R"({"jsonrpc":"2.0","id":7,"method":"no_such_method"})");
  EXPECT_EQ(error_code(r), -32601) << r;
  EXPECT_EQ(r["id"], 7);
  r = exchange(*c, R"({"jsonrpc":"2.0","id":"x","method":"whoami")");  // unterminated
  EXPECT_EQ(error_code(r), -32700) << r;
  EXPECT_TRUE(r["id"].is_null());
  r = exchange(*c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}");  // not UTF-8
  EXPECT_EQ(error_code(r), -32700) << r;
  r = exchange(*c, "42");
  EXPECT_EQ(error_code(r), -32600) << r;
  r = exchange(*c, R"({"jsonrpc":"1.0","id":3,"method":"whoami"})");
  EXPECT_EQ(error_code(r), -32600) << r;
  EXPECT_EQ(r["id"], 3);
  r = exchange(*c, R"({"jsonrpc":"2.0","id":{"a":1},"method":"whoami"})");
  EXPECT_EQ(error_code(r), -32600) << r;
  EXPECT_TRUE(r["id"].is_null());
  r = exchange(*c, R"({"jsonrpc":"2.0","id":4,"method":17})");
  EXPECT_EQ(error_code(r), -32600) << r;

  // Invalid params.
  for (const char* line : {
           R"({"jsonrpc":"2.0","id":5,"method":"send","params":{"to":"bob"}})",
           R"({"jsonrpc":"2.0","id":5,"method":"send","params":{"to":"bob","text":12}})",
           R"({"jsonrpc":"2.0","id":5,"method":"send","params":["bob","hi"]})",
           R"({"jsonrpc":"2.0","id":5,"method":"history","params":{"address":"bob","limit":"x"}})",
           R"({"jsonrpc":"2.0","id":5,"method":"history","params":{"address":"bob","limit":0}})",
           R"({"jsonrpc":"2.0","id":5,"method":"history","params":{"address":"bob","limit":-1}})",
           R"({"jsonrpc":"2.0","id":5,"method":"history","params":{"adress":"bob"}})",
           R"({"jsonrpc":"2.0","id":5,"method":"whoami","params":{"extra":true}})",
       }) {
    r = exchange(*c, line);
    EXPECT_EQ(error_code(r), -32602) << line << " -> " << r;
    EXPECT_EQ(r["id"], 5);
  }

  // Invalid params of send's group and file forms and of the group methods: method, params.
  const std::pair<const char*, const char*> bad_params[] = {
      {"send", R"({"text":"hi"})"},
      {"send", R"({"to":"bob","group":"00","text":"hi"})"},
      {"send", R"({"group":7,"text":"hi"})"},
      {"send", R"({"group":"00"})"},
      {"send", R"({"to":"bob","file":3})"},
      {"send", R"({"to":"bob","file":"relative.txt"})"},
      {"send", R"({"to":"bob","file":"/tmp/x","text":1})"},
      {"send", R"({"to":"bob","text":"hi","caption":"x"})"},
      {"group_create", R"({"members":["bob"]})"},
      {"group_create", R"({"name":"t","members":"bob"})"},
      {"group_create", R"({"name":"t","members":["bob",2]})"},
      {"group_create", R"({"name":"t","member":["bob"]})"},
      {"group_add", R"({"group":"00"})"},
      {"group_add", R"({"group":"00","members":[]})"},
      {"group_add", R"({"members":["bob"]})"},
      {"group_remove", R"({"group":"00","members":"bob"})"},
      {"group_leave", R"({})"},
      {"group_leave", R"({"group":"00","members":[]})"},
      {"group_info", R"({"group":5})"},
      {"groups", R"({"all":true})"},
  };
  auto request = [](const char* method, const char* params) {
    return std::string(R"({"jsonrpc":"2.0","id":5,"method":")") + method + R"(","params":)" +
           params + "}";
  };
  for (const auto& [method, params] : bad_params) {
    r = exchange(*c, request(method, params));
    EXPECT_EQ(error_code(r), -32602) << method << " " << params << " -> " << r;
    EXPECT_EQ(r["id"], 5);
    EXPECT_FALSE(r["error"]["message"].get<std::string>().empty()) << r;
  }
  r = exchange(*c, request("send", R"({"to":"bob","group":"00","text":"hi"})"));
  EXPECT_EQ(r["error"]["message"], "give \"to\" or \"group\", not both") << r;
  r = exchange(*c, request("group_add", R"({"group":"00","members":[]})"));
  EXPECT_EQ(r["error"]["message"], "parameter \"members\" must not be empty") << r;
  r = exchange(*c, request("send", R"({"to":"bob","file":"relative.txt"})"));
  EXPECT_EQ(r["error"]["message"], "parameter \"file\" must be an absolute path") << r;

  // A failing operation: code 1 and the Status text, which starts with the stable code name.
  const std::string no_such_group(32, 'a');
  auto missing_group = c->call("group_info", {{"group", no_such_group}});
  ASSERT_TRUE(missing_group.has_value());
  EXPECT_EQ(error_code(*missing_group), 1) << *missing_group;
  EXPECT_EQ((*missing_group)["error"]["data"]["code"], "not_found") << *missing_group;
  auto bad_group = c->call("send", {{"group", "not hex"}, {"text", "hi"}});
  ASSERT_TRUE(bad_group.has_value());
  EXPECT_EQ((*bad_group)["error"]["data"]["code"], "invalid_argument") << *bad_group;
  auto no_file = c->call("send", {{"to", "alice"}, {"file", dir_.path() + "/does-not-exist"}});
  ASSERT_TRUE(no_file.has_value());
  EXPECT_EQ(error_code(*no_file), 1) << *no_file;
  auto none = c->call("groups");
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ((*none)["result"], json::array()) << *none;
  auto unknown = c->call("send", {{"to", "nobody"}, {"text", "hi"}});
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ(error_code(*unknown), 1) << *unknown;
  EXPECT_EQ((*unknown)["error"]["message"].get<std::string>().rfind("not_found: ", 0), 0u) << *unknown;
  EXPECT_EQ((*unknown)["error"]["data"]["code"], "not_found");
  auto malformed = c->call("safety_number", {{"address", "not an address!"}});
  ASSERT_TRUE(malformed.has_value());
  EXPECT_EQ(error_code(*malformed), 1) << *malformed;

  // A request without an id is a notification: executed, never answered.
  ASSERT_TRUE(c->send_line(R"({"jsonrpc":"2.0","method":"whoami"})").is_ok());
  ASSERT_TRUE(c->send_line(R"({"jsonrpc":"2.0","method":"no_such_method"})").is_ok());
  r = exchange(*c, R"({"jsonrpc":"2.0","id":"after","method":"whoami"})");
  EXPECT_EQ(r["id"], "after") << r;
  // Batches: answered as an array, without the notifications' entries.
  r = exchange(*c, R"([{"jsonrpc":"2.0","id":1,"method":"whoami"},{"jsonrpc":"2.0","id":2,"method":"nope"},)"
                   R"({"jsonrpc":"2.0","method":"whoami"},5])");
  ASSERT_TRUE(r.is_array()) << r;
  ASSERT_EQ(r.size(), 3u) << r;
  EXPECT_EQ(r[0]["result"]["address"], "alice@127.0.0.1");
  EXPECT_EQ(error_code(r[1]), -32601);
  EXPECT_EQ(error_code(r[2]), -32600);
  r = exchange(*c, "[]");
  EXPECT_EQ(error_code(r), -32600) << r;
  // Deep nesting parses without exhausting the stack, and is an invalid request.
  r = exchange(*c, std::string(100000, '[') + std::string(100000, ']'));
  ASSERT_TRUE(r.is_array()) << r;
  EXPECT_EQ(error_code(r[0]), -32600);

  // A line over 1 MiB: a parse error, then that connection (only) is closed.
  auto big = connect("alice");
  ASSERT_TRUE(big);
  const std::string huge = R"({"jsonrpc":"2.0","id":1,"method":"send","params":{"to":"alice","text":")" +
                           std::string((1 << 20) + 10, 'x') + "\"}}";
  big->send_line(huge).ignore();  // the daemon may close before it read everything
  auto refused = big->read_line(20s);
  ASSERT_TRUE(refused.has_value()) << refused.status().to_string();
  r = json::parse(*refused, nullptr, false);
  EXPECT_EQ(error_code(r), -32700) << *refused;
  auto closed = big->read_line(20s);
  ASSERT_FALSE(closed.has_value());
  EXPECT_EQ(closed.status().code(), ErrorCode::kIo);

  // A program that disconnects with a call in flight harms nobody.
  {
    auto gone = connect("alice");
    ASSERT_TRUE(gone);
    ASSERT_TRUE(gone->send_line(R"({"jsonrpc":"2.0","id":1,"method":"contacts"})").is_ok());
  }

  // Still serving, on the old connection and on new ones.
  auto who = c->call("whoami");
  ASSERT_TRUE(who.has_value()) << who.status().to_string();
  EXPECT_EQ((*who)["result"]["address"], "alice@127.0.0.1");
  auto fresh = connect("alice");
  ASSERT_TRUE(fresh);
  who = fresh->call("whoami");
  ASSERT_TRUE(who.has_value());
  EXPECT_EQ((*who)["result"]["address"], "alice@127.0.0.1");
  EXPECT_TRUE(d->running());
}

// The params of the next notification on `c`, which must be a "message" (`log`: the daemon's
// log, shown on failure).
json next_message(RpcConnection& c, const std::string& log) {
  auto n = c.next_notification(30s);
  EXPECT_TRUE(n.has_value()) << n.status().to_string() << "\n" << log;
  if (!n) return json::object();
  EXPECT_EQ((*n)["method"], "message") << *n;
  return (*n)["params"];
}

TEST_F(DaemonTest, GroupsThroughTheSocket) {
  start_server();
  register_user("alice");
  register_user("bob");
  register_user("carol");  // no daemon: her messages wait on the server
  auto alice_daemon = daemon("alice");
  auto bob_daemon = daemon("bob");
  auto a = connect("alice");
  auto b = connect("bob");
  ASSERT_TRUE(a && b);

  auto created = a->call("group_create", {{"name", "team"}, {"members", {"bob"}}});
  ASSERT_TRUE(created.has_value()) << created.status().to_string();
  ASSERT_TRUE((*created)["result"].contains("id")) << *created;
  const std::string gid = (*created)["result"]["id"];
  EXPECT_EQ(gid.size(), 32u);

  // Bob learns of the group (an event), then gets a group message with "group" set.
  json m = next_message(*b, read_file(log_path("bob")));
  EXPECT_EQ(m["group"], gid) << m;
  EXPECT_EQ(m["from"], "alice@127.0.0.1");
  EXPECT_FALSE(m.value("event", "").empty()) << m;
  auto sent = a->call("send", {{"group", gid}, {"text", "hello team"}});
  ASSERT_TRUE(sent.has_value());
  EXPECT_EQ((*sent)["result"], json({{"ok", true}})) << *sent;
  m = next_message(*b, read_file(log_path("bob")));
  EXPECT_EQ(m["group"], gid) << m;
  EXPECT_EQ(m["from"], "alice@127.0.0.1");
  EXPECT_EQ(m["text"], "hello team");
  EXPECT_FALSE(m.contains("event")) << m;

  // And back: bob's reply reaches alice's daemon as a group message.
  ASSERT_TRUE(b->call("send", {{"group", gid}, {"text", "hi from bob"}}).has_value());
  m = next_message(*a, read_file(log_path("alice")));
  EXPECT_EQ(m["group"], gid) << m;
  EXPECT_EQ(m["from"], "bob@127.0.0.1");
  EXPECT_EQ(m["text"], "hi from bob");

  auto info = b->call("group_info", {{"group", gid}});
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ((*info)["result"], json({{"id", gid},
                                     {"name", "team"},
                                     {"members", {"alice@127.0.0.1", "bob@127.0.0.1"}},
                                     {"left", false}}))
      << *info;
  auto list = b->call("groups");
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ((*list)["result"].size(), 1u) << *list;
  EXPECT_EQ((*list)["result"][0]["id"], gid);

  // Add and remove carol: bob hears of both changes.
  auto added = a->call("group_add", {{"group", gid}, {"members", {"carol"}}});
  ASSERT_TRUE(added.has_value());
  EXPECT_EQ((*added)["result"], json({{"ok", true}})) << *added;
  m = next_message(*b, read_file(log_path("bob")));
  EXPECT_EQ(m["group"], gid);
  EXPECT_FALSE(m.value("event", "").empty()) << m;
  info = b->call("group_info", {{"group", gid}});
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ((*info)["result"]["members"],
            json({"alice@127.0.0.1", "bob@127.0.0.1", "carol@127.0.0.1"}))
      << *info;
  auto removed = a->call("group_remove", {{"group", gid}, {"members", {"carol@127.0.0.1"}}});
  ASSERT_TRUE(removed.has_value());
  EXPECT_EQ((*removed)["result"], json({{"ok", true}})) << *removed;
  m = next_message(*b, read_file(log_path("bob")));
  EXPECT_FALSE(m.value("event", "").empty()) << m;
  info = a->call("group_info", {{"group", gid}});
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ((*info)["result"]["members"], json({"alice@127.0.0.1", "bob@127.0.0.1"})) << *info;
  // Removing someone who is not a member is an operation failure, not a params error.
  auto again = a->call("group_remove", {{"group", gid}, {"members", {"carol"}}});
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(error_code(*again), 1) << *again;

  // The group's conversation, by group id.
  auto history = a->call("history", {{"address", gid}});
  ASSERT_TRUE(history.has_value());
  std::vector<std::string> texts;
  for (const json& h : (*history)["result"]) texts.push_back(h["text"]);
  EXPECT_NE(std::find(texts.begin(), texts.end(), "hello team"), texts.end()) << *history;
  EXPECT_NE(std::find(texts.begin(), texts.end(), "hi from bob"), texts.end()) << *history;

  // Bob leaves: alice hears of it; bob's copy is marked left, and he cannot send any more.
  auto left = b->call("group_leave", {{"group", gid}});
  ASSERT_TRUE(left.has_value());
  EXPECT_EQ((*left)["result"], json({{"ok", true}})) << *left;
  m = next_message(*a, read_file(log_path("alice")));
  EXPECT_EQ(m["group"], gid);
  EXPECT_EQ(m["from"], "bob@127.0.0.1");
  EXPECT_FALSE(m.value("event", "").empty()) << m;
  info = b->call("group_info", {{"group", gid}});
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ((*info)["result"]["left"], true) << *info;
  info = a->call("group_info", {{"group", gid}});
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ((*info)["result"]["members"], json({"alice@127.0.0.1"})) << *info;
  auto refused = b->call("send", {{"group", gid}, {"text", "still here?"}});
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ((*refused)["error"]["data"]["code"], "permission_denied") << *refused;

  EXPECT_FALSE(a->next_notification(300ms).has_value());
  EXPECT_FALSE(b->next_notification(300ms).has_value());
  EXPECT_EQ(alice_daemon->terminate(), 0);
  EXPECT_EQ(bob_daemon->terminate(), 0);
}

TEST_F(DaemonTest, FilesThroughTheSocket) {
  start_server();
  register_user("alice");
  register_user("bob");
  const std::string downloads = dir_.path() + "/bob-downloads";
  auto alice_daemon = daemon("alice");  // default: PROFILE/files
  auto bob_daemon = daemon("bob", "", {"--download-dir", downloads});
  auto a = connect("alice");
  auto b = connect("bob");
  ASSERT_TRUE(a && b);

  // A little over 200 KiB of varied bytes (several upload chunks' worth of padding blocks).
  const std::string photo = dir_.path() + "/photo.jpg";
  {
    std::ofstream out(photo, std::ios::binary);
    std::uint32_t x = 12345;
    for (int i = 0; i < 210 * 1024; ++i) {
      x = x * 1103515245u + 12345u;
      out.put(static_cast<char>(x >> 24));
    }
  }
  const std::string hash = file_sha256(photo);
  ASSERT_EQ(hash.size(), 64u);

  auto sent = a->call("send", {{"to", "bob"}, {"file", photo}, {"text", "a photo"}});
  ASSERT_TRUE(sent.has_value()) << sent.status().to_string();
  EXPECT_EQ((*sent)["result"], json({{"ok", true}})) << *sent;
  json m = next_message(*b, read_file(log_path("bob")));
  EXPECT_EQ(m["from"], "alice@127.0.0.1");
  EXPECT_EQ(m["text"], "a photo");
  ASSERT_TRUE(m.contains("attachment")) << m;
  const json& att = m["attachment"];
  EXPECT_EQ(att["name"], "photo.jpg");
  EXPECT_EQ(att["size"], 210 * 1024);
  EXPECT_EQ(att["sha256"], hash);
  EXPECT_FALSE(att.contains("error")) << att;
  const std::string saved = att["path"];
  EXPECT_EQ(fs::path(saved).parent_path(), fs::path(downloads)) << saved;
  EXPECT_EQ(file_sha256(saved), hash);

  // Back, without a caption, into alice's default directory; a second file of the same name is
  // saved beside the first, never over it.
  const std::string note = dir_.path() + "/note.txt";
  std::ofstream(note) << "meet at noon\n";
  const std::string note_hash = file_sha256(note);
  ASSERT_TRUE(b->call("send", {{"to", "alice"}, {"file", note}}).has_value());
  ASSERT_TRUE(b->call("send", {{"to", "alice"}, {"file", note}}).has_value());
  std::vector<std::string> paths;
  for (int i = 0; i < 2; ++i) {
    m = next_message(*a, read_file(log_path("alice")));
    EXPECT_EQ(m["text"], "") << m;
    ASSERT_TRUE(m.contains("attachment")) << m;
    EXPECT_EQ(m["attachment"]["name"], "note.txt");
    EXPECT_EQ(m["attachment"]["sha256"], note_hash);
    paths.push_back(m["attachment"]["path"]);
    EXPECT_EQ(fs::path(paths.back()).parent_path(), fs::path(profile("alice")) / "files");
    EXPECT_EQ(file_sha256(paths.back()), note_hash);
  }
  EXPECT_NE(paths[0], paths[1]);

  EXPECT_EQ(alice_daemon->terminate(), 0);
  EXPECT_EQ(bob_daemon->terminate(), 0);
}

TEST_F(DaemonTest, ConnectionsAreBounded) {
  start_server();
  register_user("alice");
  auto d = daemon("alice");
  std::vector<std::unique_ptr<RpcConnection>> open;
  for (int i = 0; i < 64; ++i) {
    open.push_back(connect("alice"));
    ASSERT_TRUE(open.back());
  }
  // Every one of them is served (so all 64 are accepted before the next one).
  for (auto& c : open) ASSERT_TRUE(c->call("whoami").has_value());
  auto extra = connect("alice");
  ASSERT_TRUE(extra);
  auto refused = extra->read_line(20s);
  ASSERT_TRUE(refused.has_value()) << refused.status().to_string();
  EXPECT_EQ(error_code(json::parse(*refused)), -32000) << *refused;
  EXPECT_EQ(extra->read_line(20s).status().code(), ErrorCode::kIo);
  // One leaves; a newcomer is served.
  open.pop_back();
  bool served = false;
  for (int attempt = 0; attempt < 100 && !served; ++attempt) {
    auto c = connect("alice");
    ASSERT_TRUE(c);
    served = c->call("whoami", json::object(), 5s).has_value();
    if (!served) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(served);
}

TEST_F(DaemonTest, SocketFileIsPrivateExclusiveAndRemoved) {
  start_server();
  register_user("alice");
  register_user("bob");
  auto d = daemon("alice");
  auto c = connect("alice");
  ASSERT_TRUE(c);
  struct stat st{};
  ASSERT_EQ(::lstat(socket_path("alice").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // A second daemon on the same path is refused; the first keeps serving.
  auto second = daemon("bob", socket_path("alice"));
  EXPECT_EQ(second->wait(20s), 1);
  EXPECT_NE(read_file(log_path("bob")).find("already running"), std::string::npos)
      << read_file(log_path("bob"));
  ASSERT_TRUE(c->call("whoami").has_value());

  // SIGTERM: a clean exit, and the socket file is gone.
  EXPECT_EQ(d->terminate(), 0);
  EXPECT_FALSE(fs::exists(socket_path("alice")));

  // A stale socket file (nobody listens) is replaced.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, socket_path("alice").c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
  }
  ASSERT_TRUE(fs::exists(socket_path("alice")));
  d = daemon("alice");
  c = connect("alice");
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->call("whoami").has_value());
  ASSERT_EQ(::lstat(socket_path("alice").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(d->terminate(), 0);

  // A path that is not a socket is left alone.
  const std::string file = dir_.path() + "/not-a-socket";
  std::ofstream(file) << "data";
  auto refused = daemon("alice", file);
  EXPECT_EQ(refused->wait(20s), 1);
  EXPECT_EQ(read_file(file), "data");
}

TEST_F(DaemonTest, ServerOutageIsRiddenOut) {
  start_server();
  register_user("alice");
  register_user("bob");
  auto alice_daemon = daemon("alice");
  auto bob_daemon = daemon("bob");
  auto a = connect("alice");
  auto b = connect("bob");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->call("send", {{"to", "bob"}, {"text", "before"}}).has_value());
  auto n = b->next_notification(20s);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ((*n)["params"]["text"], "before");

  server_->kill9();
  // Calls are still answered: local ones succeed, a send fails with the Status text.
  auto who = a->call("whoami", json::object(), 10s);
  ASSERT_TRUE(who.has_value()) << who.status().to_string();
  EXPECT_EQ((*who)["result"]["address"], "alice@127.0.0.1");
  auto down = a->call("send", {{"to", "bob"}, {"text", "while down"}}, 60s);
  ASSERT_TRUE(down.has_value()) << down.status().to_string();
  EXPECT_EQ(error_code(*down), 1) << *down;
  EXPECT_NE((*down)["error"]["message"].get<std::string>().find("queued"), std::string::npos) << *down;

  // The server comes back: the daemons reconnect, alice's outbox goes out, bob is notified.
  start_server();
  n = b->next_notification(30s);
  ASSERT_TRUE(n.has_value()) << n.status().to_string() << "\n" << read_file(log_path("bob"));
  EXPECT_EQ((*n)["params"]["text"], "while down");
  EXPECT_NE(read_file(log_path("bob")).find("receive failed"), std::string::npos);
  EXPECT_EQ(alice_daemon->terminate(), 0);
  EXPECT_EQ(bob_daemon->terminate(), 0);
}

}  // namespace
}  // namespace parley::testing
