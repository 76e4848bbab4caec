// AnomalyDetector: applies the configured anomaly rules (node/anomaly_rules.h)
// to tips (docs/operator-guide.md, "Anomalies").
//
// Sent tips are screened at admission, before anything is signed or paid:
// a token held by an earlier match is refused (TipError::kAnomalyHold, 429
// ANOMALY_HOLD), and a match of a holding rule holds the token and refuses
// the tip that matched. Received tips are screened once they are durable and
// acknowledged: flag only. So no rule changes a tip already acknowledged.
//
// A match is an Anomaly record ('N' id[8 BE]) and an `anomaly` event in one
// synced batch, the counter tipd_anomalies_total{rule}, and a log line (at
// most one per rule per second; the rest are counted in the next line). A
// rule reports one subject at most once per `kQuietMs` (a burst above a rate
// is one anomaly, not hundreds). A hold is 'n' token_id[16] -> the anomaly;
// it survives restarts until POST /v1/anomalies/{id}/release deletes it.
//
// The rolling windows (rates, medians, daily totals) live in memory and
// start empty after a restart; the peers that had tips come from the stats
// index (node/stats.h).
//
// Threading: the node's event thread only; commit completions are posted
// back to `io`.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "node/anomaly_rules.h"
#include "node/seams.h"
#include "storage/storage.h"
#include "tipd/api.pb.h"
#include "util/clock.h"
#include "util/metrics.h"

namespace spdlog {
class logger;
}

namespace tipd::node {

// The median of the last `capacity` values, updated in O(log n).
class RollingMedian {
 public:
  explicit RollingMedian(size_t capacity) : capacity_(capacity) {}
  void Add(uint64_t v);
  size_t size() const { return window_.size(); }
  // The lower median (rank ceil(n/2)); 0 when empty.
  uint64_t Median() const;

 private:
  void Rebalance();
  size_t capacity_;
  std::deque<uint64_t> window_;
  std::multiset<uint64_t> low_, high_;  // low_ holds ceil(n/2) smallest
};

struct ScreenedTip {
  bool sent = true;
  std::string token_id;    // hex; sent tips ("" if none)
  std::string app_name;    // metadata app_name, "" if none
  std::string peer;        // hex
  std::string channel_id;  // hex
  uint64_t amount = 0;
  uint64_t now_ms = 0;
};

class AnomalyDetector {
 public:
  // A rule reports one subject at most once per this long.
  static constexpr uint64_t kQuietMs = 60'000;

  AnomalyDetector(boost::asio::io_context& io, storage::Database& db,
                  storage::GroupCommitter& committer, const Clock& clock,
                  std::vector<AnomalyRule> rules);
  ~AnomalyDetector();
  AnomalyDetector(const AnomalyDetector&) = delete;
  AnomalyDetector& operator=(const AnomalyDetector&) = delete;

  // Reads the holds and the next anomaly id.
  Status Load();
  void SetEventSink(EventSink* sink) { events_ = sink; }
  void RegisterMetrics(MetricsRegistry& metrics);
  // Peers that already had a tip in each direction (new-peer rules).
  void SetKnownPeers(std::set<std::string> paid, std::set<std::string> paid_us);

  // A sent tip at admission. nullopt: admit it; else why it is refused
  // (the token is held).
  std::optional<std::string> Admit(const ScreenedTip& tip);
  // A received tip, after it was acknowledged: flag only.
  void Received(const ScreenedTip& tip);

  bool held(const std::string& token_id) const { return holds_.count(token_id) != 0; }
  // Newest first, at most `limit`.
  Result<std::vector<v1::Anomaly>> List(size_t limit) const;
  // Releases the hold the anomaly set; answers once durable. kNotFound for
  // an unknown id; kFailedPrecondition if it holds nothing (not a holding
  // match, or released before).
  void Release(const std::string& id, std::function<void(Result<v1::Anomaly>)> done);

  const std::vector<AnomalyRule>& rules() const { return rules_; }

 private:
  struct Subject;  // one rule's state for one subject
  // Applies every rule of the direction; returns the first holding match.
  std::optional<v1::Anomaly> Evaluate(const ScreenedTip& tip);
  std::optional<std::string> Check(const AnomalyRule& rule, Subject& s, const ScreenedTip& tip);
  void Record(v1::Anomaly a, const std::string& held_token);

  boost::asio::io_context& io_;
  storage::Database& db_;
  storage::GroupCommitter& committer_;
  const Clock& clock_;
  std::vector<AnomalyRule> rules_;
  std::shared_ptr<spdlog::logger> log_;
  EventSink* events_ = nullptr;
  Family<Counter>* matches_ = nullptr;
  std::vector<std::map<std::string, std::unique_ptr<Subject>>> state_;  // per rule
  std::set<std::string> known_peers_[2];                                // [0] we paid, [1] paid us
  std::map<std::string, uint64_t> holds_;  // token id hex -> anomaly id
  uint64_t next_id_ = 1;
  // Log rate limit: one line per rule per second.
  std::vector<uint64_t> last_log_ms_;
  std::vector<uint64_t> unlogged_;
  std::shared_ptr<bool> alive_;
};

// Storage keys ('N', 'n').
std::string AnomalyKey(uint64_t id);
std::string AnomalyHoldKey(std::string_view token_id_hex);

}  // namespace tipd::node
