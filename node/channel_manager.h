// ChannelManager: the node's live payment channels. It drives one
// channel::Channel per channel over the p2p Host, persists every step through
// ChannelDb and the GroupCommitter before it promises anything, follows the
// ledger for opens, deposits and closes, and watches closing channels.
//
// Tour (docs/channels.md has the message flows):
//   open      OpenChannel -> (peer) AcceptChannel with B's signature -> we
//             persist the channel (OPENING), sign and submit ChannelOpenTx ->
//             ChannelOpened -> both sides see the block: OPEN
//   tips      SendTip -> Channel::QueueTip -> Pump: TakeNextUpdate, persist
//             (update + tips + idempotency record + spend), then send
//             TipUpdate. Receiver: CheckUpdate, ApplyUpdate, MakeAck, persist
//             (proof + tips + ack + events), then send Ack and publish
//             tip_received. Ack: OnAck, persist the receipt, answer the
//             waiting SendTip calls with the receipt, Pump again.
//   reconnect on every session both sides send Reestablish for each shared
//             channel (after their pending writes are durable) and follow the
//             ReestablishPlan before any new update.
//   close     cooperative: no updates in flight on either side, both sign the
//             final balances (CloseRequest / CloseSigned), the initiator
//             submits CooperativeCloseTx. Unilateral (force, or the peer broke
//             an unrecoverable rule): submit the peer's latest proof.
//   watcher   after every block, for each of our channels the ledger shows
//             CLOSING: if the peer closed, submit the peer's latest proof we
//             hold (UpdateProofTx) while the window is open; once it has
//             passed, submit SettleTx. State comes from the ledger and
//             ChannelDb only, so a restart resumes the watch.
//
// Persist before you promise: nothing leaves the node (a TipUpdate, an Ack, a
// CloseSigned, an API answer, an event) before the records it depends on are
// synced. Group-commit completions are posted back to the io thread in
// submission order, so sends keep nonce order.
//
// Threading: like p2p::Host, everything runs on the io_context thread; the
// GroupCommitter's completions are handed back with boost::asio::post.
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
#include "ledger/chain.h"
#include "node/auth.h"
#include "node/channel_db.h"
#include "node/ledger_client.h"
#include "node/lifecycle.h"
#include "p2p/p2p.h"
#include "storage/storage.h"
#include "tipd/api.pb.h"
#include "tipd/wire.pb.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace spdlog {
class logger;
}

namespace tipd::node {

class MetricsRegistry;
class Counter;
class Histogram;

// Where the manager's events go (GET /v1/events). Stage assigns the event's
// id and adds its record to the batch; Publish delivers it once that batch is
// durable; Append persists and publishes an event that has no other write.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual uint64_t Stage(storage::WriteBatch* batch, v1::Event* event) = 0;
  virtual void Publish(const v1::Event& event) = 0;
  virtual void Append(v1::Event event) = 0;
  // The batch holding a staged event failed: later events must not wait for it.
  virtual void Abandon(uint64_t id) = 0;
};

struct ChannelManagerOptions {
  // Limits we announce and accept when opening.
  uint32_t max_updates_in_flight = 16;
  uint32_t max_tips_per_update = 256;
  ChannelLocalLimits local_limits;
  // Settle timeout (blocks) when an open request gives none; clamped to the
  // genesis bounds.
  uint64_t default_settle_timeout = 20;
  // Most an accepting node puts into a channel a peer opens (the peer's
  // push_deposit request); 0 = never fund a channel the peer opens.
  uint64_t max_accept_deposit = UINT64_MAX;
  // A negotiation or cooperative close the peer does not answer in time.
  std::chrono::milliseconds negotiation_timeout{30'000};
  // How long SendTip waits for the ack before answering "pending".
  std::chrono::milliseconds ack_wait{30'000};
};

// The outcome of SendTip. On success the tip is durable in our channel state
// (paid); `receipt` is set once the peer acknowledged it.
struct TipResult {
  Status status;  // not OK: refused, nothing paid
  std::string error_code;
  v1::TipResponse response;
  bool acked = false;
};

struct TipRequestIn {
  std::string channel_id;  // 32 bytes, or empty with peer set
  std::optional<crypto::PublicKey> peer;
  channel::TipDraft draft;
  std::string idempotency_key;       // may be empty
  std::optional<TokenClaims> token;  // for the daily spending cap
};

class ChannelManager {
 public:
  ChannelManager(boost::asio::io_context& io, const crypto::KeyPair& key, p2p::Host& host,
                 LedgerClient& ledger, storage::Database& db, storage::GroupCommitter& committer,
                 SpendLimiter& spend, const Clock& clock, crypto::RandomSource& rng,
                 ChannelManagerOptions options = {});
  ~ChannelManager();
  ChannelManager(const ChannelManager&) = delete;
  ChannelManager& operator=(const ChannelManager&) = delete;

  // Restores every stored channel and registers the block observer. Call once
  // before the io_context runs.
  Status Start();
  void SetEventSink(EventSink* sink) { events_ = sink; }
  void RegisterMetrics(MetricsRegistry& metrics);

  // Host event routing; each returns true if the event was the manager's.
  void OnPeerConnected(const p2p::PeerInfo& info);
  void OnPeerDisconnected(const p2p::DisconnectEvent& ev);
  bool OnMessage(p2p::PeerId peer, const v1::Envelope& env);
  void OnPeerError(p2p::PeerId peer, const v1::Error& error);

  // ---- API ----
  using ChannelCallback = std::function<void(Result<v1::ChannelApi>, std::string tx_id)>;
  // Negotiates, signs and submits an open; answers once the ledger includes
  // it (or with state "opening" after `wait`).
  void Open(const crypto::PublicKey& peer, uint64_t deposit, uint64_t push_deposit,
            uint64_t settle_timeout, std::chrono::milliseconds wait, ChannelCallback done);
  void Deposit(const std::string& channel_id, uint64_t amount, std::chrono::milliseconds wait,
               ChannelCallback done);
  void Close(const std::string& channel_id, bool force, std::chrono::milliseconds wait,
             ChannelCallback done);
  void SendTip(TipRequestIn request, std::function<void(TipResult)> done);

  std::vector<v1::ChannelApi> ListChannels() const;
  Result<v1::ChannelApi> GetChannel(const std::string& channel_id) const;
  // Tip history: both or one direction, every channel or one, by cursor.
  Result<v1::ListTipsResponse> ListTips(const std::string& direction, const std::string& channel_id,
                                        uint32_t limit, const std::string& cursor) const;
  // Sums for GET /v1/balance.
  void Balances(v1::BalanceResponse* out) const;
  size_t channel_count() const { return channels_.size(); }

  struct Live;     // one channel's runtime state (channel_manager.cc)
  struct OpenNeg;  // one open negotiation we started

 private:
  // Messages.
  void HandleOpenChannel(p2p::PeerId peer, const crypto::PublicKey& node, const v1::OpenChannel& m);
  void HandleAcceptChannel(p2p::PeerId peer, const v1::AcceptChannel& m);
  void HandleRejectChannel(const v1::RejectChannel& m);
  void HandleTipUpdate(p2p::PeerId peer, const v1::TipUpdate& m);
  void HandleAck(p2p::PeerId peer, const v1::Ack& m);
  void HandleReestablish(p2p::PeerId peer, const v1::Reestablish& m);
  void HandleCloseRequest(p2p::PeerId peer, const v1::CloseRequest& m);
  void HandleCloseSigned(p2p::PeerId peer, const v1::CloseSigned& m);
  void HandleUpdateRejected(p2p::PeerId peer, const v1::UpdateRejected& m);

  // Channel steps.
  Live* Find(const std::string& channel_id);
  const Live* Find(const std::string& channel_id) const;
  Live* FindForPeer(p2p::PeerId peer, const std::string& channel_id);
  void Pump(Live& live);
  void SendReestablish(Live& live);
  void ApplyPlan(Live& live, channel::ReestablishPlan plan);
  void MaybeProposeClose(Live& live);
  void RequestClose(Live& live);
  void TrySendShutdown(Live& live);
  void GiveCloseSignature(Live& live, v1::Envelope env);
  void CommitThen(Live* live, storage::WriteBatch batch, std::function<void(Status)> then);
  void SetPhase(Live& live, v1::StoredChannelPhase phase, storage::WriteBatch* batch);
  void FailChannelRequests(Live& live, const std::string& code, const std::string& why);
  void AnswerAcked(Live& live);
  void PeerBrokeRule(Live& live, p2p::PeerId peer, const channel::ChannelError& e, uint64_t nonce);
  void ForceClose(Live& live, const std::string& why, ChannelCallback done);
  void Send(p2p::PeerId peer, const v1::Envelope& env);

  // Ledger.
  void OnBlock(const v1::Block& block);
  void Reconcile(Live& live);
  void Watch(Live& live, const ledger::Channel& onchain);
  void SubmitTx(v1::Transaction tx, std::function<void(const SubmitOutcome&)> done);
  v1::Transaction NewTx();
  void WaitForInclusion(const Hash32& tx_id, std::chrono::milliseconds wait,
                        std::function<void(bool included)> done);

  v1::ChannelApi ToApi(const Live& live) const;
  void Emit(storage::WriteBatch* batch, v1::Event event, std::vector<v1::Event>* staged);
  void EmitNow(v1::Event event);
  // Publishes staged events once their batch is durable, or abandons them.
  void Settle(const std::vector<v1::Event>& staged, const Status& written);
  void EmitChannel(const Live& live, const std::string& previous_state);

  boost::asio::io_context& io_;
  const crypto::KeyPair& key_;
  p2p::Host& host_;
  LedgerClient& ledger_;
  storage::Database& db_;
  storage::GroupCommitter& committer_;
  SpendLimiter& spend_;
  const Clock& clock_;
  crypto::RandomSource& rng_;
  ChannelManagerOptions options_;
  ChannelDb chdb_;
  EventSink* events_ = nullptr;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<bool> alive_;

  std::map<std::string, std::unique_ptr<Live>> channels_;         // by channel id bytes
  std::map<std::string, std::unique_ptr<OpenNeg>> negotiations_;  // by temporary id
  std::set<std::string> tips_by_key_;  // idempotency keys of tips in progress
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
