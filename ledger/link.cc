#include "ledger/link.h"

namespace tipd::ledger {

std::string SubmitOutcome::code() const {
  switch (kind) {
    case Kind::kAccepted:
      return "ACCEPTED";
    case Kind::kRefused:
      return rule ? TxRuleCode(*rule) : "REFUSED";
    case Kind::kUnknown:
      return "LEDGER_UNAVAILABLE";
  }
  return "LEDGER_UNAVAILABLE";
}

SubmitOutcome SubmitOutcome::Unknown(std::string why, const Hash32& tx_id) {
  SubmitOutcome out;
  out.kind = Kind::kUnknown;
  out.tx_id = tx_id;
  out.message = std::move(why);
  return out;
}

SubmitOutcome SubmitOutcome::Refused(TxRule rule, std::string why, const Hash32& tx_id) {
  SubmitOutcome out;
  out.kind = Kind::kRefused;
  out.rule = rule;
  out.tx_id = tx_id;
  out.message = std::move(why);
  return out;
}

std::optional<TxRule> ParseTxRuleCode(const std::string& code) {
  // TxRule values are dense from 0; TxRuleCode names every one.
  for (int i = 0; i < 256; ++i) {
    const char* name = TxRuleCode(static_cast<TxRule>(i));
    if (std::string(name) == "UNKNOWN") break;
    if (code == name) return static_cast<TxRule>(i);
  }
  return std::nullopt;
}

}  // namespace tipd::ledger
