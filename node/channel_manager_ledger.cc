// ChannelManager and the ledger: opens once agreed, deposits, and Reconcile after
// every block (phase changes, the watcher).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "ledger/codec.h"
#include "node/channel_manager.h"
#include "node/channel_manager_internal.h"

namespace tipd::node {

using namespace internal;

// ---------------------------------------------------------------------------
// Opening (the negotiation itself is open_negotiator.cc)

void ChannelManager::Open(const crypto::PublicKey& peer, uint64_t deposit, uint64_t push,
                          uint64_t settle_timeout, std::chrono::milliseconds wait,
                          ChannelCallback done) {
  if (!health_.ok()) return done(health_, "");
  negotiator_.Open(peer, deposit, push, settle_timeout, wait, std::move(done));
}

ChannelManager::LiveChannel* ChannelManager::Adopt(AgreedChannel agreed,
                                                   storage::WriteBatch* batch) {
  if (Status s = chdb_.StageNewChannel(batch, agreed.record); !s.ok()) {
    log_->error("channel {}: staging the new channel: {}", Short(agreed.record.channel_id()),
                s.ToString());
    return nullptr;
  }
  auto ch = channel::Channel::Open(agreed.params);
  if (!ch.ok()) return nullptr;  // the negotiator checked the same parameters
  auto live = std::make_unique<LiveChannel>(agreed.record, std::move(*ch), agreed.peer);
  LiveChannel* lp = live.get();
  stats_.NoteChannel(lp->id, agreed.peer.Hex());
  lp->session = peers_.FindPeer(agreed.peer);
  lp->known_since_height = ledger_.chain().height();
  channels_.emplace(std::string_view(lp->id), std::move(live));
  IndexPhase(*lp);
  return lp;
}

void ChannelManager::Accepted(AgreedChannel agreed, v1::Envelope accept) {
  const p2p::PeerId peer = agreed.session;
  storage::WriteBatch batch;
  LiveChannel* lp = Adopt(std::move(agreed), &batch);
  if (lp == nullptr) return;
  // Our signature is a promise: the channel record is durable before it
  // leaves, so a restart still knows the channel when the ledger opens it.
  CommitThen(lp, std::move(batch), [this, peer, accept = std::move(accept), lp](Status s) {
    if (!s.ok()) return;
    log_->info("accepted channel {} from {} (deposits {} / {})", Short(lp->id),
               lp->peer.Hex().substr(0, 16), lp->record.deposit_remote(),
               lp->record.deposit_local());
    Send(peer, accept);
    EmitChannel(*lp, "");
  });
}

void ChannelManager::Agreed(AgreedChannel agreed, v1::Transaction tx, std::string temporary_id,
                            std::chrono::milliseconds wait, ChannelCallback done) {
  const p2p::PeerId peer = agreed.session;
  storage::WriteBatch batch;
  LiveChannel* lp = Adopt(std::move(agreed), &batch);
  if (lp == nullptr) {
    txs_.Release(tx.nonce());  // the open will not happen: the next transaction takes it
    return done(Status::Internal("cannot record the new channel"), "");
  }
  lp->open_waiters.push_back(std::move(done));
  CommitThen(lp, std::move(batch), [this, lp, tx, peer, temporary_id, wait](Status s) {
    if (!s.ok()) {
      txs_.Release(tx.nonce());
      auto waiters = std::move(lp->open_waiters);
      for (auto& w : waiters) w(health_, "");
      return;
    }
    EmitChannel(*lp, "");
    const Hash32 tx_id = *ledger::TransactionId(tx);
    // The nonce reserved for this open (node/tx_sender.h) leaves with it.
    txs_.SubmitReserved(tx, [this, alive = alive_, lp, tx_id, peer, temporary_id,
                             wait](const ledger::SubmitOutcome& out) {
      if (!*alive) return;
      if (out.kind == ledger::SubmitOutcome::Kind::kRefused) {
        // Refused by a rule: it will never be included.
        storage::WriteBatch b;
        lp->record.set_close_reason("ledger refused the open: " + out.ToString());
        SetPhase(*lp, v1::STORED_CHANNEL_PHASE_CLOSED, &b);
        CommitThen(lp, std::move(b), [](Status) {});
        auto waiters = std::move(lp->open_waiters);
        for (auto& w : waiters) w(LedgerRefusal("open", out), HexEncode(tx_id));
        return;
      }
      if (out.kind == ledger::SubmitOutcome::Kind::kUnknown) {
        // The sequencer may have taken it: the channel stays OPENING until
        // the ledger decides (the channel appears, or a nonce it needed moves
        // on); Reconcile settles it either way after every block.
        log_->warn("channel {}: the open's outcome is unknown ({}); waiting for the ledger",
                   Short(lp->id), out.message);
      } else {
        v1::Envelope env;
        env.mutable_channel_opened()->set_temporary_id(temporary_id);
        env.mutable_channel_opened()->set_channel_id(lp->id);
        env.mutable_channel_opened()->set_tx_id(Str(tx_id));
        if (peers_.PeerKey(peer)) Send(peer, env);
      }
      WaitForInclusion(tx_id, wait, [this, lp, tx_id](bool included) {
        if (included) {
          Reconcile(*lp);  // the block observer normally got there first
          return;
        }
        auto waiters = std::move(lp->open_waiters);
        for (auto& w : waiters) w(ToApi(*lp), HexEncode(tx_id));  // still opening
      });
    });
  });
}

// ---------------------------------------------------------------------------
// Deposits

void ChannelManager::Deposit(const std::string& channel_id, uint64_t amount,
                             std::chrono::milliseconds wait, ChannelCallback done) {
  LiveChannel* live = Find(channel_id);
  if (live == nullptr) return done(Status::NotFound("no channel " + Hex(channel_id)), "");
  if (live->phase() != v1::STORED_CHANNEL_PHASE_OPEN) {
    return done(Status::FailedPrecondition(std::string("channel is ") + PhaseName(live->phase()) +
                                           "; deposits go only into an open channel"),
                "");
  }
  if (amount == 0) return done(Status::InvalidArgument("amount must be at least 1"), "");
  const ledger::Account* acct = ledger_.chain().state().FindAccount(key_.XOnly());
  const uint64_t fee = ledger_.chain().params().fee_per_tx;
  const uint64_t reserve = FeeReserve();
  const uint64_t balance = acct ? acct->balance : 0;
  if (static_cast<unsigned __int128>(amount) + fee + reserve > balance) {
    return done(Status::FailedPrecondition(
                    "INSUFFICIENT_FUNDS: the ledger balance " + std::to_string(balance) +
                    " cannot cover " + std::to_string(amount) + " plus the fee " +
                    std::to_string(fee) + " plus the fee reserve " + std::to_string(reserve)),
                "");
  }
  v1::Transaction tx = txs_.NewTx();
  tx.mutable_deposit()->set_channel_id(channel_id);
  tx.mutable_deposit()->set_amount(amount);
  LiveChannel* lp = live;
  txs_.Submit(std::move(tx),
              [this, lp, wait, done = std::move(done)](const ledger::SubmitOutcome& out) {
                if (out.kind == ledger::SubmitOutcome::Kind::kRefused) {
                  return done(LedgerRefusal("deposit", out), HexEncode(out.tx_id));
                }
                WaitForInclusion(out.tx_id, wait, [this, lp, done, tx_id = out.tx_id](bool) {
                  Reconcile(*lp);
                  done(ToApi(*lp), HexEncode(tx_id));
                });
              });
}

// ---------------------------------------------------------------------------
// The ledger: opens, deposits, closes, and the watcher

void ChannelManager::OnBlock(const v1::Block& block) {
  // The fees this node paid in the block, counted once (node/stats.h).
  storage::WriteBatch fees;
  if (stats_.StageBlockFees(&fees, block, ledger_.chain().params().chain_id, key_.XOnly())) {
    committer_.Submit(std::move(fees), [](Status) {});
  }
  const uint64_t height = block.header().height();
  if (reconcile_all_ || height != last_block_height_ + 1) {
    // The first block after Start, or one that does not follow the last
    // seen: look at every channel once, whatever the index says.
    reconcile_all_ = false;
    last_block_height_ = height;
    for (auto& [id, live] : channels_) Reconcile(*live);
    return;
  }
  last_block_height_ = height;
  // The channels this block's transactions name (each once)...
  std::set<std::string> due;
  const std::string& chain_id = ledger_.chain().params().chain_id;
  for (const v1::Transaction& tx : block.transactions()) {
    switch (tx.body_case()) {
      case v1::Transaction::kChannelOpen: {
        const v1::ChannelOpenTx& o = tx.channel_open();
        const ledger::ChannelId cid =
            ledger::DeriveChannelId(chain_id, AsSpan(o.party_a()), AsSpan(o.party_b()), tx.nonce());
        due.insert(Str(cid));
        break;
      }
      case v1::Transaction::kDeposit:
        due.insert(tx.deposit().channel_id());
        break;
      case v1::Transaction::kCooperativeClose:
        due.insert(tx.cooperative_close().close().channel_id());
        break;
      case v1::Transaction::kUnilateralClose:
        due.insert(tx.unilateral_close().channel_id());
        break;
      case v1::Transaction::kUpdateProof:
        due.insert(tx.update_proof().channel_id());
        break;
      case v1::Transaction::kSettle:
        due.insert(tx.settle().channel_id());
        break;
      case v1::Transaction::kTransfer:
      case v1::Transaction::BODY_NOT_SET:
        break;
    }
  }
  // ...and those that need a look at every height. Copied first: Reconcile
  // changes phases, so the index, as it goes.
  due.insert(every_block_.begin(), every_block_.end());
  for (const std::string& id : due) {
    auto it = channels_.find(id);
    if (it != channels_.end()) Reconcile(*it->second);
  }
}

void ChannelManager::IndexPhase(const LiveChannel& live) {
  if (live.phase() == v1::STORED_CHANNEL_PHASE_OPENING ||
      live.phase() == v1::STORED_CHANNEL_PHASE_CLOSING) {
    every_block_.insert(live.id);
  } else {
    every_block_.erase(live.id);
  }
}

void ChannelManager::Reconcile(LiveChannel& live) {
  if (live.phase() == v1::STORED_CHANNEL_PHASE_CLOSED) return;
  ++reconciles_;
  const ledger::LedgerState& state = ledger_.chain().state();
  const ledger::Channel* onchain = state.FindChannel(LedgerId(live.id));
  LiveChannel* lp = &live;
  if (onchain == nullptr) {
    if (live.phase() != v1::STORED_CHANNEL_PHASE_OPENING) return;
    // The open is A's transaction at nonce_a: it can never be included once
    // A's account nonce moved past it.
    crypto::XOnlyPubKey a = live.record.local_is_a() ? key_.XOnly() : live.peer.XOnly();
    const ledger::Account* acct_a = state.FindAccount(a);
    std::string abandoned;
    if (acct_a && acct_a->nonce > live.record.open_nonce_a()) {
      abandoned = "the open was abandoned: an account nonce it needed was used";
    } else if (!live.record.local_is_a() && live.record.deposit_local() == 0 &&
               ledger_.chain().height() >=
                   live.known_since_height + options_.open.unfunded_open_deadline_blocks) {
      // An opener that never submits would otherwise hold a pending-open
      // slot for ever (docs/security.md, Denial of service).
      abandoned = "the open was abandoned: not on the ledger " +
                  std::to_string(options_.open.unfunded_open_deadline_blocks) +
                  " blocks after this node accepted it (it funds nothing in it)";
    }
    if (!abandoned.empty()) {
      storage::WriteBatch batch;
      log_->info("channel {}: {}", Short(live.id), abandoned);
      live.record.set_close_reason(abandoned);
      SetPhase(live, v1::STORED_CHANNEL_PHASE_CLOSED, &batch);
      CommitThen(lp, std::move(batch), [](Status) {});
      auto waiters = std::move(live.open_waiters);
      for (auto& w : waiters) w(Status::FailedPrecondition("the channel open was abandoned"), "");
    }
    return;
  }
  storage::WriteBatch batch;
  bool write = false;
  // Deposits (top-ups) only grow.
  const bool a = live.record.local_is_a();
  const uint64_t dl = a ? onchain->deposit_a : onchain->deposit_b;
  const uint64_t dr = a ? onchain->deposit_b : onchain->deposit_a;
  const channel::ChannelSnapshot snap = live.ch.Snapshot();
  if (dl > snap.deposit_local || dr > snap.deposit_remote) {
    if (live.ch.SetDepositLocal(std::max(dl, snap.deposit_local)).ok() &&
        live.ch.SetDepositRemote(std::max(dr, snap.deposit_remote)).ok()) {
      (void)live.StageRecord([&](v1::StoredChannel* r) {
        return chdb_.StageDeposits(&batch, r, std::max(dl, snap.deposit_local),
                                   std::max(dr, snap.deposit_remote));
      });
      write = true;
      log_->info("channel {}: deposits now {} / {}", Short(live.id), dl, dr);
    }
  }
  switch (onchain->phase) {
    case ledger::ChannelPhase::kOpen:
      if (live.phase() == v1::STORED_CHANNEL_PHASE_OPENING) {
        SetPhase(live, v1::STORED_CHANNEL_PHASE_OPEN, &batch);  // reestablish follows
        write = true;
      }
      // A close we submitted that has not landed (the sequencer may have
      // lost it with its pending block): submit it again.
      if (live.phase() == v1::STORED_CHANNEL_PHASE_CLOSING) ResubmitLostClose(live);
      break;
    case ledger::ChannelPhase::kClosing: {
      live.pending_close.reset();
      if (live.phase() != v1::STORED_CHANNEL_PHASE_CLOSING) {
        live.record.set_close_reason(onchain->closer == key_.XOnly()
                                         ? "closed unilaterally by this node"
                                         : "closed unilaterally by the peer");
        SetPhase(live, v1::STORED_CHANNEL_PHASE_CLOSING, &batch);
        write = true;
      }
      // Nothing acknowledged from now on could reach the ledger.
      if (!live.close_submitted) Freeze(live);
      WatchView view;
      view.channel_id = live.id;
      view.local_is_a = live.record.local_is_a();
      if (live.partner_proof().nonce() > 0) view.partner_proof = live.partner_proof();
      watcher_.Check(view, *onchain, ledger_.chain().height());
      break;
    }
    case ledger::ChannelPhase::kSettled:
      live.pending_close.reset();
      if (live.record.close_reason().empty()) live.record.set_close_reason("settled");
      SetPhase(live, v1::STORED_CHANNEL_PHASE_CLOSED, &batch);
      watcher_.Forget(live.id);
      write = true;
      log_->info("channel {} settled: payout {} to A, {} to B", Short(live.id), onchain->payout_a,
                 onchain->payout_b);
      break;
  }
  if (!write) return;
  CommitThen(lp, std::move(batch), [this, lp](Status s) {
    if (!s.ok()) return;
    if (lp->phase() == v1::STORED_CHANNEL_PHASE_OPEN) {
      auto waiters = std::move(lp->open_waiters);
      for (auto& w : waiters) w(ToApi(*lp), "");
      if (lp->session && !lp->reestablish_sent) SendReestablish(*lp);
    }
    if (lp->phase() == v1::STORED_CHANNEL_PHASE_CLOSED) {
      auto waiters = std::move(lp->close_waiters);
      for (auto& w : waiters) w(ToApi(*lp), "");
      // Tips signed but never acknowledged may have been settled: they are
      // answered as pending with their nonce, never as "nothing paid".
      requests_.Release(lp->id, "the channel closed before the tip was acknowledged");
    }
  });
}

}  // namespace tipd::node
