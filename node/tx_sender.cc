#include "node/tx_sender.h"

#include <algorithm>

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
  tx.set_fee(ledger_.chain().params().fee_per_tx);
  return tx;
}

uint64_t TxSender::NextFree() const {
  const ledger::Account* a = ledger_.chain().state().FindAccount(key_.XOnly());
  return std::max(next_, a ? a->nonce : uint64_t{0});
}

void TxSender::Submit(v1::Transaction tx, Done done, BeforeSend before_send) {
  queue_.push_back(Item{std::move(tx), std::move(done), std::move(before_send), nullptr});
  Pump();
}

void TxSender::Reserve(std::function<void(uint64_t nonce)> granted) {
  queue_.push_back(Item{{}, nullptr, nullptr, std::move(granted)});
  Pump();
}

void TxSender::SubmitReserved(const v1::Transaction& signed_tx, Done done) {
  const uint64_t nonce = signed_tx.nonce();
  if (reserved_ == nonce) reserved_.reset();
  // Transactions that filled the nonces below it (after a refusal sent the
  // count back) stop at it; it now leaves.
  if (next_ == nonce) next_ = nonce + 1;
  Send(signed_tx, std::move(done));
  Pump();
}

void TxSender::Release(uint64_t nonce) {
  if (reserved_ != nonce) return;
  reserved_.reset();
  // Nothing was handed out above a reservation, so the next one takes it.
  next_ = std::min(next_, nonce);
  Pump();
}

void TxSender::Pump() {
  if (pumping_) {
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  const std::shared_ptr<bool> alive = alive_;
  do {
    pump_again_ = false;
    while (!queue_.empty()) {
      const uint64_t nonce = NextFree();
      if (queue_.front().granted) {
        if (reserved_) break;  // one open's nonce at a time
        reserved_ = nonce;
        next_ = nonce + 1;
        auto granted = std::move(queue_.front().granted);
        queue_.pop_front();
        granted(nonce);
        if (!*alive) return;
        continue;
      }
      // Never above an open's nonce that has not left: the ledger would
      // refuse it as a gap.
      if (reserved_ && nonce >= *reserved_) break;
      Item item = std::move(queue_.front());
      queue_.pop_front();
      next_ = nonce + 1;
      item.tx.set_nonce(nonce);
      if (Status s = ledger::SignTransaction(&item.tx, key_, rng_); !s.ok()) {
        if (next_ == nonce + 1) next_ = nonce;
        item.done(ledger::SubmitOutcome::Refused(ledger::TxRule::kMalformed,
                                                 "cannot sign the transaction: " + s.message()));
        if (!*alive) return;
        continue;
      }
      if (item.before_send && !item.before_send(item.tx).ok()) {
        if (next_ == nonce + 1) next_ = nonce;
        if (!*alive) return;
        continue;
      }
      Send(item.tx, std::move(item.done));
      if (!*alive) return;
    }
  } while (pump_again_);
  pumping_ = false;
}

void TxSender::Send(const v1::Transaction& tx, Done done) {
  const uint64_t nonce = tx.nonce();
  ledger_.Submit(tx, [this, alive = alive_, nonce, epoch = epoch_,
                      done = std::move(done)](const ledger::SubmitOutcome& out) {
    if (!*alive) return;
    if (!out.accepted() && epoch == epoch_ && nonce < next_) {
      // The ledger did not use this nonce (or may not have): start again
      // from it. Whatever was sent above it in this epoch is refused as a
      // gap, and those answers are ignored here. A nonce refused as a gap
      // or replay says the sequencer expects another one (it lost an
      // accepted transaction with its pending block, or took one whose
      // answer was lost): start again from the chain's nonce.
      next_ = out.refused(ledger::TxRule::kBadNonce) ? 0 : nonce;
      ++epoch_;
    }
    if (done) done(out);
    if (*alive) Pump();
  });
}

}  // namespace tipd::node
