// ChannelManager: cooperative and unilateral close (the tour is in channel_manager.h).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "ledger/codec.h"
#include "node/channel_manager.h"
#include "node/channel_manager_internal.h"

namespace tipd::node {

using namespace internal;

// ---------------------------------------------------------------------------
// Closing

void ChannelManager::Close(const std::string& channel_id, bool force,
                           std::chrono::milliseconds wait, ChannelCallback done) {
  LiveChannel* live = Find(channel_id);
  if (live == nullptr) return done(Status::NotFound("no channel " + Hex(channel_id)), "");
  const auto phase = live->phase();
  if (phase == v1::STORED_CHANNEL_PHASE_CLOSED) {
    return done(Status::FailedPrecondition("channel is already closed"), "");
  }
  if (phase == v1::STORED_CHANNEL_PHASE_OPENING) {
    return done(Status::FailedPrecondition(
                    "channel is still opening; close it once the ledger has opened it"),
                "");
  }
  const ledger::Channel* onchain = ledger_.chain().state().FindChannel(LedgerId(channel_id));
  if (onchain && onchain->phase == ledger::ChannelPhase::kClosing) {
    return done(ToApi(*live), "");  // closing on the ledger: the watcher settles it
  }
  if (force) {
    ForceClose(*live, "closed unilaterally on request", std::move(done));
    return;
  }
  if (!live->session) {
    return done(Status::Unavailable("peer " + live->peer.Hex() +
                                    " is not connected; a cooperative close needs it (use "
                                    "force for a unilateral close)"),
                "");
  }
  live->close_waiters.push_back(std::move(done));
  timers_.After(wait, [this, alive = alive_, lp = live] {
    if (!*alive) return;
    auto waiters = std::move(lp->close_waiters);
    for (auto& w : waiters) w(ToApi(*lp), "");  // still closing: 202
  });
  RequestClose(*live);
}

void ChannelManager::RequestClose(LiveChannel& live) {
  if (live.close_requested) return TrySendShutdown(live);
  live.close_requested = true;
  storage::WriteBatch batch;
  SetPhase(live, v1::STORED_CHANNEL_PHASE_CLOSING, &batch);
  CommitThen(&live, std::move(batch), [](Status) {});  // TrySendShutdown follows the commit
}

void ChannelManager::TrySendShutdown(LiveChannel& live) {
  // Our shutdown follows every update we will ever send on this channel.
  if (!live.close_requested || live.shutdown_sent || live.close_submitted || !live.usable() ||
      live.commits_pending > 0 || live.ch.queued_tips() > 0) {
    return;
  }
  live.shutdown_sent = true;
  v1::Envelope env;
  env.mutable_close_request()->set_channel_id(live.id);
  Send(*live.session, env);
}

void ChannelManager::MaybeProposeClose(LiveChannel& live) {
  if (!live.record.local_is_a() && live.pending_proposal && live.usable() &&
      live.ch.updates_in_flight() == 0 && live.shutdown_sent) {
    v1::CloseRequest m = *live.pending_proposal;
    return HandleCloseRequest(*live.session, m);
  }
  // Party A proposes and B answers, so one close transaction is submitted.
  if (!live.record.local_is_a() || !live.shutdown_sent || !live.shutdown_received ||
      live.proposal_sent || live.close_submitted || !live.usable() || live.commits_pending > 0 ||
      live.ch.updates_in_flight() > 0 || live.ch.queued_tips() > 0) {
    return;
  }
  auto fb = live.ch.FinalBalancesNow();
  auto sig = live.ch.SignCooperativeClose(key_, rng_);
  if (!fb.ok() || !sig.ok()) {
    log_->warn("channel {}: cannot propose a close yet: {}", Short(live.id),
               fb.ok() ? sig.error().ToString() : fb.error().ToString());
    return;
  }
  live.proposal_sent = true;
  live.proposed = *fb;
  v1::Envelope env;
  v1::CloseRequest& r = *env.mutable_close_request();
  r.set_channel_id(live.id);
  r.set_balance_a(fb->balance_a);
  r.set_balance_b(fb->balance_b);
  r.set_signature(Str(*sig));
  GiveCloseSignature(live, env);
}

void ChannelManager::GiveCloseSignature(LiveChannel& live, v1::Envelope env) {
  // Durable before the signature leaves: after a restart we still refuse
  // the peer's updates, since it could close on the signed balances.
  const uint64_t epoch = live.epoch;
  storage::WriteBatch batch;
  if (!live.record.close_signature_given()) {
    live.record.set_close_signature_given(true);
    (void)live.StageRecord(
        [&](v1::StoredChannel* r) { return chdb_.StagePhase(&batch, r, live.phase()); });
  }
  LiveChannel* lp = &live;
  CommitThen(lp, std::move(batch), [this, lp, env = std::move(env), epoch](Status s) {
    if (s.ok() && lp->session && lp->epoch == epoch) Send(*lp->session, env);
  });
}

void ChannelManager::HandleCloseRequest(p2p::PeerId peer, const v1::CloseRequest& m) {
  LiveChannel* live = FindForPeer(peer, m.channel_id());
  if (live == nullptr) return;
  if (m.signature().empty()) {
    // Shutdown: the peer sends no new updates after this; we finish what we
    // queued, send ours, and then either side may propose the balances.
    live->shutdown_received = true;
    RequestClose(*live);
    MaybeProposeClose(*live);
    return;
  }
  // A signed proposal: it must match our final balances exactly. Our acks
  // of the last updates may still be committing; that does not change them.
  if (!live->shutdown_sent || !live->shutdown_received || live->ch.updates_in_flight() > 0) {
    log_->info("channel {}: close proposal before we are quiescent; answering it once we are",
               Short(live->id));
    live->pending_proposal = std::make_unique<v1::CloseRequest>(m);
    return;
  }
  live->pending_proposal.reset();
  auto st = live->ch.CheckCooperativeClose(m.balance_a(), m.balance_b(), AsSpan(m.signature()));
  if (!st.ok()) {
    log_->warn("channel {}: close proposal refused: {}", Short(live->id), st.error().ToString());
    return;
  }
  auto sig = live->ch.SignCooperativeClose(key_, rng_);
  if (!sig.ok()) return;
  v1::Envelope env;
  env.mutable_close_signed()->set_channel_id(live->id);
  env.mutable_close_signed()->set_signature(Str(*sig));
  GiveCloseSignature(*live, std::move(env));
  log_->info("channel {}: signed the cooperative close ({} / {})", Short(live->id), m.balance_a(),
             m.balance_b());
}

void ChannelManager::HandleCloseSigned(p2p::PeerId peer, const v1::CloseSigned& m) {
  LiveChannel* live = FindForPeer(peer, m.channel_id());
  if (live == nullptr || !live->proposed || live->close_submitted) return;
  const channel::FinalBalances fb = *live->proposed;
  if (auto st = live->ch.CheckCooperativeClose(fb.balance_a, fb.balance_b, AsSpan(m.signature()));
      !st.ok()) {
    log_->warn("channel {}: peer's close signature refused: {}", Short(live->id),
               st.error().ToString());
    return;
  }
  auto ours = live->ch.SignCooperativeClose(key_, rng_);
  if (!ours.ok()) return;
  live->close_submitted = true;
  v1::Transaction tx = txs_.NewTx();
  v1::CooperativeClose& c = *tx.mutable_cooperative_close()->mutable_close();
  c.set_chain_id(ledger_.chain().params().chain_id);
  c.set_channel_id(live->id);
  c.set_balance_a(fb.balance_a);
  c.set_balance_b(fb.balance_b);
  const bool a = live->record.local_is_a();
  c.set_signature_a(a ? Str(*ours) : m.signature());
  c.set_signature_b(a ? m.signature() : Str(*ours));
  LiveChannel* lp = live;
  SubmitClose(*live, std::move(tx), [this, lp](const ledger::SubmitOutcome& out) {
    if (out.refused(ledger::TxRule::kChannelNotOpen)) return;  // settled already
    if (!out.accepted()) {
      // Both signatures exist: a resubmission (or the peer's) may still land.
      lp->close_submitted = false;
      log_->warn("channel {}: cooperative close not taken: {}", Short(lp->id), out.ToString());
      auto waiters = std::move(lp->close_waiters);
      for (auto& w : waiters) {
        w(LedgerRefusal("cooperative close", out), HexEncode(out.tx_id));
      }
      return;
    }
    // The waiters are answered when the block settles the channel.
    log_->info("channel {}: cooperative close submitted (tx {})", Short(lp->id),
               HexEncode(out.tx_id).substr(0, 16));
  });
}

void ChannelManager::Freeze(LiveChannel& live) {
  live.close_submitted = true;
  live.close_requested = true;
  // Tips never folded into an update will not be sent.
  requests_.RefuseUnsigned(live.id, TipError::kChannelNotOpen,
                           "the channel is closing; the tip was not sent");
}

void ChannelManager::ForceClose(LiveChannel& live, const std::string& why, ChannelCallback done) {
  if (done) live.close_waiters.push_back(std::move(done));
  if (live.close_submitted) return;
  if (live.record.restored_awaiting_peer()) {
    // The proof we hold may be older than what the peer paid us since the
    // backup; if the peer reconnects within the window it shows its newest
    // and the watcher submits that.
    log_->warn(
        "channel {}: closing a restored channel before the peer showed its state; the "
        "peer's proof we submit may be stale",
        Short(live.id));
  }
  Freeze(live);
  live.record.set_close_reason(why);
  live.record.set_unilateral_close_requested(true);
  storage::WriteBatch batch;
  SetPhase(live, v1::STORED_CHANNEL_PHASE_CLOSING, &batch);
  LiveChannel* lp = &live;
  CommitThen(lp, std::move(batch), [this, lp](Status s) {
    if (!s.ok()) return;
    v1::Transaction tx = txs_.NewTx();
    v1::UnilateralCloseTx& u = *tx.mutable_unilateral_close();
    u.set_channel_id(lp->id);
    if (lp->partner_proof().nonce() > 0) *u.mutable_partner_proof() = lp->partner_proof();
    SubmitClose(*lp, std::move(tx), [this, lp](const ledger::SubmitOutcome& out) {
      auto waiters = std::move(lp->close_waiters);
      if (!out.accepted()) {
        // Stays frozen (CLOSING): the caller may close again; the watcher
        // takes over if the peer closes first.
        lp->close_submitted = out.kind == ledger::SubmitOutcome::Kind::kUnknown;
        log_->warn("channel {}: unilateral close not taken: {}", Short(lp->id), out.ToString());
        for (auto& w : waiters) {
          w(LedgerRefusal("unilateral close", out), HexEncode(out.tx_id));
        }
        return;
      }
      log_->info("channel {}: unilateral close submitted (tx {})", Short(lp->id),
                 HexEncode(out.tx_id).substr(0, 16));
      for (auto& w : waiters) w(ToApi(*lp), HexEncode(out.tx_id));
    });
  });
}

void ChannelManager::SubmitClose(LiveChannel& live, v1::Transaction tx,
                                 std::function<void(const ledger::SubmitOutcome&)> answer) {
  live.pending_close = std::make_unique<LiveChannel::PendingClose>();
  LiveChannel::PendingClose& pending = *live.pending_close;
  pending.body = tx;
  pending.in_flight = true;
  pending.sent_height = ledger_.chain().height();
  LiveChannel* lp = &live;
  txs_.Submit(std::move(tx), [lp, answer = std::move(answer)](const ledger::SubmitOutcome& out) {
    if (lp->pending_close) {
      lp->pending_close->in_flight = false;
      lp->pending_close->accepted = out.accepted();
      // Refused by a rule: the same close would be refused again (a nonce
      // the sequencer lost with its pending block is drawn afresh next time).
      if (out.kind == ledger::SubmitOutcome::Kind::kRefused &&
          !out.refused(ledger::TxRule::kBadNonce)) {
        lp->pending_close.reset();
      }
    }
    if (answer) answer(out);
  });
}

void ChannelManager::ResubmitLostClose(LiveChannel& live) {
  if (!live.pending_close || live.pending_close->in_flight) return;
  // Accepted into the pending block: the next block gets the chance to hold it.
  if (live.pending_close->accepted &&
      ledger_.chain().height() <= live.pending_close->sent_height + 1) {
    return;
  }
  const v1::Transaction body = live.pending_close->body;
  v1::Transaction tx = txs_.NewTx();
  if (body.has_unilateral_close()) {
    *tx.mutable_unilateral_close() = body.unilateral_close();
  } else if (body.has_cooperative_close()) {
    *tx.mutable_cooperative_close() = body.cooperative_close();
  } else {
    live.pending_close.reset();
    return;
  }
  const char* kind = body.has_unilateral_close() ? "unilateral" : "cooperative";
  log_->warn("channel {}: the ledger still shows it open; submitting its {} close again",
             Short(live.id), kind);
  const std::string id = live.id;
  SubmitClose(live, std::move(tx), [this, id, kind](const ledger::SubmitOutcome& out) {
    if (out.accepted()) {
      log_->info("channel {}: {} close submitted again (tx {})", Short(id), kind,
                 HexEncode(out.tx_id).substr(0, 16));
    } else {
      log_->warn("channel {}: {} close not taken again: {}", Short(id), kind, out.ToString());
    }
  });
}

}  // namespace tipd::node
