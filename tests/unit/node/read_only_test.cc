// What the callers of a node that turns read-only (a write failed) are told,
// in the in-process channel harness (manual time: nothing here waits for the
// 30 s ack timer). Once no write can succeed, no waiting tip can ever be
// acknowledged in this run, so every caller is answered at once: a tip whose
// update is durable (and may be paid) as pending (202, with its nonce; a
// retry with the key after the restart gets the final answer), a tip never
// signed as refused (NODE_READ_ONLY).
#include <gtest/gtest.h>

#include "tests/unit/node/channel_harness.h"

namespace tipd::testing {
namespace {

TEST(ReadOnlyAnswersTest, TipsWaitingForAnAckAreAnsweredWhenTheNodeTurnsReadOnly) {
  ChannelNet net;
  TestNode& a = net.AddNode("a", 1'000'000);
  TestNode& b = net.AddNode("b", 1'000);
  a.StartManager();
  b.StartManager();
  net.Connect(a, b);
  const std::string id = net.OpenChannel(a, b, 10'000);
  ASSERT_TRUE(net.Tip(a, id, 5, "before").ok());

  // B's acks are held: A's tip is durable and sent, its caller waits.
  net.hold_if = [&b](const TestNode& from, const v1::Envelope& env) {
    return &from == &b && env.has_ack();
  };
  auto waiting = net.TipAsync(a, id, 7, "durable, ack held", "key-1");
  ASSERT_TRUE(net.RunUntil([&] { return net.Channel(b, id).tips_received() == 2; }));
  net.Settle();
  ASSERT_FALSE(waiting->answered);

  // A's disk fails: the ack arrives but cannot be recorded.
  a.committer->Stop();
  net.FlushMessages();
  ASSERT_TRUE(net.RunUntil([&] { return !a.manager->health().ok(); }));
  // Answered without the clock moving: pending (not acked, not refused).
  ASSERT_TRUE(net.RunUntil([&] { return waiting->answered; }));
  EXPECT_FALSE(waiting->outcome.refusal.has_value()) << waiting->outcome.refusal->message;
  EXPECT_FALSE(waiting->outcome.acked);
  EXPECT_EQ(waiting->outcome.response.tip().tip().message(), "durable, ack held");
  EXPECT_GT(waiting->outcome.response.tip().nonce(), 0u);
}

}  // namespace
}  // namespace tipd::testing
