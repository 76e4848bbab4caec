// GET /v1/stats at 1M tips (node/stats.h; the issue asks p99 <= 50 ms).
//
// The index is filled once with 1,000,000 tips: 30 days, 20 channels (10
// peers), both directions, 4 app names, updates of 1-8 tips, log-normal
// amounts, so about 565k minute buckets. Every query spans the whole 30 days.
//
// BM_StatsQuery/G: one query grouped by G (0 none, 1 peer, 2 channel,
//   3 app_name, 4 day); counters p50_ms and p99_ms over 200 timed queries.
//   It reads the daily and hourly roll-ups, minute buckets only at the edges.
// BM_StatsQueryMinutes/G: the same answer from a walk of every minute bucket
//   (QueryMinutes, the query before the roll-ups), 20 timed queries.
// BM_Load: a reload of the 565k stored buckets, roll-ups derived (1 run).
// BM_StageUpdate: the hot-path cost the index adds to one update of 4 tips
//   (aggregate in memory, encode the touched bucket into the batch).
//
// Run: build/bench/bench_stats (TIPD_BENCH_DIR: where the
// scratch database goes, default /tmp).
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "node/stats.h"

namespace tipd::node {
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

constexpr uint64_t kStart = 1'790'000'000'000;
constexpr uint64_t kSpan = 30ull * 24 * 3600 * 1000;
constexpr int kTips = 1'000'000;

struct Filled {
  BenchDir dir;
  std::unique_ptr<storage::Database> db;
  std::unique_ptr<StatsIndex> index;
  Filled() {
    auto opened = storage::Database::Open(dir.path() / "db");
    if (!opened.ok()) std::abort();
    db = std::move(opened).value();
    index = std::make_unique<StatsIndex>(db.get());
    (void)index->Load();
    std::mt19937_64 rng(42);
    std::lognormal_distribution<double> amount(3.0, 1.2);
    const char* apps[] = {"podcast", "video", "stream", ""};
    std::vector<std::string> channels;
    for (int c = 0; c < 20; ++c) {
      channels.push_back(std::string(32, static_cast<char>(c + 1)));
      index->NoteChannel(channels.back(), "02peer" + std::to_string(c / 2));
    }
    storage::WriteBatch all;  // written once at the end, for BM_Load
    int done = 0;
    uint64_t t = kStart;
    while (done < kTips) {
      const int n = std::min<int>(1 + static_cast<int>(rng() % 8), kTips - done);
      google::protobuf::RepeatedPtrField<v1::Tip> tips;
      for (int i = 0; i < n; ++i) {
        v1::Tip* tip = tips.Add();
        tip->set_amount(1 + static_cast<uint64_t>(amount(rng)));
        auto* e = tip->add_metadata();
        e->set_key("app_name");
        e->set_value(apps[rng() % 4]);
      }
      index->StageTips(&all, channels[rng() % channels.size()],
                       static_cast<storage::Direction>(rng() % 2), tips, t);
      t += kSpan / (kTips / 4);
      done += n;
    }
    if (!db->Write(all).ok()) std::abort();
  }
};

Filled& Index() {
  static Filled* f = new Filled();
  return *f;
}

template <bool kMinutes>
void BM_StatsQuery(benchmark::State& state) {
  Filled& f = Index();
  const auto group = static_cast<StatsGroupBy>(state.range(0));
  std::vector<double> ms;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    v1::StatsResponse r = kMinutes ? f.index->QueryMinutes(kStart, kStart + kSpan, group)
                                   : f.index->Query(kStart, kStart + kSpan, group);
    benchmark::DoNotOptimize(r);
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  state.counters["p50_ms"] = ms[ms.size() / 2];
  state.counters["p99_ms"] = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  state.counters["buckets"] = static_cast<double>(f.index->bucket_count());
  state.counters["hours"] = static_cast<double>(f.index->hour_rollup_count());
  state.counters["days"] = static_cast<double>(f.index->day_rollup_count());
}
BENCHMARK(BM_StatsQuery<false>)
    ->Name("BM_StatsQuery")
    ->DenseRange(0, 4)
    ->Iterations(200)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StatsQuery<true>)
    ->Name("BM_StatsQueryMinutes")
    ->DenseRange(0, 4)
    ->Iterations(20)
    ->Unit(benchmark::kMillisecond);

void BM_Load(benchmark::State& state) {
  Filled& f = Index();
  size_t hours = 0;
  for (auto _ : state) {
    StatsIndex reloaded(f.db.get());
    if (!reloaded.Load().ok()) std::abort();
    hours = reloaded.hour_rollup_count();
    benchmark::DoNotOptimize(hours);
  }
  state.counters["hour_rollups"] = static_cast<double>(hours);
}
BENCHMARK(BM_Load)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_StageUpdate(benchmark::State& state) {
  Filled& f = Index();
  google::protobuf::RepeatedPtrField<v1::Tip> tips;
  for (int i = 0; i < 4; ++i) {
    v1::Tip* tip = tips.Add();
    tip->set_amount(10 + i);
    auto* e = tip->add_metadata();
    e->set_key("app_name");
    e->set_value("podcast");
  }
  const std::string channel(32, '\x01');
  uint64_t t = kStart + kSpan;
  for (auto _ : state) {
    storage::WriteBatch batch;
    f.index->StageTips(&batch, channel, storage::Direction::kLocalToRemote, tips, t);
    t += 250;
    benchmark::DoNotOptimize(batch);
  }
  state.SetItemsProcessed(state.iterations() * 4);
}
BENCHMARK(BM_StageUpdate);

}  // namespace
}  // namespace tipd::node

BENCHMARK_MAIN();
