// Disk faults under the storage layer (storage/fault_env.h): every injected
// fault reaches the caller as a clear Status, a failed write is all-or-nothing
// after reopen, and the GroupCommitter fails every submission of a failed
// group. Each test prints the faults it injected ("[faults] ...") for the
// figures in docs/storage.md.
#include "storage/fault_env.h"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "tests/unit/storage/first_batch_gate.h"

namespace tipd::storage {
namespace {

std::string Key(int batch, int i) {
  std::string key = "k";
  AppendBigEndian64(&key, (uint64_t(batch) << 32) | uint32_t(i));
  return key;
}

// A batch of `n` Puts under batch number `batch`, with values big enough that
// a few hundred of them fill LevelDB's smallest memtable.
WriteBatch MakeBatch(int batch, int n, size_t value_bytes = 100) {
  WriteBatch b;
  for (int i = 0; i < n; ++i) b.Put(Key(batch, i), std::string(value_bytes, char('a' + i % 26)));
  return b;
}

// How many of batch `batch`'s `n` keys the database holds.
int CountPresent(Database& db, int batch, int n) {
  int present = 0;
  for (int i = 0; i < n; ++i) {
    auto v = db.Get(Key(batch, i));
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    if (v.ok() && v->has_value()) ++present;
  }
  return present;
}

Options WithEnv(FaultEnv* env) {
  Options o;
  o.env = env;
  o.write_buffer_bytes = 64 << 10;  // LevelDB's minimum: compactions come quickly
  return o;
}

void Report(const char* test, const FaultEnv& env) {
  std::printf("[faults] %s: %llu injected (%s)\n", test,
              static_cast<unsigned long long>(env.counters().TotalInjected()),
              env.counters().InjectedSummary().c_str());
}

class FaultEnvTest : public ::testing::Test {
 protected:
  std::unique_ptr<Database> Open() {
    auto db = Database::Open(dir_.path(), WithEnv(&env_));
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    return db.ok() ? std::move(db).value() : nullptr;
  }
  void TearDown() override {
    Report(::testing::UnitTest::GetInstance()->current_test_info()->name(), env_);
  }

  testing::TempDir dir_{"tipd-faultenv"};
  FaultEnv env_;
};

TEST(FaultEnvNamesTest, ClassifiesLevelDbFiles) {
  EXPECT_EQ(ClassifyFile("/d/000012.log"), FileKind::kLog);
  EXPECT_EQ(ClassifyFile("/d/000012.ldb"), FileKind::kTable);
  EXPECT_EQ(ClassifyFile("/d/000012.sst"), FileKind::kTable);
  EXPECT_EQ(ClassifyFile("/d/MANIFEST-000002"), FileKind::kManifest);
  EXPECT_EQ(ClassifyFile("/d/CURRENT"), FileKind::kCurrent);
  EXPECT_EQ(ClassifyFile("/d/000003.dbtmp"), FileKind::kCurrent);
  EXPECT_EQ(ClassifyFile("/d/LOCK"), FileKind::kOther);
  EXPECT_EQ(ClassifyFile("/d/LOG"), FileKind::kOther);
  EXPECT_EQ(ClassifyFile("/d/x.log"), FileKind::kOther);
  EXPECT_EQ(ClassifyFile("000012.log"), FileKind::kLog);
}

TEST_F(FaultEnvTest, FailsTheNthSyncFromNowOnceAndCountsIt) {
  auto db = Open();
  ASSERT_NE(db, nullptr);
  env_.ResetCounters();
  env_.FailNth(FaultOp::kSync, 3, FileKind::kLog);
  EXPECT_TRUE(env_.armed());
  ASSERT_TRUE(db->Write(MakeBatch(1, 1)).ok());
  ASSERT_TRUE(db->Write(MakeBatch(2, 1)).ok());
  Status third = db->Write(MakeBatch(3, 1));
  EXPECT_EQ(third.code(), StatusCode::kIOError) << third.ToString();
  EXPECT_NE(third.message().find("injected sync failure"), std::string::npos) << third.ToString();
  EXPECT_NE(third.message().find(dir_.path().string()), std::string::npos) << third.ToString();
  EXPECT_FALSE(env_.armed());
  const FaultCounters c = env_.counters();
  EXPECT_EQ(c.Calls(FaultOp::kSync, FileKind::kLog), 3u);
  EXPECT_EQ(c.Injected(FaultOp::kSync, FileKind::kLog), 1u);
  EXPECT_EQ(c.TotalInjected(), 1u);
  EXPECT_EQ(c.InjectedSummary(), "sync/log=1");
}

// A failed log write (nothing or half of the record reached the file) is
// reported, is not visible after reopen, and the handle refuses every later
// write: the log's tail is undefined, and a record appended after a torn one
// would make the log unreadable at the next open.
TEST_F(FaultEnvTest, AFailedLogAppendIsReportedAndInvisibleAfterReopen) {
  for (bool torn : {false, true}) {
    SCOPED_TRACE(torn ? "torn append" : "append writes nothing");
    testing::TempDir dir("tipd-faultenv-append");
    auto opened = Database::Open(dir.path(), WithEnv(&env_));
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    std::unique_ptr<Database> db = std::move(opened).value();
    ASSERT_TRUE(db->Write(MakeBatch(1, 10)).ok());
    FaultRule rule;
    rule.op = FaultOp::kAppend;
    rule.kind = FileKind::kLog;
    rule.skip = 1;  // the record's header goes through, its body fails
    rule.torn = torn;
    env_.Inject(rule);
    Status failed = db->Write(MakeBatch(2, 10));
    EXPECT_EQ(failed.code(), StatusCode::kIOError) << failed.ToString();
    EXPECT_NE(failed.message().find("injected append failure"), std::string::npos);
    env_.Clear();
    // The disk is healthy again, but this handle no longer writes.
    Status later = db->Write(MakeBatch(3, 10));
    EXPECT_EQ(later.code(), StatusCode::kIOError) << later.ToString();
    db.reset();
    auto reopened = Database::Open(dir.path(), WithEnv(&env_));
    ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
    EXPECT_EQ(CountPresent(**reopened, 1, 10), 10);
    EXPECT_EQ(CountPresent(**reopened, 2, 10), 0);
    EXPECT_EQ(CountPresent(**reopened, 3, 10), 0);
    ASSERT_TRUE((*reopened)->Write(MakeBatch(4, 10)).ok());
    EXPECT_EQ(CountPresent(**reopened, 4, 10), 10);
  }
}

// A failed sync leaves the batch's durability unknown: after reopen it is
// either entirely there or entirely absent, never in part.
TEST_F(FaultEnvTest, AFailedSyncIsAllOrNothingAfterReopen) {
  auto db = Open();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Write(MakeBatch(1, 50)).ok());
  env_.FailNth(FaultOp::kSync, 1, FileKind::kLog);
  Status failed = db->Write(MakeBatch(2, 50));
  ASSERT_EQ(failed.code(), StatusCode::kIOError) << failed.ToString();
  Status later = db->Write(MakeBatch(3, 50));
  EXPECT_FALSE(later.ok());
  db.reset();
  db = Open();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(CountPresent(*db, 1, 50), 50);
  const int second = CountPresent(*db, 2, 50);
  EXPECT_TRUE(second == 0 || second == 50) << second << " of 50 keys of the failed batch";
  EXPECT_EQ(CountPresent(*db, 3, 50), 0);
}

TEST_F(FaultEnvTest, DiskFullRefusesWritesWithEnospcUntilCleared) {
  auto db = Open();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Write(MakeBatch(1, 5)).ok());
  env_.SetDiskFull(true);
  Status full = db->Write(MakeBatch(2, 5));
  EXPECT_EQ(full.code(), StatusCode::kIOError) << full.ToString();
  EXPECT_NE(full.message().find("No space left on device"), std::string::npos) << full.ToString();
  // Reads still work on a full disk.
  EXPECT_EQ(CountPresent(*db, 1, 5), 5);
  env_.SetDiskFull(false);
  db.reset();
  db = Open();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(CountPresent(*db, 1, 5), 5);
  EXPECT_EQ(CountPresent(*db, 2, 5), 0);
  ASSERT_TRUE(db->Write(MakeBatch(3, 5)).ok());
}

// A compaction (memtable to table) that cannot create, write or sync its
// table, or update the MANIFEST, stops the database: the next write reports
// the background error, and everything acknowledged survives a reopen.
TEST_F(FaultEnvTest, BackgroundCompactionFaultsReachTheNextWrite) {
  struct Case {
    FaultOp op;
    FileKind kind;
  };
  for (Case c :
       {Case{FaultOp::kCreate, FileKind::kTable}, Case{FaultOp::kAppend, FileKind::kTable},
        Case{FaultOp::kSync, FileKind::kTable}, Case{FaultOp::kAppend, FileKind::kManifest},
        Case{FaultOp::kSync, FileKind::kManifest}}) {
    SCOPED_TRACE(std::string(FaultOpName(c.op)) + " " + std::string(FileKindName(c.kind)));
    testing::TempDir dir("tipd-faultenv-compaction");
    auto opened = Database::Open(dir.path(), WithEnv(&env_));
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    std::unique_ptr<Database> db = std::move(opened).value();
    env_.FailFromNow(c.op, c.kind);
    const uint64_t before = env_.counters().Injected(c.op, c.kind);
    // Keep writing until the memtable flush fails and a write reports it.
    int acked = 0;
    Status first_error;
    for (int b = 0; b < 400 && first_error.ok(); ++b) {
      Status s = db->Write(MakeBatch(b, 10));
      if (s.ok()) {
        acked = b + 1;
      } else {
        first_error = s;
      }
    }
    ASSERT_FALSE(first_error.ok()) << "no write failed";
    EXPECT_EQ(first_error.code(), StatusCode::kIOError) << first_error.ToString();
    EXPECT_NE(first_error.message().find("injected"), std::string::npos) << first_error.ToString();
    EXPECT_GT(env_.counters().Injected(c.op, c.kind), before);
    env_.Clear();
    db.reset();
    auto reopened = Database::Open(dir.path(), WithEnv(&env_));
    ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
    for (int b = 0; b < acked; ++b) ASSERT_EQ(CountPresent(**reopened, b, 10), 10) << "batch " << b;
    const int failed = CountPresent(**reopened, acked, 10);
    EXPECT_TRUE(failed == 0 || failed == 10) << failed;
  }
}

// Opening writes a new MANIFEST and installs it through CURRENT (a temporary
// file renamed over it). Each step's failure is a clear open error, and the
// database opens intact once the disk is healthy.
TEST_F(FaultEnvTest, OpenFailsCleanlyOnEveryManifestAndCurrentFault) {
  {
    auto db = Open();
    ASSERT_NE(db, nullptr);
    ASSERT_TRUE(db->Write(MakeBatch(1, 20)).ok());
  }
  struct Case {
    FaultOp op;
    FileKind kind;
  };
  for (Case c :
       {Case{FaultOp::kCreate, FileKind::kManifest}, Case{FaultOp::kAppend, FileKind::kManifest},
        Case{FaultOp::kSync, FileKind::kManifest}, Case{FaultOp::kCreate, FileKind::kCurrent},
        Case{FaultOp::kSync, FileKind::kCurrent}, Case{FaultOp::kRename, FileKind::kCurrent},
        Case{FaultOp::kCreate, FileKind::kLog}}) {
    SCOPED_TRACE(std::string(FaultOpName(c.op)) + " " + std::string(FileKindName(c.kind)));
    env_.FailNth(c.op, 1, c.kind);
    auto failed = Database::Open(dir_.path(), WithEnv(&env_));
    ASSERT_FALSE(failed.ok());
    EXPECT_EQ(failed.status().code(), StatusCode::kIOError) << failed.status().ToString();
    EXPECT_NE(failed.status().message().find("injected"), std::string::npos)
        << failed.status().ToString();
    EXPECT_NE(failed.status().message().find(dir_.path().string()), std::string::npos);
    env_.Clear();
    auto db = Open();
    ASSERT_NE(db, nullptr);
    EXPECT_EQ(CountPresent(*db, 1, 20), 20);
  }
}

// Many submissions merged into one failed write all fail with its error, and
// after reopen the group is entirely present or entirely absent.
TEST_F(FaultEnvTest, GroupCommitterFailsEverySubmissionOfAFailedGroup) {
  for (FaultOp op : {FaultOp::kAppend, FaultOp::kSync}) {
    SCOPED_TRACE(std::string(FaultOpName(op)));
    testing::TempDir dir("tipd-faultenv-group");
    auto opened = Database::Open(dir.path(), WithEnv(&env_));
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    std::unique_ptr<Database> db = std::move(opened).value();
    FirstBatchGate gate;
    GroupCommitOptions options;
    options.on_batch = [&gate](const CommitBatchInfo& info) { gate.OnBatch(info); };
    GroupCommitter committer(db.get(), options);
    // The first write holds the writer; 20 submissions queue behind it and
    // become one merged write, which fails.
    std::mutex mu;
    std::vector<Status> results(21);
    std::vector<int> calls(21, 0);
    std::condition_variable cv;
    int completed = 0;
    committer.Submit(MakeBatch(0, 3), [&](Status s) {
      std::lock_guard<std::mutex> lock(mu);
      results[0] = s;
      ++calls[0];
    });
    gate.WaitEntered();
    for (int i = 1; i <= 20; ++i) {
      committer.Submit(MakeBatch(i, 3), [&, i](Status s) {
        std::lock_guard<std::mutex> lock(mu);
        results[i] = s;
        ++calls[i];
        ++completed;
        cv.notify_all();
      });
    }
    env_.FailNth(op, 1, FileKind::kLog);
    gate.Release();
    {
      // The failed group has completed before the next submission, so that
      // one cannot join it.
      std::unique_lock<std::mutex> lock(mu);
      ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return completed == 20; }));
    }
    // Later submissions fail with the same sticky error, without a write.
    Status after = committer.SubmitAndWait(MakeBatch(99, 3));
    committer.Stop();
    env_.Clear();
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(results[0].ok()) << results[0].ToString();
    for (int i = 1; i <= 20; ++i) {
      EXPECT_EQ(calls[i], 1) << "submission " << i;
      EXPECT_EQ(results[i].code(), StatusCode::kIOError) << i << ": " << results[i].ToString();
      EXPECT_EQ(results[i].message(), results[1].message());
    }
    EXPECT_EQ(after.code(), StatusCode::kIOError);
    const CommitStats stats = committer.stats();
    EXPECT_EQ(stats.batches, 2u);
    EXPECT_EQ(stats.submissions, 1u);
    EXPECT_EQ(stats.failed_submissions, 21u);
    db.reset();
    auto reopened = Database::Open(dir.path(), WithEnv(&env_));
    ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
    EXPECT_EQ(CountPresent(**reopened, 0, 3), 3);
    int present = 0;
    for (int i = 1; i <= 20; ++i) present += CountPresent(**reopened, i, 3);
    EXPECT_TRUE(present == 0 || present == 60) << present << " of 60 keys of the failed group";
    if (op == FaultOp::kAppend) {
      EXPECT_EQ(present, 0);
    }
    EXPECT_EQ(CountPresent(**reopened, 99, 3), 0);
  }
}

// Faults from many threads at once: the Env's rules and counters are shared
// by LevelDB's writer and compaction threads and the test. Each round draws a
// fault (append, torn append, sync or table/log creation) at a random point;
// TIPD_DISK_FAULT_ROUNDS sets the number of rounds (CI default 4; the long
// mode in docs/storage.md runs 200).
TEST_F(FaultEnvTest, ConcurrentWritersUnderRandomFaultsNeverCrashOrTear) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  const char* rounds_env = std::getenv("TIPD_DISK_FAULT_ROUNDS");
  const int rounds = rounds_env != nullptr ? std::max(1, std::atoi(rounds_env)) : 4;
  std::mt19937_64 rng(seed);
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    testing::TempDir dir("tipd-faultenv-threads");
    env_.Clear();
    auto opened = Database::Open(dir.path(), WithEnv(&env_));
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    std::unique_ptr<Database> db = std::move(opened).value();
    GroupCommitter committer(db.get());
    // The fault lands on a random log or table operation some way in.
    const FaultOp ops[] = {FaultOp::kAppend, FaultOp::kSync, FaultOp::kCreate};
    FaultRule rule;
    rule.op = ops[rng() % 3];
    // Creates are few (a log and a table per memtable flush): fail an early one.
    rule.skip = rule.op == FaultOp::kCreate ? rng() % 6 : 5 + rng() % 60;
    rule.times = FaultRule::kForever;
    rule.torn = rng() % 2 == 1;
    env_.Inject(rule);
    std::mutex mu;
    std::vector<int> acked;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 60; ++i) {
          const int batch = t * 1000 + i;
          if (committer.SubmitAndWait(MakeBatch(batch, 8, 300)).ok()) {
            std::lock_guard<std::mutex> lock(mu);
            acked.push_back(batch);
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    committer.Stop();
    EXPECT_FALSE(committer.health().ok()) << "the fault never fired";
    env_.Clear();
    db.reset();
    auto reopened = Database::Open(dir.path(), WithEnv(&env_));
    ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
    for (int batch : acked) {
      ASSERT_EQ(CountPresent(**reopened, batch, 8), 8) << "acked batch " << batch;
    }
    for (int t = 0; t < 4; ++t) {
      for (int i = 0; i < 60; ++i) {
        const int n = CountPresent(**reopened, t * 1000 + i, 8);
        ASSERT_TRUE(n == 0 || n == 8) << "batch " << t * 1000 + i << " has " << n << " of 8 keys";
      }
    }
  }
}

}  // namespace
}  // namespace tipd::storage
