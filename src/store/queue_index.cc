#include "store/internal/queue_index.h"

#include <algorithm>

namespace parley::store::internal {
namespace {

bool live(std::int64_t size) { return size >= 0; }

std::size_t hash_of(std::string_view name) { return std::hash<std::string_view>()(name); }

}  // namespace

// Counts an entry of `size` bytes into (sign 1) or out of (sign -1) a queue, its sender's
// tally and the whole.
void QueueIndex::tally(Queue& q, const Entry& e, std::int64_t size, std::int64_t sign) {
  q.totals.count += sign;
  q.totals.bytes += sign * size;
  Totals& sender = q.senders[e.sender].totals;
  sender.count += sign;
  sender.bytes += sign * size;
  all_.count += sign;
  all_.bytes += sign * size;
  if (q.totals.count == 0) q.registration_id = 0;  // the next entry may be another device's
}

const QueueIndex::Sender* QueueIndex::find_sender(const Queue& q, std::size_t hash,
                                                  std::string_view name) {
  if (q.by_hash) {
    for (auto [it, end] = q.by_hash->equal_range(hash); it != end; ++it) {
      const Sender& s = q.senders[it->second];
      if (s.name == name) return &s;
    }
    return nullptr;
  }
  for (const Sender& s : q.senders) {
    if (s.hash == hash && s.name == name) return &s;
  }
  return nullptr;
}

// Indexes a queue's senders by hash while it has more than kIndexSenders, or drops the index.
void QueueIndex::index_senders(Queue& q) {
  if (q.senders.size() <= kIndexSenders) {
    q.by_hash.reset();
    return;
  }
  q.by_hash = std::make_unique<std::unordered_multimap<std::size_t, std::uint32_t>>();
  q.by_hash->reserve(q.senders.size());
  for (std::size_t i = 0; i < q.senders.size(); ++i) {
    q.by_hash->emplace(q.senders[i].hash, static_cast<std::uint32_t>(i));
  }
}

// Appends an entry and counts it (its sender gets a place on its first entry).
void QueueIndex::push(Queue& q, std::int64_t seq, std::int64_t size, std::uint64_t tag,
                      std::string_view sender) {
  const std::size_t hash = hash_of(sender);
  const Sender* known = find_sender(q, hash, sender);
  std::size_t place = known == nullptr ? q.senders.size() : known - q.senders.data();
  if (known == nullptr) {
    q.senders.push_back({hash, std::string(sender), {}});
    if (q.by_hash) {
      q.by_hash->emplace(hash, static_cast<std::uint32_t>(place));
    } else if (q.senders.size() > kIndexSenders) {
      index_senders(q);
    }
  }
  q.entries.push_back(
      {seq, tag, static_cast<std::int32_t>(size), static_cast<std::uint32_t>(place)});
  tally(q, q.entries.back(), size, 1);
}

bool QueueIndex::load_envelope(QueueKey key, std::int64_t seq, std::int64_t size, std::uint64_t tag,
                               std::string_view sender) {
  if (size < 0 || size > kMaxSize) return false;
  Queue& q = queues_[key];
  if (!q.entries.empty() && q.entries.back().seq >= seq) return false;
  push(q, seq, size, tag, sender);
  return true;
}

QueueIndex::Totals QueueIndex::totals(QueueKey key) const {
  auto it = queues_.find(key);
  return it == queues_.end() ? Totals{} : it->second.totals;
}

QueueIndex::Totals QueueIndex::sender_totals(QueueKey key, std::string_view sender) const {
  auto it = queues_.find(key);
  if (it == queues_.end()) return {};
  const Sender* s = find_sender(it->second, hash_of(sender), sender);
  return s == nullptr ? Totals{} : s->totals;
}

std::size_t QueueIndex::senders_kept(QueueKey key) const {
  auto it = queues_.find(key);
  return it == queues_.end() ? 0 : it->second.senders.size();
}

std::uint32_t QueueIndex::registration(QueueKey key) const {
  auto it = queues_.find(key);
  return it == queues_.end() || it->second.totals.count == 0 ? 0 : it->second.registration_id;
}

void QueueIndex::remember_registration(QueueKey key, std::uint32_t registration_id) {
  auto it = queues_.find(key);
  if (it != queues_.end() && it->second.totals.count > 0) {
    it->second.registration_id = registration_id;
  }
}

std::vector<QueueKey> QueueIndex::queues_of(std::int64_t account_id) const {
  std::vector<QueueKey> out;
  for (const auto& [key, q] : queues_) {
    if (key.account_id == account_id) out.push_back(key);
  }
  return out;
}

std::vector<QueueKey> QueueIndex::non_empty() const {
  std::vector<QueueKey> out;
  for (const auto& [key, q] : queues_) {
    if (q.totals.count > 0) out.push_back(key);
  }
  return out;
}

void QueueIndex::append(QueueKey key, std::int64_t seq, std::int64_t size, std::uint64_t tag,
                        std::string_view sender) {
  push(queues_[key], seq, size, tag, sender);
  log_.push_back({Change::kAppended, key, seq});
}

const QueueIndex::Entry* QueueIndex::find(const Queue& q, std::int64_t seq) {
  auto begin = q.entries.begin() + static_cast<std::ptrdiff_t>(q.head);
  auto it = std::lower_bound(begin, q.entries.end(), seq,
                             [](const Entry& e, std::int64_t s) { return e.seq < s; });
  return it != q.entries.end() && it->seq == seq ? &*it : nullptr;
}

QueueIndex::Entry* QueueIndex::find(Queue& q, std::int64_t seq) {
  return const_cast<Entry*>(find(static_cast<const Queue&>(q), seq));
}

bool QueueIndex::contains(QueueKey key, std::int64_t seq, std::uint64_t tag) const {
  auto it = queues_.find(key);
  if (it == queues_.end()) return false;
  const Entry* e = find(it->second, seq);
  return e != nullptr && live(e->size) && e->tag == tag;
}

std::optional<std::int64_t> QueueIndex::remove(QueueKey key, std::int64_t seq) {
  auto it = queues_.find(key);
  if (it == queues_.end()) return std::nullopt;
  Queue& q = it->second;
  Entry* e = find(q, seq);
  if (e == nullptr || !live(e->size)) return std::nullopt;
  const std::int64_t size = e->size;
  e->size = static_cast<std::int32_t>(-size - 1);
  tally(q, *e, size, -1);
  log_.push_back({Change::kRemoved, key, seq});
  touched_.push_back(key);
  return size;
}

std::vector<std::int64_t> QueueIndex::after(QueueKey key, std::int64_t after_seq,
                                            std::size_t limit) const {
  std::vector<std::int64_t> out;
  auto it = queues_.find(key);
  if (it == queues_.end()) return out;
  const Queue& q = it->second;
  auto e =
      std::upper_bound(q.entries.begin() + static_cast<std::ptrdiff_t>(q.head), q.entries.end(),
                       after_seq, [](std::int64_t s, const Entry& x) { return s < x.seq; });
  for (; e != q.entries.end() && out.size() < limit; ++e) {
    if (live(e->size)) out.push_back(e->seq);
  }
  return out;
}

void QueueIndex::undo(std::size_t mark) {
  while (log_.size() > mark) {
    Logged& l = log_.back();
    // What a send of the undone work read from the devices table may not have been committed
    // (a recovery in the same batch): the queue's device is looked up again.
    if (auto it = queues_.find(l.key); it != queues_.end()) it->second.registration_id = 0;
    switch (l.change) {
      case Change::kAppended: {
        // The newest entry of its queue, and live: later changes were undone first.
        Queue& q = queues_[l.key];
        tally(q, q.entries.back(), q.entries.back().size, -1);
        q.entries.pop_back();
        if (q.entries.size() == q.head) queues_.erase(l.key);
        break;
      }
      case Change::kRemoved: {
        Queue& q = queues_[l.key];
        Entry* e = find(q, l.seq);
        const std::int64_t size = -static_cast<std::int64_t>(e->size) - 1;
        e->size = static_cast<std::int32_t>(size);
        tally(q, *e, size, 1);
        break;
      }
    }
    log_.pop_back();
  }
  if (log_.empty()) touched_.clear();
}

// Once every entry of q is live: forgets the senders that have none left, when they are most
// of them (a queue that never empties would otherwise keep every sender it ever had).
void QueueIndex::drop_idle_senders(Queue& q) {
  std::size_t idle = 0;
  for (const Sender& s : q.senders) idle += s.totals.count == 0 ? 1 : 0;
  if (idle < 8 || 2 * idle < q.senders.size()) return;
  std::vector<std::uint32_t> place(q.senders.size());
  std::vector<Sender> kept;
  kept.reserve(q.senders.size() - idle);
  for (std::size_t i = 0; i < q.senders.size(); ++i) {
    if (q.senders[i].totals.count == 0) continue;
    place[i] = static_cast<std::uint32_t>(kept.size());
    kept.push_back(std::move(q.senders[i]));
  }
  for (Entry& e : q.entries) e.sender = place[e.sender];
  q.senders = std::move(kept);
  index_senders(q);
}

void QueueIndex::settle() {
  log_.clear();
  for (const QueueKey& key : touched_) {
    auto it = queues_.find(key);
    if (it == queues_.end()) continue;
    Queue& q = it->second;
    if (q.totals.count == 0) {
      queues_.erase(it);
      continue;
    }
    // Removed entries are usually the oldest (acknowledged in order): the head moves past
    // them. Others are dropped in one pass once they are a quarter of the queue.
    while (q.head < q.entries.size() && !live(q.entries[q.head].size)) ++q.head;
    const std::size_t held = q.entries.size() - q.head;
    if (q.head >= held || held >= 4 * static_cast<std::size_t>(q.totals.count) / 3 + 1) {
      auto first = q.entries.begin() + static_cast<std::ptrdiff_t>(q.head);
      auto end =
          std::remove_if(first, q.entries.end(), [](const Entry& e) { return !live(e.size); });
      if (q.head > 0) end = std::copy(first, end, q.entries.begin());
      q.entries.erase(end, q.entries.end());
      q.head = 0;
      if (q.entries.capacity() > 4 * q.entries.size() + 16) q.entries.shrink_to_fit();
      drop_idle_senders(q);
    }
  }
  touched_.clear();
}

}  // namespace parley::store::internal
