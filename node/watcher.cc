#include "node/watcher.h"

#include <spdlog/spdlog.h>

#include "util/bytes.h"

namespace tipd::node {
namespace {
std::string Short(std::string_view bytes) { return HexEncode(AsSpan(bytes)).substr(0, 16); }
}  // namespace

bool Watcher::Attempt::Due(uint64_t height) const {
  if (in_flight) return false;
  // Accepted into the pending block: give the next block the chance to hold it.
  if (accepted && height <= sent_height + 1) return false;
  return true;
}

Watcher::Watcher(TxSender& txs, std::shared_ptr<spdlog::logger> log)
    : txs_(txs), log_(std::move(log)), alive_(std::make_shared<bool>(true)) {}

Watcher::~Watcher() { *alive_ = false; }

void Watcher::Forget(const std::string& channel_id) { duties_.erase(channel_id); }

void Watcher::Check(const WatchView& view, const ledger::Channel& onchain, uint64_t height) {
  if (onchain.phase != ledger::ChannelPhase::kClosing) {
    duties_.erase(view.channel_id);
    return;
  }
  Duty& duty = duties_[view.channel_id];
  // The peer's direction: what it paid us. Whoever closed, the ledger must
  // hold our newest copy before the window ends.
  const ledger::HeldProof& held = view.local_is_a ? onchain.proof_b_to_a : onchain.proof_a_to_b;
  if (height <= onchain.WindowEnd() && view.partner_proof &&
      view.partner_proof->nonce() > held.nonce) {
    const bool newer_than_sent = view.partner_proof->nonce() > duty.proof.nonce;
    if (newer_than_sent || duty.proof.Due(height)) {
      if (!duty.proof.in_flight) {
        log_->warn(
            "channel {}: the ledger holds the peer's proof at nonce {}; submitting its latest "
            "proof "
            "(nonce {}) before height {}",
            Short(view.channel_id), held.nonce, view.partner_proof->nonce(), onchain.WindowEnd());
        SubmitProof(view.channel_id, *view.partner_proof, height);
      }
    }
  }
  // A transaction sent now lands at height + 1 or later: Settle is valid once
  // that is past the window.
  if (height >= onchain.WindowEnd() && duty.settle.Due(height)) {
    SubmitSettle(view.channel_id, height);
  }
}

void Watcher::SubmitProof(const std::string& id, const v1::BalanceProof& proof, uint64_t height) {
  duties_[id].proof.nonce = proof.nonce();
  ++counts_.proofs_submitted;
  v1::Transaction tx = txs_.NewTx();
  tx.mutable_update_proof()->set_channel_id(id);
  *tx.mutable_update_proof()->mutable_proof() = proof;
  Submit(id, &Duty::proof, std::move(tx), height, "proof update");
}

void Watcher::SubmitSettle(const std::string& id, uint64_t height) {
  ++counts_.settles_submitted;
  v1::Transaction tx = txs_.NewTx();
  tx.mutable_settle()->set_channel_id(id);
  Submit(id, &Duty::settle, std::move(tx), height, "settle");
}

void Watcher::Submit(const std::string& id, Attempt Duty::*which, v1::Transaction tx,
                     uint64_t height, const char* what) {
  Attempt& a = duties_[id].*which;
  a.in_flight = true;
  a.accepted = false;
  a.sent_height = height;
  txs_.Submit(std::move(tx),
              [this, alive = alive_, id, which, what](const ledger::SubmitOutcome& out) {
                if (!*alive) return;
                auto it = duties_.find(id);
                if (it == duties_.end()) return;
                Attempt& a = it->second.*which;
                a.in_flight = false;
                a.accepted = out.accepted();
                if (out.accepted()) {
                  log_->info("channel {}: {} submitted (tx {})", Short(id), what,
                             HexEncode(out.tx_id).substr(0, 16));
                  return;
                }
                // Refused (the other party may have settled first) or no answer: the
                // next block decides and, if the ledger does not show it done, retries.
                ++counts_.refusals;
                log_->warn("channel {}: {} not taken ({}); retrying at the next block", Short(id),
                           what, out.ToString());
              });
}

}  // namespace tipd::node
