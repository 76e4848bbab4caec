// Synced write throughput through the GroupCommitter on a real directory
// ($TIPD_BENCH_DIR, default /tmp). Items are individual Put operations.
//
// BM_GroupCommitMerged/N: N callers' one-write submissions are queued at once
//   and merged by the committer (what concurrent channel updates look like).
// BM_GroupCommitBatch/N: one caller submits a single N-write batch and waits.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>

#include "storage/storage.h"

namespace tipd::storage {
namespace {

class BenchDir {
 public:
  BenchDir() {
    const char* base = std::getenv("TIPD_BENCH_DIR");
    std::string templ = std::string(base != nullptr ? base : "/tmp") + "/tipd-bench-XXXXXX";
    if (::mkdtemp(templ.data()) != nullptr) path_ = templ;
  }
  ~BenchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::string BenchKey(uint64_t i) {
  std::string key = "b";
  AppendBigEndian64(&key, i);
  return key;
}

const std::string kValue(100, 'v');

void BM_GroupCommitMerged(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  BenchDir dir;
  auto db = Database::Open(dir.path());
  if (dir.path().empty() || !db.ok()) {
    state.SkipWithError(db.ok() ? "cannot create bench dir" : db.status().ToString().c_str());
    return;
  }
  GroupCommitter committer(db->get());
  std::mutex mu;
  std::condition_variable cv;
  uint64_t key = 0;
  for (auto _ : state) {
    size_t remaining = n;
    bool failed = false;
    for (size_t i = 0; i < n; ++i) {
      WriteBatch b;
      b.Put(BenchKey(key++), kValue);
      committer.Submit(std::move(b), [&](Status s) {
        std::lock_guard<std::mutex> lock(mu);
        if (!s.ok()) failed = true;
        if (--remaining == 0) cv.notify_one();
      });
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return remaining == 0; });
    if (failed) {
      state.SkipWithError(committer.health().ToString().c_str());
      break;
    }
  }
  const CommitStats stats = committer.stats();
  state.SetItemsProcessed(static_cast<int64_t>(stats.writes));
  state.counters["syncs"] = static_cast<double>(stats.batches);
  state.counters["writes_per_sync"] =
      stats.batches == 0 ? 0.0 : static_cast<double>(stats.writes) / stats.batches;
  state.counters["avg_sync_us"] =
      stats.batches == 0
          ? 0.0
          : std::chrono::duration<double, std::micro>(stats.total_sync_latency).count() /
                stats.batches;
}

void BM_GroupCommitBatch(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  BenchDir dir;
  auto db = Database::Open(dir.path());
  if (dir.path().empty() || !db.ok()) {
    state.SkipWithError(db.ok() ? "cannot create bench dir" : db.status().ToString().c_str());
    return;
  }
  GroupCommitter committer(db->get());
  uint64_t key = 0;
  for (auto _ : state) {
    WriteBatch b;
    for (size_t i = 0; i < n; ++i) b.Put(BenchKey(key++), kValue);
    Status s = committer.SubmitAndWait(std::move(b));
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
  }
  const CommitStats stats = committer.stats();
  state.SetItemsProcessed(static_cast<int64_t>(stats.writes));
  state.counters["syncs"] = static_cast<double>(stats.batches);
  state.counters["avg_sync_us"] =
      stats.batches == 0
          ? 0.0
          : std::chrono::duration<double, std::micro>(stats.total_sync_latency).count() /
                stats.batches;
}

BENCHMARK(BM_GroupCommitMerged)->Arg(1)->Arg(64)->Arg(1024)->UseRealTime();
BENCHMARK(BM_GroupCommitBatch)->Arg(1)->Arg(64)->Arg(1024)->UseRealTime();

}  // namespace
}  // namespace tipd::storage

BENCHMARK_MAIN();
