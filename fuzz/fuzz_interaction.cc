// Two-party interaction fuzzer (after libsignal rust/protocol/fuzz/fuzz_targets/interaction.rs):
// Alice and Bob exchange 1:1 messages over a lossy, reordering, replaying network, and Alice
// sends to a group that Bob receives with Sender Keys. The input is a script:
//
//   byte 0: setup. bit0: Alice's bundle carries a one-time prekey; bit1: Bob has not yet
//           processed Alice's first sender-key distribution message (he must get it by action).
//   then pairs (op, arg), at most kMaxActions, op % kOpCount:
//     0 A sends to B          1 B sends to A
//     2 deliver inbox_b[arg]  3 deliver inbox_a[arg]
//     4 drop inbox_b[arg]     5 drop inbox_a[arg]
//     6 replay a message B received     7 replay a message A received
//     8 reorder: swap inbox[arg] with the last of it (bit0 of arg picks the inbox)
//     9 A sends to the group  10 deliver group[arg]   11 drop group[arg]
//     12 replay a group message Bob received
//     13 A rotates her sender key (at most kMaxRotations)
//     14 deliver (or re-deliver) distribution message [arg] to Bob
//
// Invariants (checked against a model of what each side must be able to decrypt):
// - every delivered message decrypts to exactly the plaintext that was sent, including a
//   PreKeyWhisper message that arrives after Bob already answered;
// - a replayed message fails with kDuplicateMessage;
// - the one legitimate 1:1 failure: a message whose sending chain the receiver has already
//   evicted (it keeps the last kMaxReceiverChains chains, as libsignal does) may fail;
// - every failed operation leaves the party's whole store (snapshot()) unchanged;
// - Bob cannot send before he has a session (kNoSession); Alice sends PreKeyWhisper messages
//   until she has received something from Bob, Whisper messages afterwards.
// kMaxActions keeps every counter far below kMaxForwardJump / kMaxSkippedMessageKeys (2000),
// so the too-far-ahead and skipped-key-eviction refusals are never legitimate here.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_support.h"
#include "protocol/sender_keys.h"

namespace parley::fuzz {
namespace {

using protocol::SenderKeyDistributionMessage;

constexpr std::size_t kMaxActions = 200;
constexpr std::size_t kMaxRotations = 3;  // 1 + 3 chains stay within kMaxSenderKeyStates
constexpr int kOpCount = 15;
static_assert(kMaxActions < protocol::kMaxForwardJump);
static_assert(kMaxActions < protocol::kMaxSkippedMessageKeys);
static_assert(kMaxActions < protocol::kMaxSenderKeyForwardJump);
static_assert(kMaxActions < protocol::kMaxSenderMessageKeys);
static_assert(1 + kMaxRotations <= protocol::kMaxSenderKeyStates);

struct Message {
  CiphertextMessage ciphertext;
  Bytes plaintext;
  crypto::PublicKey ratchet_key;  // the sender's chain this message belongs to
};

struct Side {
  Party* party;
  std::vector<Message> inbox;     // sent to this side, not yet delivered
  std::vector<Message> received;  // delivered and decrypted (for replays)
  // Model of the receiver chains this side holds, oldest first (SessionState::receiver_chains).
  std::deque<crypto::PublicKey> chains;
  std::set<crypto::PublicKey> evicted;
  bool received_any = false;

  bool holds_chain(const crypto::PublicKey& k) const {
    return std::find(chains.begin(), chains.end(), k) != chains.end();
  }
  void add_chain(const crypto::PublicKey& k) {
    chains.push_back(k);
    if (chains.size() > protocol::kMaxReceiverChains) {
      evicted.insert(chains.front());
      chains.pop_front();
    }
  }
};

struct GroupMessage {
  Bytes serialized;
  Bytes plaintext;
  std::uint32_t key_id;
};

crypto::PublicKey ratchet_key_of(const CiphertextMessage& m) {
  if (m.type == MessageType::kWhisper) {
    auto parsed = protocol::WhisperMessage::parse(m.serialized);
    PARLEY_FUZZ_CHECK(parsed.has_value());
    return parsed->ratchet_key();
  }
  auto parsed = protocol::PreKeyWhisperMessage::parse(m.serialized);
  PARLEY_FUZZ_CHECK(parsed.has_value());
  return parsed->message().ratchet_key();
}

// Plaintexts are unique per message and vary in length across AES block boundaries.
Bytes plaintext_for(const char* tag, std::uint32_t n) {
  std::string s = std::string(tag) + " #" + std::to_string(n) + " ";
  s.append(n % 37, static_cast<char>('a' + n % 26));
  return to_bytes(s);
}

template <typename T>
T take(std::vector<T>& v, std::size_t index) {
  T out = std::move(v[index]);
  v.erase(v.begin() + static_cast<std::ptrdiff_t>(index));
  return out;
}

class Interaction {
 public:
  explicit Interaction(std::uint8_t setup)
      : rng_(0x1a7e5eed),
        alice_party_("alice", rng_, 2),
        bob_party_("bob", rng_, 2),
        group_{"fuzz-group", alice_party_.address} {
    a_.party = &alice_party_;
    b_.party = &bob_party_;
    PARLEY_FUZZ_CHECK(alice_party_.builder_for(bob_party_, rng_)
                          .process_bundle(bob_party_.bundle((setup & 1) ? 1 : 0))
                          .is_ok());
    // Alice's session starts with one receiver chain: Bob's signed prekey (never sent on).
    a_.add_chain(bob_party_.store.signed_pre_keys.load_signed_pre_key(1)->key_pair.public_key);

    auto skdm = protocol::create_distribution_message(alice_party_.store.sender_keys, group_, rng_);
    PARLEY_FUZZ_CHECK(skdm.has_value());
    distributions_.push_back(std::move(skdm).value());
    if (!(setup & 2)) deliver_distribution(0);
  }

  void step(std::uint8_t op, std::uint8_t arg) {
    if (verbose()) {
      std::fprintf(stderr, "op %d arg %d | inbox a %zu b %zu group %zu\n", op % kOpCount, arg,
                   a_.inbox.size(), b_.inbox.size(), group_inbox_.size());
    }
    switch (op % kOpCount) {
      case 0:
        send(a_, b_, "A->B");
        break;
      case 1:
        send(b_, a_, "B->A");
        break;
      case 2:
        deliver(b_, a_, arg);
        break;
      case 3:
        deliver(a_, b_, arg);
        break;
      case 4:
        drop(b_.inbox, arg);
        break;
      case 5:
        drop(a_.inbox, arg);
        break;
      case 6:
        replay(b_, a_, arg);
        break;
      case 7:
        replay(a_, b_, arg);
        break;
      case 8:
        reorder((arg & 1) ? a_.inbox : b_.inbox, arg >> 1);
        break;
      case 9:
        group_send();
        break;
      case 10:
        group_deliver(arg);
        break;
      case 11:
        drop(group_inbox_, arg);
        break;
      case 12:
        group_replay(arg);
        break;
      case 13:
        rotate();
        break;
      default:
        deliver_distribution(arg % distributions_.size());
        break;
    }
  }

 private:
  void send(Side& from, Side& to, const char* tag) {
    const Bytes plaintext = plaintext_for(tag, sent_++);
    // Snapshots cost more than the protocol step: take them only where failure is expected.
    const bool must_fail = &from == &b_ && !b_.received_any;
    const std::string before = must_fail ? from.party->store.snapshot() : std::string();
    auto c = from.party->cipher_for(*to.party, rng_).encrypt(plaintext);
    if (must_fail) {
      // Bob has no session until Alice's first message reaches him.
      PARLEY_FUZZ_CHECK(!c.has_value() && c.error().code() == ErrorCode::kNoSession);
      PARLEY_FUZZ_CHECK(from.party->store.snapshot() == before);
      return;
    }
    PARLEY_FUZZ_CHECK(c.has_value());
    const MessageType expected =
        (&from == &a_ && !a_.received_any) ? MessageType::kPreKeyWhisper : MessageType::kWhisper;
    PARLEY_FUZZ_CHECK(c->type == expected);
    crypto::PublicKey ratchet = ratchet_key_of(*c);
    to.inbox.push_back(Message{std::move(c).value(), plaintext, ratchet});
  }

  void deliver(Side& to, Side& from, std::uint8_t arg) {
    if (to.inbox.empty()) return;
    Message m = take(to.inbox, arg % to.inbox.size());
    // Any failure other than on an evicted chain aborts below, so only that case needs a snapshot.
    const bool may_fail = to.evicted.count(m.ratchet_key) == 1;
    const std::string before = may_fail ? to.party->store.snapshot() : std::string();
    auto p =
        to.party->cipher_for(*from.party, rng_).decrypt(m.ciphertext.type, m.ciphertext.serialized);
    if (verbose()) {
      std::fprintf(stderr, "  deliver: %s\n", p ? "ok" : p.error().to_string().c_str());
    }
    if (!p) {
      // Legitimate only when the receiver dropped this message's chain.
      PARLEY_FUZZ_CHECK(may_fail);
      PARLEY_FUZZ_CHECK(to.party->store.snapshot() == before);
      return;
    }
    PARLEY_FUZZ_CHECK(*p == m.plaintext);
    if (!to.holds_chain(m.ratchet_key)) {
      // A new chain: it is the next in sequence, never one we already dropped.
      PARLEY_FUZZ_CHECK(to.evicted.count(m.ratchet_key) == 0);
      to.add_chain(m.ratchet_key);
    }
    to.received_any = true;
    to.received.push_back(std::move(m));
  }

  void drop(auto& inbox, std::uint8_t arg) {
    if (!inbox.empty()) take(inbox, arg % inbox.size());
  }

  void replay(Side& to, Side& from, std::uint8_t arg) {
    if (to.received.empty()) return;
    const Message& m = to.received[arg % to.received.size()];
    const std::string before = to.party->store.snapshot();
    auto p =
        to.party->cipher_for(*from.party, rng_).decrypt(m.ciphertext.type, m.ciphertext.serialized);
    PARLEY_FUZZ_CHECK(!p.has_value());
    // Once the chain is gone the message no longer matches any state (bad MAC); otherwise the
    // key was consumed.
    if (to.holds_chain(m.ratchet_key)) {
      PARLEY_FUZZ_CHECK(p.error().code() == ErrorCode::kDuplicateMessage);
    }
    PARLEY_FUZZ_CHECK(to.party->store.snapshot() == before);
  }

  void reorder(std::vector<Message>& inbox, std::size_t index) {
    if (inbox.size() < 2) return;
    std::swap(inbox[index % inbox.size()], inbox.back());
  }

  // ---- Group (Sender Keys): Alice sends, Bob receives. ----------------------------------------

  void group_send() {
    const Bytes plaintext = plaintext_for("group", sent_++);
    protocol::GroupCipher cipher(alice_party_.store.sender_keys, group_, rng_);
    auto c = cipher.encrypt(plaintext);
    PARLEY_FUZZ_CHECK(c.has_value());
    auto parsed = protocol::SenderKeyMessage::parse(*c);
    PARLEY_FUZZ_CHECK(parsed.has_value());
    PARLEY_FUZZ_CHECK(parsed->key_id() == distributions_.back().key_id());
    group_inbox_.push_back(GroupMessage{std::move(c).value(), plaintext, parsed->key_id()});
  }

  void group_deliver(std::uint8_t arg) {
    if (group_inbox_.empty()) return;
    GroupMessage m = take(group_inbox_, arg % group_inbox_.size());
    const bool must_fail = bob_key_ids_.count(m.key_id) == 0;
    const std::string before = must_fail ? bob_party_.store.snapshot() : std::string();
    protocol::GroupCipher cipher(bob_party_.store.sender_keys, group_, rng_);
    auto p = cipher.decrypt(m.serialized);
    if (must_fail) {
      PARLEY_FUZZ_CHECK(!p.has_value() && p.error().code() == ErrorCode::kNoSenderKey);
      PARLEY_FUZZ_CHECK(bob_party_.store.snapshot() == before);
      return;
    }
    PARLEY_FUZZ_CHECK(p.has_value() && *p == m.plaintext);
    group_received_.push_back(std::move(m));
  }

  void group_replay(std::uint8_t arg) {
    if (group_received_.empty()) return;
    const GroupMessage& m = group_received_[arg % group_received_.size()];
    const std::string before = bob_party_.store.snapshot();
    protocol::GroupCipher cipher(bob_party_.store.sender_keys, group_, rng_);
    auto p = cipher.decrypt(m.serialized);
    PARLEY_FUZZ_CHECK(!p.has_value() && p.error().code() == ErrorCode::kDuplicateMessage);
    PARLEY_FUZZ_CHECK(bob_party_.store.snapshot() == before);
  }

  void rotate() {
    if (distributions_.size() > kMaxRotations) return;
    auto skdm = protocol::rotate_sender_key(alice_party_.store.sender_keys, group_, rng_);
    PARLEY_FUZZ_CHECK(skdm.has_value());
    distributions_.push_back(std::move(skdm).value());
  }

  // Over the wire (inside a 1:1 session in real use): serialized, parsed, processed. Processing
  // one again must not rewind the chain (later replays still fail as duplicates).
  void deliver_distribution(std::size_t index) {
    auto parsed = SenderKeyDistributionMessage::parse(distributions_[index].serialized());
    PARLEY_FUZZ_CHECK(parsed.has_value());
    PARLEY_FUZZ_CHECK(
        protocol::process_distribution_message(bob_party_.store.sender_keys, group_, *parsed)
            .is_ok());
    bob_key_ids_.insert(parsed->key_id());
  }

  DeterministicRng rng_;
  Party alice_party_;
  Party bob_party_;
  Side a_, b_;
  std::uint32_t sent_ = 0;

  protocol::SenderKeyName group_;
  std::vector<SenderKeyDistributionMessage> distributions_;  // Alice's, oldest first
  std::set<std::uint32_t> bob_key_ids_;                      // chains Bob has processed
  std::vector<GroupMessage> group_inbox_;
  std::vector<GroupMessage> group_received_;
};

}  // namespace
}  // namespace parley::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  parley::fuzz::Interaction interaction(data[0]);
  std::size_t actions = 0;
  for (std::size_t i = 1; i + 1 < size && actions < parley::fuzz::kMaxActions; i += 2, ++actions) {
    interaction.step(data[i], data[i + 1]);
  }
  return 0;
}
