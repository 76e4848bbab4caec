#include "util/metrics.h"

#include <cassert>
#include <charconv>
#include <cmath>
#include <type_traits>

namespace tipd {

namespace {

void AtomicAdd(std::atomic<double>& a, double d) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

std::string EscapeHelp(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// `{a="x",b="y"}` or "" when there are no labels; `extra` is appended last
// (the histogram `le`).
std::string LabelText(const std::vector<std::string>& names, const std::vector<std::string>& values,
                      const std::string& extra = "") {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    out += out.empty() ? "{" : ",";
    out += names[i] + "=\"" + EscapeLabelValue(values[i]) + "\"";
  }
  if (!extra.empty()) out += (out.empty() ? "{" : ",") + extra;
  if (!out.empty()) out += "}";
  return out;
}

}  // namespace

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

void Counter::Inc(double amount) {
  if (!(amount >= 0)) return;
  AtomicAdd(value_, amount);
}

void Gauge::Inc(double amount) { AtomicAdd(value_, amount); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {
  for (size_t i = 1; i < bounds_.size(); ++i) assert(bounds_[i - 1] < bounds_[i]);
}

void Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;  // le: v <= bound
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[i];
  sum_ += v;
}

Histogram::Snapshot Histogram::Snap() const {
  Snapshot s;
  s.bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t acc = 0;
  for (uint64_t c : counts_) {
    acc += c;
    s.cumulative.push_back(acc);
  }
  s.count = acc;
  s.sum = sum_;
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) out.push_back(v);
  return out;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  std::vector<double> out;
  for (int i = 0; i < count; ++i) out.push_back(start + width * i);
  return out;
}

template <class M>
M& Family<M>::WithLabels(const std::vector<std::string>& values) {
  assert(values.size() == label_names_.size());
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = series_[values];
  if (!slot) {
    if constexpr (std::is_same_v<M, Histogram>) {
      slot = std::make_unique<Histogram>(bounds_);
    } else {
      slot = std::make_unique<M>();
    }
  }
  return *slot;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

void* MetricsRegistry::FindOrAdd(const std::string& name, Kind kind, const std::string& help,
                                 std::vector<std::string> label_names, std::vector<double> bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it != families_.end()) {
    assert(it->second.kind == kind && "metric registered twice with different kinds");
    return it->second.family.get();
  }
  Entry e{kind, help, nullptr};
  switch (kind) {
    case Kind::kCounter:
      e.family.reset(new Family<Counter>(std::move(label_names), {}));
      break;
    case Kind::kGauge:
      e.family.reset(new Family<Gauge>(std::move(label_names), {}));
      break;
    case Kind::kHistogram:
      e.family.reset(new Family<Histogram>(std::move(label_names), std::move(bounds)));
      break;
  }
  void* p = e.family.get();
  families_.emplace(name, std::move(e));
  return p;
}

Family<Counter>& MetricsRegistry::CounterFamily(const std::string& name, const std::string& help,
                                                std::vector<std::string> label_names) {
  return *static_cast<Family<Counter>*>(
      FindOrAdd(name, Kind::kCounter, help, std::move(label_names), {}));
}

Family<Gauge>& MetricsRegistry::GaugeFamily(const std::string& name, const std::string& help,
                                            std::vector<std::string> label_names) {
  return *static_cast<Family<Gauge>*>(
      FindOrAdd(name, Kind::kGauge, help, std::move(label_names), {}));
}

Family<Histogram>& MetricsRegistry::HistogramFamily(const std::string& name,
                                                    const std::string& help,
                                                    std::vector<std::string> label_names,
                                                    std::vector<double> bounds) {
  return *static_cast<Family<Histogram>*>(
      FindOrAdd(name, Kind::kHistogram, help, std::move(label_names), std::move(bounds)));
}

Counter& MetricsRegistry::AddCounter(const std::string& name, const std::string& help) {
  return CounterFamily(name, help, {}).WithLabels({});
}

Gauge& MetricsRegistry::AddGauge(const std::string& name, const std::string& help) {
  return GaugeFamily(name, help, {}).WithLabels({});
}

Histogram& MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> bounds) {
  return HistogramFamily(name, help, {}, std::move(bounds)).WithLabels({});
}

void MetricsRegistry::AddCollectHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hooks_.push_back(std::move(hook));
}

std::string MetricsRegistry::Render() const {
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hooks = hooks_;
  }
  for (const auto& h : hooks) h();

  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, e] : families_) {
    out += "# HELP " + name + " " + EscapeHelp(e.help) + "\n";
    switch (e.kind) {
      case Kind::kCounter: {
        out += "# TYPE " + name + " counter\n";
        auto* f = static_cast<Family<Counter>*>(e.family.get());
        std::lock_guard<std::mutex> fl(f->mu_);
        for (const auto& [values, c] : f->series_) {
          out += name + LabelText(f->label_names_, values) + " " + FormatMetricValue(c->Value()) +
                 "\n";
        }
        break;
      }
      case Kind::kGauge: {
        out += "# TYPE " + name + " gauge\n";
        auto* f = static_cast<Family<Gauge>*>(e.family.get());
        std::lock_guard<std::mutex> fl(f->mu_);
        for (const auto& [values, g] : f->series_) {
          out += name + LabelText(f->label_names_, values) + " " + FormatMetricValue(g->Value()) +
                 "\n";
        }
        break;
      }
      case Kind::kHistogram: {
        out += "# TYPE " + name + " histogram\n";
        auto* f = static_cast<Family<Histogram>*>(e.family.get());
        std::lock_guard<std::mutex> fl(f->mu_);
        for (const auto& [values, h] : f->series_) {
          const Histogram::Snapshot s = h->Snap();
          for (size_t i = 0; i <= s.bounds.size(); ++i) {
            const std::string le =
                i < s.bounds.size() ? FormatMetricValue(s.bounds[i]) : std::string("+Inf");
            out += name + "_bucket" + LabelText(f->label_names_, values, "le=\"" + le + "\"") +
                   " " + std::to_string(s.cumulative[i]) + "\n";
          }
          const std::string labels = LabelText(f->label_names_, values);
          out += name + "_sum" + labels + " " + FormatMetricValue(s.sum) + "\n";
          out += name + "_count" + labels + " " + std::to_string(s.count) + "\n";
        }
        break;
      }
    }
  }
  return out;
}

}  // namespace tipd
