// The child of ChannelDbCrashTest (channel_db_test.cc): runs RunCrashScript
// on a Pair whose databases are in $TIPD_CRASH_CHILD_DIR/{a,b}, seeded with
// $TIPD_CRASH_CHILD_SEED, and after every step whose batch is durable (its
// GroupCommitter completion fired OK, and only then) writes the step's 8-byte
// number to fd 3, a pipe the parent reads. When the script is done it writes
// UINT64_MAX and waits to be killed. A failed step fails the test, and the
// process exits before the parent kills it, which the parent reports.
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tests/unit/node/channel_db_pair.h"

namespace tipd::node::dbtest {
namespace {

void Report(uint64_t step) {
  const char* p = reinterpret_cast<const char*>(&step);
  size_t left = sizeof(step);
  while (left > 0) {
    ssize_t n = ::write(3, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::_Exit(4);  // the parent is gone
    p += n;
    left -= static_cast<size_t>(n);
  }
}

TEST(ChannelDbCrashChild, RunScriptAndReportDurableSteps) {
  const char* dir = std::getenv("TIPD_CRASH_CHILD_DIR");
  const char* seed_text = std::getenv("TIPD_CRASH_CHILD_SEED");
  ASSERT_NE(dir, nullptr) << "run by ChannelDbCrashTest, which sets TIPD_CRASH_CHILD_DIR";
  ASSERT_NE(seed_text, nullptr);
  const uint64_t seed = std::strtoull(seed_text, nullptr, 10);
  Pair pair(dir, kCrashWindow, kCrashMaxTips, seed);
  uint64_t step = 0;
  pair.on_durable_step = [&] { Report(++step); };
  ASSERT_NO_FATAL_FAILURE(RunCrashScript(pair, seed, kCrashOps));
  Report(UINT64_MAX);
  for (;;) ::pause();
}

}  // namespace
}  // namespace tipd::node::dbtest
