#include "node/anomaly_rules.h"

#include <charconv>
#include <map>
#include <set>
#include <vector>

namespace tipd::node {

namespace {

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

bool ParseU64(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

Status Bad(std::string_view rule, const std::string& why) {
  return Status::InvalidArgument("anomaly rule " + Quote(rule) + ": " + why);
}

// "2", "2.5", "10.25" -> hundredths.
bool ParseFactor(std::string_view text, uint64_t* hundredths) {
  const size_t dot = text.find('.');
  uint64_t whole = 0, frac = 0;
  if (!ParseU64(text.substr(0, dot), &whole) || whole > 1'000'000) return false;
  if (dot != std::string_view::npos) {
    std::string_view f = text.substr(dot + 1);
    if (f.empty() || f.size() > 2 || !ParseU64(f, &frac)) return false;
    if (f.size() == 1) frac *= 10;
  }
  *hundredths = whole * 100 + frac;
  return true;
}

}  // namespace

const char* AnomalyKindName(AnomalyKind k) {
  switch (k) {
    case AnomalyKind::kRate:
      return "rate";
    case AnomalyKind::kAmount:
      return "amount";
    case AnomalyKind::kDaily:
      return "daily";
    case AnomalyKind::kNewPeer:
      return "new-peer";
  }
  return "?";
}

const char* AnomalySubjectName(AnomalySubject s) {
  switch (s) {
    case AnomalySubject::kToken:
      return "token";
    case AnomalySubject::kAppName:
      return "app_name";
    case AnomalySubject::kPeer:
      return "peer";
  }
  return "?";
}

Result<AnomalyRule> ParseAnomalyRule(std::string_view text) {
  std::vector<std::string_view> words;
  for (size_t i = 0; i < text.size();) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
    size_t j = i;
    while (j < text.size() && text[j] != ' ' && text[j] != '\t') ++j;
    if (j > i) words.push_back(text.substr(i, j - i));
    i = j;
  }
  if (words.empty()) {
    return Status::InvalidArgument(
        "anomaly rule is empty; expected e.g. 'rate per=token max=600/min hold=true'");
  }
  AnomalyRule r;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i) r.text += ' ';
    r.text += words[i];
  }
  const std::string_view kind = words[0];
  std::set<std::string> allowed = {"per", "direction", "hold"};
  if (kind == "rate") {
    r.kind = AnomalyKind::kRate;
    allowed.insert("max");
  } else if (kind == "amount") {
    r.kind = AnomalyKind::kAmount;
    allowed.insert({"factor", "window", "min-samples"});
  } else if (kind == "daily") {
    r.kind = AnomalyKind::kDaily;
    allowed.insert("max");
  } else if (kind == "new-peer") {
    r.kind = AnomalyKind::kNewPeer;
    allowed.insert("min");
  } else {
    return Bad(text, "unknown kind " + Quote(kind) + "; expected rate, amount, daily or new-peer");
  }
  std::map<std::string, std::string> opts;
  for (size_t i = 1; i < words.size(); ++i) {
    const size_t eq = words[i].find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == words[i].size()) {
      return Bad(text, Quote(words[i]) + " is not name=value");
    }
    std::string name(words[i].substr(0, eq));
    if (!allowed.count(name)) {
      std::string names;
      for (const std::string& a : allowed) names += (names.empty() ? "" : ", ") + a;
      return Bad(text, "unknown option " + Quote(name) + " for " + std::string(kind) +
                           " (it takes " + names + ")");
    }
    if (!opts.emplace(name, std::string(words[i].substr(eq + 1))).second) {
      return Bad(text, "option " + Quote(name) + " is given twice");
    }
  }
  auto need = [&](const char* name) -> Result<std::string> {
    auto it = opts.find(name);
    if (it == opts.end()) return Bad(text, std::string(kind) + " needs " + name + "=");
    return it->second;
  };
  // per
  if (auto it = opts.find("per"); it != opts.end()) {
    if (it->second == "token") {
      r.per = AnomalySubject::kToken;
    } else if (it->second == "app_name") {
      r.per = AnomalySubject::kAppName;
    } else if (it->second == "peer") {
      r.per = AnomalySubject::kPeer;
    } else {
      return Bad(text, "per=" + it->second + ": expected token, app_name or peer");
    }
  } else if (r.kind != AnomalyKind::kNewPeer) {
    return Bad(text, std::string(kind) + " needs per=token, per=app_name or per=peer");
  }
  if (r.kind == AnomalyKind::kNewPeer && r.per != AnomalySubject::kPeer) {
    return Bad(text, "new-peer is per=peer");
  }
  // direction
  if (auto it = opts.find("direction"); it != opts.end()) {
    if (it->second == "sent") {
      r.received = false;
    } else if (it->second == "received") {
      r.sent = false;
    } else if (it->second != "both") {
      return Bad(text, "direction=" + it->second + ": expected sent, received or both");
    }
  }
  if (r.per == AnomalySubject::kToken) {
    if (!r.sent) return Bad(text, "per=token applies to sent tips only (tokens send)");
    r.received = false;
  }
  // hold
  if (auto it = opts.find("hold"); it != opts.end()) {
    if (it->second == "true") {
      r.hold = true;
    } else if (it->second != "false") {
      return Bad(text, "hold=" + it->second + ": expected true or false");
    }
    if (r.hold && !r.sent) {
      return Bad(text, "hold=true needs sent tips (a received tip has no token to hold)");
    }
  }
  switch (r.kind) {
    case AnomalyKind::kRate: {
      TIPD_ASSIGN_OR_RETURN(std::string max, need("max"));
      const size_t slash = max.find('/');
      if (slash == std::string::npos) {
        return Bad(text, "max=" + max + ": expected N/s, N/min or N/h");
      }
      const std::string unit = max.substr(slash + 1);
      if (unit == "s") {
        r.window_ms = 1000;
      } else if (unit == "min") {
        r.window_ms = 60'000;
      } else if (unit == "h") {
        r.window_ms = 3'600'000;
      } else {
        return Bad(text, "max=" + max + ": unit " + Quote(unit) + " is not s, min or h");
      }
      if (!ParseU64(std::string_view(max).substr(0, slash), &r.max) || r.max == 0 ||
          r.max > 100'000'000) {
        return Bad(text, "max=" + max + ": N must be a whole number 1..100000000");
      }
      break;
    }
    case AnomalyKind::kAmount: {
      TIPD_ASSIGN_OR_RETURN(std::string factor, need("factor"));
      if (!ParseFactor(factor, &r.factor_hundredths) || r.factor_hundredths <= 100) {
        return Bad(text, "factor=" + factor +
                             ": expected a number above 1 with at most 2 decimals, e.g. 10 or 2.5");
      }
      if (auto it = opts.find("window"); it != opts.end()) {
        if (!ParseU64(it->second, &r.window) || r.window < 2 || r.window > 100'000) {
          return Bad(text, "window=" + it->second + ": expected 2..100000 tips");
        }
      }
      r.min_samples = std::min<uint64_t>(20, r.window);
      if (auto it = opts.find("min-samples"); it != opts.end()) {
        if (!ParseU64(it->second, &r.min_samples) || r.min_samples < 1 ||
            r.min_samples > r.window) {
          return Bad(text, "min-samples=" + it->second + ": expected 1..window (" +
                               std::to_string(r.window) + ")");
        }
      }
      break;
    }
    case AnomalyKind::kDaily: {
      TIPD_ASSIGN_OR_RETURN(std::string max, need("max"));
      if (!ParseU64(max, &r.max) || r.max == 0) {
        return Bad(text, "max=" + max + ": expected an amount of at least 1");
      }
      break;
    }
    case AnomalyKind::kNewPeer: {
      TIPD_ASSIGN_OR_RETURN(std::string min, need("min"));
      if (!ParseU64(min, &r.min) || r.min == 0) {
        return Bad(text, "min=" + min + ": expected an amount of at least 1");
      }
      break;
    }
  }
  return r;
}

}  // namespace tipd::node
