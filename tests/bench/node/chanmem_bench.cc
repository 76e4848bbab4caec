// Memory per idle channel (issue 11: <= 2 KiB resident per idle channel).
//
// A receiver node B holds N channels that peers opened to it and never used
// (as `tipd bench` section 6 opens them). The figure is the heap B holds
// after a restart: glibc's mallinfo2().uordblks (bytes in use) before and
// after the restart of B's channel manager and ledger follower (its
// ledger::State has one entry per channel on the chain) over B's database,
// at N/2 and at N channels; the marginal bytes per channel are the
// difference over N/2 (the fixed costs cancel out). The API, its streams and
// LevelDB's caches are not in it; `tipd bench --only size` measures the
// whole process (RSS).
//
// BM_IdleChannelHeap: counters bytes_per_channel (marginal heap after a
//   restart) and, for one restored channel, the parts: sizeof LiveChannel,
//   Channel, the StoredChannel record and the heap of each protobuf
//   (SpaceUsedLong beyond sizeof), and the heap of the Channel's empty queues.
//
// Run: build/bench/bench_chanmem (TIPD_CHANMEM_CHANNELS: N, default 1000).
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <vector>

#include "node/channel_db.h"
#include "node/channel_manager_internal.h"
#include "tests/unit/node/channel_harness.h"

namespace tipd::node {
namespace {

using testing::ChannelNet;
using testing::TestNode;

size_t HeapInUse() {
  ::malloc_trim(0);
  return ::mallinfo2().uordblks;
}

int Channels() {
  const char* v = std::getenv("TIPD_CHANMEM_CHANNELS");
  int n = v != nullptr ? std::atoi(v) : 1000;
  return n >= 2 ? n : 2;
}

// Heap B's manager holds after a restart over its database.
size_t RestartHeap(ChannelNet& net, TestNode& b) {
  b.StopManager();
  b.link.reset();  // StartManager opens the chain again, as a restart does
  net.Settle();
  const size_t before = HeapInUse();
  b.StartManager();
  net.Settle();
  return HeapInUse() - before;
}

// Opens `n` channels from `openers` (round robin) to `b`.
void OpenChannels(ChannelNet& net, std::vector<TestNode*>& openers, TestNode& b, int n) {
  for (int i = 0; i < n; ++i) {
    if (net.OpenChannel(*openers[i % openers.size()], b, 1'000).empty()) std::abort();
  }
}

void BM_IdleChannelHeap(benchmark::State& state) {
  const int n = Channels();
  for (auto _ : state) {
    ChannelNet net;
    std::vector<TestNode*> openers;
    for (int i = 0; i < 4; ++i) {
      openers.push_back(&net.AddNode("a" + std::to_string(i), 100'000'000));
    }
    TestNode& b = net.AddNode("b", 1'000'000);
    for (TestNode* a : openers) a->StartManager();
    b.StartManager();
    for (TestNode* a : openers) net.Connect(*a, b);
    OpenChannels(net, openers, b, n / 2);
    const size_t half = RestartHeap(net, b);
    for (TestNode* a : openers) net.Connect(*a, b);
    OpenChannels(net, openers, b, n - n / 2);
    const size_t full = RestartHeap(net, b);
    state.counters["channels"] = n;
    state.counters["heap_at_n_KiB"] = static_cast<double>(full) / 1024.0;
    state.counters["bytes_per_channel"] =
        (static_cast<double>(full) - static_cast<double>(half)) / static_cast<double>(n - n / 2);

    // The restored channels, part by part. mallinfo2 counts the chunks in
    // glibc's per-thread caches as in use, so every heap figure is the
    // average over many objects, not the difference of one allocation.
    ChannelDb chdb(b.db.get());
    auto listed = chdb.ListChannels();
    if (!listed.ok() || listed->empty()) std::abort();
    std::vector<std::unique_ptr<ChannelManager::LiveChannel>> lives;
    lives.reserve(listed->size());
    size_t h0 = HeapInUse();
    for (const v1::StoredChannel& rec : *listed) {
      auto remote = crypto::PublicKey::Parse(AsSpan(rec.remote_key()));
      auto restored = chdb.Restore(rec.channel_id(), b.key.public_key());
      if (!remote.ok() || !restored.ok()) std::abort();
      lives.push_back(
          std::make_unique<ChannelManager::LiveChannel>(rec, std::move(*restored), *remote));
    }
    const size_t live_heap = (HeapInUse() - h0) / lives.size();
    const ChannelManager::LiveChannel* live = lives.front().get();
    // The parts, printed once (bytes; "heap" is what a part allocates beyond
    // its own size).
    using Live = ChannelManager::LiveChannel;
    std::vector<std::pair<std::string, size_t>> parts = {
        {"LiveChannel (object + heap, from malloc)", live_heap},
        {"sizeof LiveChannel", sizeof(Live)},
        {"  sizeof StoredChannel record", sizeof(v1::StoredChannel)},
        {"  sizeof channel::Channel", sizeof(channel::Channel)},
        {"    sizeof ChannelParams", sizeof(channel::ChannelParams)},
        {"    sizeof BalanceProof (x2)", sizeof(v1::BalanceProof)},
        {"    sizeof BoxedOptional<Ack> (x2)", sizeof(BoxedOptional<v1::Ack>)},
        {"  sizeof crypto::PublicKey", sizeof(crypto::PublicKey)},
        {"  sizeof peer_reestablish", sizeof(Live::peer_reestablish)},
        {"  sizeof pending_proposal", sizeof(Live::pending_proposal)},
        {"  sizeof proposed", sizeof(Live::proposed)},
        {"  sizeof pending_close", sizeof(Live::pending_close)},
        {"  sizeof sent_at", sizeof(Live::sent_at)},
        {"  sizeof open_waiters, close_waiters (each)", sizeof(Live::open_waiters)},
        {"(std::optional<Reestablish>, as before)", sizeof(std::optional<v1::Reestablish>)},
        {"(std::optional<PendingClose>, as before)", sizeof(std::optional<Live::PendingClose>)},
        {"(std::optional<Ack>, as before)", sizeof(std::optional<v1::Ack>)},
        {"heap of the record (identity fields in the params)",
         live->record.SpaceUsedLong() - sizeof(v1::StoredChannel)},
        {"(heap of the whole record, as before)",
         live->FullRecord().SpaceUsedLong() - sizeof(v1::StoredChannel)},
        {"heap of own proof", live->ch.own_proof().SpaceUsedLong() - sizeof(v1::BalanceProof)},
        {"heap of received proof",
         live->ch.received_proof().SpaceUsedLong() - sizeof(v1::BalanceProof)},
    };
    h0 = HeapInUse();
    {
      std::vector<std::deque<channel::OutgoingUpdate>> q1(1000);
      std::vector<std::deque<v1::Tip>> q2(1000);
      benchmark::DoNotOptimize(q1.data());
      benchmark::DoNotOptimize(q2.data());
      parts.emplace_back("(two empty std::deque, objects + heap, as before)",
                         (HeapInUse() - h0) / 1000);
    }
    std::printf("bytes per idle channel (marginal heap after a restart, %d channels): %.0f\n", n,
                state.counters["bytes_per_channel"].value);
    for (const auto& [what, bytes] : parts) std::printf("  %-52s %6zu\n", what.c_str(), bytes);
  }
}
BENCHMARK(BM_IdleChannelHeap)->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace
}  // namespace tipd::node

BENCHMARK_MAIN();
