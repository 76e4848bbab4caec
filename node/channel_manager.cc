#include "node/channel_manager.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "channel/codec.h"
#include "ledger/codec.h"
#include "node/anomaly.h"
#include "node/channel_manager_internal.h"
#include "node/logging.h"
#include "tipd/storage.pb.h"

namespace tipd::node {
namespace internal {

const char* PhaseName(v1::StoredChannelPhase p) {
  switch (p) {
    case v1::STORED_CHANNEL_PHASE_OPENING:
      return "opening";
    case v1::STORED_CHANNEL_PHASE_OPEN:
      return "open";
    case v1::STORED_CHANNEL_PHASE_CLOSING:
      return "closing";
    case v1::STORED_CHANNEL_PHASE_CLOSED:
      return "closed";
    default:
      return "unknown";
  }
}

Status LedgerRefusal(const std::string& what, const ledger::SubmitOutcome& out) {
  switch (out.kind) {
    case ledger::SubmitOutcome::Kind::kUnknown:
      return Status::Unavailable("the ledger did not answer the " + what + ": " + out.message);
    case ledger::SubmitOutcome::Kind::kRefused:
    case ledger::SubmitOutcome::Kind::kAccepted:
      break;
  }
  return Status::FailedPrecondition("ledger refused the " + what + ": " + out.ToString());
}

ledger::ChannelId LedgerId(const std::string& id) {
  ledger::ChannelId cid{};
  std::copy(id.begin(), id.end(), cid.begin());
  return cid;
}

}  // namespace internal

using namespace internal;

namespace {
v1::Envelope Wrap(const v1::Error& e) {
  v1::Envelope env;
  *env.mutable_error() = e;
  return env;
}
}  // namespace

ChannelManager::ChannelManager(boost::asio::io_context& io, const crypto::KeyPair& key,
                               PeerTransport& peers, ledger::LedgerLink& ledger,
                               storage::Database& db, storage::GroupCommitter& committer,
                               const Clock& clock, Timers& timers, crypto::RandomSource& rng,
                               ChannelManagerOptions options)
    : io_(io),
      key_(key),
      peers_(peers),
      ledger_(ledger),
      committer_(committer),
      clock_(clock),
      timers_(timers),
      rng_(rng),
      options_(options),
      chdb_(&db),
      log_(Logger("channels")),
      txs_(key, ledger, rng),
      refunds_(std::make_shared<RefundBook>(db)),
      requests_(db, timers, options.ack_wait),
      watcher_(txs_, log_),
      negotiator_(key, ledger, txs_, peers, timers, rng, options.open,
                  OpenNegotiator::Callbacks{
                      [this](const std::string& id) { return Find(id) != nullptr; },
                      [this](uint64_t extra) { return FeeReserve(extra); },
                      [this](const crypto::PublicKey& peer) {
                        size_t with_peer = 0, in_all = 0;
                        // The opening ones are in the per-block index.
                        for (const std::string& id : every_block_) {
                          const LiveChannel* ch = Find(id);
                          if (ch == nullptr || ch->phase() != v1::STORED_CHANNEL_PHASE_OPENING) {
                            continue;
                          }
                          ++in_all;
                          with_peer += ch->peer == peer;
                        }
                        return std::make_pair(with_peer, in_all);
                      },
                      [this](AgreedChannel c, v1::Envelope accept) {
                        Accepted(std::move(c), std::move(accept));
                      },
                      [this](AgreedChannel c, v1::Transaction tx, std::string temp,
                             std::chrono::milliseconds wait, ChannelCallback done) {
                        Agreed(std::move(c), std::move(tx), std::move(temp), wait, std::move(done));
                      }},
                  log_),
      stats_(&db),
      alive_(std::make_shared<bool>(true)) {}

ChannelManager::~ChannelManager() {
  *alive_ = false;
  if (proof_log_fd_ >= 0) ::close(proof_log_fd_);
}

Status ChannelManager::Start() {
  if (!options_.debug_proof_log.empty() && proof_log_fd_ < 0) {
    proof_log_fd_ =
        ::open(options_.debug_proof_log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (proof_log_fd_ < 0) {
      return Status::InvalidArgument("cannot open debug-proof-log " + options_.debug_proof_log +
                                     ": " + std::strerror(errno));
    }
    log_->warn("debug: appending every balance proof this node sends to {}",
               options_.debug_proof_log);
  }
  TIPD_ASSIGN_OR_RETURN(std::vector<v1::StoredChannel> stored, chdb_.ListChannels());
  for (v1::StoredChannel& rec : stored) {
    TIPD_ASSIGN_OR_RETURN(crypto::PublicKey remote,
                          crypto::PublicKey::Parse(AsSpan(rec.remote_key())));
    ChannelLocalLimits limits;
    limits.max_update_bytes = options_.open.max_update_bytes;
    limits.max_queued_tips = options_.open.max_queued_tips;
    TIPD_ASSIGN_OR_RETURN(channel::Channel ch, chdb_.Restore(rec, key_.public_key(), limits));
    auto live = std::make_unique<LiveChannel>(rec, std::move(ch), remote);
    if (rec.phase() == v1::STORED_CHANNEL_PHASE_CLOSING) live->close_requested = true;
    live->known_since_height = ledger_.chain().height();
    if (rec.phase() == v1::STORED_CHANNEL_PHASE_CLOSING && rec.unilateral_close_requested()) {
      // We closed unilaterally before the restart: still frozen, and the
      // close is submitted again unless the ledger shows it (Reconcile).
      live->close_submitted = true;
      v1::Transaction body;
      v1::UnilateralCloseTx& u = *body.mutable_unilateral_close();
      u.set_channel_id(rec.channel_id());
      if (live->partner_proof().nonce() > 0) *u.mutable_partner_proof() = live->partner_proof();
      live->pending_close =
          std::make_unique<LiveChannel::PendingClose>(LiveChannel::PendingClose{std::move(body)});
    }
    stats_.NoteChannel(live->id, live->peer.Hex());
    IndexPhase(*live);
    const std::string_view key = live->id;  // the map's key views the channel's id
    channels_.emplace(key, std::move(live));
  }
  // The stats index: tips from before it existed (once), fees of blocks the
  // chain holds but the index has not counted.
  TIPD_RETURN_IF_ERROR(stats_.Load());
  TIPD_RETURN_IF_ERROR(
      stats_.BackfillFees(ledger_.chain().height(), key_.XOnly(),
                          [this](uint64_t h) { return ledger_.chain().GetBlock(h); }));
  if (anomalies_) {
    anomalies_->SetKnownPeers(stats_.PeersWithTips(storage::Direction::kLocalToRemote),
                              stats_.PeersWithTips(storage::Direction::kRemoteToLocal));
  }
  ledger_.AddBlockObserver([this, alive = alive_](const v1::Block& b) {
    if (*alive) OnBlock(b);
  });
  // Catch up with what the ledger already shows (opens, closes, the watch).
  for (auto& [id, live] : channels_) Reconcile(*live);
  log_->info("{} channel(s) restored", channels_.size());
  return Status::Ok();
}

void ChannelManager::RegisterMetrics(MetricsRegistry& m) {
  tips_sent_ = &m.AddCounter("tipd_tips_sent_total", "tips sent and persisted");
  tips_received_ = &m.AddCounter("tipd_tips_received_total", "tips received and acknowledged");
  amount_sent_ = &m.AddCounter("tipd_tip_amount_sent_total", "sum of tip amounts sent");
  amount_received_ = &m.AddCounter("tipd_tip_amount_received_total", "sum of tip amounts received");
  updates_sent_ = &m.AddCounter("tipd_updates_sent_total", "signed balance updates sent");
  tips_per_update_ = &m.AddHistogram("tipd_tips_per_update", "tips folded into one update",
                                     ExponentialBuckets(1, 2, 9));
  ack_latency_ = &m.AddHistogram("tipd_ack_latency_seconds", "update sent to its ack received",
                                 ExponentialBuckets(0.0001, 2, 16));
  Gauge& opening = m.AddGauge("tipd_channels_opening", "channels being opened");
  Gauge& open = m.AddGauge("tipd_channels_open", "open channels");
  Gauge& closing = m.AddGauge("tipd_channels_closing", "channels closing");
  Gauge& closed = m.AddGauge("tipd_channels_closed", "closed channels");
  Gauge& queued = m.AddGauge("tipd_tips_queued", "tips waiting for a window slot");
  Gauge& in_flight = m.AddGauge("tipd_updates_in_flight", "updates awaiting their ack");
  Gauge& read_only = m.AddGauge("tipd_read_only", "1 once a failed write stopped new work");
  m.AddCollectHook([this, &opening, &open, &closing, &closed, &queued, &in_flight, &read_only] {
    // Runs on the event thread (GET /metrics), like every other manager call.
    double n[5] = {0, 0, 0, 0, 0};
    double q = 0, f = 0;
    for (const auto& [id, live] : channels_) {
      int p = static_cast<int>(live->phase());
      if (p >= 1 && p <= 4) n[p] += 1;
      q += static_cast<double>(live->ch.queued_tips());
      f += static_cast<double>(live->ch.updates_in_flight());
    }
    opening.Set(n[1]);
    open.Set(n[2]);
    closing.Set(n[3]);
    closed.Set(n[4]);
    queued.Set(q);
    in_flight.Set(f);
    read_only.Set(health_.ok() ? 0 : 1);
  });
}

// ---------------------------------------------------------------------------
// Plumbing

ChannelManager::LiveChannel* ChannelManager::Find(const std::string& channel_id) {
  auto it = channels_.find(channel_id);
  return it == channels_.end() ? nullptr : it->second.get();
}

const ChannelManager::LiveChannel* ChannelManager::Find(const std::string& channel_id) const {
  auto it = channels_.find(channel_id);
  return it == channels_.end() ? nullptr : it->second.get();
}

ChannelManager::LiveChannel* ChannelManager::FindForPeer(p2p::PeerId peer,
                                                         const std::string& channel_id) {
  LiveChannel* live = Find(channel_id);
  if (live == nullptr || live->session != peer) return nullptr;
  return live;
}

void ChannelManager::LogSentProof(const v1::TipUpdate& update) {
  const v1::BalanceProof& p = update.proof();
  std::string line = "proof " + HexEncode(AsSpan(p.channel_id())) + " " +
                     std::to_string(p.nonce()) + " " + std::to_string(p.transferred()) + " " +
                     std::to_string(p.locked()) + " " + HexEncode(AsSpan(p.locks_root())) + " " +
                     HexEncode(AsSpan(p.tips_root())) + " " + HexEncode(AsSpan(p.signature())) +
                     " " + std::to_string(update.tips_size()) + "\n";
  // One write(2) per line with O_APPEND: whole lines, in the kernel once it
  // returns (a SIGKILL cannot lose them).
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(proof_log_fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      log_->error("debug-proof-log write failed: {}", std::strerror(errno));
      return;
    }
    done += static_cast<size_t>(n);
  }
}

void ChannelManager::Send(p2p::PeerId peer, const v1::Envelope& env) {
  if (proof_log_fd_ >= 0 && env.has_tip_update()) LogSentProof(env.tip_update());
  Status s = peers_.Send(peer, env);
  if (s.ok()) return;
  // A message that did not leave (queue full, session gone) must not be lost
  // silently: drop the session, and reestablish resends what the peer lacks.
  log_->warn("send to peer {} failed ({}); dropping the session so reestablish resends", peer,
             s.ToString());
  peers_.Disconnect(peer, "send failed: " + s.message());
}

void ChannelManager::EnterReadOnly(const std::string& what, const Status& why) {
  if (!health_.ok()) return;
  health_ = Status(why.code(), what + ": " + why.message() +
                                   "; the node refuses new tips and opens until it is restarted");
  log_->critical("{}", health_.message());
  // Nothing can be acknowledged from now on: answer every waiting caller now
  // rather than at the end of its ack wait.
  for (const auto& [id, live] : channels_) requests_.AnswerReadOnly(live->id, health_.message());
}

void ChannelManager::CommitThen(LiveChannel* live, storage::WriteBatch batch,
                                std::function<void(Status)> then) {
  if (live) ++live->commits_pending;
  // Events SetPhase staged into this batch are published once it is durable.
  std::vector<v1::Event> phase_events = std::exchange(phase_events_, {});
  committer_.Submit(std::move(batch), [this, alive = alive_, live, then = std::move(then),
                                       phase_events = std::move(phase_events)](Status s) mutable {
    boost::asio::post(io_, [this, alive, live, then = std::move(then), s,
                            phase_events = std::move(phase_events)]() mutable {
      if (!*alive) return;
      if (!s.ok()) EnterReadOnly("a channel write failed", s);
      PublishStaged(phase_events, s);
      if (live) --live->commits_pending;
      then(s);
      // Steps that wait for quiescence (no write pending on the channel).
      if (live && live->commits_pending == 0 && health_.ok()) {
        if (live->session && !live->reestablished) SendReestablish(*live);
        TrySendShutdown(*live);
        MaybeProposeClose(*live);
      }
    });
  });
}

void ChannelManager::Emit(storage::WriteBatch* batch, v1::Event event,
                          std::vector<v1::Event>* staged) {
  if (events_ == nullptr) return;
  event.set_time_ms(static_cast<uint64_t>(clock_.NowMs()));
  events_->Stage(batch, &event);
  staged->push_back(std::move(event));
}

void ChannelManager::PublishStaged(std::vector<v1::Event>& staged, const Status& written) {
  for (v1::Event& e : staged) {
    if (written.ok()) {
      events_->Publish(std::move(e));
    } else {
      events_->Abandon(e.id());
    }
  }
}

void ChannelManager::EmitNow(v1::Event event) {
  if (events_ == nullptr) return;
  event.set_time_ms(static_cast<uint64_t>(clock_.NowMs()));
  events_->Append(std::move(event));
}

void ChannelManager::EmitChannel(const LiveChannel& live, const std::string& previous_state) {
  v1::Event e;
  e.set_type("channel");
  *e.mutable_channel()->mutable_channel() = ToApi(live);
  e.mutable_channel()->set_previous_state(previous_state);
  EmitNow(std::move(e));
}

void ChannelManager::SetPhase(LiveChannel& live, v1::StoredChannelPhase phase,
                              storage::WriteBatch* batch) {
  if (live.phase() == phase) return;
  const std::string previous = PhaseName(live.phase());
  Status s =
      live.StageRecord([&](v1::StoredChannel* r) { return chdb_.StagePhase(batch, r, phase); });
  if (!s.ok()) log_->error("channel {}: stage phase: {}", Short(live.id), s.ToString());
  IndexPhase(live);
  log_->info("channel {} with {}: {} -> {}", Short(live.id), live.peer.Hex().substr(0, 16),
             previous, PhaseName(phase));
  v1::Event e;
  e.set_type("channel");
  *e.mutable_channel()->mutable_channel() = ToApi(live);
  e.mutable_channel()->set_previous_state(previous);
  Emit(batch, std::move(e), &phase_events_);
}

void ChannelManager::WaitForInclusion(const Hash32& tx_id, std::chrono::milliseconds wait,
                                      std::function<void(bool)> done) {
  // Whichever comes first answers; the other is cancelled, so neither the
  // timer nor the ledger's wait outlives the answer.
  struct Wait {
    bool answered = false;
    Timers::Id timer = 0;
    ledger::LedgerLink::WaitId wait = 0;
    std::function<void(bool)> done;
  };
  auto w = std::make_shared<Wait>();
  w->done = std::move(done);
  w->wait = ledger_.WhenIncluded(tx_id, [this, w, alive = alive_](uint64_t) {
    if (!*alive || w->answered) return;
    w->answered = true;
    timers_.Cancel(w->timer);
    w->done(true);
  });
  if (w->answered) return;
  w->timer = timers_.After(wait, [this, w, alive = alive_] {
    if (!*alive || w->answered) return;
    w->answered = true;
    ledger_.CancelWait(w->wait);
    w->done(false);
  });
}

// ---------------------------------------------------------------------------
// Peers

void ChannelManager::OnPeerConnected(const p2p::PeerInfo& info) {
  v1::Event e;
  e.set_type("peer");
  e.mutable_peer()->set_connected(true);
  e.mutable_peer()->mutable_peer()->set_node_id(info.node_id.Hex());
  e.mutable_peer()->mutable_peer()->set_address(info.address);
  e.mutable_peer()->mutable_peer()->set_inbound(info.direction == p2p::Direction::kInbound);
  EmitNow(std::move(e));
  for (auto& [id, live] : channels_) {
    if (live->peer != info.node_id) continue;
    live->session = info.id;
    live->epoch++;
    live->reestablish_sent = false;
    live->reestablished = false;
    live->peer_reestablish.reset();
    live->shutdown_sent = false;
    live->shutdown_received = false;
    live->proposal_sent = false;
    live->pending_proposal.reset();
    if (live->commits_pending == 0) reestablish_backlog_[info.id].push_back(live->id);
  }
  SendQueuedReestablishes(info.id);
}

void ChannelManager::SendQueuedReestablishes(p2p::PeerId peer) {
  auto it = reestablish_backlog_.find(peer);
  if (it == reestablish_backlog_.end()) return;
  size_t room = peers_.SendRoom(peer) / 2;
  std::deque<std::string>& ids = it->second;
  while (!ids.empty() && room > 0) {
    auto c = channels_.find(ids.front());
    ids.pop_front();
    if (c == channels_.end()) continue;
    LiveChannel& live = *c->second;
    // Only for this session, and only once (a commit's completion may have
    // sent it meanwhile).
    if (live.session != peer || live.reestablish_sent) continue;
    SendReestablish(live);
    --room;
  }
  if (ids.empty()) {
    reestablish_backlog_.erase(it);
    return;
  }
  if (!peers_.PeerKey(peer)) {  // the session is gone; the next one starts over
    reestablish_backlog_.erase(it);
    return;
  }
  timers_.After(std::chrono::milliseconds(5), [this, alive = alive_, peer] {
    if (*alive) SendQueuedReestablishes(peer);
  });
}

void ChannelManager::OnPeerDisconnected(const p2p::DisconnectEvent& ev) {
  if (!ev.was_connected) return;
  reestablish_backlog_.erase(ev.id);
  if (ev.node_id) {
    v1::Event e;
    e.set_type("peer");
    e.mutable_peer()->set_connected(false);
    e.mutable_peer()->mutable_peer()->set_node_id(ev.node_id->Hex());
    e.mutable_peer()->mutable_peer()->set_address(ev.address);
    EmitNow(std::move(e));
  }
  for (auto& [id, live] : channels_) {
    if (live->session != ev.id) continue;
    live->session.reset();
    live->epoch++;
    live->reestablished = false;
    live->reestablish_sent = false;
    live->peer_reestablish.reset();
  }
  negotiator_.OnPeerDisconnected(ev.id, ev.reason.ToString());
}

void ChannelManager::OnPeerError(p2p::PeerId peer, const v1::Error& error) {
  if (negotiator_.OnPeerError(peer, error)) return;
  log_->warn("peer {} reports an error on channel {}: {}: {}", peer, Short(error.channel_id()),
             error.code(), error.message());
}

bool ChannelManager::OnMessage(p2p::PeerId peer, const v1::Envelope& env) {
  switch (env.msg_case()) {
    case v1::Envelope::kOpenChannel: {
      auto node = peers_.PeerKey(peer);
      if (!node) return true;
      if (!health_.ok()) {
        v1::Envelope reject;
        reject.mutable_reject_channel()->set_temporary_id(env.open_channel().temporary_id());
        reject.mutable_reject_channel()->set_code("NODE_READ_ONLY");
        reject.mutable_reject_channel()->set_message("this node is not accepting channels now");
        Send(peer, reject);
        return true;
      }
      negotiator_.HandleOpenChannel(peer, *node, env.open_channel());
      return true;
    }
    case v1::Envelope::kAcceptChannel:
      negotiator_.HandleAcceptChannel(peer, env.accept_channel());
      return true;
    case v1::Envelope::kRejectChannel:
      negotiator_.HandleRejectChannel(peer, env.reject_channel());
      return true;
    case v1::Envelope::kChannelOpened:
      log_->info("peer {} submitted the open of channel {} (tx {})", peer,
                 Short(env.channel_opened().channel_id()), Short(env.channel_opened().tx_id()));
      return true;
    case v1::Envelope::kTipUpdate:
      HandleTipUpdate(peer, env.tip_update());
      return true;
    case v1::Envelope::kAck:
      HandleAck(peer, env.ack());
      return true;
    case v1::Envelope::kUpdateRejected:
      HandleUpdateRejected(peer, env.update_rejected());
      return true;
    case v1::Envelope::kReestablish:
      HandleReestablish(peer, env.reestablish());
      return true;
    case v1::Envelope::kCloseRequest:
      HandleCloseRequest(peer, env.close_request());
      return true;
    case v1::Envelope::kCloseSigned:
      HandleCloseSigned(peer, env.close_signed());
      return true;
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------
// Reestablish

void ChannelManager::SendReestablish(LiveChannel& live) {
  if (!live.session || live.commits_pending > 0) return;
  const auto phase = live.phase();
  if (phase != v1::STORED_CHANNEL_PHASE_OPEN && phase != v1::STORED_CHANNEL_PHASE_CLOSING) {
    return;
  }
  if (!live.reestablish_sent) {
    v1::Envelope env;
    *env.mutable_reestablish() = live.ch.MakeReestablish();
    Send(*live.session, env);
    live.reestablish_sent = true;
  }
  if (!live.session || !live.peer_reestablish || live.reestablished) return;
  v1::Reestablish peer = std::move(*live.peer_reestablish);
  live.peer_reestablish.reset();
  if (live.record.restored_awaiting_peer()) {
    // Restored from a backup: the peer may hold a newer proof of its own
    // direction than we do (we lost what it paid us since the backup, and it
    // will not resend what we had acknowledged). Keep it, whatever the plan
    // says, so any close pays us what the peer last signed.
    auto evidence = live.ch.PeerEvidence(peer);
    if (evidence && evidence->nonce() > live.partner_proof().nonce()) {
      const uint64_t held = live.ch.received_proof().nonce();
      *live.record.mutable_peer_evidence_proof() = *evidence;
      storage::WriteBatch batch;
      Status s = live.StageRecord(
          [&](v1::StoredChannel* r) { return chdb_.StagePhase(&batch, r, live.phase()); });
      if (s.ok()) s = committer_.SubmitAndWait(std::move(batch));
      if (!s.ok()) {
        EnterReadOnly("persisting the peer's newest proof of channel " + Short(live.id), s);
        return;
      }
      log_->warn(
          "channel {}: restored behind: the peer holds its proof at nonce {} (we held {}); "
          "kept it to close with",
          Short(live.id), evidence->nonce(), held);
    }
  }
  auto plan = live.ch.OnPeerReestablish(peer, peer.received_tip_count());
  if (!plan.ok()) {
    PeerBrokeRule(live, *live.session, plan.error(), 0);
    return;
  }
  if (plan->adopted_own_proof) {
    // Rare (we were restored from a backup): write it before going on.
    storage::WriteBatch batch;
    Status s = chdb_.StageAdoptedOwnProof(&batch, peer.received_proof(), peer.received_tip_count());
    if (s.ok()) s = committer_.SubmitAndWait(std::move(batch));
    if (!s.ok()) {
      EnterReadOnly("persisting the adopted proof of channel " + Short(live.id), s);
      return;
    }
    log_->warn("channel {}: adopted the peer's copy of our proof at nonce {}", Short(live.id),
               peer.received_proof().nonce());
  }
  ApplyPlan(live, std::move(*plan));
}

void ChannelManager::HandleReestablish(p2p::PeerId peer, const v1::Reestablish& m) {
  LiveChannel* live = FindForPeer(peer, m.channel_id());
  if (live == nullptr) {
    v1::Error e;
    e.set_channel_id(m.channel_id());
    e.set_code("UNKNOWN_CHANNEL");
    e.set_message("this node has no channel " + Hex(m.channel_id()) + " with you");
    Send(peer, Wrap(e));
    return;
  }
  live->peer_reestablish = std::make_unique<v1::Reestablish>(m);
  live->reestablished = false;
  SendReestablish(*live);
}

void ChannelManager::ApplyPlan(LiveChannel& live, channel::ReestablishPlan plan) {
  const p2p::PeerId peer = *live.session;
  if (plan.send_ack) {
    if (auto ack = live.ch.MakeAck(key_, rng_)) {
      v1::Envelope env;
      *env.mutable_ack() = *ack;
      Send(peer, env);
    }
  }
  for (const v1::TipUpdate& u : plan.resend) {
    v1::Envelope env;
    *env.mutable_tip_update() = u;
    live.sent_at[u.proof().nonce()] = Clk::now();
    Send(peer, env);
  }
  std::vector<uint64_t> dropped;
  for (const v1::Tip& t : plan.dropped_tips) dropped.push_back(t.index());
  requests_.RefuseIndexes(live.id, dropped, TipError::kChannelRule,
                          "the tip no longer fits the spendable balance after reestablish",
                          channel::RuleCode(channel::ChannelRule::kInsufficientSpendable));
  live.reestablished = true;
  log_->info("channel {} reestablished with {} (resent {} update(s))", Short(live.id),
             live.peer.Hex().substr(0, 16), plan.resend.size());
  if (live.record.restored_awaiting_peer()) {
    // We now hold the peer's view of both directions: tips may flow again.
    // If this write is lost, the next reestablish clears the mark again.
    live.record.set_restored_awaiting_peer(false);
    storage::WriteBatch batch;
    if (live.StageRecord(
                [&](v1::StoredChannel* r) { return chdb_.StagePhase(&batch, r, live.phase()); })
            .ok()) {
      CommitThen(&live, std::move(batch), [](Status) {});
    }
    log_->info("channel {}: caught up with the peer after a restore; tips accepted again",
               Short(live.id));
  }
  Pump(live);
  TrySendShutdown(live);
  MaybeProposeClose(live);
}

// ---------------------------------------------------------------------------
// Tips: sending

void ChannelManager::SendTip(TipRequestIn req, TipCallback done) {
  // The hash binds an idempotency key to its request; without a key nothing
  // reads it (a SHA-256 and a hex string per tip saved on the batch path).
  const Hash32 request_hash = req.idempotency_key.empty() ? Hash32{} : TipRequestHash(req);
  SendTipHashed(std::move(req), request_hash, std::move(done));
}

void ChannelManager::SendTipHashed(TipRequestIn req, const Hash32& request_hash, TipCallback done) {
  // Resolve the channel.
  LiveChannel* live = nullptr;
  if (!req.channel_id.empty()) {
    live = Find(req.channel_id);
    if (live == nullptr) {
      return done(TipOutcome::Refused(TipError::kNotFound, "no channel " + Hex(req.channel_id)));
    }
  } else if (req.peer) {
    for (auto& [id, l] : channels_) {
      if (l->peer != *req.peer || l->phase() != v1::STORED_CHANNEL_PHASE_OPEN) continue;
      if (live == nullptr || l->ch.SpendableLocal() > live->ch.SpendableLocal()) live = l.get();
    }
    if (live == nullptr) {
      return done(
          TipOutcome::Refused(TipError::kNotFound, "no open channel with peer " + req.peer->Hex()));
    }
  } else {
    return done(TipOutcome::Refused(TipError::kInvalidArgument, "give a channel or a peer"));
  }
  // Idempotency: an identical request in progress, or answered before. A
  // replay is answered even in read-only mode and is never charged.
  if (requests_.Replay(req, request_hash, done, [this](const std::string& id, uint64_t nonce) {
        return ReceiptOf(id, nonce);
      })) {
    return;
  }
  if (!health_.ok()) {
    return done(TipOutcome::Refused(TipError::kNodeReadOnly, health_.message()));
  }
  // A held token is refused whatever the channel's state (node/anomaly.h).
  if (anomalies_ && req.key_owner != "-" && anomalies_->held(req.key_owner)) {
    ScreenedTip seen;
    seen.token_id = req.key_owner;
    return done(TipOutcome::Refused(TipError::kAnomalyHold, *anomalies_->Admit(seen)));
  }
  if (live->phase() != v1::STORED_CHANNEL_PHASE_OPEN || live->close_requested || live->frozen()) {
    const std::string state = live->phase() == v1::STORED_CHANNEL_PHASE_OPEN
                                  ? std::string("closing")
                                  : std::string(PhaseName(live->phase()));
    return done(TipOutcome::Refused(
        TipError::kChannelNotOpen,
        "channel " + Hex(live->id) + " is " + state + "; tips need an open channel"));
  }
  if (live->record.restored_awaiting_peer()) {
    return done(TipOutcome::Refused(
        TipError::kPeerOffline,
        "channel " + Hex(live->id) +
            " was restored from a backup; tips wait until it has reestablished with peer " +
            live->peer.Hex() + ", which shows whether the backup was stale",
        "CHANNEL_RESTORED_AWAITING_PEER"));
  }
  if (!live->session) {
    return done(TipOutcome::Refused(
        TipError::kPeerOffline,
        "peer " + live->peer.Hex() + " is not connected; the tip was not sent"));
  }
  if (anomalies_) {
    ScreenedTip seen;
    seen.sent = true;
    seen.token_id = req.key_owner == "-" ? std::string() : req.key_owner;
    if (auto it = req.draft.metadata.find("app_name"); it != req.draft.metadata.end()) {
      seen.app_name = it->second;
    }
    seen.peer = live->peer.Hex();
    seen.channel_id = Hex(live->id);
    seen.amount = req.draft.amount;
    seen.now_ms = static_cast<uint64_t>(clock_.NowMs());
    if (std::optional<std::string> why = anomalies_->Admit(seen)) {
      return done(TipOutcome::Refused(TipError::kAnomalyHold, *why));
    }
  }
  if (req.charge) {
    if (auto refused = req.charge->Admit(live->id, live->peer, req.draft.amount)) {
      TipError error = TipError::kSpendCapExceeded;
      if (refused->kind == ChargeRefusal::Kind::kNotAllowed) error = TipError::kNotAllowed;
      if (refused->kind == ChargeRefusal::Kind::kRateLimited) error = TipError::kRateLimited;
      TipOutcome out = TipOutcome::Refused(error, refused->message, refused->code);
      out.refusal->retry_after_ms = refused->retry_after_ms;
      return done(std::move(out));
    }
  }
  if (req.draft.created_at_ms == 0) {
    req.draft.created_at_ms = static_cast<uint64_t>(clock_.NowMs());
  }
  auto queued = live->ch.QueueTip(req.draft);
  if (!queued.ok()) {
    const channel::ChannelError& e = queued.error();
    if (e.rule == channel::ChannelRule::kQueueFull) {
      return done(TipOutcome::Refused(TipError::kQueueFull, e.ToString(), e.code()));
    }
    return done(TipOutcome::Refused(TipError::kChannelRule, e.ToString(), e.code()));
  }
  requests_.Add(live->id, *queued, req, request_hash, std::move(done));
  SchedulePump(*live);
}

void ChannelManager::SchedulePump(LiveChannel& live) {
  if (live.pump_posted) return;
  live.pump_posted = true;
  boost::asio::post(io_, [this, alive = alive_, id = live.id] {
    if (!*alive) return;
    LiveChannel* l = Find(id);
    if (l == nullptr) return;
    l->pump_posted = false;
    Pump(*l);
  });
}

void ChannelManager::Pump(LiveChannel& live) {
  if (!live.usable() || live.proposal_sent || live.frozen() || !health_.ok()) return;
  const auto phase = live.phase();
  if (phase != v1::STORED_CHANNEL_PHASE_OPEN && phase != v1::STORED_CHANNEL_PHASE_CLOSING) return;
  for (;;) {
    const std::string root_before = live.ch.Snapshot().sent_tips_root;
    auto out = live.ch.TakeNextUpdate(key_, rng_);
    if (!out) break;
    std::map<uint64_t, std::string> keys;
    for (const v1::Tip& tip : out->update.tips()) {
      std::string key = requests_.KeyOf(live.id, tip.index());
      if (!key.empty()) keys.emplace(tip.index(), std::move(key));
    }
    storage::WriteBatch batch;
    if (Status s = chdb_.StageOutgoingUpdate(&batch, root_before, *out, keys); !s.ok()) {
      // The update exists only in memory and was never sent: stop here.
      EnterReadOnly(
          "staging update " + std::to_string(out->nonce()) + " of channel " + Short(live.id), s);
      return;
    }
    stats_.StageTips(&batch, live.id, storage::Direction::kLocalToRemote, out->update.tips(),
                     static_cast<uint64_t>(clock_.NowMs()));
    std::vector<v1::Event> staged;
    staged.reserve(static_cast<size_t>(out->update.tips_size()));
    const uint64_t nonce = out->nonce();
    const std::string channel_hex = Hex(live.id);
    const std::string peer_hex = live.peer.Hex();
    for (const v1::Tip& tip : out->update.tips()) {
      v1::TipApi api;
      api.set_channel_id(channel_hex);
      api.set_direction("sent");
      api.set_peer_node_id(peer_hex);
      *api.mutable_tip() = tip;
      api.set_nonce(nonce);
      if (auto k = keys.find(tip.index()); k != keys.end()) api.set_idempotency_key(k->second);
      const std::string* refund_of = RefundOfMetadata(tip);
      if (refund_of != nullptr) api.set_refund_of(*refund_of);
      // The key's answer and the spend are durable with the payment: a retry
      // after a crash finds the tip and never pays twice. A refund's charge
      // stages the original's new refunded total here too.
      requests_.StageFolded(live.id, api, &batch);
      v1::Event e;
      e.set_type("tip_sent");
      *e.mutable_tip() = std::move(api);
      Emit(&batch, std::move(e), &staged);
      if (auto link = refund_of ? ParseRefundOf(*refund_of) : std::nullopt) {
        auto total = refunds_->Get(live.id, storage::Direction::kRemoteToLocal, link->second);
        v1::Event r;
        r.set_type("tip_refunded");
        v1::RefundEvent& re = *r.mutable_refund();
        re.set_channel_id(Hex(live.id));
        re.set_original_index(link->second);
        re.set_refund_index(tip.index());
        re.set_amount(tip.amount());
        re.set_refunded_total(total.ok() ? total->total() : 0);
        Emit(&batch, std::move(r), &staged);
      }
    }
    const uint64_t first = out->update.tips(0).index();
    const uint64_t last = out->update.tips(out->update.tips_size() - 1).index();
    v1::Envelope env;
    *env.mutable_tip_update() = std::move(out->update);
    const uint64_t epoch = live.epoch;
    LiveChannel* lp = &live;
    CommitThen(lp, std::move(batch),
               [this, lp, env = std::move(env), epoch, nonce, first, last,
                staged = std::move(staged)](Status s) mutable {
                 PublishStaged(staged, s);
                 if (!s.ok()) {
                   // Never sent, never paid; the restart forgets the update.
                   std::vector<uint64_t> lost;
                   for (uint64_t i = first; i <= last; ++i) lost.push_back(i);
                   // A failed sync may still have left the write on disk:
                   // then the restart sends it. Only a write never made is
                   // certainly unpaid.
                   const std::string outcome =
                       s.code() == StatusCode::kIOError
                           ? "; it was not sent to the peer, but the disk may have kept it (then "
                             "the node sends it after its restart): retry with the same "
                             "idempotency key after the restart to learn the outcome"
                           : "; nothing was paid";
                   requests_.RefuseIndexes(
                       lp->id, lost, TipError::kNodeReadOnly,
                       "the payment could not be written: " + s.message() + outcome);
                   return;
                 }
                 requests_.MarkDurable(lp->id, first, last);
                 const auto& u = env.tip_update();
                 if (tips_sent_) {
                   uint64_t amount = 0;
                   for (const v1::Tip& t : u.tips()) amount += t.amount();
                   tips_sent_->Inc(static_cast<double>(u.tips_size()));
                   amount_sent_->Inc(static_cast<double>(amount));
                   updates_sent_->Inc();
                   tips_per_update_->Observe(static_cast<double>(u.tips_size()));
                 }
                 // A session that changed since is resynchronised by
                 // reestablish, which resends every update still in flight.
                 if (lp->session && lp->reestablished && lp->epoch == epoch) {
                   lp->sent_at[nonce] = Clk::now();
                   Send(*lp->session, env);
                 }
               });
  }
}

// ---------------------------------------------------------------------------
// Tips: receiving and acks

void ChannelManager::PeerBrokeRule(LiveChannel& live, p2p::PeerId peer,
                                   const channel::ChannelError& e, uint64_t nonce) {
  log_->warn("channel {}: peer broke {}: {} ({})", Short(live.id), e.code(), e.reason,
             channel::ConsequenceName(e.consequence));
  v1::Envelope env;
  *env.mutable_update_rejected() =
      channel::MakeUpdateRejected(live.ch.params().channel_id, nonce, e);
  Send(peer, env);
  switch (e.consequence) {
    case channel::Consequence::kRejectMessage:
    case channel::Consequence::kRefuseRequest:
      break;
    case channel::Consequence::kDisconnect:
      peers_.Disconnect(peer, std::string("channel rule ") + e.code());
      break;
    case channel::Consequence::kCloseChannel:
      ForceClose(live, std::string("peer showed irreconcilable state: ") + e.code(), nullptr);
      peers_.Disconnect(peer, std::string("channel rule ") + e.code());
      break;
  }
}

void ChannelManager::HandleTipUpdate(p2p::PeerId peer, const v1::TipUpdate& m) {
  LiveChannel* live = FindForPeer(peer, m.channel_id());
  if (live == nullptr) {
    v1::Error e;
    e.set_channel_id(m.channel_id());
    e.set_code("UNKNOWN_CHANNEL");
    e.set_message("no channel " + Hex(m.channel_id()) + " with you");
    Send(peer, Wrap(e));
    return;
  }
  const uint64_t nonce = m.has_proof() ? m.proof().nonce() : 0;
  if (!live->reestablished) {
    v1::Error e;
    e.set_channel_id(m.channel_id());
    e.set_code("REESTABLISH_REQUIRED");
    e.set_message("update " + std::to_string(nonce) + " arrived before reestablish finished");
    Send(peer, Wrap(e));
    peers_.Disconnect(peer, "update before reestablish");
    return;
  }
  const auto phase = live->phase();
  if ((phase != v1::STORED_CHANNEL_PHASE_OPEN && phase != v1::STORED_CHANNEL_PHASE_CLOSING) ||
      live->proposal_sent || live->frozen() || !health_.ok()) {
    v1::Envelope env;
    v1::UpdateRejected& r = *env.mutable_update_rejected();
    r.set_channel_id(m.channel_id());
    r.set_nonce(nonce);
    r.set_code("CHANNEL_CLOSING");
    r.set_message(health_.ok() ? "this channel is closing; no more updates are accepted"
                               : "this node is read-only; no updates are accepted");
    Send(peer, env);
    return;
  }
  auto validated = live->ch.CheckUpdate(m);
  if (!validated.ok()) return PeerBrokeRule(*live, peer, validated.error(), nonce);
  const std::string root_before = live->ch.Snapshot().received_tips_root;
  if (auto st = live->ch.ApplyUpdate(*validated); !st.ok()) {
    return PeerBrokeRule(*live, peer, st.error(), nonce);
  }
  std::optional<v1::Ack> ack = live->ch.MakeAck(key_, rng_);
  storage::WriteBatch batch;
  if (Status s = chdb_.StageReceivedUpdate(&batch, root_before, *validated, *ack); !s.ok()) {
    // Memory is ahead of disk: acknowledge nothing more; a restart reloads
    // the durable state and reestablish asks for the update again.
    EnterReadOnly(
        "staging received update " + std::to_string(nonce) + " of channel " + Short(live->id), s);
    return;
  }
  const uint64_t now_ms = static_cast<uint64_t>(clock_.NowMs());
  stats_.StageTips(&batch, live->id, storage::Direction::kRemoteToLocal, m.tips(), now_ms);
  std::vector<v1::Event> staged;
  const std::string channel_hex = events_ ? Hex(live->id) : std::string();
  const std::string peer_hex = events_ ? live->peer.Hex() : std::string();
  for (const v1::Tip& tip : m.tips()) {
    // The money is accepted whatever its refund link says; the link only
    // counts if it is valid (docs/protocol.md "Refund links").
    std::string link_error;
    if (RefundOfMetadata(tip) != nullptr) {
      link_error = AcceptRefundLink(*live, tip, &batch, &staged);
    }
    if (!events_) continue;
    v1::Event e;
    e.set_type("tip_received");
    v1::TipApi& api = *e.mutable_tip();
    api.set_channel_id(channel_hex);
    api.set_direction("received");
    api.set_peer_node_id(peer_hex);
    *api.mutable_tip() = tip;
    api.set_nonce(nonce);
    if (const std::string* link = RefundOfMetadata(tip)) {
      if (link_error.empty()) {
        api.set_refund_of(*link);
      } else {
        api.set_refund_link_error(link_error);
      }
    }
    Emit(&batch, std::move(e), &staged);
  }
  const uint64_t amount = validated->amount();
  const int count = m.tips_size();
  const uint64_t epoch = live->epoch;
  LiveChannel* lp = live;
  // Persist proof, tips and our ack; only then send the ack (a receipt for
  // tips we hold durably) and announce the tips.
  // Received tips are screened once acknowledged (flag only).
  std::vector<v1::Tip> screened;
  if (anomalies_) screened.assign(m.tips().begin(), m.tips().end());
  CommitThen(lp, std::move(batch),
             [this, lp, ack = *ack, epoch, amount, count, staged = std::move(staged),
              screened = std::move(screened), now_ms](Status s) mutable {
               PublishStaged(staged, s);
               if (!s.ok()) return;
               if (tips_received_) {
                 tips_received_->Inc(count);
                 amount_received_->Inc(static_cast<double>(amount));
               }
               if (lp->session && lp->epoch == epoch) {
                 v1::Envelope env;
                 *env.mutable_ack() = ack;
                 Send(*lp->session, env);
               }
               if (anomalies_) {
                 for (const v1::Tip& tip : screened) {
                   ScreenedTip seen;
                   seen.sent = false;
                   for (const v1::MetadataEntry& e : tip.metadata()) {
                     if (e.key() == "app_name") seen.app_name = e.value();
                   }
                   seen.peer = lp->peer.Hex();
                   seen.channel_id = Hex(lp->id);
                   seen.amount = tip.amount();
                   seen.now_ms = now_ms;
                   anomalies_->Received(seen);
                 }
               }
             });
}

void ChannelManager::HandleAck(p2p::PeerId peer, const v1::Ack& m) {
  LiveChannel* live = FindForPeer(peer, m.channel_id());
  if (live == nullptr) return;
  const uint64_t previous_receipt = live->ch.Snapshot().receipt_nonce;
  auto outcome = live->ch.OnAck(m);
  if (!outcome.ok()) return PeerBrokeRule(*live, peer, outcome.error(), m.nonce());
  if (outcome->updates_acked == 0) return;  // a duplicate
  const auto now = Clk::now();
  uint64_t latency_ms = 0;  // of the oldest update this ack releases
  for (auto it = live->sent_at.begin(); it != live->sent_at.end() && it->first <= m.nonce();) {
    const auto waited = now - it->second;
    if (latency_ms == 0) {
      latency_ms = static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(waited).count());
    }
    if (ack_latency_) ack_latency_->Observe(std::chrono::duration<double>(waited).count());
    it = live->sent_at.erase(it);
  }
  const uint64_t transferred = live->ch.receipt_transferred();
  // Every tip up to here is covered by this ack (indexes are consecutive).
  const uint64_t last_index = live->ch.acked_tip_count();
  storage::WriteBatch batch;
  if (Status s = chdb_.StageAckReceived(&batch, m, transferred, previous_receipt); !s.ok()) {
    EnterReadOnly("staging ack " + std::to_string(m.nonce()) + " of channel " + Short(live->id), s);
    return;
  }
  std::vector<v1::Event> staged;
  v1::Event e;
  e.set_type("ack");
  e.mutable_ack()->set_channel_id(Hex(live->id));
  e.mutable_ack()->set_nonce(m.nonce());
  e.mutable_ack()->set_latency_ms(latency_ms);
  Emit(&batch, std::move(e), &staged);
  LiveChannel* lp = live;
  CommitThen(lp, std::move(batch),
             [this, lp, m, transferred, last_index, staged = std::move(staged)](Status s) mutable {
               PublishStaged(staged, s);
               if (!s.ok()) return;
               v1::TipReceiptApi rc;
               rc.set_channel_id(Hex(lp->id));
               rc.set_nonce(m.nonce());
               rc.set_tips_root(Hex(m.tips_root()));
               rc.set_transferred(transferred);
               *rc.mutable_ack() = m;
               requests_.AnswerAcked(lp->id, last_index, rc);
             });
  Pump(*live);  // the window has room again
  TrySendShutdown(*live);
  MaybeProposeClose(*live);
}

void ChannelManager::HandleUpdateRejected(p2p::PeerId peer, const v1::UpdateRejected& m) {
  LiveChannel* live = FindForPeer(peer, m.channel_id());
  log_->warn("peer {} rejected update {} of channel {}: {}: {}", peer, m.nonce(),
             Short(m.channel_id()), m.code(), m.message());
  if (live == nullptr) return;
  if (m.code() == "CHANNEL_CLOSING") return;  // the close settles what is in flight
  // Our update and the peer's view disagree: reestablish resynchronises.
  peers_.Disconnect(peer, "peer rejected update " + std::to_string(m.nonce()));
}

}  // namespace tipd::node
