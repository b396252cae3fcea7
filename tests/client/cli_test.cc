// The `parley` command line end to end: real parleyd and real parley processes on loopback.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/client/cli_support.h"
#include "crypto/primitives.h"
#include "tests/server/harness.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

class CliTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> args = {}) {
    if (port_ == 0) port_ = free_port();
    args.insert(args.end(), {"--listen", "127.0.0.1:" + std::to_string(port_)});
    auto d = Parleyd::start(dir_.path(), args);
    ASSERT_TRUE(d.has_value()) << d.status().to_string();
    server_ = std::move(*d);
  }
  std::string profile(const std::string& name) const { return dir_.path() + "/p-" + name; }
  Ran parley(const std::string& who, std::vector<std::string> args,
             std::map<std::string, std::string> env = {}) {
    args.insert(args.begin(), {"--profile", profile(who)});
    return run_parley(args, env);
  }
  void register_user(const std::string& name) {
    Ran r = parley(name, {"register", server_->invite_link(), "--name", name});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "registered " + name + "@127.0.0.1\n");
  }
  // A send that failed for now: the command fails, and the message stays in the outbox.
  static void expect_queued(const Ran& r) {
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("queued"), std::string::npos) << r.err;
  }
  // Any command that connects sends the outbox first.
  void flush_outbox(const std::string& who) {
    Ran flush = parley(who, {"receive", "--timeout", "5"});
    EXPECT_EQ(flush.exit_code, 0) << flush.err;
  }
  std::vector<nlohmann::json> receive(const std::string& who) {
    Ran r = parley(who, {"receive", "--json", "--timeout", "20"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json_lines(r.out);
  }

  TempDir dir_;
  std::uint16_t port_ = 0;
  std::unique_ptr<Parleyd> server_;
};

TEST_F(CliTest, OneToOneBothWaysAndSafetyNumbers) {
  start();
  register_user("alice");
  register_user("bob");
  Ran who = parley("alice", {"whoami"});
  EXPECT_EQ(who.exit_code, 0);
  EXPECT_EQ(who.out, "alice@127.0.0.1\n");

  ASSERT_EQ(parley("alice", {"send", "bob", "hello bob"}).exit_code, 0);
  auto got = receive("bob");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["from"], "alice@127.0.0.1");
  EXPECT_EQ(got[0]["device"], 1);
  EXPECT_EQ(got[0]["text"], "hello bob");
  EXPECT_TRUE(got[0]["group"].is_null());
  EXPECT_GT(got[0]["timestamp"].get<std::uint64_t>(), 0u);

  ASSERT_EQ(parley("bob", {"send", "alice@127.0.0.1", "hi alice"}).exit_code, 0);
  got = receive("alice");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["text"], "hi alice");
  // Nothing is delivered twice.
  EXPECT_TRUE(receive("bob").empty());

  Ran a = parley("alice", {"safety-number", "bob"});
  Ran b = parley("bob", {"safety-number", "alice"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(std::count_if(a.out.begin(), a.out.end(), ::isdigit), 60);

  Ran h = parley("alice", {"history", "bob", "--json"});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  auto hist = json_lines(h.out);
  ASSERT_EQ(hist.size(), 2u);
  EXPECT_EQ(hist[0]["direction"], "out");
  EXPECT_EQ(hist[0]["text"], "hello bob");
  EXPECT_EQ(hist[0]["status"], "delivered");  // bob's delivery receipt came back
  EXPECT_EQ(hist[1]["direction"], "in");
  EXPECT_EQ(hist[1]["text"], "hi alice");

  // bob has now seen alice's message in his history: a read receipt goes back with his next
  // command that connects, and alice's copy becomes "read".
  Ran bob_hist = parley("bob", {"history", "alice", "--json"});
  ASSERT_EQ(bob_hist.exit_code, 0) << bob_hist.err;
  EXPECT_EQ(json_lines(bob_hist.out)[0]["status"], "delivered");  // as it was when shown
  EXPECT_TRUE(receive("bob").empty());  // connects: the receipt goes out
  EXPECT_TRUE(receive("alice").empty());  // the receipt is not a message
  hist = json_lines(parley("alice", {"history", "bob", "--json"}).out);
  ASSERT_EQ(hist.size(), 2u);
  EXPECT_EQ(hist[0]["status"], "read");
}

TEST_F(CliTest, OfflineRecipientGetsEverythingInOrder) {
  start();
  register_user("alice");
  register_user("carol");
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(parley("alice", {"send", "carol", "message " + std::to_string(i)}).exit_code, 0);
  }
  auto got = receive("carol");
  ASSERT_EQ(got.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)]["text"], "message " + std::to_string(i));
  // The acknowledgements went one way; the run confirmed them before it ended, so the server
  // has deleted all five by now (the confirmation deletes nothing itself).
  auto metrics = admin_get(server_->admin_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->find("parley_messages_acked_total 5\n"), std::string::npos) << *metrics;
  EXPECT_NE(metrics->find("parley_requests_total{kind=\"ack\"} 2\n"), std::string::npos)
      << *metrics;
}

TEST_F(CliTest, ServerKilledAndRestartedLosesNothingAcknowledged) {
  start();
  register_user("alice");
  register_user("bob");
  for (int i = 0; i < 3; ++i) ASSERT_EQ(parley("alice", {"send", "bob", "before " + std::to_string(i)}).exit_code, 0);
  server_->kill9();
  // With the server down the send fails, but the message stays in alice's outbox.
  expect_queued(parley("alice", {"send", "bob", "while down"}));
  start();
  flush_outbox("alice");
  auto got = receive("bob");
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0]["text"], "before 0");
  EXPECT_EQ(got[2]["text"], "before 2");
  EXPECT_EQ(got[3]["text"], "while down");
  EXPECT_TRUE(receive("bob").empty());
}

// A server whose disk is full (its file-size limit lowered to 0 under it) refuses the message
// for now, with 503: the client keeps it in its outbox and sends it once the server has room.
TEST_F(CliTest, AMessageRefusedByAServerWithAFullDiskStaysQueuedAndGoesOutLater) {
  start();
  register_user("alice");
  register_user("bob");
  ASSERT_EQ(parley("alice", {"send", "bob", "before"}).exit_code, 0);
  ASSERT_TRUE(set_file_size_limit(server_->pid(), 0).is_ok());  // the disk is full
  expect_queued(parley("alice", {"send", "bob", "while full"}));
  ASSERT_TRUE(set_file_size_limit(server_->pid(), kNoFileSizeLimit).is_ok());  // room again
  flush_outbox("alice");
  auto got = receive("bob");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]["text"], "before");
  EXPECT_EQ(got[1]["text"], "while full");
  EXPECT_TRUE(server_->running());
}

TEST_F(CliTest, SenderKilledAfterTheServerHadItDeliversExactlyOnce) {
  start();
  register_user("alice");
  register_user("bob");
  // The worst moment: the server stored the message and acknowledged it, but the sender dies
  // before it could take the message out of its outbox.
  Ran killed = parley("alice", {"send", "bob", "only once"}, {{"PARLEY_FAILPOINT", "after_server_ack"}});
  EXPECT_EQ(killed.exit_code, -1);  // SIGKILL
  // Restarted, the sender sends its outbox again (any command that connects does).
  Ran again = parley("alice", {"receive", "--timeout", "5"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  auto got = receive("bob");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["text"], "only once");
  // Killed at random moments while sending: every message arrives at most once, and each one
  // the sender saw acknowledged (exit 0) exactly once.
  std::vector<std::string> acknowledged;
  for (int i = 0; i < 6; ++i) {
    const std::string text = "burst " + std::to_string(i);
    Ran r = run_parley({"--profile", profile("alice"), "send", "bob", text}, {},
                       std::chrono::milliseconds(5 + 15 * i));
    if (r.exit_code == 0) acknowledged.push_back(text);
  }
  ASSERT_EQ(parley("alice", {"receive", "--timeout", "5"}).exit_code, 0);
  std::map<std::string, int> seen;
  for (const auto& j : receive("bob")) seen[j["text"]]++;
  for (const auto& [text, n] : seen) EXPECT_EQ(n, 1) << text;
  for (const auto& text : acknowledged) EXPECT_EQ(seen[text], 1) << text;
  Ran h = parley("alice", {"history", "bob", "--json"});
  std::map<std::string, int> recorded;
  for (const auto& j : json_lines(h.out)) recorded[j["text"]]++;
  EXPECT_EQ(recorded["only once"], 1);
}

// SHA-256 of a file, hex (via the crypto library, like the client).
std::string file_sha256(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return "";
  crypto::Sha256 h;
  std::vector<std::uint8_t> buf(1 << 16);
  for (;;) {
    const std::size_t n = std::fread(buf.data(), 1, buf.size(), f);
    if (n == 0) break;
    h.update(ByteView(buf.data(), n));
  }
  std::fclose(f);
  const auto d = h.finish();
  return to_hex(ByteView(d.data(), d.size()));
}

std::string random_file(const std::string& path, std::size_t size, std::uint64_t seed) {
  DeterministicRng rng(seed);
  std::vector<std::uint8_t> data(size);
  rng.fill(data);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return "";
  std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
  return file_sha256(path);
}

TEST_F(CliTest, TwentyMegabyteFileAndAnInterruptedUploadThatResumes) {
  start();
  register_user("alice");
  register_user("bob");
  const std::string big = dir_.path() + "/big.bin";
  const std::string hash = random_file(big, 20 * 1024 * 1024, 42);
  ASSERT_EQ(parley("alice", {"send", "bob", "--file", big, "the big one"}).exit_code, 0);
  auto got = receive("bob");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["text"], "the big one");
  ASSERT_TRUE(got[0].contains("attachment"));
  EXPECT_EQ(got[0]["attachment"]["name"], "big.bin");
  EXPECT_EQ(got[0]["attachment"]["size"], 20 * 1024 * 1024);
  EXPECT_EQ(got[0]["attachment"]["sha256"], hash);
  EXPECT_EQ(file_sha256(got[0]["attachment"]["path"]), hash);

  // The sender dies half-way through an upload; the same command again resumes it, and the
  // file arrives once.
  const std::string other = dir_.path() + "/other.bin";
  const std::string other_hash = random_file(other, 6 * 1024 * 1024, 43);
  Ran killed = parley("alice", {"send", "bob", "--file", other}, {{"PARLEY_FAILPOINT", "upload_half"}});
  EXPECT_EQ(killed.exit_code, -1);
  ASSERT_EQ(parley("alice", {"send", "bob", "--file", other}).exit_code, 0);
  got = receive("bob");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["attachment"]["sha256"], other_hash);
  EXPECT_EQ(file_sha256(got[0]["attachment"]["path"]), other_hash);
  EXPECT_TRUE(fs::is_empty(profile("alice") + "/uploads"));
  // The second run continued the first one's upload slot instead of starting over: two slots
  // in all (the big file, the other one).
  auto metrics = admin_get(server_->admin_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->find("parley_requests_total{kind=\"attachment_slot\"} 2\n"), std::string::npos)
      << *metrics;
}

TEST_F(CliTest, AContactRecoversOnANewDeviceAndTheChangeIsReported) {
  start();
  register_user("alice");
  Ran bob_reg = parley("bob", {"register", server_->invite_link(), "--name", "bob"});
  ASSERT_EQ(bob_reg.exit_code, 0) << bob_reg.err;
  const auto at = bob_reg.err.find("recovery code: ");
  ASSERT_NE(at, std::string::npos) << bob_reg.err;
  const std::string code = bob_reg.err.substr(at + 15, 39);
  ASSERT_EQ(parley("alice", {"send", "bob", "hi bob"}).exit_code, 0);
  ASSERT_EQ(receive("bob").size(), 1u);
  ASSERT_EQ(parley("bob", {"send", "alice", "hi alice"}).exit_code, 0);
  ASSERT_EQ(receive("alice").size(), 1u);
  Ran before = parley("alice", {"safety-number", "bob"});
  ASSERT_EQ(before.exit_code, 0);

  // bob loses his device. Without the code the name stays taken; with it he takes it back.
  Ran wrong = parley("bob2", {"register", server_->invite_link(), "--name", "bob", "--recover",
                              "0000-0000-0000-0000-0000-0000-0000-0000"});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("recovery code does not match"), std::string::npos) << wrong.err;
  Ran recovered = parley("bob2", {"register", server_->invite_link(), "--name", "bob", "--recover", code});
  ASSERT_EQ(recovered.exit_code, 0) << recovered.err;
  ASSERT_EQ(parley("bob2", {"send", "alice", "new phone"}).exit_code, 0);

  // alice reads it, told that bob's identity changed; the safety number is a new one.
  auto got = receive("alice");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["text"], "new phone");
  EXPECT_EQ(got[0]["identity_changed"], true);
  Ran after = parley("alice", {"safety-number", "bob"});
  EXPECT_NE(after.out, before.out);
  Ran contacts = parley("alice", {"contacts"});
  EXPECT_NE(contacts.out.find("identity-changed"), std::string::npos) << contacts.out;
  // Sending to bob needs alice's confirmation first.
  Ran refused = parley("alice", {"send", "bob", "is it you?"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("untrusted_identity"), std::string::npos) << refused.err;
  ASSERT_EQ(parley("alice", {"trust", "bob"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"send", "bob", "welcome back"}).exit_code, 0);
  got = receive("bob2");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["text"], "welcome back");
}

// Texts of the group messages (not group events) among `got`.
std::vector<std::string> group_texts(const std::vector<nlohmann::json>& got, const std::string& gid) {
  std::vector<std::string> out;
  for (const auto& j : got) {
    if (j["group"] == gid && !j.contains("event") && !j.contains("error")) out.push_back(j["text"]);
  }
  return out;
}

// A recipient whose queue on the server is full (a device long offline) holds up only its own
// messages: a 1:1 message to it stays queued (and goes out once the queue has room), while
// messages to others and to groups go out at once; a group message reaches the other members.
TEST_F(CliTest, ARecipientWithAFullQueueHoldsUpNoOneElse) {
  // alice may fill bob's whole queue (OneSenderFillsOnlyItsShareOfAQueue has the default share).
  start({"--queue-max-count", "6", "--queue-sender-share-percent", "100"});
  for (const char* n : {"alice", "bob", "carol"}) register_user(n);
  Ran created = parley("alice", {"group", "create", "friends", "bob", "carol"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string gid = created.out.substr(0, created.out.find('\n'));
  // Fill bob's queue: sends succeed until one is refused for his full queue.
  int sent = 0;
  Ran refused;
  for (int i = 0; i < 10; ++i) {
    refused = parley("alice", {"send", "bob", "to bob " + std::to_string(i)});
    if (refused.exit_code != 0) break;
    ++sent;
  }
  ASSERT_EQ(refused.exit_code, 1) << refused.err;
  EXPECT_NE(refused.err.find("queue for bob@127.0.0.1 is full (count)"), std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("queued"), std::string::npos) << refused.err;
  // A second message to bob waits behind the first: it is not reported as sent.
  Ran behind = parley("alice", {"send", "bob", "to bob, behind"});
  EXPECT_EQ(behind.exit_code, 1) << behind.err;
  EXPECT_NE(behind.err.find("is full"), std::string::npos) << behind.err;
  // alice still receives (her outbox holding bob's messages does not stop it).
  Ran alice_receives = parley("alice", {"receive", "--timeout", "5"});
  EXPECT_EQ(alice_receives.exit_code, 0) << alice_receives.err;
  // carol and the group are not held up behind bob's queued message.
  Ran to_carol = parley("alice", {"send", "carol", "to carol"});
  EXPECT_EQ(to_carol.exit_code, 0) << to_carol.err;
  Ran to_group = parley("alice", {"send", "--group", gid, "to the group"});
  EXPECT_EQ(to_group.exit_code, 0) << to_group.err;
  auto carol = receive("carol");
  EXPECT_EQ(group_texts(carol, gid), std::vector<std::string>{"to the group"});
  bool direct = false;
  for (const auto& j : carol) direct |= j["text"] == "to carol";
  EXPECT_TRUE(direct);
  // bob drains his queue; alice's held message then goes out with her next command.
  std::vector<std::string> bob_texts;
  for (const auto& j : receive("bob")) {
    if (j["group"].is_null() && !j.contains("event")) bob_texts.push_back(j["text"]);
  }
  EXPECT_EQ(bob_texts.size(), static_cast<std::size_t>(sent));
  flush_outbox("alice");
  bob_texts.clear();
  for (const auto& j : receive("bob")) {
    if (j["group"].is_null() && !j.contains("event")) bob_texts.push_back(j["text"]);
  }
  EXPECT_EQ(bob_texts,
            (std::vector<std::string>{"to bob " + std::to_string(sent), "to bob, behind"}));
}

// One sender may hold only a share of another's queue on the server (20 % by default: 2 of a
// queue of 10): its next message stays queued with the reason, while another sender's still
// goes out; once bob has fetched his messages, alice's held one goes out too.
TEST_F(CliTest, OneSenderFillsOnlyItsShareOfAQueue) {
  start({"--queue-max-count", "10"});
  for (const char* n : {"alice", "bob", "carol"}) register_user(n);
  for (int i = 0; i < 2; ++i) {
    Ran sent = parley("alice", {"send", "bob", "from alice " + std::to_string(i)});
    ASSERT_EQ(sent.exit_code, 0) << sent.err;
  }
  Ran held = parley("alice", {"send", "bob", "from alice 2"});
  EXPECT_EQ(held.exit_code, 1) << held.err;
  EXPECT_NE(held.err.find("queue for bob@127.0.0.1 holds all it takes from one sender "
                          "(sender_count)"),
            std::string::npos)
      << held.err;
  EXPECT_NE(held.err.find("queued"), std::string::npos) << held.err;
  Ran from_carol = parley("carol", {"send", "bob", "from carol"});
  EXPECT_EQ(from_carol.exit_code, 0) << from_carol.err;
  std::vector<std::string> texts;
  for (const auto& j : receive("bob")) {
    if (!j.contains("event") && j.contains("text")) texts.push_back(j["text"]);
  }
  EXPECT_EQ(texts, (std::vector<std::string>{"from alice 0", "from alice 1", "from carol"}));
  flush_outbox("alice");
  texts.clear();
  for (const auto& j : receive("bob")) {
    if (!j.contains("event") && j.contains("text")) texts.push_back(j["text"]);
  }
  EXPECT_EQ(texts, std::vector<std::string>{"from alice 2"});
}

TEST_F(CliTest, GroupOfThreeWithAnAddAndARemove) {
  start();
  for (const char* n : {"alice", "bob", "carol", "dave"}) register_user(n);
  Ran created = parley("alice", {"group", "create", "friends", "bob", "carol"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string gid = created.out.substr(0, created.out.find('\n'));
  ASSERT_EQ(gid.size(), 32u);

  ASSERT_EQ(parley("alice", {"send", "--group", gid, "hello group"}).exit_code, 0);
  auto bob = receive("bob");
  auto carol = receive("carol");
  EXPECT_EQ(group_texts(bob, gid), std::vector<std::string>{"hello group"});
  EXPECT_EQ(group_texts(carol, gid), std::vector<std::string>{"hello group"});
  ASSERT_FALSE(bob.empty());
  EXPECT_TRUE(bob[0].contains("event"));  // "alice created ..."

  // bob answers in the group; alice and carol read it.
  Ran info = parley("bob", {"group", "info", gid});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("carol@127.0.0.1"), std::string::npos) << info.out;
  ASSERT_EQ(parley("bob", {"send", "--group", gid, "hi all"}).exit_code, 0);
  EXPECT_EQ(group_texts(receive("alice"), gid), std::vector<std::string>{"hi all"});
  EXPECT_EQ(group_texts(receive("carol"), gid), std::vector<std::string>{"hi all"});

  // alice adds dave and removes carol.
  ASSERT_EQ(parley("alice", {"group", "add", gid, "dave"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"group", "remove", gid, "carol"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"send", "--group", gid, "after the change"}).exit_code, 0);
  EXPECT_EQ(group_texts(receive("dave"), gid), std::vector<std::string>{"after the change"});
  bob = receive("bob");
  EXPECT_EQ(group_texts(bob, gid), std::vector<std::string>{"after the change"});
  // carol learns she was removed and reads nothing that follows, from alice or from bob.
  ASSERT_EQ(parley("bob", {"send", "--group", gid, "bob after the change"}).exit_code, 0);
  carol = receive("carol");
  EXPECT_TRUE(group_texts(carol, gid).empty());
  bool told = false;
  for (const auto& j : carol) told |= j.contains("event") && j["event"].get<std::string>().find("removed you") != std::string::npos;
  EXPECT_TRUE(told);
  EXPECT_EQ(group_texts(receive("dave"), gid), std::vector<std::string>{"bob after the change"});
  Ran carol_send = parley("carol", {"send", "--group", gid, "let me in"});
  EXPECT_EQ(carol_send.exit_code, 1);

  Ran h = parley("alice", {"history", gid, "--json"});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  std::vector<std::string> texts;
  for (const auto& j : json_lines(h.out)) texts.push_back(j["text"]);
  EXPECT_EQ(texts, (std::vector<std::string>{"hello group", "hi all", "after the change"}));
  Ran list = parley("dave", {"groups"});
  EXPECT_NE(list.out.find(gid + " friends"), std::string::npos) << list.out;
}

TEST_F(CliTest, RenameAndAStaleUpdateAfterLeaving) {
  start();
  for (const char* n : {"alice", "bob", "carol"}) register_user(n);
  Ran created = parley("alice", {"group", "create", "old name", "bob"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string gid = created.out.substr(0, created.out.find('\n'));
  receive("bob");
  ASSERT_EQ(parley("alice", {"group", "rename", gid, "new name"}).exit_code, 0);
  receive("bob");
  Ran info = parley("bob", {"group", "info", gid});
  EXPECT_NE(info.out.find(" new name:"), std::string::npos) << info.out;

  // alice adds carol (the update to bob waits on the server); then bob leaves before reading
  // it. The stale update, which still lists bob, must not put him back in on his side.
  ASSERT_EQ(parley("alice", {"group", "add", gid, "carol"}).exit_code, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(parley("bob", {"group", "leave", gid}).exit_code, 0);
  receive("bob");
  info = parley("bob", {"group", "info", gid});
  EXPECT_NE(info.out.find("(left)"), std::string::npos) << info.out;
  EXPECT_EQ(parley("bob", {"send", "--group", gid, "still here?"}).exit_code, 1);
  // alice learns that bob left.
  receive("alice");
  info = parley("alice", {"group", "info", gid});
  EXPECT_EQ(info.out.find("bob@"), std::string::npos) << info.out;
}

TEST_F(CliTest, TamperedCiphertextIsRefusedAndRecorded) {
  start();
  register_user("alice");
  register_user("bob");
  ASSERT_EQ(parley("alice", {"send", "bob", "first"}).exit_code, 0);
  ASSERT_EQ(receive("bob").size(), 1u);
  // A raw wire client (mallory) injects garbage that claims to be a Signal message to bob.
  TestClient mallory(server_->client_options(), 7);
  ASSERT_TRUE(mallory.connect().is_ok());
  ASSERT_TRUE(mallory.register_account("mallory").has_value());
  wire::Request r;
  auto* send = r.mutable_send();
  send->set_destination("bob");
  send->set_client_message_id(std::string(16, 'm'));
  auto* m = send->add_messages();
  m->set_device_id(1);
  m->set_type(1);
  m->set_content(std::string("\x33") + std::string(60, 'x'));
  // The registration id of bob's device, read from the server.
  wire::Request dr;
  dr.mutable_devices()->set_name("bob");
  auto devices = mallory.call(dr);
  ASSERT_TRUE(devices.has_value());
  m->set_registration_id(devices->devices().devices(0).registration_id());
  auto sent = mallory.call(r);
  ASSERT_TRUE(sent.has_value());
  ASSERT_EQ(sent->status(), 0u) << sent->message();

  ASSERT_EQ(parley("alice", {"send", "bob", "second"}).exit_code, 0);
  auto got = receive("bob");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]["from"], "mallory@127.0.0.1");
  EXPECT_TRUE(got[0].contains("error"));
  EXPECT_EQ(got[1]["text"], "second");  // the session with alice is unharmed
  Ran h = parley("bob", {"history", "mallory", "--json"});
  ASSERT_EQ(h.exit_code, 0);
  auto hist = json_lines(h.out);
  ASSERT_EQ(hist.size(), 1u);
  EXPECT_EQ(hist[0]["status"], "failed");

  // A genuine message from alice, altered where it waits: one byte of its ciphertext (inside the
  // MACed part, just before the 8-byte MAC) is flipped in the server's own database. bob refuses
  // it (bad MAC), records it, and the session goes on.
  ASSERT_EQ(parley("alice", {"send", "bob", "tamper with me"}).exit_code, 0);
  const std::string db = dir_.path() + "/d/parley.db";
  const std::string sql =
      "UPDATE envelopes SET content = CAST(substr(content, 1, length(content) - 13) || "
      "(CASE WHEN substr(content, length(content) - 12, 1) = X'00' THEN X'01' ELSE X'00' END) || "
      "substr(content, length(content) - 11) AS BLOB) WHERE seq = (SELECT MAX(seq) FROM envelopes);";
  ASSERT_EQ(std::system(("sqlite3 -cmd '.timeout 5000' '" + db + "' \"" + sql + "\"").c_str()), 0);
  ASSERT_EQ(parley("alice", {"send", "bob", "after the tampering"}).exit_code, 0);
  got = receive("bob");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]["from"], "alice@127.0.0.1");
  ASSERT_TRUE(got[0].contains("error"));
  EXPECT_NE(got[0]["error"].get<std::string>().find("bad_mac"), std::string::npos) << got[0];
  EXPECT_EQ(got[1]["text"], "after the tampering");
  hist = json_lines(parley("bob", {"history", "alice", "--json"}).out);
  ASSERT_GE(hist.size(), 2u);
  EXPECT_EQ(hist[hist.size() - 2]["status"], "failed");
}

TEST_F(CliTest, ClearErrors) {
  start();
  register_user("alice");
  // Unknown address.
  Ran unknown = parley("alice", {"send", "nobody", "hi"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("unknown address"), std::string::npos) << unknown.err;
  // Malformed invite.
  Ran bad = parley("x", {"register", "parley://nope", "--name", "xavier"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("malformed invite"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(profile("x")));
  // Wrong pin: a link whose pin is not the server's certificate.
  std::string link = server_->invite_link();
  const auto pin_at = link.find("pin=") + 4;
  link[pin_at] = link[pin_at] == '0' ? '1' : '0';
  Ran pin = parley("y", {"register", link, "--name", "yolanda"});
  EXPECT_EQ(pin.exit_code, 1);
  EXPECT_NE(pin.err.find("pin"), std::string::npos) << pin.err;
  EXPECT_FALSE(fs::exists(profile("y")));
  // Wrong passphrase.
  Ran reg = parley("z", {"register", server_->invite_link(), "--name", "zed"},
                   {{"PARLEY_PASSPHRASE", "correct horse"}});
  ASSERT_EQ(reg.exit_code, 0) << reg.err;
  Ran ok = parley("z", {"whoami"}, {{"PARLEY_PASSPHRASE", "correct horse"}});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  Ran wrong = parley("z", {"whoami"}, {{"PARLEY_PASSPHRASE", "battery staple"}});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("wrong_passphrase"), std::string::npos) << wrong.err;
  // A name already taken.
  Ran taken = parley("w", {"register", server_->invite_link(), "--name", "alice"});
  EXPECT_EQ(taken.exit_code, 1);
  EXPECT_NE(taken.err.find("taken"), std::string::npos) << taken.err;
  // No profile.
  Ran none = parley("nobody", {"whoami"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("no profile"), std::string::npos) << none.err;
  // Bad usage, and seconds that are not a number (CLI11's own range check lets nan through).
  EXPECT_EQ(parley("alice", {"send"}).exit_code, 2);
  for (const char* seconds : {"nan", "inf", "-1"}) {
    Ran r = parley("alice", {"--connect-timeout", seconds, "whoami"});
    EXPECT_EQ(r.exit_code, 2) << seconds;
    EXPECT_EQ(parley("alice", {"receive", "--timeout", seconds}).exit_code, 2) << seconds;
  }
}

// What a peer writes reaches the terminal as text: its control characters, bidirectional
// overrides and invalid UTF-8 are shown escaped, and a line break in a message indents the
// next line, so that no message can clear the screen, retitle the window, reorder a line or
// print a line that looks like another sender's message. --json output carries the text as
// sent. Text that is not UTF-8 is refused by the sender (it would not parse at the other end).
TEST_F(CliTest, APeersTextCannotControlTheTerminal) {
  start();
  register_user("alice");
  register_user("bob");
  // Text that is not UTF-8 is refused at once (the recipient could not read it).
  Ran not_utf8 = parley("alice", {"send", "bob", "pay me\x9b"});
  EXPECT_EQ(not_utf8.exit_code, 1);
  EXPECT_NE(not_utf8.err.find("not valid UTF-8"), std::string::npos) << not_utf8.err;
  const std::string text =
      "hi\x1b[2J\x1b]0;owned\x07 \xe2\x80\xae"
      "evil\n[2026-01-01 00:00:00] "
      "carol@127.0.0.1: pay me\xc2\x9b";
  ASSERT_EQ(parley("alice", {"send", "bob", text}).exit_code, 0);
  Ran r = parley("bob", {"receive", "--timeout", "20"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\x07'), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\xe2\x80\xae"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\xc2\x9b"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hi\\x1b[2J\\x1b]0;owned\\x07 \\u{202E}evil\n  [2026-01-01"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("pay me\\u{009B}\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\n[2026-01-01"), std::string::npos) << "a forged line: " << r.out;

  // History shows it the same way; --json keeps the bytes that are UTF-8.
  Ran h = parley("bob", {"history", "alice"});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_EQ(h.out.find('\x1b'), std::string::npos) << h.out;
  Ran j = parley("bob", {"history", "alice", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const auto lines = json_lines(j.out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0]["text"].get<std::string>().find("\x1b[2J"), std::string::npos);
}

}  // namespace
}  // namespace parley::testing
