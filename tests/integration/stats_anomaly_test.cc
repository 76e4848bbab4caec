// GET /v1/stats and anomaly rules on real `tipd node` processes over
// loopback (docs/api.md "Stats", "Anomalies"; docs/operator-guide.md
// "Anomalies"): tips through two nodes and a cooperative close come out of
// /v1/stats exactly, fees included; bad ranges are refused; a rate rule holds
// a token (429 ANOMALY_HOLD) across a restart until an admin releases it; the
// receiver flags an incoming tip; a malformed rule stops the node naming the
// file and line.
#include <gtest/gtest.h>

#include <fstream>

#include "api/http_client.h"
#include "tests/integration/channel_fixture.h"
#include "tests/integration/tipctl_runner.h"
#include "tools/process.h"

namespace tipd::testing {
namespace {

using namespace std::chrono_literals;

class StatsAnomalyTest : public ChannelFixture {
 protected:
  v1::StatsResponse Stats(const Node& n, const std::string& query) {
    auto r = Call(n, "GET", "/v1/stats" + query);
    EXPECT_EQ(r.status, 200) << r.body;
    return FromJson<v1::StatsResponse>(r.body);
  }
  static const v1::StatsGroup* Group(const v1::StatsResponse& s, const std::string& key) {
    for (const auto& g : s.groups()) {
      if (g.key() == key) return &g;
    }
    return nullptr;
  }
  std::vector<v1::Anomaly> Anomalies(const Node& n) {
    auto r = Call(n, "GET", "/v1/anomalies");
    EXPECT_EQ(r.status, 200) << r.body;
    auto list = FromJson<v1::ListAnomaliesResponse>(r.body);
    return {list.anomalies().begin(), list.anomalies().end()};
  }
};

TEST_F(StatsAnomalyTest, TipsAndFeesThroughTwoNodesComeOutExactly) {
  Node a, b;
  TwoConnectedNodes(100, &a, &b);
  const uint64_t fee = genesis_.fee_per_tx();
  ASSERT_GT(fee, 0u);  // else the fee figures below would prove nothing
  const std::string ch = Open(a, b, 10'000, 5'000);
  const std::map<std::string, std::string> podcast = {{"app_name", "podcast"}};
  ASSERT_EQ(Tip(a, ch, 10, "one", "k1", "", podcast).status, 200);
  ASSERT_EQ(Tip(a, ch, 20, "two", "k2", "", podcast).status, 200);
  ASSERT_EQ(Tip(a, ch, 30, "three", "k3").status, 200);
  ASSERT_EQ(Tip(b, ch, 7, "back", "k4", "", podcast).status, 200);
  auto close = Call(a, "POST", "/v1/channels/" + ch + "/close", "{}");
  ASSERT_TRUE(close.status == 200 || close.status == 202) << close.body;
  ASSERT_TRUE(WaitState(a, ch, "closed"));
  // The close's fee is counted once the block reaches the node.
  ASSERT_TRUE(WaitFor([&] { return Stats(a, "").fees().close() == fee; }))
      << Call(a, "GET", "/v1/stats").body;

  v1::StatsResponse sa = Stats(a, "?group_by=app_name");
  EXPECT_EQ(sa.group_by(), "app_name");
  const v1::StatsGroup* p = Group(sa, "podcast");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->sent().count(), 2u);
  EXPECT_EQ(p->sent().sum(), 30u);
  EXPECT_DOUBLE_EQ(p->sent().mean(), 15.0);
  EXPECT_EQ(p->sent().median(), 10u);
  EXPECT_EQ(p->received().count(), 1u);
  EXPECT_EQ(p->received().sum(), 7u);
  const v1::StatsGroup* none = Group(sa, "");
  ASSERT_NE(none, nullptr);
  EXPECT_EQ(none->sent().count(), 1u);
  EXPECT_EQ(none->sent().sum(), 30u);
  EXPECT_EQ(none->received().count(), 0u);
  // A opened and closed the channel: two fees, for four tips of 67.
  EXPECT_EQ(sa.fees().open(), fee);
  EXPECT_EQ(sa.fees().close(), fee);
  EXPECT_EQ(sa.fees().deposit(), 0u);
  EXPECT_EQ(sa.fees().total(), 2 * fee);
  EXPECT_EQ(sa.fees().tips_carried(), 4u);
  EXPECT_EQ(sa.fees().amount_carried(), 67u);
  EXPECT_DOUBLE_EQ(sa.fees().effective_fee_per_tip(), 2.0 * fee / 4);
  EXPECT_DOUBLE_EQ(sa.fees().effective_fee_percent(), 100.0 * 2 * fee / 67);
  ASSERT_EQ(sa.channels_size(), 1);
  EXPECT_EQ(sa.channels(0).channel_id(), ch);
  EXPECT_EQ(sa.channels(0).peer_node_id(), b.id.Hex());
  EXPECT_EQ(sa.channels(0).total(), 2 * fee);

  v1::StatsResponse sb = Stats(b, "?group_by=peer");
  ASSERT_EQ(sb.groups_size(), 1);
  EXPECT_EQ(sb.groups(0).key(), a.id.Hex());
  EXPECT_EQ(sb.groups(0).received().count(), 3u);
  EXPECT_EQ(sb.groups(0).received().sum(), 60u);
  EXPECT_EQ(sb.groups(0).received().median(), 20u);
  EXPECT_EQ(sb.groups(0).sent().count(), 1u);
  EXPECT_EQ(sb.fees().total(), 0u);  // B paid no ledger fee
  EXPECT_EQ(sb.fees().tips_carried(), 4u);

  // Bad input: each a 400 with its code.
  auto inverted = Call(a, "GET", "/v1/stats?from_ms=2000&to_ms=1000");
  EXPECT_EQ(inverted.status, 400);
  EXPECT_TRUE(Contains(inverted.body, "BAD_RANGE")) << inverted.body;
  auto huge = Call(a, "GET", "/v1/stats?from_ms=0&to_ms=40000000000");
  EXPECT_EQ(huge.status, 400);
  EXPECT_TRUE(Contains(huge.body, "at most 400 days")) << huge.body;
  auto group = Call(a, "GET", "/v1/stats?group_by=week");
  EXPECT_EQ(group.status, 400);
  EXPECT_TRUE(Contains(group.body, "BAD_ARGUMENT")) << group.body;
  auto number = Call(a, "GET", "/v1/stats?from_ms=yesterday");
  EXPECT_EQ(number.status, 400);
  EXPECT_TRUE(Contains(number.body, "BAD_ARGUMENT")) << number.body;

  // tipctl stats --human shows the effective fee.
  const std::string rpc = "http://127.0.0.1:" + std::to_string(a.rpc);
  CliResult human = RunTipctl(dir_.path() / "cli", {"--rpc", rpc, "--token", a.token, "stats",
                                                    "--group-by", "app_name", "--human"});
  ASSERT_EQ(human.exit_code, 0) << human;
  EXPECT_TRUE(Contains(human.out, "FEE/TIP")) << human.out;
  EXPECT_TRUE(Contains(human.out, "podcast")) << human.out;
  EXPECT_TRUE(Contains(human.out, "TOTAL")) << human.out;
}

TEST_F(StatsAnomalyTest, ARateRuleHoldsATokenUntilReleasedAndTheReceiverFlags) {
  InitLedger(100);
  StartLedger();
  const std::vector<std::string> a_rules = {"--anomaly-rule", "rate per=token max=3/min hold=true"};
  Node a = Up("a", 0, a_rules);
  Node b = Up("b", 1, {"--anomaly-rule", "amount per=peer factor=5 window=100 min-samples=3"});
  Connect(a, b);
  const std::string ch = Open(a, b, 10'000, 0);
  const std::string token = Token(a, R"(["tip","read"])");
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Tip(a, ch, 10, "ok", "", token).status, 200) << i;
  // The fourth tip within a minute trips the rule: refused before it is paid.
  auto fourth = Tip(a, ch, 10, "too fast", "", token);
  EXPECT_EQ(fourth.status, 429) << fourth.body;
  EXPECT_TRUE(Contains(fourth.body, "ANOMALY_HOLD")) << fourth.body;
  auto held = Tip(a, ch, 10, "still held", "", token);
  EXPECT_EQ(held.status, 429) << held.body;
  EXPECT_TRUE(Contains(held.body, "is held by anomaly")) << held.body;
  EXPECT_EQ(History(a, ch, "sent").size(), 3u);  // nothing refused was paid
  // Other tokens are not held: the admin's tip of 100 passes...
  ASSERT_EQ(Tip(a, ch, 100, "big", "").status, 200);
  // ...and the receiver flags it: above 5 x the median 10 of this peer.
  ASSERT_TRUE(WaitFor([&] { return !Anomalies(b).empty(); }));
  std::vector<v1::Anomaly> flagged = Anomalies(b);
  ASSERT_EQ(flagged.size(), 1u);
  EXPECT_EQ(flagged[0].direction(), "received");
  EXPECT_EQ(flagged[0].subject_kind(), "peer");
  EXPECT_EQ(flagged[0].subject(), a.id.Hex());
  EXPECT_EQ(flagged[0].amount(), 100u);
  EXPECT_FALSE(flagged[0].held());
  EXPECT_EQ(History(b, ch, "received").size(), 4u);  // flagged, still acknowledged
  // The match is an `anomaly` event too (replayed from the start, filtered
  // by type): the stream returns once the callback has seen it.
  {
    api::HttpClient client(api::HttpUrl{"127.0.0.1", b.rpc, ""}, b.token, 30s);
    v1::Event seen;
    Status st =
        client.Stream("/v1/events?types=anomaly&from=0", {},
                      [&](const std::string&, const std::string& type, const std::string& data) {
                        if (type != "anomaly") return true;
                        seen = FromJson<v1::Event>(data);
                        return false;
                      });
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(seen.type(), "anomaly");
    EXPECT_EQ(seen.anomaly().id(), flagged[0].id());
    EXPECT_EQ(seen.anomaly().direction(), "received");
  }
  auto metrics = Call(b, "GET", "/metrics");
  EXPECT_TRUE(Contains(metrics.body,
                       "tipd_anomalies_total{rule=\"amount per=peer factor=5 "
                       "window=100 min-samples=3\"} 1"))
      << metrics.body;

  std::vector<v1::Anomaly> list = Anomalies(a);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_TRUE(list[0].held());
  EXPECT_EQ(list[0].subject_kind(), "token");
  EXPECT_EQ(list[0].rule(), "rate per=token max=3/min hold=true");
  const std::string id = list[0].id();

  // The hold survives a restart.
  Kill(a, SIGTERM);
  Restart(a, a_rules);
  ASSERT_TRUE(WaitFor([&] { return Channel(a, ch).state() == "open"; }));
  auto after = Tip(a, ch, 10, "after restart", "", token);
  EXPECT_EQ(after.status, 429) << after.body;

  // Only an admin releases it; then the token's tips pass again.
  auto denied = CallAs(a, token, "POST", "/v1/anomalies/" + id + "/release");
  EXPECT_EQ(denied.status, 403) << denied.body;
  auto unknown = Call(a, "POST", "/v1/anomalies/999/release");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  auto release = Call(a, "POST", "/v1/anomalies/" + id + "/release");
  ASSERT_EQ(release.status, 200) << release.body;
  EXPECT_GT(FromJson<v1::ReleaseAnomalyResponse>(release.body).anomaly().released_at_ms(), 0u);
  // (Retried with one key while the peer reconnects after the restart.)
  HttpResult passes;
  EXPECT_TRUE(WaitFor([&] {
    passes = Tip(a, ch, 10, "released", "released-1", token);
    return passes.status == 200;
  })) << passes.status
      << " " << passes.body;
  auto again = Call(a, "POST", "/v1/anomalies/" + id + "/release");
  EXPECT_EQ(again.status, 409) << again.body;
}

TEST_F(StatsAnomalyTest, AMalformedRuleStopsTheNodeNamingTheFileAndLine) {
  InitLedger(100);
  StartLedger();
  const auto dir = NodeDir("bad");
  std::filesystem::create_directories(dir);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all);
  std::filesystem::copy_file(ledger_dir_ / "genesis.json", dir / "genesis.json");
  {
    std::ofstream conf(dir / "tipd.conf");
    conf << "# rules\nanomaly-rule = rate per=token max=600/min\n"
            "anomaly-rule = amount per=app_name factor=0.5\n";
  }
  std::string error;
  auto p = tools::ChildProcess::Start(
      {TIPD_BINARY, "node", "--datadir", dir.string(), "--ledger",
       "127.0.0.1:" + std::to_string(ledger_port_) + "@" + sequencer_.Hex()},
      dir_.path() / "bad.log", &error);
  ASSERT_TRUE(p) << error;
  auto code = p->Wait(30s);
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  const std::string out = p->Output();
  EXPECT_TRUE(Contains(out, (dir / "tipd.conf").string() + " line 3")) << out;
  EXPECT_TRUE(Contains(out, "expected a number above 1")) << out;
}

}  // namespace
}  // namespace tipd::testing
