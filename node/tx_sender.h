// TxSender: how the node's channel logic signs and submits its own ledger
// transactions. It draws account nonces from the LedgerLink (several may be
// pending at once) and, after any answer but "accepted", makes the next
// transaction start again from the nonce the chain shows, so a refused or
// lost transaction never leaves a gap that would block the ones after it.
#pragma once

#include <functional>
#include <memory>

#include "crypto/crypto.h"
#include "ledger/link.h"
#include "tipd/ledger.pb.h"

namespace tipd::node {

class TxSender {
 public:
  TxSender(const crypto::KeyPair& key, ledger::LedgerLink& ledger, crypto::RandomSource& rng);
  ~TxSender();
  TxSender(const TxSender&) = delete;
  TxSender& operator=(const TxSender&) = delete;

  // A transaction from this node's account: chain id, signer, next nonce,
  // the genesis fee. The caller sets the body.
  v1::Transaction NewTx();
  // Signs and submits `tx`; `done` runs once with the ledger's answer (never
  // after this object is destroyed).
  void Submit(v1::Transaction tx, std::function<void(const ledger::SubmitOutcome&)> done);

  const ledger::Params& params() const { return ledger_.chain().params(); }

 private:
  const crypto::KeyPair& key_;
  ledger::LedgerLink& ledger_;
  crypto::RandomSource& rng_;
  std::shared_ptr<bool> alive_;
};

}  // namespace tipd::node
