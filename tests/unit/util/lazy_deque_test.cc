// LazyDeque: the same answers as std::deque under a random sequence of the
// operations it offers, and memory held exactly while it is not empty.
#include "util/lazy_deque.h"

#include <gtest/gtest.h>

#include <deque>
#include <random>
#include <string>
#include <vector>

#include "tests/support/test_support.h"

namespace tipd {
namespace {

TEST(LazyDequeTest, EmptyHoldsNothingAndIteratesNothing) {
  LazyDeque<std::string> q;
  EXPECT_FALSE(q.allocated());
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.size(), 0u);
  EXPECT_EQ(q.begin(), q.end());
  const LazyDeque<std::string>& c = q;
  EXPECT_EQ(c.begin(), c.end());
  q.erase(q.begin(), q.end());  // an empty range is allowed on an empty queue
  EXPECT_FALSE(q.allocated());
  LazyDeque<std::string> copy = q;
  EXPECT_FALSE(copy.allocated());
}

TEST(LazyDequeTest, FreesItsMemoryWhenTheLastElementLeaves) {
  LazyDeque<int> q;
  q.push_back(1);
  q.push_back(2);
  q.push_back(3);
  EXPECT_TRUE(q.allocated());
  q.erase(q.begin(), q.begin() + 2);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q.front(), 3);
  EXPECT_TRUE(q.allocated());
  q.pop_back();
  EXPECT_FALSE(q.allocated());
  q.push_back(4);
  q.clear();
  EXPECT_FALSE(q.allocated());
  EXPECT_TRUE(q.empty());
}

// Random pushes, front erases, pop_backs, clears, copies and moves, checked
// against std::deque after every step.
TEST(LazyDequeTest, BehavesLikeStdDeque) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 gen(seed);
  LazyDeque<std::string> q;
  std::deque<std::string> ref;
  for (int step = 0; step < 5000; ++step) {
    const int op = static_cast<int>(gen() % 10);
    if (op < 5) {
      std::string v = std::to_string(gen() % 1000) + std::string(gen() % 40, 'x');
      q.push_back(v);
      ref.push_back(v);
    } else if (op < 7 && !ref.empty()) {
      const size_t n = gen() % (ref.size() + 1);
      q.erase(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(n));
      ref.erase(ref.begin(), ref.begin() + static_cast<std::ptrdiff_t>(n));
    } else if (op == 7 && !ref.empty()) {
      q.pop_back();
      ref.pop_back();
    } else if (op == 8 && gen() % 8 == 0) {
      q.clear();
      ref.clear();
    } else if (op == 9) {
      // A copy is independent: changing it leaves q as it was, unless q
      // takes it (by copy or by move).
      LazyDeque<std::string> copy = q;
      if (!ref.empty()) copy.front() += "!";
      const int take = static_cast<int>(gen() % 3);
      if (take == 1) q = copy;
      if (take == 2) q = std::move(copy);
      if (take != 0 && !ref.empty()) ref.front() += "!";
    }
    ASSERT_EQ(q.size(), ref.size()) << "step " << step;
    ASSERT_EQ(q.empty(), ref.empty());
    ASSERT_EQ(q.allocated(), !ref.empty()) << "step " << step;
    ASSERT_EQ(std::vector<std::string>(q.begin(), q.end()),
              std::vector<std::string>(ref.begin(), ref.end()))
        << "step " << step;
    if (!ref.empty()) {
      ASSERT_EQ(q.front(), ref.front());
      ASSERT_EQ(q.back(), ref.back());
      const size_t i = gen() % ref.size();
      ASSERT_EQ(q[i], ref[i]);
    }
  }
}

}  // namespace
}  // namespace tipd
