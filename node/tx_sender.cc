#include "node/tx_sender.h"

#include "ledger/codec.h"
#include "util/bytes.h"

namespace tipd::node {

TxSender::TxSender(const crypto::KeyPair& key, ledger::LedgerLink& ledger,
                   crypto::RandomSource& rng)
    : key_(key), ledger_(ledger), rng_(rng), alive_(std::make_shared<bool>(true)) {}

TxSender::~TxSender() { *alive_ = false; }

v1::Transaction TxSender::NewTx() {
  v1::Transaction tx;
  tx.set_chain_id(ledger_.chain().params().chain_id);
  tx.set_signer(std::string(AsStringView(key_.XOnly())));
  tx.set_nonce(ledger_.NextNonce(key_.XOnly()));
  tx.set_fee(ledger_.chain().params().fee_per_tx);
  return tx;
}

void TxSender::Submit(v1::Transaction tx, std::function<void(const ledger::SubmitOutcome&)> done) {
  if (Status s = ledger::SignTransaction(&tx, key_, rng_); !s.ok()) {
    ledger_.ResetNonces();
    done(ledger::SubmitOutcome::Refused(ledger::TxRule::kMalformed,
                                        "cannot sign the transaction: " + s.message()));
    return;
  }
  ledger_.Submit(tx,
                 [this, alive = alive_, done = std::move(done)](const ledger::SubmitOutcome& out) {
                   if (!*alive) return;
                   if (!out.accepted()) ledger_.ResetNonces();
                   done(out);
                 });
}

}  // namespace tipd::node
