#pragma once
// Internal to src/store: every device's queue in memory — which envelopes (by seq) it holds,
// in order, their sizes, the random half of their server ids (the tag, which an
// acknowledgement must match), and what each sender holds of the queue (its share is limited,
// so that one sender cannot fill a device's queue for everyone). The envelopes themselves stay
// in SQLite.
//
// Why: an index in the database (envelopes by device) and per-device counter rows made every
// commit rewrite the index pages and counter rows of every device it touched, about 2.4 page
// writes per message (docs/storage.md). This index holds only non-empty queues, at 24 bytes per
// queued envelope (up to twice that while a queue's vector has room to grow), and is rebuilt
// from the envelopes table when the store opens. Whether a device exists is still the devices
// table's business. A queue also keeps a tally per sender that has envelopes in it (about 60
// bytes each, more for a name over 15 characters), dropped when the queue empties.
//
// Changes are made inside a transaction and logged; `undo` reverts them to a mark when the
// transaction (or one operation's savepoint) rolls back, and `settle` drops removed entries
// once it commits. Only the backend thread touches it.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace parley::store::internal {

struct QueueKey {
  std::int64_t account_id = 0;
  std::uint32_t device_id = 0;
  bool operator==(const QueueKey&) const = default;
};

struct QueueKeyHash {
  std::size_t operator()(const QueueKey& k) const noexcept {
    return std::hash<std::uint64_t>()(
        static_cast<std::uint64_t>(k.account_id) * 0x9E3779B97F4A7C15ull ^ k.device_id);
  }
};

class QueueIndex {
 public:
  struct Totals {
    std::int64_t count = 0;
    std::int64_t bytes = 0;
  };

  // The largest envelope size the index holds (an envelope is far smaller: wire::kMaxFrameSize).
  static constexpr std::int64_t kMaxSize = INT32_MAX;

  // Building at open (not logged), in seq order. False if `seq` is not above the queue's newest
  // or `size` is negative or over kMaxSize. `sender` names who sent the envelope (its source).
  bool load_envelope(QueueKey key, std::int64_t seq, std::int64_t size, std::uint64_t tag,
                     std::string_view sender = {});

  // The registration id of a non-empty queue's device as a send checked it in the devices table
  // (0: not known, since the queue was loaded at open, emptied or changed by an undo).
  // remember_registration() records it for a queue that has entries.
  std::uint32_t registration(QueueKey key) const;
  void remember_registration(QueueKey key, std::uint32_t registration_id);

  // Totals of one queue (zero when it is empty or unknown), and of all queues.
  Totals totals(QueueKey key) const;
  Totals all() const { return all_; }
  // What one sender's envelopes add up to in one queue (zero when it has none there).
  Totals sender_totals(QueueKey key, std::string_view sender) const;
  // How many senders' tallies one queue keeps (also some with nothing left; memory is bounded).
  std::size_t senders_kept(QueueKey key) const;
  // Non-empty queues: those of one account, and all of them.
  std::vector<QueueKey> queues_of(std::int64_t account_id) const;
  std::vector<QueueKey> non_empty() const;

  // Logged changes.
  // `seq` above every queued one; `size` at most kMaxSize (the caller's to check).
  void append(QueueKey key, std::int64_t seq, std::int64_t size, std::uint64_t tag,
              std::string_view sender = {});
  std::optional<std::int64_t> remove(QueueKey key, std::int64_t seq);  // its size, if queued
  // Whether `seq` is queued for `key` with this tag (not removed, also not by this transaction).
  bool contains(QueueKey key, std::int64_t seq, std::uint64_t tag) const;

  // Up to `limit` queued seqs above `after_seq`, oldest first.
  std::vector<std::int64_t> after(QueueKey key, std::int64_t after_seq, std::size_t limit) const;

  std::size_t mark() const { return log_.size(); }
  void undo(std::size_t mark);  // reverts logged changes back to `mark`
  void settle();                // commit: forgets the log, drops removed entries

 private:
  struct Entry {
    std::int64_t seq;
    std::uint64_t tag;
    std::int32_t size;     // negative: removed in this transaction (-size - 1)
    std::uint32_t sender;  // its sender's place in Queue::senders
  };
  struct Sender {
    std::size_t hash;  // of name: compared first
    std::string name;
    Totals totals;
  };
  struct Queue {
    // entries[head..] in increasing seq; removed ones stay until settle(). (A vector with a
    // moving head: a deque would allocate over 500 bytes for even one entry.)
    std::vector<Entry> entries;
    std::size_t head = 0;
    Totals totals;
    std::uint32_t registration_id = 0;  // see registration()
    // The senders of its entries (and maybe some with none left, see drop_idle_senders());
    // an entry names its sender's place.
    std::vector<Sender> senders;
    // Places by hash, once a queue has more than kIndexSenders senders (a search through all
    // of them for each envelope would cost the store's one thread O(senders) an envelope).
    std::unique_ptr<std::unordered_multimap<std::size_t, std::uint32_t>> by_hash;
  };
  static constexpr std::size_t kIndexSenders = 16;
  enum class Change { kAppended, kRemoved };
  struct Logged {
    Change change;
    QueueKey key;
    std::int64_t seq = 0;
  };

  static const Entry* find(const Queue& q, std::int64_t seq);
  static Entry* find(Queue& q, std::int64_t seq);
  static const Sender* find_sender(const Queue& q, std::size_t hash, std::string_view name);
  void push(Queue& q, std::int64_t seq, std::int64_t size, std::uint64_t tag,
            std::string_view sender);
  void tally(Queue& q, const Entry& e, std::int64_t size, std::int64_t sign);
  static void drop_idle_senders(Queue& q);
  static void index_senders(Queue& q);

  std::unordered_map<QueueKey, Queue, QueueKeyHash> queues_;
  Totals all_;
  std::vector<Logged> log_;
  std::vector<QueueKey> touched_;  // queues with removed entries to drop at settle()
};

}  // namespace parley::store::internal
