// LedgerLink: what a node needs of the ledger, as one seam. The network
// follower (ledger/client.h) implements it over p2p; in-process tests
// implement it over a local Chain they seal by hand.
//
// Outcomes are typed: a submission is accepted into the sequencer's pending
// block, refused by a named ledger rule (TxRule), or its outcome is unknown
// (no connection, or it dropped before the answer): the transaction may still
// be included, so callers decide from the chain (inclusion, account nonce)
// and never from the absence of an answer.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "ledger/chain.h"
#include "ledger/rules.h"
#include "tipd/ledger.pb.h"

namespace tipd::ledger {

struct SubmitOutcome {
  enum class Kind {
    kAccepted,  // in the pending block; inclusion is a block
    kRefused,   // the ledger applied `rule` and refused; nothing changed
    kUnknown,   // no answer: the ledger may or may not include it
  };
  Kind kind = Kind::kUnknown;
  std::optional<TxRule> rule;  // set for kRefused
  Hash32 tx_id{};
  std::string message;

  bool accepted() const { return kind == Kind::kAccepted; }
  bool refused(TxRule r) const { return kind == Kind::kRefused && rule == r; }
  // "ACCEPTED", the rule's code, or "LEDGER_UNAVAILABLE".
  std::string code() const;
  std::string ToString() const { return code() + ": " + message; }

  static SubmitOutcome Unknown(std::string why, const Hash32& tx_id = {});
  static SubmitOutcome Refused(TxRule rule, std::string why, const Hash32& tx_id = {});
};

// The TxRule whose stable code is `code` (TxRuleCode's inverse).
std::optional<TxRule> ParseTxRuleCode(const std::string& code);

class LedgerLink {
 public:
  using WaitId = uint64_t;
  virtual ~LedgerLink() = default;

  // The chain as followed here (state at the last applied block).
  virtual const Chain& chain() const = 0;
  // Whether submissions can currently reach the sequencer.
  virtual bool connected() const = 0;
  // Sends a signed transaction; `done` runs once, on the event thread.
  virtual void Submit(const v1::Transaction& tx,
                      std::function<void(const SubmitOutcome&)> done) = 0;
  // Runs `done(height)` once a block holding `tx_id` is applied here (at once,
  // before returning, if it already is). The returned id cancels the wait;
  // a wait that fired or was cancelled holds no memory.
  virtual WaitId WhenIncluded(const Hash32& tx_id, std::function<void(uint64_t height)> done) = 0;
  virtual void CancelWait(WaitId id) = 0;
  // Runs after every block is applied here, in order.
  virtual void AddBlockObserver(std::function<void(const v1::Block&)> observer) = 0;
  // The account nonce for `account`'s next transaction: the chain's nonce, or
  // one past the last handed out if higher (several may be pending). Every
  // sender of this node's transactions draws from here.
  virtual uint64_t NextNonce(const AccountId& account) = 0;
  // Forgets handed-out nonces: the next NextNonce starts from the chain.
  virtual void ResetNonces() = 0;
};

}  // namespace tipd::ledger
