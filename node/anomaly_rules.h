// Anomaly rules: the grammar of the repeatable config key `anomaly-rule`
// (docs/configuration.md, "Anomaly rules"). Pure parsing; the detector that
// applies them is node/anomaly.h.
//
//   rule     = kind *( SP option )
//   kind     = "rate" | "amount" | "daily" | "new-peer"
//   option   = name "=" value            (each name at most once)
//   common   per=token|app_name|peer     (required, except new-peer: peer)
//            direction=sent|received|both  (default both; per=token: sent)
//            hold=true|false             (default false; sent tips only)
//   rate     max=N/s | N/min | N/h       more than N tips in the window
//   amount   factor=K                    above K x the rolling median (K > 1,
//                                        up to 2 decimals), window=N tips
//                                        (default 1000, 2..100000),
//                                        min-samples=N (default 20, <= window)
//   daily    max=N                       a UTC day's total above N
//   new-peer min=N                       a tip of at least N with a peer that
//                                        never had a tip in that direction
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/status.h"

namespace tipd::node {

enum class AnomalyKind { kRate, kAmount, kDaily, kNewPeer };
enum class AnomalySubject { kToken, kAppName, kPeer };

struct AnomalyRule {
  std::string text;  // as configured, whitespace normalised
  AnomalyKind kind = AnomalyKind::kRate;
  AnomalySubject per = AnomalySubject::kPeer;
  bool sent = true;      // applies to sent tips
  bool received = true;  // applies to received tips
  bool hold = false;
  // rate: more than `max` tips within `window_ms`; daily: a day's total
  // above `max`.
  uint64_t max = 0;
  uint64_t window_ms = 0;
  // amount: above factor_hundredths/100 x the median of the last `window`.
  uint64_t factor_hundredths = 0;
  uint64_t window = 1000;
  uint64_t min_samples = 20;
  // new-peer
  uint64_t min = 0;
};

// kInvalidArgument with a message naming what is wrong and what is expected.
Result<AnomalyRule> ParseAnomalyRule(std::string_view text);

const char* AnomalyKindName(AnomalyKind k);
const char* AnomalySubjectName(AnomalySubject s);

}  // namespace tipd::node
