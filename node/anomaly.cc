#include "node/anomaly.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <charconv>

#include "node/logging.h"

namespace tipd::node {

namespace {

constexpr char kAnomalyFamily = 'N';
constexpr char kHoldFamily = 'n';
constexpr uint64_t kDayMs = 24 * 3600 * 1000ull;
// Subjects one rule tracks at most (app names and peers of received tips come
// from peers): at the bound the oldest-keyed subject is forgotten.
constexpr size_t kMaxSubjects = 100'000;

using AnomalyStore = storage::RecordStore<v1::StoredAnomaly>;
using HoldStore = storage::RecordStore<v1::StoredAnomalyHold>;

std::string Hundredths(uint64_t h) {
  std::string s = std::to_string(h / 100);
  if (h % 100) {
    s += '.';
    s += static_cast<char>('0' + (h % 100) / 10);
    if (h % 10) s += static_cast<char>('0' + h % 10);
  }
  return s;
}

}  // namespace

std::string AnomalyKey(uint64_t id) {
  std::string k(1, kAnomalyFamily);
  storage::AppendBigEndian64(&k, id);
  return k;
}

std::string AnomalyHoldKey(std::string_view token_id_hex) {
  std::string k(1, kHoldFamily);
  k.append(token_id_hex);
  return k;
}

// ---------------------------------------------------------------------------
// RollingMedian

void RollingMedian::Add(uint64_t v) {
  window_.push_back(v);
  if (low_.empty() || v <= *low_.rbegin()) {
    low_.insert(v);
  } else {
    high_.insert(v);
  }
  if (window_.size() > capacity_) {
    const uint64_t old = window_.front();
    window_.pop_front();
    if (auto it = low_.find(old); it != low_.end() && old <= *low_.rbegin()) {
      low_.erase(it);
    } else {
      high_.erase(high_.find(old));
    }
  }
  Rebalance();
}

void RollingMedian::Rebalance() {
  // low_ holds ceil(n/2) values, every one <= every value in high_.
  const size_t n = low_.size() + high_.size();
  const size_t want = (n + 1) / 2;
  while (low_.size() > want) {
    auto it = std::prev(low_.end());
    high_.insert(*it);
    low_.erase(it);
  }
  while (low_.size() < want) {
    auto it = high_.begin();
    low_.insert(*it);
    high_.erase(it);
  }
}

uint64_t RollingMedian::Median() const { return low_.empty() ? 0 : *low_.rbegin(); }

// ---------------------------------------------------------------------------
// Detector

struct AnomalyDetector::Subject {
  explicit Subject(size_t window) : median(window) {}
  std::deque<std::pair<uint64_t, uint64_t>> seconds;  // (second, tips)
  uint64_t in_window = 0;
  RollingMedian median;
  uint64_t day = 0;
  uint64_t day_total = 0;
  uint64_t last_report_ms = 0;
  bool reported = false;
};

AnomalyDetector::AnomalyDetector(boost::asio::io_context& io, storage::Database& db,
                                 storage::GroupCommitter& committer, const Clock& clock,
                                 std::vector<AnomalyRule> rules)
    : io_(io),
      db_(db),
      committer_(committer),
      clock_(clock),
      rules_(std::move(rules)),
      log_(Logger("anomaly")),
      state_(rules_.size()),
      last_log_ms_(rules_.size(), 0),
      unlogged_(rules_.size(), 0),
      alive_(std::make_shared<bool>(true)) {}

AnomalyDetector::~AnomalyDetector() { *alive_ = false; }

Status AnomalyDetector::Load() {
  TIPD_RETURN_IF_ERROR(db_.ScanPrefix(
      std::string(1, kHoldFamily), SIZE_MAX,
      [this](std::string_view key, std::string_view value) -> Status {
        TIPD_ASSIGN_OR_RETURN(v1::StoredAnomalyHold h, HoldStore::Decode(key, value));
        holds_[std::string(key.substr(1))] = h.anomaly_id();
        return Status::Ok();
      }));
  TIPD_RETURN_IF_ERROR(db_.ScanPrefix(
      std::string(1, kAnomalyFamily), SIZE_MAX,
      [this](std::string_view key, std::string_view) -> Status {
        if (key.size() != 9) {
          return Status::Corruption("anomaly key " + storage::EscapeKey(key) + " is malformed");
        }
        uint64_t id = 0;
        for (size_t i = 1; i < 9; ++i) id = (id << 8) | static_cast<uint8_t>(key[i]);
        next_id_ = std::max(next_id_, id + 1);
        return Status::Ok();
      }));
  if (!holds_.empty()) log_->warn("{} token(s) held by anomaly rules", holds_.size());
  return Status::Ok();
}

void AnomalyDetector::RegisterMetrics(MetricsRegistry& metrics) {
  matches_ =
      &metrics.CounterFamily("tipd_anomalies_total", "anomalies recorded, by rule", {"rule"});
  for (const AnomalyRule& r : rules_) matches_->WithLabels({r.text});
}

void AnomalyDetector::SetKnownPeers(std::set<std::string> paid, std::set<std::string> paid_us) {
  known_peers_[0] = std::move(paid);
  known_peers_[1] = std::move(paid_us);
}

std::optional<std::string> AnomalyDetector::Admit(const ScreenedTip& tip) {
  if (!tip.token_id.empty()) {
    if (auto it = holds_.find(tip.token_id); it != holds_.end()) {
      return "token " + tip.token_id + " is held by anomaly " + std::to_string(it->second) +
             "; an admin releases it with POST /v1/anomalies/" + std::to_string(it->second) +
             "/release";
    }
  }
  std::optional<v1::Anomaly> hold = Evaluate(tip);
  if (!hold) return std::nullopt;
  return "anomaly " + hold->id() + " (" + hold->rule() + "): " + hold->detail() + "; token " +
         tip.token_id + " is held until an admin releases it (POST /v1/anomalies/" + hold->id() +
         "/release)";
}

void AnomalyDetector::Received(const ScreenedTip& tip) { (void)Evaluate(tip); }

std::optional<std::string> AnomalyDetector::Check(const AnomalyRule& rule, Subject& s,
                                                  const ScreenedTip& tip) {
  switch (rule.kind) {
    case AnomalyKind::kRate: {
      const uint64_t second = tip.now_ms / 1000;
      const uint64_t span = rule.window_ms / 1000;
      while (!s.seconds.empty() && s.seconds.front().first + span <= second) {
        s.in_window -= s.seconds.front().second;
        s.seconds.pop_front();
      }
      if (!s.seconds.empty() && s.seconds.back().first == second) {
        ++s.seconds.back().second;
      } else {
        s.seconds.emplace_back(second, 1);
      }
      ++s.in_window;
      if (s.in_window > rule.max) {
        return std::to_string(s.in_window) + " tips in the last " +
               std::to_string(rule.window_ms / 1000) + " s, above the limit of " +
               std::to_string(rule.max);
      }
      return std::nullopt;
    }
    case AnomalyKind::kAmount: {
      std::optional<std::string> out;
      if (s.median.size() >= rule.min_samples) {
        const uint64_t median = s.median.Median();
        // amount > factor x median, in hundredths without overflow.
        const __uint128_t lhs = static_cast<__uint128_t>(tip.amount) * 100;
        const __uint128_t rhs = static_cast<__uint128_t>(median) * rule.factor_hundredths;
        if (lhs > rhs) {
          out = "amount " + std::to_string(tip.amount) + " is above " +
                Hundredths(rule.factor_hundredths) + " x the rolling median " +
                std::to_string(median) + " of the last " + std::to_string(s.median.size()) +
                " tips";
        }
      }
      s.median.Add(tip.amount);
      return out;
    }
    case AnomalyKind::kDaily: {
      const uint64_t day = tip.now_ms / kDayMs;
      if (day != s.day) {
        s.day = day;
        s.day_total = 0;
      }
      s.day_total += tip.amount;
      if (s.day_total > rule.max) {
        return "today's total " + std::to_string(s.day_total) + " is above " +
               std::to_string(rule.max);
      }
      return std::nullopt;
    }
    case AnomalyKind::kNewPeer: {
      std::set<std::string>& known = known_peers_[tip.sent ? 0 : 1];
      const bool fresh = known.insert(tip.peer).second;
      if (fresh && tip.amount >= rule.min) {
        return std::string(tip.sent ? "first tip to peer " : "first tip from peer ") + tip.peer +
               " is " + std::to_string(tip.amount) + ", at least " + std::to_string(rule.min);
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::optional<v1::Anomaly> AnomalyDetector::Evaluate(const ScreenedTip& tip) {
  std::optional<v1::Anomaly> hold;
  for (size_t i = 0; i < rules_.size(); ++i) {
    const AnomalyRule& rule = rules_[i];
    if (tip.sent ? !rule.sent : !rule.received) continue;
    std::string subject;
    switch (rule.per) {
      case AnomalySubject::kToken:
        subject = tip.token_id;
        if (subject.empty()) continue;  // not sent through a token
        break;
      case AnomalySubject::kAppName:
        subject = tip.app_name;
        break;
      case AnomalySubject::kPeer:
        subject = tip.peer;
        break;
    }
    auto& subjects = state_[i];
    auto it = subjects.find(subject);
    if (it == subjects.end()) {
      if (subjects.size() >= kMaxSubjects) subjects.erase(subjects.begin());
      it = subjects.emplace(subject, std::make_unique<Subject>(rule.window)).first;
    }
    Subject& s = *it->second;
    std::optional<std::string> detail = Check(rule, s, tip);
    if (!detail) continue;
    const bool holds = rule.hold && tip.sent && !tip.token_id.empty();
    // A flag-only rule reports a subject once per quiet period; a holding
    // rule always does (the held token sends nothing more until released).
    if (!holds && s.reported && tip.now_ms < s.last_report_ms + kQuietMs) continue;
    s.reported = true;
    s.last_report_ms = tip.now_ms;
    v1::Anomaly a;
    a.set_rule(rule.text);
    a.set_subject_kind(AnomalySubjectName(rule.per));
    a.set_subject(subject);
    a.set_direction(tip.sent ? "sent" : "received");
    a.set_detail(*detail);
    a.set_at_ms(tip.now_ms);
    a.set_held(holds && !hold);
    a.set_token_id(tip.token_id);
    a.set_amount(tip.amount);
    a.set_channel_id(tip.channel_id);
    if (matches_) matches_->WithLabels({rule.text}).Inc();
    // Log, at most one line per rule per second.
    if (tip.now_ms >= last_log_ms_[i] + 1000) {
      const uint64_t more = std::exchange(unlogged_[i], 0);
      log_->warn("anomaly ({}): {} {} {}: {}{}{}", rule.text, a.direction(), a.subject_kind(),
                 a.subject(), a.detail(), a.held() ? "; token held" : "",
                 more ? " (and " + std::to_string(more) + " more not logged)" : "");
      last_log_ms_[i] = tip.now_ms;
    } else {
      ++unlogged_[i];
    }
    const std::string held_token = a.held() ? tip.token_id : "";
    a.set_id(std::to_string(next_id_));
    if (a.held()) hold = a;
    Record(std::move(a), held_token);
  }
  return hold;
}

void AnomalyDetector::Record(v1::Anomaly a, const std::string& held_token) {
  const uint64_t id = next_id_++;
  storage::WriteBatch batch;
  v1::StoredAnomaly rec;
  *rec.mutable_anomaly() = a;
  batch.Put(AnomalyKey(id), AnomalyStore::Encode(rec));
  if (!held_token.empty()) {
    // The hold applies at once (in memory); it is durable with the record.
    holds_[held_token] = id;
    v1::StoredAnomalyHold h;
    h.set_anomaly_id(id);
    h.set_since_ms(a.at_ms());
    batch.Put(AnomalyHoldKey(held_token), HoldStore::Encode(h));
  }
  std::optional<v1::Event> event;
  if (events_) {
    v1::Event e;
    e.set_type("anomaly");
    e.set_time_ms(static_cast<uint64_t>(clock_.NowMs()));
    *e.mutable_anomaly() = std::move(a);
    events_->Stage(&batch, &e);
    event = std::move(e);
  }
  committer_.Submit(std::move(batch), [this, alive = alive_, event](Status s) {
    boost::asio::post(io_, [this, alive, event, s] {
      if (!*alive) return;
      if (!s.ok()) log_->error("anomaly record not written: {}", s.ToString());
      if (!event || !events_) return;
      if (s.ok()) {
        events_->Publish(*event);
      } else {
        events_->Abandon(event->id());
      }
    });
  });
}

Result<std::vector<v1::Anomaly>> AnomalyDetector::List(size_t limit) const {
  std::vector<v1::Anomaly> out;
  const uint64_t from = next_id_ > limit ? next_id_ - limit : 1;
  TIPD_RETURN_IF_ERROR(
      db_.Scan(AnomalyKey(from), storage::PrefixEnd(std::string(1, kAnomalyFamily)), limit,
               [&](std::string_view key, std::string_view value) -> Status {
                 TIPD_ASSIGN_OR_RETURN(v1::StoredAnomaly rec, AnomalyStore::Decode(key, value));
                 uint64_t id = 0;
                 for (size_t i = 1; i < 9 && i < key.size(); ++i) {
                   id = (id << 8) | static_cast<uint8_t>(key[i]);
                 }
                 v1::Anomaly a = rec.anomaly();
                 a.set_id(std::to_string(id));
                 out.push_back(std::move(a));
                 return Status::Ok();
               }));
  std::reverse(out.begin(), out.end());
  return out;
}

void AnomalyDetector::Release(const std::string& id_text,
                              std::function<void(Result<v1::Anomaly>)> done) {
  uint64_t id = 0;
  auto [ptr, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
  if (ec != std::errc() || ptr != id_text.data() + id_text.size() || id == 0) {
    return done(Status::NotFound("no anomaly '" + id_text + "'"));
  }
  auto rec = AnomalyStore(&db_).Get(AnomalyKey(id));
  if (!rec.ok()) return done(rec.status());
  if (!*rec) return done(Status::NotFound("no anomaly " + id_text));
  v1::Anomaly a = (*rec)->anomaly();
  a.set_id(id_text);
  if (!a.held()) {
    return done(Status::FailedPrecondition("anomaly " + id_text + " holds nothing (its rule " +
                                           a.rule() + " does not hold tokens)"));
  }
  if (a.released_at_ms() != 0) {
    return done(Status::FailedPrecondition("anomaly " + id_text + " was released at " +
                                           std::to_string(a.released_at_ms())));
  }
  a.set_released_at_ms(static_cast<uint64_t>(clock_.NowMs()));
  storage::WriteBatch batch;
  v1::StoredAnomaly updated;
  *updated.mutable_anomaly() = a;
  batch.Put(AnomalyKey(id), AnomalyStore::Encode(updated));
  const std::string token = a.token_id();
  const bool current = holds_.count(token) && holds_[token] == id;
  if (current) batch.Delete(AnomalyHoldKey(token));
  std::optional<v1::Event> event;
  if (events_) {
    v1::Event e;
    e.set_type("anomaly");
    e.set_time_ms(static_cast<uint64_t>(clock_.NowMs()));
    *e.mutable_anomaly() = a;
    events_->Stage(&batch, &e);
    event = std::move(e);
  }
  committer_.Submit(std::move(batch), [this, alive = alive_, event, a, token, id,
                                       done = std::move(done)](Status s) mutable {
    boost::asio::post(io_, [this, alive, event, a, token, id, s, done = std::move(done)] {
      if (!*alive) return;
      if (event && events_) {
        if (s.ok()) {
          events_->Publish(*event);
        } else {
          events_->Abandon(event->id());
        }
      }
      if (!s.ok()) return done(s);
      if (auto it = holds_.find(token); it != holds_.end() && it->second == id) holds_.erase(it);
      log_->info("anomaly {} released: token {} may send again", id, token);
      done(a);
    });
  });
}

}  // namespace tipd::node
