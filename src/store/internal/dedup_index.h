#pragma once
// Internal to src/store: the in-memory index over the append-only `dedup` table (schema v3).
//
// A dedup key is (sender account, sender device, destination account, client message id). The
// table is a log in insertion order with no index on the key, so recording a key appends to one
// B-tree page instead of dirtying a random one; this index maps a 64-bit keyed hash of the key
// to the row that holds it. A hit is verified against the row (a hash collision is never taken
// for a duplicate). It covers the newest `max_entries` keys within the dedup window: a resend
// older than either is stored again (docs/storage.md). Used by the backend thread only.

#include <cstdint>
#include <deque>
#include <string_view>
#include <unordered_map>

#include "base/bytes.h"

namespace parley::store::internal {

class DedupIndex {
 public:
  DedupIndex(std::size_t max_entries, std::uint64_t seed)
      : max_entries_(max_entries), seed_(seed) {}

  std::uint64_t hash(std::int64_t sender_account, std::uint32_t sender_device,
                     std::int64_t destination_account, ByteView client_message_id) const;

  // The row recorded for this hash, or 0.
  std::int64_t find(std::uint64_t h) const {
    auto it = rows_.find(h);
    return it == rows_.end() ? 0 : it->second;
  }
  // Records a key's row (the newest row wins a collision). Evicts nothing: trim() does, once
  // the transaction that recorded it has committed, so a key that is rolled back evicts none.
  void insert(std::uint64_t h, std::int64_t row, std::int64_t created_ms);
  // Undoes insert() of a row that was rolled back. Undo newest first: it takes the key's
  // entry off the end of the eviction order.
  void erase(std::uint64_t h, std::int64_t row);
  // Evicts the oldest keys over max_entries (after a commit).
  void trim();
  // Forgets the oldest keys up to the first created at or after `cutoff_ms` (the prefix that
  // expiry deleted from the table; a younger key before an older one keeps the older one).
  void expire(std::int64_t cutoff_ms);

  std::size_t size() const { return rows_.size(); }

 private:
  struct Entry {
    std::int64_t created_ms;
    std::uint64_t hash;
    std::int64_t row;
  };
  void forget(const Entry& e);

  std::size_t max_entries_;
  std::uint64_t seed_;
  std::unordered_map<std::uint64_t, std::int64_t> rows_;
  std::deque<Entry> order_;  // insertion order (created_ms non-decreasing in practice)
};

}  // namespace parley::store::internal
