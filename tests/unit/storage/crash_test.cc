// Kills a writing process at random moments and checks, after each kill, that
// every write it acknowledged is on disk and no write is half applied.
//
// SIGKILL loses what the process held in memory but not what the kernel
// already has, so this checks the process-crash guarantee (acknowledged =
// written to the log and synced; batches atomic in recovery), not power loss.
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "tests/unit/storage/crash_layout.h"

namespace tipd::storage {
namespace {

using namespace crashtest;

constexpr int kRounds = 60;
constexpr int kMaxAcksBeforeKill = 300;

uint64_t ReadBigEndian64(std::string_view s) {
  uint64_t v = 0;
  for (char c : s) v = (v << 8) | static_cast<unsigned char>(c);
  return v;
}

struct Child {
  pid_t pid = -1;
  int ack_fd = -1;
};

Child SpawnChild(const std::string& db_dir, int round) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {};
  const std::string round_arg = std::to_string(round);
  pid_t pid = ::fork();
  if (pid == 0) {
    // Child: stdout becomes the pipe's write end (dup2 clears O_CLOEXEC).
    ::dup2(fds[1], STDOUT_FILENO);
    const char* argv[] = {TIPD_STORAGE_CRASH_CHILD, db_dir.c_str(), round_arg.c_str(), nullptr};
    ::execv(TIPD_STORAGE_CRASH_CHILD, const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return {};
  }
  return Child{pid, fds[0]};
}

// Reads one 8-byte ack; false at EOF (the child is gone).
bool ReadAck(int fd, uint64_t* seq) {
  char buf[8];
  size_t got = 0;
  while (got < sizeof(buf)) {
    ssize_t n = ::read(fd, buf + got, sizeof(buf) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  std::memcpy(seq, buf, sizeof(*seq));
  return true;
}

// Checks the whole database against every ack so far.
void VerifyDatabase(const std::filesystem::path& dir, const std::set<uint64_t>& acked) {
  auto db = Database::Open(dir);
  ASSERT_TRUE(db.ok()) << db.status().ToString();

  // Every part present, grouped by record.
  std::map<uint64_t, int> parts_by_seq;
  Status s = (*db)->ScanPrefix("r", SIZE_MAX, [&](std::string_view key, std::string_view value) {
    if (key.size() != 10) return Status::Corruption("bad key " + EscapeKey(key));
    const uint64_t seq = ReadBigEndian64(key.substr(1, 8));
    const int part = static_cast<unsigned char>(key[9]);
    if (value != PartValue(seq, part)) return Status::Corruption("bad value at " + EscapeKey(key));
    ++parts_by_seq[seq];
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();

  // No record half applied.
  for (const auto& [seq, parts] : parts_by_seq) {
    ASSERT_EQ(parts, kParts) << "record " << seq << " is half applied";
  }
  // Every acknowledged record present.
  for (uint64_t seq : acked) {
    ASSERT_TRUE(parts_by_seq.count(seq)) << "acknowledged record " << seq << " is missing";
  }
  // Per writer thread, the records present are a gapless prefix of what it
  // submitted (commits are in submission order), and its counter, written in
  // the same batches, names the last of them.
  std::map<uint64_t, std::vector<uint32_t>> indexes_by_writer;  // writer = seq with i = 0
  for (const auto& [seq, parts] : parts_by_seq) {
    indexes_by_writer[MakeSeq(SeqRound(seq), SeqThread(seq), 0)].push_back(SeqIndex(seq));
  }
  for (const auto& [writer, indexes] : indexes_by_writer) {
    for (size_t k = 0; k < indexes.size(); ++k) {
      ASSERT_EQ(indexes[k], k) << "gap in writer " << writer << "'s records";
    }
    auto counter = (*db)->Get(CounterKey(SeqRound(writer), SeqThread(writer)));
    ASSERT_TRUE(counter.ok()) << counter.status().ToString();
    ASSERT_TRUE(counter->has_value());
    EXPECT_EQ(ReadBigEndian64(**counter), writer + indexes.back());
  }
}

TEST(CrashTest, AcknowledgedWritesSurviveSigkillAndBatchesAreAtomic) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> acks_before_kill(1, kMaxAcksBeforeKill);

  tipd::testing::TempDir dir("tipd-crash");
  const auto db_dir = dir.path() / "db";
  std::set<uint64_t> acked;
  size_t total_acks = 0;
  const auto start = std::chrono::steady_clock::now();

  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const int target = acks_before_kill(rng);
    Child child = SpawnChild(db_dir.string(), round);
    ASSERT_GT(child.pid, 0) << "cannot start " << TIPD_STORAGE_CRASH_CHILD;

    int got = 0;
    uint64_t seq = 0;
    bool child_alive = true;
    while (got < target && (child_alive = ReadAck(child.ack_fd, &seq))) {
      acked.insert(seq);
      ++got;
    }
    ::kill(child.pid, SIGKILL);
    int wstatus = 0;
    ::waitpid(child.pid, &wstatus, 0);
    // Acks already in the pipe were also sent after their completion fired.
    while (ReadAck(child.ack_fd, &seq)) acked.insert(seq);
    ::close(child.ack_fd);
    ASSERT_TRUE(child_alive) << "child exited before being killed, status " << wstatus;
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL) << wstatus;
    total_acks += static_cast<size_t>(got);

    VerifyDatabase(db_dir, acked);
    if (HasFatalFailure()) return;
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  std::printf("crash test: %d rounds, %zu acknowledged records (%zu read before kills), %.2f s\n",
              kRounds, acked.size(), total_acks, std::chrono::duration<double>(elapsed).count());
}

}  // namespace
}  // namespace tipd::storage
