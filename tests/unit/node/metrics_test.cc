#include "util/metrics.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace tipd::node {
namespace {

TEST(MetricsTest, RendersExactExpositionFormat) {
  MetricsRegistry reg;
  Counter& tips = reg.AddCounter("tipd_tips_sent_total", "Tips sent.");
  tips.Inc();
  tips.Inc(2);
  tips.Inc(-5);  // ignored: counters never go down
  auto& by_state = reg.GaugeFamily("tipd_channels", "Channels by state.", {"state"});
  by_state.WithLabels({"open"}).Set(3);
  by_state.WithLabels({"closing"}).Set(1);
  auto& odd = reg.CounterFamily("tipd_odd_total", "Help with \\ and\nnewline.", {"v"});
  odd.WithLabels({"a\"b\\c\nd"}).Inc(0.5);
  Histogram& lat = reg.AddHistogram("tipd_ack_latency_seconds", "Ack latency.", {0.25, 0.5, 1});
  lat.Observe(0.125);
  lat.Observe(0.25);  // le is inclusive
  lat.Observe(0.75);
  lat.Observe(7);
  auto& hl = reg.HistogramFamily("tipd_batch", "Batch sizes.", {"kind"}, {1, 10});
  hl.WithLabels({"x"}).Observe(3);
  Gauge& g = reg.AddGauge("tipd_peers", "Connected peers.");
  g.Inc();
  g.Inc();
  g.Dec();

  const std::string want =
      "# HELP tipd_ack_latency_seconds Ack latency.\n"
      "# TYPE tipd_ack_latency_seconds histogram\n"
      "tipd_ack_latency_seconds_bucket{le=\"0.25\"} 2\n"
      "tipd_ack_latency_seconds_bucket{le=\"0.5\"} 2\n"
      "tipd_ack_latency_seconds_bucket{le=\"1\"} 3\n"
      "tipd_ack_latency_seconds_bucket{le=\"+Inf\"} 4\n"
      "tipd_ack_latency_seconds_sum 8.125\n"
      "tipd_ack_latency_seconds_count 4\n"
      "# HELP tipd_batch Batch sizes.\n"
      "# TYPE tipd_batch histogram\n"
      "tipd_batch_bucket{kind=\"x\",le=\"1\"} 0\n"
      "tipd_batch_bucket{kind=\"x\",le=\"10\"} 1\n"
      "tipd_batch_bucket{kind=\"x\",le=\"+Inf\"} 1\n"
      "tipd_batch_sum{kind=\"x\"} 3\n"
      "tipd_batch_count{kind=\"x\"} 1\n"
      "# HELP tipd_channels Channels by state.\n"
      "# TYPE tipd_channels gauge\n"
      "tipd_channels{state=\"closing\"} 1\n"
      "tipd_channels{state=\"open\"} 3\n"
      "# HELP tipd_odd_total Help with \\\\ and\\nnewline.\n"
      "# TYPE tipd_odd_total counter\n"
      "tipd_odd_total{v=\"a\\\"b\\\\c\\nd\"} 0.5\n"
      "# HELP tipd_peers Connected peers.\n"
      "# TYPE tipd_peers gauge\n"
      "tipd_peers 1\n"
      "# HELP tipd_tips_sent_total Tips sent.\n"
      "# TYPE tipd_tips_sent_total counter\n"
      "tipd_tips_sent_total 3\n";
  EXPECT_EQ(reg.Render(), want);
}

TEST(MetricsTest, SameNameReturnsSameMetricAndHooksRunAtRender) {
  MetricsRegistry reg;
  Counter& a = reg.AddCounter("c_total", "c");
  Counter& b = reg.AddCounter("c_total", "c");
  EXPECT_EQ(&a, &b);
  Gauge& height = reg.AddGauge("tipd_ledger_height", "Height.");
  int calls = 0;
  reg.AddCollectHook([&] { height.Set(++calls * 10); });
  EXPECT_NE(reg.Render().find("tipd_ledger_height 10\n"), std::string::npos);
  EXPECT_NE(reg.Render().find("tipd_ledger_height 20\n"), std::string::npos);
}

TEST(MetricsTest, FormatsSpecialValues) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(1e21), "1e+21");
  EXPECT_EQ(FormatMetricValue(0.25), "0.25");
  EXPECT_EQ(FormatMetricValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatMetricValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatMetricValue(0.0 / 0.0), "NaN");
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(LinearBuckets(0, 5, 3), (std::vector<double>{0, 5, 10}));
}

TEST(MetricsTest, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry reg;
  auto& fam = reg.CounterFamily("n_total", "n", {"t"});
  Histogram& h = reg.AddHistogram("h", "h", {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        fam.WithLabels({"x"}).Inc();
        h.Observe(1);
        if (i % 1000 == 0) (void)reg.Render();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(fam.WithLabels({"x"}).Value(), 40000);
  EXPECT_EQ(h.Snap().count, 40000u);
  EXPECT_EQ(h.Snap().cumulative[0], 40000u);
}

}  // namespace
}  // namespace tipd::node
