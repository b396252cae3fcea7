#include "store/internal/dedup_index.h"

namespace parley::store::internal {
namespace {

// splitmix64's finalizer: a bijective mix, so distinct inputs stay distinct.
std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

}  // namespace

std::uint64_t DedupIndex::hash(std::int64_t sender_account, std::uint32_t sender_device,
                               std::int64_t destination_account,
                               ByteView client_message_id) const {
  // Seeded per process: a sender cannot aim a collision at a key it cannot see anyway, and a
  // collision only costs a verification read (insert() keeps the newest row).
  std::uint64_t h = mix(seed_ ^ static_cast<std::uint64_t>(sender_account));
  h = mix(h ^ sender_device);
  h = mix(h ^ static_cast<std::uint64_t>(destination_account));
  std::uint64_t word = 0;
  std::size_t n = 0;
  for (std::uint8_t b : client_message_id) {
    word = (word << 8) | b;
    if (++n % 8 == 0) {
      h = mix(h ^ word);
      word = 0;
    }
  }
  return mix(h ^ word ^ (static_cast<std::uint64_t>(client_message_id.size()) << 56));
}

void DedupIndex::insert(std::uint64_t h, std::int64_t row, std::int64_t created_ms) {
  rows_[h] = row;
  order_.push_back(Entry{created_ms, h, row});
}

void DedupIndex::erase(std::uint64_t h, std::int64_t row) {
  auto it = rows_.find(h);
  if (it != rows_.end() && it->second == row) rows_.erase(it);
  // Its entry in order_ goes too: SQLite hands the rolled-back row id out again, and a stale
  // entry (hash, row) would later make forget() erase the key that the re-run recorded there.
  // Undone newest first, the entry is the last one (unless expire() already took it, and with it
  // everything before it).
  if (!order_.empty() && order_.back().hash == h && order_.back().row == row) order_.pop_back();
}

void DedupIndex::trim() {
  while (order_.size() > max_entries_) {
    forget(order_.front());
    order_.pop_front();
  }
}

void DedupIndex::expire(std::int64_t cutoff_ms) {
  while (!order_.empty() && order_.front().created_ms < cutoff_ms) {
    forget(order_.front());
    order_.pop_front();
  }
}

void DedupIndex::forget(const Entry& e) {
  auto it = rows_.find(e.hash);
  if (it != rows_.end() && it->second == e.row) rows_.erase(it);
}

}  // namespace parley::store::internal
