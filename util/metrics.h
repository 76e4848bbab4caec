// A small Prometheus registry: counters, gauges and fixed-bucket histograms,
// with or without labels, rendered in the text exposition format 0.0.4
// (served at GET /metrics; content type kMetricsContentType).
//
// Thread safety: every method of every class here may be called from any
// thread (values are atomics or guarded by a per-histogram mutex; families and
// the registry take a mutex to add series and to render). This matters
// because storage's GroupCommitter reports batches on its writer thread.
//
// References returned by the registry and families stay valid for the
// registry's lifetime; callers keep them instead of looking names up per use.
//
// Rendering: families in name order, series in label-value order, each
// family as `# HELP`, `# TYPE`, then its samples. Label values escape `\`,
// `"` and newline; HELP text escapes `\` and newline. Numbers print in the
// shortest form that reads back exactly ("3", "0.25", "1e+21"), plus "+Inf",
// "-Inf", "NaN".
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace tipd {

inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// Monotonically increasing. Inc with a negative amount is ignored.
class Counter {
 public:
  void Inc(double amount = 1);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double amount = 1);
  void Dec(double amount = 1) { Inc(-amount); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Cumulative buckets with fixed upper bounds (the +Inf bucket is implicit).
class Histogram {
 public:
  // REQUIRES: `bounds` strictly increasing and finite.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf (= count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Snap() const;

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), + overflow; guarded by mu_
  double sum_ = 0;                // guarded by mu_
};

// Bucket helpers: {start, start*factor, ...} (count of them) and
// {start, start+width, ...}.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
std::vector<double> LinearBuckets(double start, double width, int count);

// One metric name with a fixed list of label names; one series per distinct
// list of label values.
template <class M>
class Family {
 public:
  // The series for `values` (one per label name, same order), created on
  // first use. REQUIRES: values.size() == label_names().size().
  M& WithLabels(const std::vector<std::string>& values);
  const std::vector<std::string>& label_names() const { return label_names_; }

 private:
  friend class MetricsRegistry;
  Family(std::vector<std::string> label_names, std::vector<double> bounds)
      : label_names_(std::move(label_names)), bounds_(std::move(bounds)) {}
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<M>> series_;  // guarded by mu_
};

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registering a name twice returns the first registration when the kind,
  // label names (and bounds) agree; otherwise it is a programming error
  // (assert) and the first registration is returned in release builds.
  // REQUIRES: names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
  // [a-zA-Z_][a-zA-Z0-9_]* and not "le" for histograms.
  Family<Counter>& CounterFamily(const std::string& name, const std::string& help,
                                 std::vector<std::string> label_names);
  Family<Gauge>& GaugeFamily(const std::string& name, const std::string& help,
                             std::vector<std::string> label_names);
  Family<Histogram>& HistogramFamily(const std::string& name, const std::string& help,
                                     std::vector<std::string> label_names,
                                     std::vector<double> bounds);
  // Unlabelled shorthands.
  Counter& AddCounter(const std::string& name, const std::string& help);
  Gauge& AddGauge(const std::string& name, const std::string& help);
  Histogram& AddHistogram(const std::string& name, const std::string& help,
                          std::vector<double> bounds);

  // Called at the start of every Render, e.g. to Set gauges that are cheaper
  // to read at scrape time (peer count, ledger height). Runs on the
  // rendering thread; must not call Render.
  void AddCollectHook(std::function<void()> hook);

  // The text exposition format 0.0.4.
  std::string Render() const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  struct Entry {
    Kind kind;
    std::string help;
    std::shared_ptr<void> family;  // Family<Counter|Gauge|Histogram>
  };
  void* FindOrAdd(const std::string& name, Kind kind, const std::string& help,
                  std::vector<std::string> label_names, std::vector<double> bounds);

  mutable std::mutex mu_;
  std::map<std::string, Entry> families_;     // guarded by mu_
  std::vector<std::function<void()>> hooks_;  // guarded by mu_
};

// Escapes a label value (backslash, double quote, newline).
std::string EscapeLabelValue(std::string_view v);
// Formats a sample value as the exposition format expects.
std::string FormatMetricValue(double v);

}  // namespace tipd
