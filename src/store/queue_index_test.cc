#include "store/internal/queue_index.h"

#include <gtest/gtest.h>

namespace parley::store::internal {
namespace {

using Seqs = std::vector<std::int64_t>;

const QueueKey kA{7, 1};
const QueueKey kB{7, 2};

TEST(QueueIndexTest, AppendRemoveAndAfterInSeqOrder) {
  QueueIndex q;
  q.append(kA, 10, 100, 0);
  q.append(kA, 11, 50, 0);
  q.append(kB, 12, 7, 0);
  q.append(kA, 13, 1, 0);
  EXPECT_EQ(q.totals(kA).count, 3);
  EXPECT_EQ(q.totals(kA).bytes, 151);
  EXPECT_EQ(q.all().count, 4);
  EXPECT_EQ(q.after(kA, 0, 10), (Seqs{10, 11, 13}));
  EXPECT_EQ(q.after(kA, 10, 1), (Seqs{11}));
  EXPECT_EQ(q.after(kA, 13, 10), Seqs{});
  EXPECT_EQ(q.remove(kA, 11), 50);
  EXPECT_EQ(q.remove(kA, 11), std::nullopt);  // once
  EXPECT_EQ(q.remove(kA, 12), std::nullopt);  // another device's
  EXPECT_EQ(q.remove(QueueKey{8, 1}, 10), std::nullopt);
  EXPECT_EQ(q.after(kA, 0, 10), (Seqs{10, 13}));
  q.settle();
  EXPECT_EQ(q.after(kA, 0, 10), (Seqs{10, 13}));
  EXPECT_EQ(q.totals(kA).count, 2);
  EXPECT_EQ(q.totals(kA).bytes, 101);
  EXPECT_EQ(q.all().count, 3);
  EXPECT_EQ(q.all().bytes, 108);
}

// A queue's registration id is known only while it has entries and no undo touched it.
TEST(QueueIndexTest, TheRegistrationIdIsForgottenWhenAQueueEmptiesOrIsUndone) {
  QueueIndex q;
  q.remember_registration(kA, 5);  // no queue: nothing to remember it with
  EXPECT_EQ(q.registration(kA), 0u);
  q.append(kA, 1, 10, 0);
  q.remember_registration(kA, 5);
  q.settle();
  EXPECT_EQ(q.registration(kA), 5u);
  EXPECT_EQ(q.registration(kB), 0u);

  const std::size_t mark = q.mark();
  q.append(kA, 2, 10, 0);
  q.remember_registration(kA, 6);
  q.undo(mark);  // what the undone send read may never have been committed
  EXPECT_EQ(q.registration(kA), 0u);
  EXPECT_EQ(q.totals(kA).count, 1);

  q.remember_registration(kA, 5);
  EXPECT_EQ(q.remove(kA, 1), 10);
  EXPECT_EQ(q.registration(kA), 0u);  // emptied (a recovery empties the replaced device's queue)
  q.append(kA, 3, 10, 0);
  EXPECT_EQ(q.registration(kA), 0u);  // not carried over to the queue's next device
}

TEST(QueueIndexTest, UndoRevertsToTheMarkAndSettleForgetsTheLog) {
  QueueIndex q;
  q.append(kA, 1, 10, 0);
  q.append(kA, 2, 20, 0);
  q.settle();
  const std::size_t mark = q.mark();
  EXPECT_EQ(q.remove(kA, 1), 10);
  q.append(kA, 3, 30, 0);
  q.append(kB, 4, 40, 0);
  // A recovered account: its queue emptied, then a new device under the same key.
  EXPECT_EQ(q.remove(kA, 2), 20);
  EXPECT_EQ(q.remove(kA, 3), 30);
  q.append(kA, 5, 50, 0);
  EXPECT_EQ(q.after(kA, 0, 10), (Seqs{5}));
  EXPECT_EQ(q.all().count, 2);
  q.undo(mark);
  EXPECT_EQ(q.after(kA, 0, 10), (Seqs{1, 2}));
  EXPECT_EQ(q.after(kB, 0, 10), Seqs{});
  EXPECT_EQ(q.totals(kA).bytes, 30);
  EXPECT_EQ(q.all().count, 2);
  EXPECT_EQ(q.all().bytes, 30);
  EXPECT_TRUE(q.non_empty() == std::vector<QueueKey>{kA});
  // A partial undo keeps what came before its mark.
  EXPECT_EQ(q.remove(kA, 2), 20);
  const std::size_t mid = q.mark();
  q.append(kA, 6, 60, 0);
  q.undo(mid);
  q.settle();
  EXPECT_EQ(q.after(kA, 0, 10), (Seqs{1}));
  q.undo(0);  // nothing logged after settle()
  EXPECT_EQ(q.after(kA, 0, 10), (Seqs{1}));
}

TEST(QueueIndexTest, EmptiedQueuesGoAndRemovedEntriesAreDroppedAnywhere) {
  QueueIndex q;
  for (std::int64_t s = 1; s <= 100; ++s) q.append(kA, s, 1, 0);
  q.append(kB, 101, 1, 0);
  q.settle();
  // Out of order: every even seq, then the oldest ten.
  for (std::int64_t s = 2; s <= 100; s += 2) ASSERT_TRUE(q.remove(kA, s).has_value());
  q.settle();
  EXPECT_EQ(q.totals(kA).count, 50);
  EXPECT_EQ(q.after(kA, 0, 3), (Seqs{1, 3, 5}));
  for (std::int64_t s = 1; s <= 19; s += 2) ASSERT_TRUE(q.remove(kA, s).has_value());
  q.settle();
  EXPECT_EQ(q.after(kA, 0, 2), (Seqs{21, 23}));
  EXPECT_EQ(q.after(kA, 96, 10), (Seqs{97, 99}));
  EXPECT_EQ(q.remove(kA, 21), 1);
  q.undo(0);
  EXPECT_EQ(q.after(kA, 0, 1), (Seqs{21}));
  for (std::int64_t s = 21; s <= 99; s += 2) ASSERT_TRUE(q.remove(kA, s).has_value());
  q.settle();
  EXPECT_EQ(q.totals(kA).count, 0);
  EXPECT_TRUE(q.non_empty() == std::vector<QueueKey>{kB});
  EXPECT_TRUE(q.queues_of(7) == std::vector<QueueKey>{kB});
  q.append(kA, 102, 5, 0);  // appends after the queue went
  EXPECT_EQ(q.after(kA, 0, 10), (Seqs{102}));
}

TEST(QueueIndexTest, ContainsOnlyALiveSeqOfThatQueueWithItsTag) {
  QueueIndex q;
  EXPECT_TRUE(q.load_envelope(kA, 1, 10, 0xAAAA));
  q.append(kA, 2, 20, 0xBBBB);
  q.settle();
  EXPECT_TRUE(q.contains(kA, 1, 0xAAAA));
  EXPECT_TRUE(q.contains(kA, 2, 0xBBBB));
  EXPECT_FALSE(q.contains(kA, 2, 0xAAAA));  // another envelope's tag
  EXPECT_FALSE(q.contains(kB, 2, 0xBBBB));  // another device's queue
  EXPECT_FALSE(q.contains(kA, 3, 0xBBBB));
  ASSERT_TRUE(q.remove(kA, 2).has_value());
  EXPECT_FALSE(q.contains(kA, 2, 0xBBBB));  // removed in this transaction
  q.undo(0);
  EXPECT_TRUE(q.contains(kA, 2, 0xBBBB));
}

TEST(QueueIndexTest, LoadRefusesOutOfOrderSeqsAndNegativeSizes) {
  QueueIndex q;
  EXPECT_TRUE(q.load_envelope(kA, 5, 1, 0));
  EXPECT_FALSE(q.load_envelope(kA, 5, 1, 0));
  EXPECT_FALSE(q.load_envelope(kA, 4, 1, 0));
  EXPECT_FALSE(q.load_envelope(kB, 6, -1, 0));
  EXPECT_FALSE(q.load_envelope(kB, 6, QueueIndex::kMaxSize + 1, 0));
  EXPECT_TRUE(q.load_envelope(kB, 6, 0, 0));
  EXPECT_EQ(q.all().count, 2);
  EXPECT_EQ(q.remove(kB, 6), 0);  // an empty envelope is still one
  EXPECT_EQ(q.all().count, 1);
}

// Each sender's part of a queue follows its entries through appends, removals, undo, loading
// and a queue that empties and fills again.
TEST(QueueIndexTest, EachSendersPartOfAQueueIsCounted) {
  QueueIndex q;
  using T = QueueIndex::Totals;
  const auto part = [&](QueueKey key, std::string_view sender) {
    const T t = q.sender_totals(key, sender);
    return std::pair{t.count, t.bytes};
  };
  EXPECT_TRUE(q.load_envelope(kA, 1, 10, 0, "ann"));
  EXPECT_TRUE(q.load_envelope(kA, 2, 20, 0, "bob"));
  q.append(kA, 3, 30, 0, "ann");
  q.append(kB, 4, 40, 0, "ann");
  EXPECT_EQ(part(kA, "ann"), (std::pair<std::int64_t, std::int64_t>{2, 40}));
  EXPECT_EQ(part(kA, "bob"), (std::pair<std::int64_t, std::int64_t>{1, 20}));
  EXPECT_EQ(part(kB, "ann"), (std::pair<std::int64_t, std::int64_t>{1, 40}));
  EXPECT_EQ(part(kA, "Ann"), (std::pair<std::int64_t, std::int64_t>{0, 0}));  // names, as sent
  EXPECT_EQ(part(QueueKey{9, 1}, "ann"), (std::pair<std::int64_t, std::int64_t>{0, 0}));
  q.settle();

  const std::size_t mark = q.mark();
  ASSERT_TRUE(q.remove(kA, 1).has_value());
  ASSERT_TRUE(q.remove(kA, 3).has_value());
  q.append(kA, 5, 5, 0, "cat");
  EXPECT_EQ(part(kA, "ann"), (std::pair<std::int64_t, std::int64_t>{0, 0}));
  EXPECT_EQ(part(kA, "cat"), (std::pair<std::int64_t, std::int64_t>{1, 5}));
  q.undo(mark);
  EXPECT_EQ(part(kA, "ann"), (std::pair<std::int64_t, std::int64_t>{2, 40}));
  EXPECT_EQ(part(kA, "cat"), (std::pair<std::int64_t, std::int64_t>{0, 0}));

  // Emptied within a transaction and undone: the removed entries come back to their senders.
  for (std::int64_t s : {1, 2, 3}) ASSERT_TRUE(q.remove(kA, s).has_value());
  EXPECT_EQ(q.totals(kA).count, 0);
  q.append(kA, 6, 6, 0, "dan");
  q.undo(mark);
  EXPECT_EQ(part(kA, "bob"), (std::pair<std::int64_t, std::int64_t>{1, 20}));
  EXPECT_EQ(part(kA, "dan"), (std::pair<std::int64_t, std::int64_t>{0, 0}));

  // Emptied and settled: the queue goes with its senders; a new one starts from nothing.
  for (std::int64_t s : {1, 2, 3}) ASSERT_TRUE(q.remove(kA, s).has_value());
  q.settle();
  q.append(kA, 7, 7, 0, "bob");
  EXPECT_EQ(part(kA, "bob"), (std::pair<std::int64_t, std::int64_t>{1, 7}));
  EXPECT_EQ(part(kA, "ann"), (std::pair<std::int64_t, std::int64_t>{0, 0}));
}

// A queue that never empties forgets the senders it no longer holds anything of, and its
// entries keep their senders' tallies right.
TEST(QueueIndexTest, ALongLivedQueueDropsSendersWithNothingLeft) {
  QueueIndex q;
  std::int64_t seq = 0;
  q.append(kA, ++seq, 1, 0, "keeper");
  for (int round = 0; round < 50; ++round) {
    const std::int64_t first = seq + 1;
    for (int i = 0; i < 20; ++i) q.append(kA, ++seq, 2, 0, "s" + std::to_string(round * 20 + i));
    q.append(kA, ++seq, 3, 0, "keeper");
    q.settle();
    for (std::int64_t s = first; s < first + 20; ++s) ASSERT_TRUE(q.remove(kA, s).has_value());
    q.settle();
  }
  EXPECT_EQ(q.totals(kA).count, 51);
  EXPECT_EQ(q.sender_totals(kA, "keeper").count, 51);
  EXPECT_EQ(q.sender_totals(kA, "keeper").bytes, 1 + 50 * 3);
  EXPECT_EQ(q.sender_totals(kA, "s999").count, 0);
  EXPECT_LE(q.senders_kept(kA), 41u);  // not the 1,001 it had
  // Removing keeper's entries now counts them off keeper, wherever its tally has moved to.
  for (std::int64_t s : q.after(kA, 0, 100)) ASSERT_TRUE(q.remove(kA, s).has_value());
  EXPECT_EQ(q.sender_totals(kA, "keeper").count, 0);
  EXPECT_EQ(q.all().count, 0);
}

// A queue with many senders finds each through its index by hash, also after an undo and
// after its idle senders were dropped.
TEST(QueueIndexTest, ManySendersOfOneQueueEachKeepTheirTally) {
  QueueIndex q;
  std::int64_t seq = 0;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 200; ++i) q.append(kA, ++seq, i + 1, 0, "sender" + std::to_string(i));
  }
  q.settle();
  for (int i = 0; i < 200; ++i) {
    const auto t = q.sender_totals(kA, "sender" + std::to_string(i));
    ASSERT_EQ(t.count, 2) << i;
    ASSERT_EQ(t.bytes, 2 * (i + 1)) << i;
  }
  EXPECT_EQ(q.sender_totals(kA, "sender200").count, 0);
  const std::size_t mark = q.mark();
  q.append(kA, ++seq, 5, 0, "newcomer");
  q.append(kA, ++seq, 5, 0, "sender7");
  EXPECT_EQ(q.sender_totals(kA, "newcomer").count, 1);
  EXPECT_EQ(q.sender_totals(kA, "sender7").count, 3);
  q.undo(mark);
  EXPECT_EQ(q.sender_totals(kA, "newcomer").count, 0);
  EXPECT_EQ(q.sender_totals(kA, "sender7").count, 2);
  // Every sender but the last ten leaves; those keep their tallies, and new ones are found.
  for (std::int64_t s = 1; s <= 400; ++s) {
    if ((s - 1) % 200 >= 190) continue;
    ASSERT_TRUE(q.remove(kA, s).has_value());
  }
  q.settle();
  EXPECT_LE(q.senders_kept(kA), 30u);
  for (int i = 190; i < 200; ++i)
    EXPECT_EQ(q.sender_totals(kA, "sender" + std::to_string(i)).count, 2);
  for (int i = 0; i < 20; ++i) q.append(kA, ++seq, 1, 0, "late" + std::to_string(i));
  EXPECT_EQ(q.sender_totals(kA, "late19").count, 1);
  EXPECT_EQ(q.sender_totals(kA, "sender195").bytes, 2 * 196);
}

}  // namespace
}  // namespace parley::store::internal
