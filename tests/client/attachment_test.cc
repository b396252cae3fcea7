// Attachments end to end: client-side encryption and resumable transfer (src/client/attachments.h)
// through a real parleyd on loopback: a 20 MB round trip, an upload interrupted and resumed by a
// new AttachmentTransfer from its state file, a server restart in the middle of an upload, a
// resumed download, and a blob tampered with on the server.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "base/rng.h"
#include "client/attachments.h"
#include "client/server_link.h"
#include "crypto/primitives.h"
#include "tests/server/harness.h"

namespace parley::testing {
namespace {

namespace fs = std::filesystem;
using client::AttachmentPointer;
using client::AttachmentTransfer;
using client::TransferOptions;

// Writes `size` deterministic pseudo-random bytes, 1 MiB at a time.
void write_random_file(const fs::path& p, std::uint64_t size, std::uint64_t seed) {
  DeterministicRng rng(seed);
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  Bytes piece(1 << 20);
  for (std::uint64_t done = 0; done < size;) {
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(piece.size(), size - done));
    rng.fill(std::span<std::uint8_t>(piece).first(n));
    f.write(reinterpret_cast<const char*>(piece.data()), static_cast<std::streamsize>(n));
    done += n;
  }
  ASSERT_TRUE(f.good());
}

crypto::Sha256Digest hash_of(const fs::path& p) {
  auto h = client::sha256_file(p);
  EXPECT_TRUE(h.has_value()) << h.status().to_string();
  return h.has_value() ? *h : crypto::Sha256Digest{};
}

std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.insert(e.path().filename().string());
  return out;
}

// The fields of an upload state file (format in attachments.h).
std::map<std::string, std::string> read_state(const fs::path& p) {
  std::ifstream f(p);
  std::map<std::string, std::string> out;
  std::string line;
  std::getline(f, line);
  EXPECT_EQ(line, "parley-attachment-upload v1");
  while (std::getline(f, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

std::string unhex(const std::string& h) {
  auto b = from_hex(h);
  EXPECT_TRUE(b.has_value());
  return b ? std::string(as_chars(*b)) : std::string();
}

class AttachmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = free_port();
    start();
    root_ = fs::path(dir_.path()) / "client";
    work_ = root_ / "work";
    dest_ = root_ / "downloads";
    fs::create_directories(dest_);
    TestClient account(server_->client_options(), 11);
    ASSERT_TRUE(account.connect().is_ok());
    auto r = account.register_account("alice");
    ASSERT_TRUE(r.has_value() && r->status() == 0) << (r ? r->message() : r.status().to_string());
    auth_ = std::make_unique<crypto::Ed25519KeyPair>(account.auth_key().public_key,
                                                     account.auth_key().secret_key.clone());
    connect_link();
  }

  void start() {
    auto d = Parleyd::start(dir_.path(), {"--listen", "127.0.0.1:" + std::to_string(port_)});
    ASSERT_TRUE(d.has_value()) << d.status().to_string();
    server_ = std::move(*d);
  }

  // A new logged-in link, as a restarted client process would open.
  void connect_link() {
    auto link = client::ServerLink::connect(server_->invite());
    ASSERT_TRUE(link.has_value()) << link.status().to_string();
    link_ = std::move(*link);
    auto login = link_->login("alice", 1, *auth_);
    ASSERT_TRUE(login.has_value()) << login.status().to_string();
  }

  static TransferOptions fast_options() {
    TransferOptions o;
    o.backoff_base = std::chrono::milliseconds(20);
    o.backoff_max = std::chrono::milliseconds(200);
    return o;
  }

  fs::path blob_of(const AttachmentPointer& p) const {
    return fs::path(dir_.path()) / "d" / "attachments" / p.path.substr(p.path.size() - 32);
  }

  // Downloads `p` with a fresh transfer and checks the saved file against `original`.
  void download_and_compare(const AttachmentPointer& p, const fs::path& original) {
    AttachmentTransfer t(rng_, fast_options());
    fs::path saved;
    Status s = t.download(server_->invite(), p, dest_, nullptr, &saved);
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    EXPECT_EQ(saved.parent_path(), dest_);
    EXPECT_EQ(fs::file_size(saved), fs::file_size(original));
    EXPECT_EQ(hash_of(saved), hash_of(original));
  }

  TempDir dir_;
  std::uint16_t port_ = 0;
  std::unique_ptr<Parleyd> server_;
  fs::path root_, work_, dest_;
  std::unique_ptr<crypto::Ed25519KeyPair> auth_;
  crypto::SystemRng rng_;
  std::unique_ptr<client::ServerLink> link_;
};

TEST_F(AttachmentTest, TwentyMegabytesRoundTripWithProgress) {
  const fs::path file = root_ / "video.mp4";
  const std::uint64_t size = 20ull << 20;
  write_random_file(file, size, 20);
  AttachmentTransfer up(rng_);
  std::uint64_t last_done = 0, last_total = 0, calls = 0;
  bool monotonic = true;
  auto progress = [&](std::uint64_t done, std::uint64_t total) {
    monotonic = monotonic && done >= last_done && done <= total;
    last_done = done;
    last_total = total;
    ++calls;
  };
  auto pointer = up.upload(*link_, server_->invite(), file, work_, progress);
  ASSERT_TRUE(pointer.has_value()) << pointer.status().to_string();
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(last_total, client::attachment_ciphertext_size(size));
  EXPECT_EQ(last_done, last_total);
  EXPECT_GE(calls, 21u);  // one per 1 MiB chunk, and the start
  EXPECT_EQ(up.last_stats().resumed_from, 0u);
  EXPECT_EQ(up.last_stats().bytes_sent, last_total);
  EXPECT_EQ(pointer->size, size);
  EXPECT_EQ(pointer->file_name, "video.mp4");
  const auto h = hash_of(file);
  EXPECT_EQ(pointer->sha256, Bytes(h.begin(), h.end()));
  EXPECT_EQ(pointer->key.size(), client::kAttachmentKeySize);
  EXPECT_TRUE(entries(work_).empty()) << "state and ciphertext are removed after an upload";
  // The server holds ciphertext, not the file.
  EXPECT_EQ(fs::file_size(blob_of(*pointer)), last_total);
  EXPECT_NE(hash_of(blob_of(*pointer)), h);

  // Through the message field and back, as a recipient gets it.
  client::Attachment field;
  client::to_attachment_proto(*pointer, &field);
  auto received = client::from_attachment_proto(field);
  ASSERT_TRUE(received.has_value());
  AttachmentTransfer down(rng_);
  std::uint64_t down_done = 0;
  fs::path saved;
  Status s = down.download(
      server_->invite(), *received, dest_, [&](std::uint64_t d, std::uint64_t) { down_done = d; },
      &saved);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(down_done, last_total);
  EXPECT_EQ(saved, dest_ / "video.mp4");
  EXPECT_EQ(hash_of(saved), h);
  EXPECT_EQ(entries(dest_), std::set<std::string>{"video.mp4"});
  // A second download never overwrites the first.
  fs::path again;
  ASSERT_TRUE(down.download(server_->invite(), *received, dest_, nullptr, &again).is_ok());
  EXPECT_EQ(again, dest_ / "video (1).mp4");
}

TEST_F(AttachmentTest, InterruptedUploadResumesFromTheStateFile) {
  const fs::path file = root_ / "notes.tar";
  write_random_file(file, 6ull << 20, 6);
  const std::uint64_t total = client::attachment_ciphertext_size(6ull << 20);

  AttachmentTransfer first(rng_, fast_options());
  auto cut = first.upload(*link_, server_->invite(), file, work_,
                          [&](std::uint64_t done, std::uint64_t all) {
                            if (done * 10 >= all * 4) first.cancel();  // stop at ~40%
                          });
  ASSERT_FALSE(cut.has_value());
  EXPECT_EQ(cut.error().code(), ErrorCode::kUnavailable) << cut.error().to_string();
  const std::uint64_t sent = first.last_stats().bytes_sent;
  EXPECT_GT(sent, 0u);
  EXPECT_LT(sent, total / 2);

  // The state file survives and names the slot; the server holds exactly what was sent.
  std::vector<fs::path> states;
  for (const auto& e : fs::directory_iterator(work_)) {
    if (e.path().extension() == ".state") states.push_back(e.path());
  }
  ASSERT_EQ(states.size(), 1u);
  auto fields = read_state(states[0]);
  EXPECT_EQ(fields["cipher_size"], std::to_string(total));
  EXPECT_EQ(fs::status(states[0]).permissions() & fs::perms::group_all, fs::perms::none);
  transport::HttpsClient http(server_->client_options());
  auto head = http.head(unhex(fields["path"]), unhex(fields["token"]));
  ASSERT_TRUE(head.has_value()) << head.status().to_string();
  ASSERT_EQ(head->status, 200u);
  const std::uint64_t stored = std::stoull(head->header("Upload-Offset"));
  EXPECT_EQ(stored, sent);

  // "Restart": a new link and a new transfer object continue the same upload.
  link_.reset();
  connect_link();
  AttachmentTransfer second(rng_, fast_options());
  std::uint64_t first_report = ~0ull;
  auto pointer =
      second.upload(*link_, server_->invite(), file, work_, [&](std::uint64_t d, std::uint64_t) {
        if (first_report == ~0ull) first_report = d;
      });
  ASSERT_TRUE(pointer.has_value()) << pointer.status().to_string();
  EXPECT_TRUE(second.last_stats().resumed_state);
  EXPECT_EQ(second.last_stats().new_slots, 0u);
  EXPECT_EQ(second.last_stats().resumed_from, stored);
  EXPECT_EQ(first_report, stored);
  EXPECT_EQ(second.last_stats().bytes_sent, total - stored) << "only the rest is sent";
  EXPECT_EQ(pointer->path, unhex(fields["path"]));
  EXPECT_TRUE(entries(work_).empty());
  download_and_compare(*pointer, file);
}

TEST_F(AttachmentTest, UploadRetriesThroughAServerRestart) {
  const fs::path file = root_ / "backup.bin";
  write_random_file(file, 5ull << 20, 5);
  const std::uint64_t total = client::attachment_ciphertext_size(5ull << 20);
  TransferOptions o = fast_options();
  int sleeps = 0;
  bool restarted = false;
  o.sleep = [&](std::chrono::milliseconds) {
    ++sleeps;
    if (!restarted && !server_->running()) {
      start();  // same data directory, port and certificate
      restarted = true;
    }
  };
  AttachmentTransfer t(rng_, o);
  bool killed = false;
  auto pointer =
      t.upload(*link_, server_->invite(), file, work_, [&](std::uint64_t d, std::uint64_t all) {
        if (!killed && d * 10 >= all * 3) {
          server_->kill9();
          killed = true;
        }
      });
  ASSERT_TRUE(pointer.has_value()) << pointer.status().to_string();
  EXPECT_TRUE(restarted);
  EXPECT_GE(t.last_stats().retries, 1u);
  EXPECT_GE(sleeps, 1);
  // At most the chunk in flight at the cut is sent twice.
  EXPECT_LE(t.last_stats().bytes_sent, total + (1u << 20));
  download_and_compare(*pointer, file);
}

TEST_F(AttachmentTest, InterruptedDownloadResumesFromThePartFile) {
  const fs::path file = root_ / "photo.raw";
  write_random_file(file, 4ull << 20, 4);
  AttachmentTransfer up(rng_);
  auto pointer = up.upload(*link_, server_->invite(), file, work_, nullptr);
  ASSERT_TRUE(pointer.has_value()) << pointer.status().to_string();
  const std::uint64_t total = client::attachment_ciphertext_size(4ull << 20);

  AttachmentTransfer first(rng_, fast_options());
  Status cut = first.download(
      server_->invite(), *pointer, dest_,
      [&](std::uint64_t d, std::uint64_t all) {
        if (d * 10 >= all * 4) first.cancel();
      },
      nullptr);
  EXPECT_EQ(cut.code(), ErrorCode::kUnavailable) << cut.to_string();
  const auto partial = entries(dest_);
  ASSERT_EQ(partial.size(), 1u);  // only the hidden .part file: no plaintext yet
  EXPECT_EQ(fs::path(*partial.begin()).extension(), ".part");
  const std::uint64_t got = first.last_stats().bytes_received;
  EXPECT_GT(got, 0u);
  EXPECT_LT(got, total);

  AttachmentTransfer second(rng_, fast_options());
  fs::path saved;
  Status s = second.download(server_->invite(), *pointer, dest_, nullptr, &saved);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(second.last_stats().resumed_from, got);
  EXPECT_EQ(second.last_stats().bytes_received, total - got);
  EXPECT_EQ(hash_of(saved), hash_of(file));
  EXPECT_EQ(entries(dest_), std::set<std::string>{"photo.raw"});
}

TEST_F(AttachmentTest, TamperedBlobOnTheServerIsRefused) {
  const fs::path file = root_ / "letter.txt";
  write_random_file(file, 300000, 3);
  AttachmentTransfer up(rng_);
  auto pointer = up.upload(*link_, server_->invite(), file, work_, nullptr);
  ASSERT_TRUE(pointer.has_value()) << pointer.status().to_string();
  {
    std::fstream f(blob_of(*pointer), std::ios::binary | std::ios::in | std::ios::out);
    ASSERT_TRUE(f.good());
    f.seekg(150000);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x40);
    f.seekp(150000);
    f.write(&c, 1);
    ASSERT_TRUE(f.good());
  }
  AttachmentTransfer down(rng_, fast_options());
  fs::path saved;
  Status s = down.download(server_->invite(), *pointer, dest_, nullptr, &saved);
  EXPECT_EQ(s.code(), ErrorCode::kBadMac) << s.to_string();
  EXPECT_TRUE(saved.empty());
  EXPECT_TRUE(entries(dest_).empty()) << "neither plaintext nor .part is left";
}

TEST_F(AttachmentTest, BadPointersAreRefusedBeforeAnyRequest) {
  const fs::path file = root_ / "a.txt";
  write_random_file(file, 1000, 1);
  AttachmentTransfer up(rng_);
  auto pointer = up.upload(*link_, server_->invite(), file, work_, nullptr);
  ASSERT_TRUE(pointer.has_value()) << pointer.status().to_string();
  AttachmentTransfer down(rng_, fast_options());
  auto with = [&](auto change) {
    AttachmentPointer p;
    p.path = pointer->path;
    p.key = pointer->key.clone();
    p.digest = pointer->digest;
    p.size = pointer->size;
    p.file_name = pointer->file_name;
    p.sha256 = pointer->sha256;
    change(p);
    return down.download(server_->invite(), p, dest_, nullptr, nullptr).code();
  };
  EXPECT_EQ(with([](AttachmentPointer& p) { p.size = 1ull << 40; }), ErrorCode::kTooLarge);
  EXPECT_EQ(with([](AttachmentPointer& p) { p.path += "\r\nX-Evil: 1"; }), ErrorCode::kMalformed);
  EXPECT_EQ(with([](AttachmentPointer& p) { p.path = "/metrics"; }), ErrorCode::kMalformed);
  EXPECT_EQ(with([](AttachmentPointer& p) { p.digest.pop_back(); }), ErrorCode::kMalformed);
  // A size that does not match the blob: the server's Content-Range total gives it away.
  EXPECT_EQ(with([](AttachmentPointer& p) { p.size += 100; }), ErrorCode::kMalformed);
  // A hostile file name is saved safely inside dest_dir.
  fs::path saved;
  AttachmentPointer p;
  p.path = pointer->path;
  p.key = pointer->key.clone();
  p.digest = pointer->digest;
  p.size = pointer->size;
  p.file_name = "../../.bashrc";
  p.sha256 = pointer->sha256;
  ASSERT_TRUE(down.download(server_->invite(), p, dest_, nullptr, &saved).is_ok());
  EXPECT_EQ(saved, dest_ / "bashrc");
  EXPECT_EQ(entries(dest_), std::set<std::string>{"bashrc"});
}

}  // namespace
}  // namespace parley::testing
