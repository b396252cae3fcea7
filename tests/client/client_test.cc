// libparley's Client in process against a real parleyd: key upkeep (one-time prekeys topped up,
// the signed prekey rotated) and the messages that depend on it.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "client/client.h"
#include "tests/server/harness.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = Parleyd::start(dir_.path());
    ASSERT_TRUE(d.has_value()) << d.status().to_string();
    server_ = std::move(*d);
  }
  client::OpenOptions options(const std::string& name) const {
    client::OpenOptions o;
    o.profile_dir = dir_.path() + "/p-" + name;
    return o;
  }
  // Replaces the server with one in a fresh data directory `name`, started with `limits` (the
  // body of a [limits] section) as its configuration file.
  void restart_with_limits(const std::string& name, const std::string& limits) {
    server_->kill9();
    const std::string conf = dir_.path() + "/" + name + ".toml";
    { std::ofstream(conf) << "[limits]\n" << limits; }
    auto d = Parleyd::start(dir_.path() + "/" + name, {"--config", conf});
    ASSERT_TRUE(d.has_value()) << d.status().to_string();
    server_ = std::move(*d);
  }
  std::unique_ptr<client::Client> make(const std::string& name) {
    auto c = client::Client::register_account(options(name), server_->invite_link(), name);
    EXPECT_TRUE(c.has_value()) << c.status().to_string();
    return c ? std::move(*c) : nullptr;
  }
  std::vector<client::IncomingMessage> drain(client::Client& c) {
    std::vector<client::IncomingMessage> got;
    client::ReceiveOptions ro;
    ro.timeout = 10s;
    Status s = c.receive(ro, [&](const client::IncomingMessage& m) { got.push_back(m); });
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    return got;
  }
  // A bundle of `name` as any client would get it (one-time prekey consumed).
  wire::Bundle bundle(TestClient& raw, const std::string& name) {
    wire::Request r;
    r.mutable_fetch_bundles()->set_name(name);
    auto resp = raw.call(r);
    EXPECT_TRUE(resp.has_value() && resp->status() == 0);
    return resp && resp->bundles().bundles_size() > 0 ? resp->bundles().bundles(0) : wire::Bundle();
  }

  TempDir dir_;
  std::unique_ptr<Parleyd> server_;
};

// A send refused for the sender's own rate (429, limit "rate") is not a full queue: it stays a
// transient failure of this send (the group code would otherwise skip members it refused).
TEST_F(ClientTest, TheSendersRateIsNotTakenForAFullQueue) {
  ASSERT_NO_FATAL_FAILURE(
      restart_with_limits("slow", "account_send_rate = 0.01\naccount_send_burst = 64\n"));
  auto alice = make("alice");
  auto bob = make("bob");
  ASSERT_TRUE(alice && bob);
  Status refused;
  for (int i = 0; i < 80 && refused.is_ok(); ++i) refused = alice->send_text("bob", "hi");
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.code(), ErrorCode::kResourceExhausted) << refused.to_string();
  EXPECT_NE(refused.message().find("rate"), std::string::npos) << refused.to_string();
}

TEST_F(ClientTest, OneTimePreKeysAreToppedUpOnConnect) {
  // One account takes 190 of alice's prekeys here: the server's limit on that (10, then one a
  // minute) is raised.
  ASSERT_NO_FATAL_FAILURE(restart_with_limits("fetches", "bundle_fetch_burst = 1000\n"));
  auto alice = make("alice");
  ASSERT_NE(alice, nullptr);
  TestClient raw(server_->client_options(), 9);
  ASSERT_TRUE(raw.connect().is_ok());
  ASSERT_TRUE(raw.register_account("mallory").has_value());
  // Registration uploaded 100; someone takes 90 of them.
  for (int i = 0; i < 90; ++i) ASSERT_TRUE(bundle(raw, "alice").has_pre_key());
  // alice connects (any command that connects): she sees only 10 left and uploads a batch.
  drain(*alice);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(bundle(raw, "alice").has_pre_key()) << "bundle " << i << " came without a prekey";
  }
}

TEST_F(ClientTest, SignedPreKeyIsRotatedAndMessagesInFlightStillDecrypt) {
  auto alice = make("alice");
  auto bob = make("bob");
  ASSERT_NE(alice, nullptr);
  ASSERT_NE(bob, nullptr);
  TestClient raw(server_->client_options(), 9);
  ASSERT_TRUE(raw.connect().is_ok());
  ASSERT_TRUE(raw.register_account("mallory").has_value());
  EXPECT_EQ(bundle(raw, "alice").signed_pre_key().id(), 1u);

  // bob's first message is built on alice's signed prekey 1 and waits on the server.
  ASSERT_TRUE(bob->send_text("alice", "sent before the rotation").is_ok());

  // alice's profile now says her signed prekey is due: the next connection replaces it.
  alice.reset();
  auto o = options("alice");
  o.signed_pre_key_max_age = 0s;
  auto reopened = client::Client::open(o);
  ASSERT_TRUE(reopened.has_value()) << reopened.status().to_string();
  auto got = drain(**reopened);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].text, "sent before the rotation");
  EXPECT_TRUE(got[0].error.empty()) << got[0].error;
  const wire::Bundle after = bundle(raw, "alice");
  EXPECT_EQ(after.signed_pre_key().id(), 2u);

  // A new sender builds on the new key.
  auto carol = make("carol");
  ASSERT_NE(carol, nullptr);
  ASSERT_TRUE(carol->send_text("alice", "after the rotation").is_ok());
  got = drain(**reopened);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].text, "after the rotation");
  EXPECT_TRUE(got[0].error.empty()) << got[0].error;
}

}  // namespace
}  // namespace parley::testing
