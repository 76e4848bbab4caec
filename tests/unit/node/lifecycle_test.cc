#include "node/lifecycle.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <sstream>

#include "node/logging.h"
#include "tests/support/test_support.h"

namespace tipd::node {
namespace {

namespace fs = std::filesystem;

mode_t ModeOf(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `child` in a forked process and returns its exit status (as from
// waitpid), so tests can check behaviour across processes or that exits.
template <typename F>
int RunInChild(F child) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int code = child();
    std::_Exit(code);
  }
  EXPECT_GT(pid, 0);
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  return status;
}

// Runs `io` until `done()` or a 10 s deadline; returns done().
template <typename F>
bool RunUntil(boost::asio::io_context& io, F done) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.run_one_for(std::chrono::milliseconds(100));
  }
  return done();
}

// ---- PrepareDataDir ----

TEST(PrepareDataDir, CreatesMissingDirWithMode0700) {
  testing::TempDir tmp;
  fs::path dir = tmp.path() / "a" / "b" / "data";
  mode_t old_umask = ::umask(0);  // the mode must not depend on the umask
  Status st = PrepareDataDir(dir);
  ::umask(old_umask);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(fs::is_directory(dir));
  EXPECT_EQ(ModeOf(dir), 0700u);
}

TEST(PrepareDataDir, ExistingDirIsAcceptedAndKeepsItsMode) {
  testing::TempDir tmp;
  fs::path dir = tmp.path() / "data";
  fs::create_directory(dir);
  ::chmod(dir.c_str(), 0750);
  ASSERT_TRUE(PrepareDataDir(dir).ok());
  EXPECT_EQ(ModeOf(dir), 0750u);
}

TEST(PrepareDataDir, RefusesAFile) {
  testing::TempDir tmp;
  fs::path file = tmp.path() / "file";
  std::ofstream(file) << "x";
  Status st = PrepareDataDir(file);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("data dir " + file.string() + " exists but is not a directory"),
            std::string::npos)
      << st.message();
  EXPECT_EQ(PrepareDataDir("").code(), StatusCode::kInvalidArgument);
}

TEST(PrepareDataDir, RefusesADirItCannotWrite) {
  testing::TempDir tmp;
  ::chmod(tmp.path().c_str(), 0755);
  fs::path dir = tmp.path() / "readonly";
  fs::create_directory(dir);
  ::chmod(dir.c_str(), 0555);
  // Root may write anywhere, so check as an unprivileged user in a child.
  int status = RunInChild([&] {
    if (::geteuid() == 0 && ::setgid(65534) != 0) return 10;
    if (::geteuid() == 0 && ::setuid(65534) != 0) return 11;
    Status st = PrepareDataDir(dir);
    if (st.code() != StatusCode::kPermissionDenied) return 12;
    if (st.message().find("data dir " + dir.string() + " is not writable") == std::string::npos) {
      return 13;
    }
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// ---- PidLock ----

TEST(PidLock, WritesPidAndRefusesASecondLock) {
  testing::TempDir tmp;
  auto lock = PidLock::Acquire(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status().ToString();
  EXPECT_EQ(lock->path(), tmp.path() / "tipd.pid");
  EXPECT_EQ(ReadAll(tmp.path() / "tipd.pid"), std::to_string(::getpid()) + "\n");

  // A second open file description in this process conflicts too.
  auto again = PidLock::Acquire(tmp.path());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("data dir " + tmp.path().string() + " is in use by pid " +
                                          std::to_string(::getpid())),
            std::string::npos)
      << again.status().message();

  // And so does another process.
  const std::string want = "is in use by pid " + std::to_string(::getpid());
  int status = RunInChild([&] {
    auto other = PidLock::Acquire(tmp.path());
    if (other.ok()) return 1;
    return other.status().message().find(want) == std::string::npos ? 2 : 0;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(PidLock, ReleasedOnDestructionAndMovable) {
  testing::TempDir tmp;
  {
    auto lock = PidLock::Acquire(tmp.path());
    ASSERT_TRUE(lock.ok());
    PidLock moved = std::move(lock).value();
    EXPECT_FALSE(PidLock::Acquire(tmp.path()).ok());  // still held after the move
  }
  EXPECT_EQ(ReadAll(tmp.path() / "tipd.pid"), "");  // truncated on release
  int status = RunInChild([&] {
    auto lock = PidLock::Acquire(tmp.path());
    if (!lock.ok()) return 1;
    return ReadAll(tmp.path() / "tipd.pid") == std::to_string(::getpid()) + "\n" ? 0 : 2;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(PidLock::Acquire(tmp.path()).ok());  // the child's exit released it
}

TEST(PidLock, MissingDataDirIsAnIOError) {
  testing::TempDir tmp;
  auto lock = PidLock::Acquire(tmp.path() / "missing");
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), StatusCode::kIOError);
  EXPECT_NE(lock.status().message().find("tipd.pid"), std::string::npos);
}

// ---- Clocks ----

TEST(Clock, ManualClockMovesOnlyWhenTold) {
  ManualClock clock(1'000);
  auto steady = clock.SteadyNow();
  EXPECT_EQ(clock.NowMs(), 1'000);
  EXPECT_EQ(clock.SteadyNow(), steady);
  clock.AdvanceMs(250);
  EXPECT_EQ(clock.NowMs(), 1'250);
  EXPECT_EQ(clock.SteadyNow() - steady, std::chrono::milliseconds(250));
  clock.SetNowMs(500);  // wall clock may go back; steady does not
  EXPECT_EQ(clock.NowMs(), 500);
  EXPECT_EQ(clock.SteadyNow() - steady, std::chrono::milliseconds(250));
}

TEST(Clock, SystemClockIsPlausible) {
  SystemClock clock;
  const Clock& c = clock;
  EXPECT_GT(c.NowMs(), 1'600'000'000'000);  // after 2020
  auto a = c.SteadyNow();
  EXPECT_LE(a, c.SteadyNow());
}

// ---- ShutdownSignals ----

TEST(ShutdownSignals, SigtermCallsStopOnce) {
  boost::asio::io_context io;
  int calls = 0;
  int got = 0;
  ShutdownSignals signals(io, [&](int n) {
    ++calls;
    got = n;
  });
  EXPECT_FALSE(signals.stop_requested());
  ASSERT_EQ(::raise(SIGTERM), 0);
  ASSERT_TRUE(RunUntil(io, [&] { return calls > 0; }));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(got, SIGTERM);
  EXPECT_TRUE(signals.stop_requested());
}

TEST(ShutdownSignals, SigintAndSighup) {
  boost::asio::io_context io;
  int stops = 0, hups = 0;
  ShutdownSignals signals(
      io, [&](int n) { stops += n == SIGINT ? 1 : 100; }, [&] { ++hups; });
  ASSERT_EQ(::raise(SIGHUP), 0);
  ASSERT_TRUE(RunUntil(io, [&] { return hups == 1; }));
  ASSERT_EQ(::raise(SIGHUP), 0);
  ASSERT_TRUE(RunUntil(io, [&] { return hups == 2; }));
  EXPECT_EQ(stops, 0);
  ASSERT_EQ(::raise(SIGINT), 0);
  ASSERT_TRUE(RunUntil(io, [&] { return stops > 0; }));
  EXPECT_EQ(stops, 1);
  EXPECT_EQ(hups, 2);
}

TEST(ShutdownSignals, DestructionRestoresDefaultHandlers) {
  {
    boost::asio::io_context io;
    ShutdownSignals signals(
        io, [](int) {}, [] {});
    struct sigaction sa {};
    ASSERT_EQ(::sigaction(SIGTERM, nullptr, &sa), 0);
    EXPECT_NE(sa.sa_handler, SIG_DFL);
  }
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    struct sigaction sa {};
    ASSERT_EQ(::sigaction(sig, nullptr, &sa), 0);
    EXPECT_EQ(sa.sa_handler, SIG_DFL) << sig;
  }
}

TEST(ShutdownSignals, CancelInsideTheCallbackIsSafe) {
  boost::asio::io_context io;
  bool fired = false;
  auto signals = std::make_unique<ShutdownSignals>(io, [&](int) { fired = true; });
  // The usual owner pattern: the stop callback tears the signals down.
  ShutdownSignals* raw = signals.get();
  signals.reset();
  signals = std::make_unique<ShutdownSignals>(io, [&](int) {
    fired = true;
    raw = nullptr;
    signals.reset();
  });
  ASSERT_EQ(::raise(SIGTERM), 0);
  ASSERT_TRUE(RunUntil(io, [&] { return fired; }));
  EXPECT_EQ(signals, nullptr);
  EXPECT_EQ(raw, nullptr);
  io.poll();  // any handler left over runs harmlessly
}

TEST(ShutdownSignals, SecondSignalExitsAtOnceWithALogLine) {
  testing::TempDir tmp;
  fs::path log = tmp.path() / "node.log";
  int status = RunInChild([&] {
    if (!InitLogging(LogLevel::kInfo, log, "node").ok()) return 1;
    boost::asio::io_context io;
    bool stopping = false;
    ShutdownSignals signals(io, [&](int) { stopping = true; });
    ::raise(SIGINT);
    if (!RunUntil(io, [&] { return stopping; })) return 2;
    ::raise(SIGINT);
    RunUntil(io, [] { return false; });  // the handler _Exits from inside
    return 3;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT);
  std::string text = ReadAll(log);
  EXPECT_NE(text.find("info  [node] SIGINT received, stopping"), std::string::npos) << text;
  EXPECT_NE(text.find("warn  [node] second SIGINT while stopping, exiting now"), std::string::npos)
      << text;
}

}  // namespace
}  // namespace tipd::node
