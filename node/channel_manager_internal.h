// Internal to the channel manager's .cc files: the per-channel runtime
// state and small helpers they share. Not part of any interface.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "node/channel_manager.h"
#include "tipd/storage.pb.h"
#include "util/bytes.h"

namespace tipd::node {
namespace internal {

using Clk = std::chrono::steady_clock;

inline std::string Str(ByteSpan b) { return std::string(AsStringView(b)); }
inline std::string Hex(std::string_view bytes) { return HexEncode(AsSpan(bytes)); }
inline std::string Short(std::string_view bytes) { return Hex(bytes).substr(0, 16); }
const char* PhaseName(v1::StoredChannelPhase p);
// A ledger answer that did not accept a transaction, as a Status: an unknown
// outcome is kUnavailable (503), a rule the ledger applied
// kFailedPrecondition (409).
Status LedgerRefusal(const std::string& what, const ledger::SubmitOutcome& out);
ledger::ChannelId LedgerId(const std::string& id);

}  // namespace internal

struct ChannelManager::LiveChannel {
  // Phase, close reason, negotiated limits. Held without the four identity
  // fields the channel's params already hold (channel id, chain id, both
  // keys: about 340 bytes of heap per channel, issue 11); FullRecord() puts
  // them back for every write, so what is stored is the record as before.
  v1::StoredChannel record;
  channel::Channel ch;  // balances, proofs, receipt, what is in flight
  crypto::PublicKey peer;
  std::string id;  // channel id bytes

  // Session with the peer and the reestablish handshake on it.
  std::optional<p2p::PeerId> session;
  uint64_t epoch = 0;  // bumped on every connect and disconnect
  bool reestablish_sent = false;
  bool reestablished = false;
  // The rarely used parts are behind pointers: an idle channel pays 8 bytes
  // for each instead of the message (issue 11, docs/performance.md).
  std::unique_ptr<v1::Reestablish> peer_reestablish;
  int commits_pending = 0;
  // A Pump is posted for the tips queued in this turn of the io loop
  // (SchedulePump), so tips that arrive together fold into one update.
  bool pump_posted = false;
  std::map<uint64_t, internal::Clk::time_point> sent_at;  // by nonce, for ack latency

  // Closing. close_requested: this side wants to close (no new tips; phase
  // CLOSING). frozen: a close was submitted or seen on the ledger, so no
  // update of the peer is accepted any more. Per session: shutdown sent and
  // received, our signed proposal sent.
  bool close_requested = false;
  bool close_submitted = false;
  bool shutdown_sent = false;
  bool shutdown_received = false;
  bool proposal_sent = false;
  std::optional<channel::FinalBalances> proposed;
  std::unique_ptr<v1::CloseRequest> pending_proposal;  // B: A's, before we were quiescent
  std::vector<ChannelCallback> open_waiters;
  // The followed ledger height when this node stored (or, after a restart,
  // restored) the channel: the deadline of an unfunded open counts from it.
  uint64_t known_since_height = 0;
  std::vector<ChannelCallback> close_waiters;
  // The close transaction this node submitted (its body), kept until the
  // ledger shows the channel closing or settled: a sequencer that crashes
  // loses what it had not sealed, so Reconcile submits it again once it had
  // a block to land (or at once after no answer).
  struct PendingClose {
    v1::Transaction body;  // unilateral_close or cooperative_close set
    bool in_flight = false;
    bool accepted = false;
    uint64_t sent_height = 0;  // followed height when it was sent
  };
  std::unique_ptr<PendingClose> pending_close;

  LiveChannel(v1::StoredChannel r, channel::Channel c, crypto::PublicKey p)
      : record(std::move(r)), ch(std::move(c)), peer(p), id(record.channel_id()) {
    CompactRecord();
  }
  // The record as stored (identity fields included): what every write of
  // the channel record stages.
  v1::StoredChannel FullRecord() const {
    v1::StoredChannel full = record;
    if (record_compact_) {
      const channel::ChannelParams& p = ch.params();
      full.set_channel_id(id);
      full.set_chain_id(p.chain_id);
      full.set_local_key(internal::Str(p.local_key.bytes()));
      full.set_remote_key(internal::Str(p.remote_key.bytes()));
    }
    return full;
  }
  // Runs a ChannelDb stage function (StagePhase, StageDeposits) on the whole
  // record and keeps what it set, as if it had been given `&record`.
  template <typename StageFn>
  Status StageRecord(StageFn&& stage) {
    v1::StoredChannel full = FullRecord();
    Status s = stage(&full);
    record = std::move(full);
    CompactRecord();
    return s;
  }
  v1::StoredChannelPhase phase() const { return record.phase(); }
  bool usable() const { return session.has_value() && reestablished; }
  // We signed final balances, or a close is on its way to the ledger: never
  // accept another update of the peer (it could not be settled).
  bool frozen() const { return record.close_signature_given() || close_submitted; }
  // The newest proof of the peer's direction this node holds: the latest it
  // received, or a newer one the peer showed at reestablish after this node
  // was restored behind (record.peer_evidence_proof). Nonce 0: none. This is
  // what a close or the watcher submits.
  const v1::BalanceProof& partner_proof() const {
    return record.peer_evidence_proof().nonce() > ch.received_proof().nonce()
               ? record.peer_evidence_proof()
               : ch.received_proof();
  }

 private:
  // Drops the identity fields from `record` when the params hold exactly
  // the same bytes (always, for a record ChannelDb accepted); otherwise the
  // record stays whole.
  void CompactRecord() {
    const channel::ChannelParams& p = ch.params();
    if (record.channel_id() != AsStringView(p.channel_id) || record.chain_id() != p.chain_id ||
        record.local_key() != AsStringView(p.local_key.bytes()) ||
        record.remote_key() != AsStringView(p.remote_key.bytes())) {
      return;
    }
    record.set_allocated_channel_id(nullptr);
    record.set_allocated_chain_id(nullptr);
    record.set_allocated_local_key(nullptr);
    record.set_allocated_remote_key(nullptr);
    record_compact_ = true;
  }
  bool record_compact_ = false;
};

}  // namespace tipd::node
