#include <leveldb/env.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "storage/fault_env.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "tests/unit/storage/first_batch_gate.h"
#include "util/thread_name.h"

namespace tipd::storage {
namespace {

std::string Key(int thread, int i) {
  std::string key = "k";
  AppendBigEndian64(&key, (uint64_t(thread) << 32) | uint32_t(i));
  return key;
}

WriteBatch OnePut(std::string key, std::string value) {
  WriteBatch b;
  b.Put(key, value);
  return b;
}

std::unique_ptr<Database> OpenOrDie(const std::filesystem::path& dir, const Options& o = {}) {
  auto db = Database::Open(dir, o);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return db.ok() ? std::move(db).value() : nullptr;
}

// Counts completions; Wait() returns once `expected` have fired.
class CompletionCounter {
 public:
  explicit CompletionCounter(int expected) : expected_(expected) {}
  void Fire(const Status& s) {
    std::lock_guard<std::mutex> lock(mu_);
    ++fired_;
    if (!s.ok()) ++failed_;
    if (fired_ == expected_) cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return fired_ >= expected_; });
  }
  int fired() {
    std::lock_guard<std::mutex> lock(mu_);
    return fired_;
  }
  int failed() {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  const int expected_;
  int fired_ = 0;
  int failed_ = 0;
};

TEST(GroupCommitTest, ManyThreadsEveryCompletionOnceAndAllDataPersists) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 500;
  tipd::testing::TempDir dir;
  std::vector<std::atomic<int>> fired(kThreads * kPerThread);
  CompletionCounter all(kThreads * kPerThread);
  {
    auto db = OpenOrDie(dir.path());
    ASSERT_NE(db, nullptr);
    GroupCommitter committer(db.get());
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          committer.Submit(OnePut(Key(t, i), std::to_string(i)), [&, t, i](Status s) {
            fired[t * kPerThread + i].fetch_add(1);
            all.Fire(s);
          });
        }
      });
    }
    for (auto& th : threads) th.join();
    all.Wait();
    CommitStats stats = committer.stats();
    EXPECT_EQ(all.failed(), 0);
    EXPECT_EQ(stats.submissions, uint64_t{kThreads * kPerThread});
    EXPECT_EQ(stats.writes, uint64_t{kThreads * kPerThread});
    EXPECT_LE(stats.batches, stats.writes);
    EXPECT_GE(stats.batches, 1u);
    std::printf("%d submissions in %llu synced writes\n", kThreads * kPerThread,
                static_cast<unsigned long long>(stats.batches));
  }
  for (auto& f : fired) ASSERT_EQ(f.load(), 1);

  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      auto v = db->Get(Key(t, i));
      ASSERT_TRUE(v.ok()) << v.status().ToString();
      ASSERT_TRUE(v->has_value()) << t << "/" << i;
      EXPECT_EQ(**v, std::to_string(i));
    }
  }
}

TEST(GroupCommitTest, SubmissionsQueuedDuringAWriteAreMergedIntoOne) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  FirstBatchGate gate;
  GroupCommitOptions options;
  options.on_batch = [&](const CommitBatchInfo& info) { gate.OnBatch(info); };
  GroupCommitter committer(db.get(), options);

  CompletionCounter first(1);
  committer.Submit(OnePut("first", "1"), [&](Status s) { first.Fire(s); });
  gate.WaitEntered();  // the writer is busy with "first"
  constexpr int kQueued = 100;
  CompletionCounter queued(kQueued);
  for (int i = 0; i < kQueued; ++i) {
    committer.Submit(OnePut(Key(0, i), "v"), [&](Status s) { queued.Fire(s); });
  }
  EXPECT_EQ(queued.fired(), 0);
  gate.Release();
  first.Wait();
  queued.Wait();
  EXPECT_EQ(queued.failed(), 0);

  CommitStats stats = committer.stats();
  EXPECT_EQ(stats.batches, 2u);
  EXPECT_EQ(stats.writes, uint64_t{kQueued + 1});
  EXPECT_EQ(stats.max_batch_writes, uint64_t{kQueued});
  EXPECT_EQ(gate.sizes(), (std::vector<size_t>{1, kQueued}));
}

TEST(GroupCommitTest, MergedWritesRespectTheBounds) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  FirstBatchGate gate;
  GroupCommitOptions options;
  options.max_writes_per_batch = 10;
  options.on_batch = [&](const CommitBatchInfo& info) { gate.OnBatch(info); };
  GroupCommitter committer(db.get(), options);

  committer.Submit(OnePut("first", "1"), [](Status) {});
  gate.WaitEntered();
  // 95 single writes, then one submission of 25 writes: it exceeds the bound
  // on its own and must be written alone, never split.
  CompletionCounter done(96);
  for (int i = 0; i < 95; ++i) {
    committer.Submit(OnePut(Key(0, i), "v"), [&](Status s) { done.Fire(s); });
  }
  WriteBatch big;
  for (int i = 0; i < 25; ++i) big.Put(Key(1, i), "v");
  committer.Submit(std::move(big), [&](Status s) { done.Fire(s); });
  gate.Release();
  done.Wait();
  EXPECT_EQ(done.failed(), 0);
  EXPECT_EQ(gate.sizes(), (std::vector<size_t>{1, 10, 10, 10, 10, 10, 10, 10, 10, 10, 5, 25}));
}

TEST(GroupCommitTest, StopDrainsPendingWrites) {
  tipd::testing::TempDir dir;
  constexpr int kWrites = 200;
  CompletionCounter done(kWrites);
  {
    auto db = OpenOrDie(dir.path());
    ASSERT_NE(db, nullptr);
    FirstBatchGate gate;
    GroupCommitOptions options;
    options.on_batch = [&](const CommitBatchInfo& info) { gate.OnBatch(info); };
    GroupCommitter committer(db.get(), options);
    committer.Submit(OnePut("first", "1"), [](Status) {});
    gate.WaitEntered();
    for (int i = 0; i < kWrites; ++i) {
      committer.Submit(OnePut(Key(0, i), "v"), [&](Status s) { done.Fire(s); });
    }
    // Stop must wait for the gate, then write and complete all 200.
    std::thread stopper([&] { committer.Stop(); });
    gate.Release();
    stopper.join();
    EXPECT_EQ(done.fired(), kWrites);
    EXPECT_EQ(done.failed(), 0);

    // After Stop: the completion fires inline with kFailedPrecondition.
    Status late;
    committer.Submit(OnePut("late", "x"), [&](Status s) { late = s; });
    EXPECT_EQ(late.code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(committer.SubmitAndWait(OnePut("late", "x")).code(), StatusCode::kFailedPrecondition);
    committer.Stop();  // idempotent
  }
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  for (int i = 0; i < kWrites; ++i) {
    auto v = db->Get(Key(0, i));
    ASSERT_TRUE(v.ok() && v->has_value()) << i;
  }
  auto late = db->Get("late");
  ASSERT_TRUE(late.ok());
  EXPECT_FALSE(late->has_value());
}

TEST(GroupCommitTest, SubmitAndWaitAndEmptyBatches) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  GroupCommitter committer(db.get());
  EXPECT_TRUE(committer.SubmitAndWait(OnePut("a", "1")).ok());
  EXPECT_TRUE(committer.SubmitAndWait(WriteBatch()).ok());
  auto v = db->Get("a");
  ASSERT_TRUE(v.ok() && v->has_value());
  CommitStats stats = committer.stats();
  EXPECT_EQ(stats.submissions, 2u);
  EXPECT_EQ(stats.batches, 1u);  // the empty batch needs no write
  EXPECT_EQ(stats.writes, 1u);
  EXPECT_GT(stats.bytes, 0u);
  EXPECT_TRUE(committer.health().ok());
}

// `top -H` tells the committer and LevelDB's compactions apart from the io
// thread (util/thread_name.h).
TEST(GroupCommitTest, TheCommitterAndLevelDbsThreadsAreNamed) {
  tipd::testing::TempDir dir;
  Options o;
  o.write_buffer_bytes = 64 << 10;  // a flush to a table every 64 KiB
  auto db = OpenOrDie(dir.path(), o);
  ASSERT_NE(db, nullptr);
  GroupCommitter committer(db.get());
  std::promise<std::string> writer_name;
  committer.Submit(OnePut("a", "1"),
                   [&](Status) { writer_name.set_value(tipd::CurrentThreadName()); });
  EXPECT_EQ(writer_name.get_future().get(), "tipd-commit") << "completions run on the writer";
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "LevelDB's threads are not renamed under ThreadSanitizer (storage/database.cc)";
#endif
  // Enough writes for LevelDB to flush memtables and compact in the
  // background; the background thread runs under its own name.
  const auto leveldb_thread_named = [] {
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      std::ifstream in(it->path() / "comm");
      std::string name;
      if (std::getline(in, name) && name == "tipd-leveldb") return true;
    }
    return false;
  };
  const std::string value(1000, 'v');
  for (int i = 0; i < 2000 && !leveldb_thread_named(); ++i) {
    ASSERT_TRUE(committer.SubmitAndWait(OnePut("k" + std::to_string(i), value)).ok());
  }
  EXPECT_TRUE(leveldb_thread_named());
}

TEST(GroupCommitTest, SyncFailureIsStickyAndFailsEveryLaterSubmission) {
  tipd::testing::TempDir dir;
  FaultEnv env;  // storage/fault_env.h
  Options o;
  o.env = &env;
  auto db = OpenOrDie(dir.path(), o);
  ASSERT_NE(db, nullptr);
  std::vector<CommitBatchInfo> infos;
  GroupCommitOptions options;
  options.on_batch = [&](const CommitBatchInfo& info) { infos.push_back(info); };
  GroupCommitter committer(db.get(), options);

  ASSERT_TRUE(committer.SubmitAndWait(OnePut("before", "1")).ok());
  env.FailFromNow(FaultOp::kSync);
  Status failed = committer.SubmitAndWait(OnePut("during", "2"));
  EXPECT_EQ(failed.code(), StatusCode::kIOError) << failed.ToString();
  EXPECT_NE(failed.message().find("injected sync failure"), std::string::npos);
  EXPECT_NE(failed.message().find(dir.path().string()), std::string::npos);

  // Even with the disk healthy again, nothing more is accepted.
  env.Clear();
  Status later = committer.SubmitAndWait(OnePut("after", "3"));
  EXPECT_EQ(later.code(), StatusCode::kIOError);
  EXPECT_EQ(later.message(), failed.message());
  EXPECT_EQ(committer.health().message(), failed.message());

  CommitStats stats = committer.stats();
  EXPECT_TRUE(stats.failed);
  EXPECT_EQ(stats.failed_submissions, 2u);
  EXPECT_EQ(stats.submissions, 1u);
  EXPECT_EQ(stats.batches, 2u);  // "after" was never written
  committer.Stop();
  ASSERT_EQ(infos.size(), 2u);
  EXPECT_TRUE(infos[0].ok);
  EXPECT_FALSE(infos[1].ok);
}

// Submission order is the order in which Submit calls return; the test makes
// it observable by numbering each submission under a lock held across its
// Submit call. Completions must then run in exactly that order, across
// threads and across the boundaries of merged writes, and each completion
// must find its own write already readable.
TEST(GroupCommitTest, CompletionsRunInSubmissionOrderAcrossThreads) {
  constexpr int kThreads = 6;
  constexpr int kPerThread = 300;
  constexpr int kTotal = kThreads * kPerThread;
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  FirstBatchGate gate;
  GroupCommitOptions options;
  options.max_writes_per_batch = 7;  // many merged writes, many boundaries
  options.on_batch = [&](const CommitBatchInfo& info) { gate.OnBatch(info); };
  GroupCommitter committer(db.get(), options);

  std::mutex order_mu;
  std::vector<uint64_t> order;  // sequence numbers, in completion order
  int not_ok = 0;
  int not_readable = 0;
  std::atomic<uint64_t> next_seq{1};
  std::mutex submit_mu;  // makes "submission order" = sequence order
  CompletionCounter all(kTotal + 1);
  auto submit_one = [&] {
    std::lock_guard<std::mutex> lock(submit_mu);
    const uint64_t seq = next_seq.fetch_add(1);
    std::string key = "s";
    AppendBigEndian64(&key, seq);
    committer.Submit(OnePut(key, std::to_string(seq)), [&, seq, key](Status s) {
      // On the writer thread: the write must already be visible.
      auto v = db->Get(key);
      {
        std::lock_guard<std::mutex> olock(order_mu);
        order.push_back(seq);
        if (!s.ok()) ++not_ok;
        if (!v.ok() || !v->has_value()) ++not_readable;
      }
      all.Fire(s);
    });
  };
  // Sequence 0: the write the gate holds, so the first submissions queue up.
  committer.Submit(OnePut("first", "0"), [&](Status s) {
    {
      std::lock_guard<std::mutex> olock(order_mu);
      order.push_back(0);
    }
    all.Fire(s);
  });
  gate.WaitEntered();
  std::atomic<int> submitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        submit_one();
        submitted.fetch_add(1);
      }
    });
  }
  // Release the writer while the threads are still submitting, so later
  // submissions race with merged writes in progress.
  while (submitted.load() < kTotal / 4) std::this_thread::yield();
  gate.Release();
  for (auto& th : threads) th.join();
  all.Wait();

  std::lock_guard<std::mutex> olock(order_mu);
  ASSERT_EQ(order.size(), size_t{kTotal + 1});
  for (size_t i = 0; i < order.size(); ++i) {
    ASSERT_EQ(order[i], i) << "completion " << i << " ran out of submission order";
  }
  EXPECT_EQ(not_ok, 0);
  EXPECT_EQ(not_readable, 0);
  // Writes really were merged (at least the ones queued behind the gate).
  const std::vector<size_t> sizes = gate.sizes();
  EXPECT_GT(*std::max_element(sizes.begin(), sizes.end()), size_t{1});
  EXPECT_LT(sizes.size(), size_t{kTotal + 1});
}

// One synced write that carries submissions from several threads fails: every
// one of them gets the error, none is reported durable.
TEST(GroupCommitTest, AFailedSyncFailsEveryMergedSubmission) {
  tipd::testing::TempDir dir;
  FaultEnv env;  // storage/fault_env.h
  Options o;
  o.env = &env;
  auto db = OpenOrDie(dir.path(), o);
  ASSERT_NE(db, nullptr);
  FirstBatchGate gate;
  std::vector<CommitBatchInfo> infos;  // writer thread only until Stop
  GroupCommitOptions options;
  options.on_batch = [&](const CommitBatchInfo& info) {
    infos.push_back(info);
    gate.OnBatch(info);
  };
  GroupCommitter committer(db.get(), options);

  CompletionCounter first(1);
  committer.Submit(OnePut("first", "1"), [&](Status s) { first.Fire(s); });
  gate.WaitEntered();  // "first" is synced; the writer waits in the hook

  constexpr int kThreads = 3;
  constexpr int kPerThread = 20;
  std::mutex mu;
  std::vector<Status> results;
  CompletionCounter merged(kThreads * kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        committer.Submit(OnePut(Key(t, i), "v"), [&](Status s) {
          {
            std::lock_guard<std::mutex> lock(mu);
            results.push_back(s);
          }
          merged.Fire(s);
        });
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(merged.fired(), 0);
  env.FailFromNow(FaultOp::kSync);  // the next synced write fails
  gate.Release();
  first.Wait();
  merged.Wait();
  EXPECT_EQ(first.failed(), 0);
  EXPECT_EQ(merged.failed(), kThreads * kPerThread);
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const Status& s : results) {
      EXPECT_EQ(s.code(), StatusCode::kIOError) << s.ToString();
      EXPECT_NE(s.message().find("injected sync failure"), std::string::npos) << s.ToString();
    }
  }
  committer.Stop();  // joins the writer: `infos` is ours to read
  ASSERT_EQ(infos.size(), 2u);
  EXPECT_TRUE(infos[0].ok);
  EXPECT_FALSE(infos[1].ok);
  EXPECT_EQ(infos[1].submissions, size_t{kThreads * kPerThread});  // one write, all merged
  CommitStats stats = committer.stats();
  EXPECT_EQ(stats.submissions, 1u);
  EXPECT_EQ(stats.failed_submissions, uint64_t{kThreads * kPerThread});
  EXPECT_EQ(stats.writes, 1u);
}

// Stop() while a failed write is being reported and more submissions wait
// behind it: Stop returns only once every one of them has completed (with
// the sticky error, none written), and what comes after Stop is refused with
// kFailedPrecondition naming both the stop and the failure that preceded it.
TEST(GroupCommitTest, StopAfterAFailureCompletesEverythingOutstandingAndRefusesLater) {
  tipd::testing::TempDir dir;
  FaultEnv env;  // storage/fault_env.h
  Options o;
  o.env = &env;
  auto db = OpenOrDie(dir.path(), o);
  ASSERT_NE(db, nullptr);
  FirstBatchGate gate;
  GroupCommitOptions options;
  options.max_writes_per_batch = 10;
  options.on_batch = [&](const CommitBatchInfo& info) { gate.OnBatch(info); };
  GroupCommitter committer(db.get(), options);

  env.FailFromNow(FaultOp::kSync);
  Status first;
  committer.Submit(OnePut("first", "1"), [&](Status s) { first = s; });
  gate.WaitEntered();          // the failed write's hook: its completion has not run
  constexpr int kQueued = 35;  // 4 merged writes' worth; none may be written
  std::mutex mu;
  std::vector<Status> results;
  for (int i = 0; i < kQueued; ++i) {
    committer.Submit(OnePut(Key(0, i), "v"), [&](Status s) {
      std::lock_guard<std::mutex> lock(mu);
      results.push_back(s);
    });
  }
  EXPECT_EQ(committer.outstanding(), size_t{kQueued + 1});
  env.Clear();  // a healthy disk again changes nothing: the error is sticky
  std::thread stopper([&] { committer.Stop(); });
  gate.Release();
  stopper.join();

  EXPECT_EQ(first.code(), StatusCode::kIOError) << first.ToString();
  EXPECT_EQ(committer.outstanding(), 0u);
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(results.size(), size_t{kQueued});
    for (const Status& s : results) {
      EXPECT_EQ(s.code(), StatusCode::kIOError) << s.ToString();
      EXPECT_EQ(s.message(), first.message());
    }
  }
  CommitStats stats = committer.stats();
  EXPECT_EQ(stats.batches, 1u);  // only the failed write reached the disk
  EXPECT_EQ(stats.failed_submissions, uint64_t{kQueued + 1});
  EXPECT_EQ(gate.sizes(), (std::vector<size_t>{1}));

  Status late;
  committer.Submit(OnePut("late", "x"), [&](Status s) { late = s; });
  EXPECT_EQ(late.code(), StatusCode::kFailedPrecondition) << late.ToString();
  EXPECT_NE(late.message().find("stopped"), std::string::npos) << late.ToString();
  EXPECT_NE(late.message().find("injected sync failure"), std::string::npos) << late.ToString();
  Status waited = committer.SubmitAndWait(OnePut("late", "x"));
  EXPECT_EQ(waited.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(waited.message(), late.message());
  EXPECT_EQ(committer.health().code(), StatusCode::kIOError);
  committer.Stop();  // idempotent
  EXPECT_EQ(committer.stats().batches, 1u);
}

TEST(GroupCommitTest, ObserverSeesBatchSizesAndLatency) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  std::vector<CommitBatchInfo> infos;  // written on the writer thread only
  GroupCommitOptions options;
  options.on_batch = [&](const CommitBatchInfo& info) { infos.push_back(info); };
  GroupCommitter committer(db.get(), options);
  WriteBatch three;
  three.Put("a", "1");
  three.Put("b", "2");
  three.Delete("c");
  ASSERT_TRUE(committer.SubmitAndWait(std::move(three)).ok());
  committer.Stop();  // joins the writer: `infos` is ours to read
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].submissions, 1u);
  EXPECT_EQ(infos[0].writes, 3u);
  EXPECT_GT(infos[0].bytes, 0u);
  EXPECT_GT(infos[0].sync_latency.count(), 0);
  CommitStats stats = committer.stats();
  EXPECT_EQ(stats.total_sync_latency, infos[0].sync_latency);
  EXPECT_EQ(stats.max_sync_latency, infos[0].sync_latency);
}

}  // namespace
}  // namespace tipd::storage
