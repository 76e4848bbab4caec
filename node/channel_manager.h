// ChannelManager: the node's live payment channels. It drives one
// channel::Channel per channel over a PeerTransport, persists every step
// through ChannelDb and the GroupCommitter before it promises anything,
// follows the ledger (a LedgerLink) for opens, deposits and closes, and hands
// its parts the work that is theirs:
//
//   OpenNegotiator  (open_negotiator.h)  the open handshake until both signed
//   TipRequests     (tip_requests.h)     API calls waiting for their tips,
//                                        idempotency keys, the ack wait
//   Watcher         (watcher.h)          closing channels: proofs and settle
//   TxSender        (tx_sender.h)        this node's ledger transactions
//
// What stays here shares one per-channel state (LiveChannel, below), each
// fact held once: the Channel holds balances, proofs, the receipt and what is
// in flight; the record holds the phase; LiveChannel holds the session.
//
// Tour (docs/channels.md has the message flows; docs/architecture.md follows
// one tip through every hop):
//   tips      SendTip -> TipRequests (replay?) -> Channel::QueueTip -> Pump:
//             TakeNextUpdate, stage (update + tips + key record + spend +
//             events), commit, then send TipUpdate. Receiver: CheckUpdate,
//             ApplyUpdate, MakeAck, stage (proof + tips + ack + events),
//             commit, then send Ack. Ack: OnAck, stage the receipt, commit,
//             then TipRequests answers the covered tips; Pump again.
//   reconnect on every session both sides send Reestablish for each shared
//             channel (after their pending writes are durable) and follow the
//             ReestablishPlan before any new update.
//   close     cooperative: once neither side has anything in flight, A
//             proposes signed final balances, B checks and signs, A submits.
//             Unilateral: submit the peer's latest proof. From the moment a
//             close is submitted or seen on the ledger no update is accepted:
//             nothing is acknowledged that could not reach the ledger.
//   ledger    after every block: opens, deposits, closes (Reconcile) and the
//             watcher for each channel the ledger shows closing.
//
// Persist before you promise: nothing leaves the node (a TipUpdate, an Ack, a
// CloseSigned, an API answer, an event) before the records it depends on are
// synced. A write that fails puts the node in read-only mode: the tips it
// carried are refused (they were never sent), new tips and opens are refused
// with the reason, /v1/info and the logs say why; a restart recovers from
// what is on disk.
//
// Threading: everything runs on one event thread (the io_context's); the
// GroupCommitter's completions are posted back to it in submission order.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "crypto/crypto.h"
#include "ledger/link.h"
#include "node/channel_db.h"
#include "node/open_negotiator.h"
#include "node/refunds.h"
#include "node/seams.h"
#include "node/stats.h"
#include "node/tip_requests.h"
#include "node/tx_sender.h"
#include "node/watcher.h"
#include "p2p/p2p.h"
#include "storage/storage.h"
#include "tipd/api.pb.h"
#include "tipd/wire.pb.h"
#include "util/clock.h"
#include "util/metrics.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace spdlog {
class logger;
}

namespace tipd::node {

struct ChannelManagerOptions {
  OpenPolicy open;
  // How long SendTip waits for the ack before answering "pending".
  std::chrono::milliseconds ack_wait{30'000};
  // Test/debug only (`--debug-proof-log`): when set, every balance proof this
  // node signed is appended to this file as one text line right before the
  // TipUpdate carrying it is handed to the transport, with write(2) (no user
  // buffer, so a SIGKILLed node's lines survive). Format in
  // docs/configuration.md. Empty: off.
  std::string debug_proof_log;
};

class AnomalyDetector;

class ChannelManager {
 public:
  // Every reference must outlive the manager. `io` runs the event thread:
  // commit completions are posted to it.
  ChannelManager(boost::asio::io_context& io, const crypto::KeyPair& key, PeerTransport& peers,
                 ledger::LedgerLink& ledger, storage::Database& db,
                 storage::GroupCommitter& committer, const Clock& clock, Timers& timers,
                 crypto::RandomSource& rng, ChannelManagerOptions options = {});
  ~ChannelManager();
  ChannelManager(const ChannelManager&) = delete;
  ChannelManager& operator=(const ChannelManager&) = delete;

  // Restores every stored channel and registers the block observer. Call once
  // before the event thread runs.
  Status Start();
  void SetEventSink(EventSink* sink) { events_ = sink; }
  // Screens sent tips at admission and received ones once acknowledged
  // (node/anomaly.h); null: no rules. Set before Start.
  void SetAnomalyDetector(AnomalyDetector* detector) { anomalies_ = detector; }
  void RegisterMetrics(MetricsRegistry& metrics);

  // Transport events.
  void OnPeerConnected(const p2p::PeerInfo& info);
  void OnPeerDisconnected(const p2p::DisconnectEvent& ev);
  // True if the message was the manager's.
  bool OnMessage(p2p::PeerId peer, const v1::Envelope& env);
  void OnPeerError(p2p::PeerId peer, const v1::Error& error);

  // ---- API ----
  // Negotiates, signs and submits an open; answers once the ledger includes
  // it (or with state "opening" after `wait`).
  void Open(const crypto::PublicKey& peer, uint64_t deposit, uint64_t push_deposit,
            uint64_t settle_timeout, std::chrono::milliseconds wait, ChannelCallback done);
  void Deposit(const std::string& channel_id, uint64_t amount, std::chrono::milliseconds wait,
               ChannelCallback done);
  void Close(const std::string& channel_id, bool force, std::chrono::milliseconds wait,
             ChannelCallback done);
  void SendTip(TipRequestIn request, TipCallback done);
  // Refunds the received tip `index` of `channel_id` (docs/api.md
  // "Refunds"): a tip back over the same channel whose metadata links it
  // (refund_of). `request.draft.amount` 0 refunds what is left. Refusals:
  // TIP_NOT_FOUND, REFUND_OF_REFUND, REFUND_EXCEEDS_ORIGINAL,
  // TOO_MANY_REFUNDS (kChannelRule with that code), and every SendTip one.
  // An idempotency key is bound to the request as given (channel, index,
  // amount asked, message), so "refund the rest" replays after it was paid.
  void Refund(TipRequestIn request, uint64_t index, TipCallback done);

  std::vector<v1::ChannelApi> ListChannels() const;
  // A page of GET /v1/channels: up to `limit` channels in channel id order
  // after `cursor` (the hex id of the last channel of the previous page;
  // empty: from the first). next_cursor is empty on the last page.
  Result<v1::ListChannelsResponse> ListChannelsPage(uint32_t limit,
                                                    const std::string& cursor) const;
  Result<v1::ChannelApi> GetChannel(const std::string& channel_id) const;
  // Tip history: both or one direction, every channel or one, by cursor.
  Result<v1::ListTipsResponse> ListTips(const std::string& direction, const std::string& channel_id,
                                        uint32_t limit, const std::string& cursor) const;
  // The open and closing channels with the newest proofs of both directions,
  // for GET /v1/recovery (docs/operator-guide.md, "Backups and recovery").
  std::vector<v1::RecoveryChannel> RecoveryChannels() const;
  // Sums for GET /v1/balance.
  void Balances(v1::BalanceResponse* out) const;
  size_t channel_count() const { return channels_.size(); }
  // The ledger balance this node never commits (deposits, funding a peer's
  // channel, transfers): the fees to close, update a proof and settle every
  // channel it has (plus `extra` more), and the deposits it promised to
  // channels still opening. docs/channels.md, "Fee reserve".
  uint64_t FeeReserve(uint64_t extra = 0) const;
  // Not OK once a write failed: the node refuses new work (read-only).
  const Status& health() const { return health_; }

  // GET /v1/stats: the aggregates staged with every update (node/stats.h).
  const StatsIndex& stats() const { return stats_; }

  // For tests: the parts.
  const TipRequests& tip_requests() const { return requests_; }
  const Watcher& watcher() const { return watcher_; }
  const OpenNegotiator& negotiator() const { return negotiator_; }
  // This node's ledger transactions, in nonce order (the transfer API
  // submits through it too).
  TxSender& tx_sender() { return txs_; }
  // For tests: how many times Reconcile looked at a channel. A block looks
  // only at the channels its transactions name and at the opening and
  // closing ones, never at every idle open channel.
  uint64_t reconciles() const { return reconciles_; }

  struct LiveChannel;  // one channel's runtime state (channel_manager.cc)

 private:
  void SendTipHashed(TipRequestIn request, const Hash32& request_hash, TipCallback done);
  // A received tip that names a refund_of link: checks the link and stages
  // its total (and the tip_refunded event) if valid; the error otherwise.
  std::string AcceptRefundLink(LiveChannel& live, const v1::Tip& tip, storage::WriteBatch* batch,
                               std::vector<v1::Event>* staged);
  // Fills refund_of / refunded_total / refund_link_error of history tips.
  Status AnnotateRefunds(const LiveChannel& live, storage::Direction dir,
                         std::vector<v1::TipApi*>& tips) const;

  // Messages.
  void HandleTipUpdate(p2p::PeerId peer, const v1::TipUpdate& m);
  void HandleAck(p2p::PeerId peer, const v1::Ack& m);
  void HandleReestablish(p2p::PeerId peer, const v1::Reestablish& m);
  void HandleCloseRequest(p2p::PeerId peer, const v1::CloseRequest& m);
  void HandleCloseSigned(p2p::PeerId peer, const v1::CloseSigned& m);
  void HandleUpdateRejected(p2p::PeerId peer, const v1::UpdateRejected& m);

  // Opening (after the negotiator agreed).
  void Accepted(AgreedChannel agreed, v1::Envelope accept);
  void Agreed(AgreedChannel agreed, v1::Transaction open_tx, std::string temporary_id,
              std::chrono::milliseconds wait, ChannelCallback done);
  LiveChannel* Adopt(AgreedChannel agreed, storage::WriteBatch* batch);

  // Channel steps.
  LiveChannel* Find(const std::string& channel_id);
  const LiveChannel* Find(const std::string& channel_id) const;
  LiveChannel* FindForPeer(p2p::PeerId peer, const std::string& channel_id);
  void Pump(LiveChannel& live);
  // Pumps `live` once the handlers already due on the io thread have run
  // (one post per channel at a time): the tips that reach the node together
  // (the tips of a batch request, the requests read in one poll) fold into
  // one update instead of each taking a slot of the window alone. A lone
  // tip waits for nothing but the post.
  void SchedulePump(LiveChannel& live);
  void SendReestablish(LiveChannel& live);
  // Sends the reestablishes a new session waits for, as many as its send
  // queue has room for (keeping half of it for everything else), and the
  // rest as it drains: a peer with thousands of channels would otherwise
  // overflow the queue, lose the session, and do the same on every
  // reconnect.
  void SendQueuedReestablishes(p2p::PeerId peer);
  void ApplyPlan(LiveChannel& live, channel::ReestablishPlan plan);
  void MaybeProposeClose(LiveChannel& live);
  void RequestClose(LiveChannel& live);
  void TrySendShutdown(LiveChannel& live);
  void GiveCloseSignature(LiveChannel& live, v1::Envelope env);
  void CommitThen(LiveChannel* live, storage::WriteBatch batch, std::function<void(Status)> then);
  void SetPhase(LiveChannel& live, v1::StoredChannelPhase phase, storage::WriteBatch* batch);
  void PeerBrokeRule(LiveChannel& live, p2p::PeerId peer, const channel::ChannelError& e,
                     uint64_t nonce);
  void ForceClose(LiveChannel& live, const std::string& why, ChannelCallback done);
  // Submits `tx` (its body a close) and keeps it as the channel's pending
  // close; `answer` gets the ledger's first answer.
  void SubmitClose(LiveChannel& live, v1::Transaction tx,
                   std::function<void(const ledger::SubmitOutcome&)> answer);
  // The ledger still shows open a channel this node closed: submit the close
  // again if the last submission had its chance (Reconcile, every block).
  void ResubmitLostClose(LiveChannel& live);
  // The channel will take no further update: a close was submitted or seen.
  void Freeze(LiveChannel& live);
  void Send(p2p::PeerId peer, const v1::Envelope& env);
  // Appends the proof of an outgoing TipUpdate to the debug proof log.
  void LogSentProof(const v1::TipUpdate& update);
  void EnterReadOnly(const std::string& what, const Status& why);

  // Ledger.
  void OnBlock(const v1::Block& block);
  void Reconcile(LiveChannel& live);
  // Keeps `live` in every_block_ exactly while its phase needs a look at
  // every height (OPENING, CLOSING); called wherever a phase is set.
  void IndexPhase(const LiveChannel& live);
  void WaitForInclusion(const Hash32& tx_id, std::chrono::milliseconds wait,
                        std::function<void(bool included)> done);

  std::optional<v1::TipReceiptApi> ReceiptOf(const std::string& channel_id, uint64_t nonce) const;
  v1::ChannelApi ToApi(const LiveChannel& live) const;
  void Emit(storage::WriteBatch* batch, v1::Event event, std::vector<v1::Event>* staged);
  void EmitNow(v1::Event event);
  // Publishes staged events once their batch is durable, or abandons them.
  // Publishes (moving them out) or abandons the events of a batch.
  void PublishStaged(std::vector<v1::Event>& staged, const Status& written);
  void EmitChannel(const LiveChannel& live, const std::string& previous_state);

  boost::asio::io_context& io_;
  const crypto::KeyPair& key_;
  PeerTransport& peers_;
  ledger::LedgerLink& ledger_;
  storage::GroupCommitter& committer_;
  const Clock& clock_;
  Timers& timers_;
  crypto::RandomSource& rng_;
  ChannelManagerOptions options_;
  ChannelDb chdb_;
  std::shared_ptr<spdlog::logger> log_;
  TxSender txs_;
  std::shared_ptr<RefundBook> refunds_;
  TipRequests requests_;
  Watcher watcher_;
  OpenNegotiator negotiator_;
  EventSink* events_ = nullptr;
  StatsIndex stats_;
  AnomalyDetector* anomalies_ = nullptr;
  Status health_;
  std::shared_ptr<bool> alive_;
  int proof_log_fd_ = -1;  // the debug proof log, -1 when off

  // By channel id bytes; each key views its channel's `id` (no second copy
  // of the id per channel, issue 11). Channels are never removed.
  std::map<std::string_view, std::unique_ptr<LiveChannel>, std::less<>> channels_;
  // Per new session: the channel ids whose reestablish waits for room.
  std::map<p2p::PeerId, std::deque<std::string>> reestablish_backlog_;
  // The channels Reconcile must see at every height, whatever the block
  // holds: OPENING (the abandon rules follow the height and A's account
  // nonce) and CLOSING (the watcher's windows, a lost close resubmitted).
  // Every other channel changes on the ledger only through a transaction
  // that names it. Maintained by IndexPhase, never rebuilt by a scan.
  std::set<std::string> every_block_;
  // The next block reconciles every channel once: set at Start and when a
  // block does not follow the last one seen (a resync), so a restart or a
  // catch-up never rests on the index alone.
  bool reconcile_all_ = true;
  uint64_t last_block_height_ = 0;
  uint64_t reconciles_ = 0;
  // Channel events SetPhase staged; the next CommitThen takes them.
  std::vector<v1::Event> phase_events_;

  // Metrics (null until RegisterMetrics).
  Counter* tips_sent_ = nullptr;
  Counter* tips_received_ = nullptr;
  Counter* amount_sent_ = nullptr;
  Counter* amount_received_ = nullptr;
  Counter* updates_sent_ = nullptr;
  Histogram* tips_per_update_ = nullptr;
  Histogram* ack_latency_ = nullptr;
};

}  // namespace tipd::node
