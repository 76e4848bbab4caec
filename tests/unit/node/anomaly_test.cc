// Anomaly rules (node/anomaly_rules.h): the grammar and every malformed form
// with its message; the rolling median; the detector over a real database
// and group committer: a holding rule refuses, the hold survives a restart
// and a release lifts it; received tips are flagged only.
#include "node/anomaly.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <random>

#include "tests/support/test_support.h"

namespace tipd::node {
namespace {

std::string ErrorOf(std::string_view rule) {
  auto r = ParseAnomalyRule(rule);
  return r.ok() ? std::string("<unexpectedly ok>") : r.status().message();
}

TEST(ParseAnomalyRule, AcceptsEachKind) {
  auto rate = ParseAnomalyRule("rate  per=token max=600/min hold=true");
  ASSERT_TRUE(rate.ok()) << rate.status().ToString();
  EXPECT_EQ(rate->text, "rate per=token max=600/min hold=true");
  EXPECT_EQ(rate->kind, AnomalyKind::kRate);
  EXPECT_EQ(rate->per, AnomalySubject::kToken);
  EXPECT_EQ(rate->max, 600u);
  EXPECT_EQ(rate->window_ms, 60'000u);
  EXPECT_TRUE(rate->hold);
  EXPECT_TRUE(rate->sent);
  EXPECT_FALSE(rate->received);  // tokens only send

  auto amount = ParseAnomalyRule("amount per=app_name factor=2.5 window=1000");
  ASSERT_TRUE(amount.ok()) << amount.status().ToString();
  EXPECT_EQ(amount->factor_hundredths, 250u);
  EXPECT_EQ(amount->window, 1000u);
  EXPECT_EQ(amount->min_samples, 20u);
  EXPECT_TRUE(amount->sent && amount->received);

  auto daily = ParseAnomalyRule("daily per=peer max=1000000 direction=received");
  ASSERT_TRUE(daily.ok()) << daily.status().ToString();
  EXPECT_EQ(daily->max, 1'000'000u);
  EXPECT_FALSE(daily->sent);
  EXPECT_TRUE(daily->received);

  auto fresh = ParseAnomalyRule("new-peer min=5000");
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(fresh->per, AnomalySubject::kPeer);
  EXPECT_EQ(fresh->min, 5000u);

  auto per_hour = ParseAnomalyRule("rate per=peer max=5/h");
  ASSERT_TRUE(per_hour.ok());
  EXPECT_EQ(per_hour->window_ms, 3'600'000u);
}

TEST(ParseAnomalyRule, EachMalformedFormSaysWhatIsWrong) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "anomaly rule is empty"},
      {"burst per=token max=5/min",
       "unknown kind 'burst'; expected rate, amount, daily or new-peer"},
      {"rate per=token", "rate needs max="},
      {"rate max=5/min", "rate needs per=token, per=app_name or per=peer"},
      {"rate per=user max=5/min", "per=user: expected token, app_name or peer"},
      {"rate per=token max=5", "max=5: expected N/s, N/min or N/h"},
      {"rate per=token max=5/week", "unit 'week' is not s, min or h"},
      {"rate per=token max=0/min", "N must be a whole number 1..100000000"},
      {"rate per=token max=x/min", "N must be a whole number"},
      {"rate per=token max=5/min max=6/min", "option 'max' is given twice"},
      {"rate per=token max=5/min factor=2", "unknown option 'factor' for rate"},
      {"rate per=token max", "'max' is not name=value"},
      {"rate per=token max=5/min hold=yes", "hold=yes: expected true or false"},
      {"rate per=token max=5/min direction=received", "per=token applies to sent tips only"},
      {"rate per=peer max=5/min direction=up", "direction=up: expected sent, received or both"},
      {"rate per=peer max=5/min direction=received hold=true", "hold=true needs sent tips"},
      {"amount per=peer", "amount needs factor="},
      {"amount per=peer factor=1", "expected a number above 1"},
      {"amount per=peer factor=2.555", "at most 2 decimals"},
      {"amount per=peer factor=3 window=1", "window=1: expected 2..100000 tips"},
      {"amount per=peer factor=3 window=10 min-samples=11", "min-samples=11: expected 1..window"},
      {"daily per=peer max=0", "max=0: expected an amount of at least 1"},
      {"daily per=peer", "daily needs max="},
      {"new-peer per=token min=5", "new-peer is per=peer"},
      {"new-peer", "new-peer needs min="},
  };
  for (const auto& [rule, want] : cases) {
    const std::string got = ErrorOf(rule);
    EXPECT_NE(got.find(want), std::string::npos) << "rule '" << rule << "': " << got;
    if (!rule.empty()) {
      EXPECT_NE(got.find("anomaly rule '"), std::string::npos) << got;  // names the rule
    }
  }
}

TEST(RollingMedian, MatchesASortedWindow) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (size_t capacity : {1u, 2u, 5u, 64u}) {
    RollingMedian m(capacity);
    std::deque<uint64_t> window;
    EXPECT_EQ(m.Median(), 0u);
    for (int i = 0; i < 2000; ++i) {
      const uint64_t v = rng() % 50;  // many duplicates
      m.Add(v);
      window.push_back(v);
      if (window.size() > capacity) window.pop_front();
      std::vector<uint64_t> sorted(window.begin(), window.end());
      std::sort(sorted.begin(), sorted.end());
      ASSERT_EQ(m.size(), sorted.size());
      ASSERT_EQ(m.Median(), sorted[(sorted.size() + 1) / 2 - 1])
          << "capacity " << capacity << " step " << i;
    }
  }
}

// A detector over a real database and committer, restartable.
class AnomalyDetectorTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void TearDown() override { Close(); }

  void Open(std::vector<std::string> rules = {}) {
    if (rules.empty()) rules = rules_;
    rules_ = rules;
    auto db = storage::Database::Open(dir_.path() / "db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(*db);
    committer_ = std::make_unique<storage::GroupCommitter>(db_.get());
    std::vector<AnomalyRule> parsed;
    for (const std::string& r : rules) {
      auto p = ParseAnomalyRule(r);
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      parsed.push_back(*p);
    }
    detector_ = std::make_unique<AnomalyDetector>(io_, *db_, *committer_, clock_, parsed);
    ASSERT_TRUE(detector_->Load().ok());
    detector_->RegisterMetrics(metrics_);
  }
  void Close() {
    detector_.reset();
    if (committer_) committer_->Stop();
    io_.restart();
    io_.poll();
    committer_.reset();
    db_.reset();
  }
  // Runs commit completions until `done`.
  void RunUntil(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io_.restart();
      io_.run_for(std::chrono::milliseconds(5));
    }
    ASSERT_TRUE(done());
  }
  // The stored anomalies once at least `n` are durable.
  std::vector<v1::Anomaly> List(size_t n = 1) {
    std::vector<v1::Anomaly> out;
    RunUntil([&] {
      auto l = detector_->List(100);
      if (!l.ok()) return false;
      out = *l;
      return out.size() >= n;
    });
    return out;
  }
  ScreenedTip Sent(uint64_t amount, const std::string& token = "aa") {
    ScreenedTip t;
    t.sent = true;
    t.token_id = token;
    t.peer = "02peer";
    t.channel_id = "cc";
    t.amount = amount;
    t.now_ms = static_cast<uint64_t>(clock_.NowMs());
    return t;
  }

  testing::TempDir dir_;
  boost::asio::io_context io_;
  ManualClock clock_;
  MetricsRegistry metrics_;
  std::vector<std::string> rules_ = {"rate per=token max=3/min hold=true",
                                     "amount per=peer factor=10 window=100 min-samples=5"};
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<storage::GroupCommitter> committer_;
  std::unique_ptr<AnomalyDetector> detector_;
};

TEST_F(AnomalyDetectorTest, AHoldingRuleRefusesTheTokenUntilReleasedAndSurvivesARestart) {
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(detector_->Admit(Sent(1))) << i;
  // The fourth in a minute trips the rule: refused, and the token is held.
  auto why = detector_->Admit(Sent(1));
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("4 tips in the last 60 s, above the limit of 3"), std::string::npos) << *why;
  EXPECT_TRUE(detector_->held("aa"));
  EXPECT_FALSE(detector_->Admit(Sent(1, "bb")));  // another token is not held
  // Even a minute later the held token stays refused.
  clock_.AdvanceMs(120'000);
  auto again = detector_->Admit(Sent(1));
  ASSERT_TRUE(again.has_value());
  EXPECT_NE(again->find("is held by anomaly 1"), std::string::npos) << *again;

  std::vector<v1::Anomaly> list = List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id(), "1");
  EXPECT_EQ(list[0].rule(), "rate per=token max=3/min hold=true");
  EXPECT_EQ(list[0].subject_kind(), "token");
  EXPECT_EQ(list[0].subject(), "aa");
  EXPECT_EQ(list[0].direction(), "sent");
  EXPECT_TRUE(list[0].held());
  EXPECT_EQ(list[0].released_at_ms(), 0u);

  // The hold is durable: a restarted node still refuses the token.
  Close();
  Open();
  EXPECT_TRUE(detector_->held("aa"));
  EXPECT_TRUE(detector_->Admit(Sent(1)).has_value());

  std::optional<Result<v1::Anomaly>> released;
  detector_->Release("1", [&](Result<v1::Anomaly> a) { released = std::move(a); });
  RunUntil([&] { return released.has_value(); });
  ASSERT_TRUE(released->ok()) << released->status().ToString();
  EXPECT_GT((*released)->released_at_ms(), 0u);
  EXPECT_FALSE(detector_->held("aa"));
  EXPECT_FALSE(detector_->Admit(Sent(1)));

  // Released twice, or an unknown id: refused with the reason.
  std::optional<Result<v1::Anomaly>> twice, unknown;
  detector_->Release("1", [&](Result<v1::Anomaly> a) { twice = std::move(a); });
  detector_->Release("99", [&](Result<v1::Anomaly> a) { unknown = std::move(a); });
  RunUntil([&] { return twice.has_value() && unknown.has_value(); });
  EXPECT_EQ(twice->status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(unknown->status().code(), StatusCode::kNotFound);

  // The release is durable too.
  Close();
  Open();
  EXPECT_FALSE(detector_->held("aa"));
  list = List();
  ASSERT_FALSE(list.empty());
  EXPECT_GT(list.back().released_at_ms(), 0u);
}

TEST_F(AnomalyDetectorTest, ReceivedTipsAreFlaggedNeverHeld) {
  auto received = [&](uint64_t amount) {
    ScreenedTip t = Sent(amount, "");
    t.sent = false;
    detector_->Received(t);
  };
  for (int i = 0; i < 5; ++i) received(10);
  received(101);  // above 10 x the median 10
  received(100);  // equal to 10 x: not above; and the quiet period holds anyway
  std::vector<v1::Anomaly> list;
  list = List(1);
  EXPECT_EQ(list[0].rule(), "amount per=peer factor=10 window=100 min-samples=5");
  EXPECT_EQ(list[0].direction(), "received");
  EXPECT_EQ(list[0].subject(), "02peer");
  EXPECT_FALSE(list[0].held());
  EXPECT_NE(list[0].detail().find("amount 101 is above 10 x the rolling median 10"),
            std::string::npos)
      << list[0].detail();
  // Releasing a flag-only anomaly is refused: it holds nothing.
  std::optional<Result<v1::Anomaly>> r;
  detector_->Release(list[0].id(), [&](Result<v1::Anomaly> a) { r = std::move(a); });
  RunUntil([&] { return r.has_value(); });
  EXPECT_EQ(r->status().code(), StatusCode::kFailedPrecondition);
  // The metric counts it under its rule.
  const std::string text = metrics_.Render();
  EXPECT_NE(text.find("tipd_anomalies_total{rule=\"amount per=peer factor=10 window=100 "
                      "min-samples=5\"} 1"),
            std::string::npos)
      << text;
}

TEST_F(AnomalyDetectorTest, DailyAndNewPeerRules) {
  Close();
  Open({"daily per=app_name max=1000", "new-peer min=50 direction=sent"});
  detector_->SetKnownPeers({"02old"}, {});
  ScreenedTip t = Sent(600);
  t.peer = "02old";
  t.app_name = "podcast";
  EXPECT_FALSE(detector_->Admit(t));  // known peer, 600 <= 1000 today
  t.amount = 401;
  EXPECT_FALSE(detector_->Admit(t));  // 1001 today: flagged, not held
  t.peer = "02new";
  t.amount = 49;
  t.app_name = "other";
  EXPECT_FALSE(detector_->Admit(t));  // new peer, below min: now known
  t.amount = 500;
  EXPECT_FALSE(detector_->Admit(t));  // no longer new
  ScreenedTip u = Sent(50);
  u.peer = "02newer";
  u.app_name = "x";
  EXPECT_FALSE(detector_->Admit(u));  // new peer at min: flagged
  std::vector<v1::Anomaly> list;
  list = List(2);
  EXPECT_EQ(list[1].rule(), "daily per=app_name max=1000");  // oldest last
  EXPECT_EQ(list[1].subject(), "podcast");
  EXPECT_NE(list[1].detail().find("today's total 1001 is above 1000"), std::string::npos);
  EXPECT_EQ(list[0].rule(), "new-peer min=50 direction=sent");
  EXPECT_EQ(list[0].subject(), "02newer");
}

}  // namespace
}  // namespace tipd::node
