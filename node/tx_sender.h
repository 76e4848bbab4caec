// TxSender: the one way this node's channel logic (and its transfers) signs
// and submits ledger transactions from its account, and the one owner of its
// account nonces.
//
// The ledger takes an account's transactions only at consecutive nonces, in
// order (ledger/rules.cc: BAD_NONCE "gap" or "replay"), and the sequencer
// checks each as it arrives. So the rule (docs/architecture.md, "Account
// nonces"):
//   - Nonces are handed out in order, each at most once at a time. A
//     transaction Submit()ted here gets its nonce only at its turn, just
//     before it is signed and sent, after everything queued before it; so it
//     is never sent above a nonce that has not left.
//   - An open is the one transaction whose nonce is fixed before it is sent
//     (B signs an agreement over A's nonce; the channel id derives from it).
//     Reserve() hands such a nonce out to one open at a time: the next
//     reservation waits until this one is sent (SubmitReserved) or given
//     back (Release). Transactions queued meanwhile wait too, unless they can
//     take a nonce below the reserved one (one given back by a refusal).
//   - A reserved nonce given back is the highest handed out, so the next
//     transaction takes it: no gap, no double use.
//   - After any answer but "accepted" for nonce n (refused: the ledger did
//     not use n; unknown: it may have), the next transaction starts again
//     from n (or from the chain's nonce if that is higher); after BAD_NONCE
//     (the sequencer lost accepted transactions with its pending block, or
//     took one whose answer was lost) from the chain's nonce. Transactions
//     already sent above n are refused as gaps by then; their answers, older
//     than the restart, change nothing.
// A negotiation holds its reservation for at most the open policy's
// negotiation_timeout, which therefore bounds how long it delays the
// watcher's transactions.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>

#include "crypto/crypto.h"
#include "ledger/link.h"
#include "tipd/ledger.pb.h"

namespace tipd::node {

class TxSender {
 public:
  using Done = std::function<void(const ledger::SubmitOutcome&)>;
  // Runs with the signed transaction just before it leaves; a status not OK
  // keeps it from leaving (its nonce is given back) and `done` is not called.
  using BeforeSend = std::function<Status(const v1::Transaction& signed_tx)>;

  TxSender(const crypto::KeyPair& key, ledger::LedgerLink& ledger, crypto::RandomSource& rng);
  ~TxSender();
  TxSender(const TxSender&) = delete;
  TxSender& operator=(const TxSender&) = delete;

  // A transaction from this node's account: chain id, signer, the genesis
  // fee. The caller sets the body; Submit sets the nonce.
  v1::Transaction NewTx();
  // Numbers, signs and submits `tx` at its turn; `done` runs once with the
  // ledger's answer (never after this object is destroyed).
  void Submit(v1::Transaction tx, Done done, BeforeSend before_send = nullptr);

  // An open's nonce: `granted(nonce)` runs once it is this reservation's
  // turn (perhaps at once). The holder must then call SubmitReserved with a
  // transaction signed at that nonce, or Release(nonce).
  void Reserve(std::function<void(uint64_t nonce)> granted);
  void SubmitReserved(const v1::Transaction& signed_tx, Done done);
  void Release(uint64_t nonce);

  const ledger::Params& params() const { return ledger_.chain().params(); }
  // For tests: transactions and reservations waiting for their turn.
  size_t queued() const { return queue_.size(); }

 private:
  struct Item {
    v1::Transaction tx;                     // a transaction to number...
    Done done;                              //
    BeforeSend before_send;                 //
    std::function<void(uint64_t)> granted;  // ...or a reservation
  };
  uint64_t NextFree() const;
  void Pump();
  void Send(const v1::Transaction& tx, Done done);

  const crypto::KeyPair& key_;
  ledger::LedgerLink& ledger_;
  crypto::RandomSource& rng_;
  std::deque<Item> queue_;
  uint64_t next_ = 0;                 // the next nonce to hand out (or the chain's, if higher)
  std::optional<uint64_t> reserved_;  // an open's nonce not yet sent
  uint64_t epoch_ = 0;                // bumped whenever next_ goes back
  bool pumping_ = false;
  bool pump_again_ = false;
  std::shared_ptr<bool> alive_;
};

}  // namespace tipd::node
