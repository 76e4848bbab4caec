// Refunds and metered streams on real `tipd node` processes, through the
// HTTP API and tipctl: a refund end to end with both histories, partial
// refunds summing to the original then refused, a refund of a refund
// refused, and a stream paying its intervals across a kill -9 of the payer
// with the exact expected total.
#include <csignal>

#include "tests/integration/channel_fixture.h"
#include "tests/integration/tipctl_runner.h"
#include "tipd/api.pb.h"

namespace tipd::testing {
namespace {

std::string MetaValue(const v1::Tip& t, const std::string& key) {
  for (const auto& e : t.metadata()) {
    if (e.key() == key) return e.value();
  }
  return "";
}

class RefundStreamTest : public ChannelFixture {
 protected:
  void TwoNodes(uint64_t da, Node* a, Node* b, std::string* ch) {
    ASSERT_NO_FATAL_FAILURE(TwoConnectedNodes(/*block_interval_ms=*/50, a, b));
    *ch = Open(*a, *b, da, 0);
    ASSERT_FALSE(ch->empty());
  }
  HttpResult Refund(const Node& n, const std::string& token, const std::string& ch, uint64_t index,
                    const std::string& body) {
    return CallAs(n, token, "POST", "/v1/tips/" + ch + "/" + std::to_string(index) + "/refund",
                  body);
  }
  static std::string Code(const HttpResult& r) { return FromJson<v1::ApiError>(r.body).code(); }
};

TEST_F(RefundStreamTest, RefundsEndToEndWithBothHistoriesAndTheirLimits) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(10'000, &a, &b, &ch));
  ASSERT_EQ(Tip(a, ch, 100, "too much, sorry", "t1").status, 200);
  const std::string receive = Token(b, R"(["receive"])");
  const std::string tip_only = Token(b, R"(["tip"])");
  const std::string link = ch + ":1";

  // Scope: receive (or admin).
  EXPECT_EQ(Refund(b, tip_only, ch, 1, R"({"amount":"1"})").status, 403);

  auto part = Refund(b, receive, ch, 1, R"({"amount":"30","message":"partial refund"})");
  ASSERT_EQ(part.status, 200) << part.body;
  auto part_tip = FromJson<v1::TipResponse>(part.body).tip();
  EXPECT_EQ(part_tip.refund_of(), link);
  EXPECT_EQ(part_tip.tip().amount(), 30u);
  EXPECT_EQ(MetaValue(part_tip.tip(), "refund_of"), link);

  // The rest, keyed: a retry replays, paying nothing more.
  auto rest = Refund(b, receive, ch, 1, R"({"idempotency_key":"rest-1"})");
  ASSERT_EQ(rest.status, 200) << rest.body;
  EXPECT_EQ(FromJson<v1::TipResponse>(rest.body).tip().tip().amount(), 70u);
  auto again = Refund(b, receive, ch, 1, R"({"idempotency_key":"rest-1"})");
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_TRUE(FromJson<v1::TipResponse>(again.body).replayed());

  // Nothing is left: every further refund is refused and pays nothing.
  auto over = Refund(b, receive, ch, 1, R"({"amount":"1"})");
  EXPECT_EQ(over.status, 409) << over.body;
  EXPECT_EQ(Code(over), "REFUND_EXCEEDS_ORIGINAL");
  // A refund of a refund; a tip that does not exist; a bad index.
  auto of_refund = Refund(a, a.token, ch, 1, "");
  EXPECT_EQ(of_refund.status, 409) << of_refund.body;
  EXPECT_EQ(Code(of_refund), "REFUND_OF_REFUND");
  auto missing = Refund(b, receive, ch, 9, "");
  EXPECT_EQ(missing.status, 404) << missing.body;
  EXPECT_EQ(Code(missing), "TIP_NOT_FOUND");
  EXPECT_EQ(Refund(b, receive, ch, 0, "").status, 400);
  // refund_of cannot be forged through POST /v1/tips.
  auto forged = Tip(b, ch, 1, "x", "", "", {{"refund_of", link}});
  EXPECT_EQ(forged.status, 400) << forged.body;

  // Both histories show the link.
  auto b_received = History(b, ch, "received");
  ASSERT_EQ(b_received.size(), 1u);
  EXPECT_EQ(b_received[1].refunded_total(), 100u);
  auto b_sent = History(b, ch, "sent");
  ASSERT_EQ(b_sent.size(), 2u);
  EXPECT_EQ(b_sent[1].refund_of(), link);
  EXPECT_EQ(b_sent[2].refund_of(), link);
  ASSERT_TRUE(WaitFor([&] { return History(a, ch, "received").size() == 2; }));
  auto a_received = History(a, ch, "received");
  EXPECT_EQ(a_received[1].refund_of(), link);
  EXPECT_EQ(a_received[2].refund_of(), link);
  EXPECT_EQ(History(a, ch, "sent")[1].refunded_total(), 100u);
  EXPECT_EQ(Channel(a, ch).balance_local(), 10'000u);
  EXPECT_EQ(Channel(b, ch).balance_local(), 0u);

  // tipctl refund: a tips again, b refunds half of it.
  ASSERT_EQ(Tip(a, ch, 8, "again", "t2").status, 200);
  auto ctl = RunTipctl(dir_.path(), {"--datadir", NodeDir("b").string(), "refund", ch, "2",
                                     "--amount", "4", "--message", "half back"});
  ASSERT_EQ(ctl.exit_code, 0) << ctl;
  EXPECT_EQ(FromJson<v1::TipResponse>(ctl.out).tip().refund_of(), ch + ":2") << ctl;
  auto ctl_over = RunTipctl(
      dir_.path(), {"--datadir", NodeDir("b").string(), "refund", ch, "2", "--amount", "5"});
  EXPECT_NE(ctl_over.exit_code, 0) << ctl_over;
  EXPECT_TRUE(Contains(ctl_over.out + ctl_over.err, "REFUND_EXCEEDS_ORIGINAL")) << ctl_over;
}

TEST_F(RefundStreamTest, AStreamPaysItsIntervalsAcrossAKillOfThePayer) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(10'000, &a, &b, &ch));
  const std::string tipper = Token(a, R"(["tip"])");

  // Refused rates.
  auto zero = CallAs(a, tipper, "POST", "/v1/streams",
                     R"({"channel_id":")" + ch + R"(","amount":"0","interval_ms":"1000"})");
  EXPECT_EQ(zero.status, 400) << zero.body;
  EXPECT_EQ(Code(zero), "BAD_STREAM_RATE");
  auto fast = CallAs(a, tipper, "POST", "/v1/streams",
                     R"({"channel_id":")" + ch + R"(","amount":"1","interval_ms":"10"})");
  EXPECT_EQ(fast.status, 400) << fast.body;
  EXPECT_EQ(Code(fast), "BAD_STREAM_RATE");

  // 7 per second, at most 70, missed intervals paid at once.
  auto created = CallAs(a, tipper, "POST", "/v1/streams",
                        R"({"channel_id":")" + ch +
                            R"(","amount":"7","interval_ms":"1000","message":"per second",)"
                            R"("metadata":{"app_name":"player"},"max_total":"70","missed":"pay"})");
  ASSERT_EQ(created.status, 201) << created.body;
  const v1::Stream stream = FromJson<v1::Stream>(created.body);
  ASSERT_EQ(stream.state(), "active");
  auto received = [&] {
    uint64_t sum = 0;
    size_t n = 0;
    for (const auto& [i, t] : History(b, ch, "received")) {
      if (MetaValue(t.tip(), "stream_id") != stream.id()) continue;
      EXPECT_EQ(MetaValue(t.tip(), "action"), "stream");
      EXPECT_EQ(MetaValue(t.tip(), "app_name"), "player");
      sum += t.tip().amount();
      ++n;
    }
    return std::make_pair(n, sum);
  };
  ASSERT_TRUE(WaitFor([&] { return received().first >= 2; }));

  // kill -9 mid-stream, then start again on the same data dir.
  Kill(a, SIGKILL);
  Restart(a);
  auto get = [&] {
    auto r = CallAs(a, tipper, "GET", "/v1/streams/" + stream.id());
    EXPECT_EQ(r.status, 200) << r.body;
    return FromJson<v1::Stream>(r.body);
  };
  ASSERT_TRUE(WaitFor([&] { return get().state() == "finished"; }, std::chrono::seconds(60)))
      << get().DebugString();
  const v1::Stream done = get();
  EXPECT_EQ(done.paid_total(), 70u);
  // Exactly the maximum reached the payee: no interval was paid twice.
  ASSERT_TRUE(WaitFor([&] { return received().second >= 70; }));
  EXPECT_EQ(received().second, 70u);
  EXPECT_EQ(received().first, done.tips_paid());
  EXPECT_EQ(done.intervals_paid(), 10u);  // 70 / 7, nothing skipped under "pay"
  EXPECT_EQ(done.intervals_skipped(), 0u);

  // Listing, control of a finished stream, an unknown one.
  auto list = CallAs(a, tipper, "GET", "/v1/streams");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(FromJson<v1::ListStreamsResponse>(list.body).streams_size(), 1);
  auto resume = CallAs(a, tipper, "POST", "/v1/streams/" + stream.id() + "/resume", "{}");
  EXPECT_EQ(resume.status, 409) << resume.body;
  EXPECT_EQ(Code(resume), "STREAM_STOPPED");
  EXPECT_EQ(CallAs(a, tipper, "GET", "/v1/streams/" + std::string(32, '0')).status, 404);

  // tipctl: create, pause, stop.
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--datadir", NodeDir("a").string(), "stream"});
    return RunTipctl(dir_.path(), args);
  };
  auto c = ctl({"create", "--channel", ch, "1", "--every", "60s"});
  ASSERT_EQ(c.exit_code, 0) << c;
  const std::string id = FromJson<v1::Stream>(c.out).id();
  auto paused = ctl({"pause", id});
  ASSERT_EQ(paused.exit_code, 0) << paused;
  EXPECT_EQ(FromJson<v1::Stream>(paused.out).state(), "paused");
  auto stopped = ctl({"stop", id});
  ASSERT_EQ(stopped.exit_code, 0) << stopped;
  EXPECT_EQ(FromJson<v1::Stream>(stopped.out).state(), "stopped");
  auto listed = ctl({"list"});
  ASSERT_EQ(listed.exit_code, 0) << listed;
  EXPECT_EQ(FromJson<v1::ListStreamsResponse>(listed.out).streams_size(), 2) << listed;
}

}  // namespace
}  // namespace tipd::testing
