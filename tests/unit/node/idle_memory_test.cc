// Issue 11: a node holds at most 2 KiB per idle channel. This guards the
// heap part of it: B's channel manager and ledger follower restarted over
// B's database at K and at 2K channels that peers opened to it and never
// used; the marginal heap per channel (glibc's bytes in use, so the fixed
// costs cancel out) must stay within the budget. tests/bench/node/
// chanmem_bench.cc measures the same with its parts (docs/performance.md,
// "Memory per idle channel"). Skipped under sanitizers, whose allocator
// glibc's counters do not see.
#include <gtest/gtest.h>
#include <malloc.h>

#include <string>
#include <vector>

#include "node/channel_db.h"
#include "tests/unit/node/channel_harness.h"

namespace tipd::testing {
namespace {

size_t HeapInUse() {
  ::malloc_trim(0);
  return ::mallinfo2().uordblks;
}

size_t RestartHeap(ChannelNet& net, TestNode& b) {
  b.StopManager();
  b.link.reset();  // the follower reopens the chain, as a restart does
  net.Settle();
  const size_t before = HeapInUse();
  b.StartManager();
  net.Settle();
  return HeapInUse() - before;
}

TEST(IdleChannelMemory, RestoredIdleChannelsStayWithinTheBudget) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizer's allocator is not glibc's";
#endif
  constexpr int kChannels = 60;  // per step
  // The heap budget: the 2 KiB target less room for what is not heap
  // (allocator slack, LevelDB's caches). Measured here 931-935 B (three
  // runs; bench_chanmem, 400 channels: 1,313 B) since the record, acks and
  // map keys were slimmed; 1,471 B before (bench_chanmem 1,858 B) and
  // 4.2 KiB before issue 11's first changes. The budget keeps a margin of
  // about 25 % and fails on the previous layout.
  constexpr double kBudgetBytes = 1'200;
  ChannelNet net;
  std::vector<TestNode*> openers = {&net.AddNode("a0", 100'000'000),
                                    &net.AddNode("a1", 100'000'000)};
  TestNode& b = net.AddNode("b", 1'000'000);
  for (TestNode* a : openers) a->StartManager();
  b.StartManager();
  auto open = [&] {
    for (TestNode* a : openers) net.Connect(*a, b);
    for (int i = 0; i < kChannels; ++i) {
      ASSERT_FALSE(net.OpenChannel(*openers[i % openers.size()], b, 1'000).empty());
    }
  };
  open();
  const size_t at_k = RestartHeap(net, b);
  ASSERT_EQ(b.manager->channel_count(), static_cast<size_t>(kChannels));
  open();
  const size_t at_2k = RestartHeap(net, b);
  ASSERT_EQ(b.manager->channel_count(), static_cast<size_t>(2 * kChannels));
  const double per_channel =
      (static_cast<double>(at_2k) - static_cast<double>(at_k)) / static_cast<double>(kChannels);
  RecordProperty("heap_bytes_per_idle_channel", std::to_string(per_channel));
  EXPECT_GT(per_channel, 0.0);
  EXPECT_LE(per_channel, kBudgetBytes) << "heap per idle channel after a restart";
  // Restored idle channels still work: the first tip on one of them.
  for (TestNode* a : openers) net.Connect(*a, b);
  std::vector<v1::ChannelApi> all = openers[0]->manager->ListChannels();
  ASSERT_FALSE(all.empty());
  std::string id = std::string(AsStringView(*HexDecode(all.front().channel_id())));
  EXPECT_TRUE(net.Tip(*openers[0], id, 1, "after restart").ok());
}

// A restored channel holds its record without the identity fields (the
// params hold them). Every write of the record must still store the whole
// record: after a restart, a close (phase CLOSING, the close flag) is
// written from the slim form, and the stored record is the one before with
// only those fields changed; the node restores it again.
TEST(IdleChannelMemory, ARecordWrittenFromTheSlimFormIsStoredWhole) {
  using namespace std::chrono_literals;
  ChannelNet net;
  TestNode& a = net.AddNode("a", 100'000'000);
  TestNode& b = net.AddNode("b", 1'000'000);
  a.StartManager();
  b.StartManager();
  net.Connect(a, b);
  const std::string id = net.OpenChannel(a, b, 1'000);
  ASSERT_FALSE(id.empty());
  net.Restart(b, a);
  node::ChannelDb chdb(b.db.get());
  auto before = chdb.GetChannel(id);
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  ASSERT_EQ(before->phase(), v1::STORED_CHANNEL_PHASE_OPEN);
  net.Disconnect(a, b);
  auto closing = net.Await(
      [&](node::ChannelCallback done) { b.manager->Close(id, true, 1000ms, std::move(done)); });
  ASSERT_TRUE(closing.ok()) << closing.status().ToString();
  auto after = chdb.GetChannel(id);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->phase(), v1::STORED_CHANNEL_PHASE_CLOSING);
  EXPECT_TRUE(after->unilateral_close_requested());
  v1::StoredChannel expected = *before;
  expected.set_phase(after->phase());
  expected.set_unilateral_close_requested(true);
  expected.set_close_reason(after->close_reason());
  EXPECT_EQ(after->SerializeAsString(), expected.SerializeAsString())
      << "stored: " << after->ShortDebugString() << "\nexpected: " << expected.ShortDebugString();
  EXPECT_EQ(after->channel_id(), id);
  EXPECT_EQ(after->local_key().size(), 33u);
  EXPECT_EQ(after->remote_key().size(), 33u);
  EXPECT_FALSE(after->chain_id().empty());
  // And it restores.
  net.Restart(b, a);
  EXPECT_EQ(net.Channel(b, id).state(), "closing");
}

}  // namespace
}  // namespace tipd::testing
