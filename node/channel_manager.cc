#include "node/channel_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>

#include "channel/codec.h"
#include "ledger/codec.h"
#include "node/logging.h"
#include "node/metrics.h"
#include "tipd/storage.pb.h"

namespace tipd::node {
namespace {

using Clk = std::chrono::steady_clock;
using IdempotencyRecords = storage::RecordStore<v1::StoredIdempotentResult>;

std::string Str(ByteSpan b) { return std::string(AsStringView(b)); }
std::string Hex(std::string_view bytes) { return HexEncode(AsSpan(bytes)); }
std::string Short(std::string_view bytes) { return Hex(bytes).substr(0, 16); }

std::string TipIdempotencyKey(std::string_view key) {
  std::string k(1, static_cast<char>(storage::KeyFamily::kIdempotency));
  k.append("tip/").append(key);
  return k;
}

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

// The request a tip idempotency key is bound to.
Hash32 TipRequestHash(const TipRequestIn& r) {
  std::string canon = Hex(r.channel_id) + "|" + (r.peer ? r.peer->Hex() : "") + "|" +
                      std::to_string(r.draft.amount) + "|" + r.draft.message;
  for (const auto& [k, v] : r.draft.metadata) {
    canon += "|" + std::to_string(k.size()) + ":" + k + "=" + std::to_string(v.size()) + ":" + v;
  }
  return crypto::Sha256(AsSpan(canon));
}

// A ledger answer that refused a transaction, as a Status: unreachable
// ledger is kUnavailable (503), a rule the ledger applied kFailedPrecondition.
Status LedgerRefusal(const std::string& what, const SubmitOutcome& out) {
  std::string msg = "ledger refused the " + what + ": " + out.code + ": " + out.message;
  if (out.code == "LEDGER_UNAVAILABLE") return Status::Unavailable(std::move(msg));
  return Status::FailedPrecondition(std::move(msg));
}

TipResult Refuse(Status status, std::string code) {
  TipResult r;
  r.status = std::move(status);
  r.error_code = std::move(code);
  return r;
}

v1::Envelope Wrap(const v1::Error& e) {
  v1::Envelope env;
  *env.mutable_error() = e;
  return env;
}

}  // namespace

// A SendTip call waiting for its tip to be persisted and acknowledged.
struct PendingTip {
  std::vector<std::function<void(TipResult)>> done;
  std::string idempotency_key;
  Hash32 request_hash{};
  Reservation reservation;
  v1::TipResponse response;  // tip and channel filled once folded
  bool durable = false;
  Clk::time_point queued_at;
  std::shared_ptr<boost::asio::steady_timer> timer;
};

struct ChannelManager::Live {
  v1::StoredChannel record;
  channel::Channel ch;
  crypto::PublicKey peer;
  std::string id;  // channel id bytes

  // Session with the peer and the reestablish handshake on it.
  std::optional<p2p::PeerId> session;
  uint64_t epoch = 0;  // bumped on every connect and disconnect
  bool reestablish_sent = false;
  bool reestablished = false;
  std::optional<v1::Reestablish> peer_reestablish;
  int commits_pending = 0;

  // Sending.
  std::map<uint64_t, PendingTip> waiting;            // by tip index
  std::map<uint64_t, uint64_t> last_index_of_nonce;  // our in-flight updates
  std::map<uint64_t, Clk::time_point> sent_at;       // by nonce, for ack latency
  std::optional<v1::Ack> receipt;                    // the peer's latest ack
  uint64_t receipt_transferred = 0;

  // Cooperative close. close_requested: this side wants to close (no new
  // tips are accepted; persisted as phase CLOSING). Per session: shutdown
  // (a CloseRequest without signature, sent once our queue is empty and our
  // updates are on the wire) sent and received, our signed proposal sent.
  bool close_requested = false;
  bool shutdown_sent = false;
  bool shutdown_received = false;
  bool proposal_sent = false;
  std::optional<channel::FinalBalances> proposed;
  std::optional<v1::CloseRequest> pending_proposal;  // B: A's, before we were quiescent
  std::vector<ChannelCallback> open_waiters;
  std::vector<ChannelCallback> close_waiters;

  // Watcher: what we already submitted, so each block does not resubmit.
  uint64_t proof_submitted_nonce = 0;
  bool settle_submitted = false;
  bool close_submitted = false;

  Live(v1::StoredChannel r, channel::Channel c, crypto::PublicKey p)
      : record(std::move(r)), ch(std::move(c)), peer(p), id(record.channel_id()) {}
  v1::StoredChannelPhase phase() const { return record.phase(); }
  bool usable() const { return session.has_value() && reestablished; }
  // We signed final balances: never accept another update of the peer.
  bool frozen() const { return record.close_signature_given(); }
};

struct ChannelManager::OpenNeg {
  std::string temporary_id;
  crypto::PublicKey peer;
  p2p::PeerId session = 0;
  uint64_t deposit = 0;
  uint64_t push = 0;
  uint64_t settle_timeout = 0;
  uint64_t nonce_a = 0;
  std::chrono::milliseconds wait{0};
  ChannelCallback done;
  std::shared_ptr<boost::asio::steady_timer> timer;
};

ChannelManager::ChannelManager(boost::asio::io_context& io, const crypto::KeyPair& key,
                               p2p::Host& host, LedgerClient& ledger, storage::Database& db,
                               storage::GroupCommitter& committer, SpendLimiter& spend,
                               const Clock& clock, crypto::RandomSource& rng,
                               ChannelManagerOptions options)
    : io_(io),
      key_(key),
      host_(host),
      ledger_(ledger),
      db_(db),
      committer_(committer),
      spend_(spend),
      clock_(clock),
      rng_(rng),
      options_(options),
      chdb_(&db),
      log_(Logger("channels")),
      alive_(std::make_shared<bool>(true)) {}

ChannelManager::~ChannelManager() { *alive_ = false; }

Status ChannelManager::Start() {
  TIPD_ASSIGN_OR_RETURN(std::vector<v1::StoredChannel> stored, chdb_.ListChannels());
  for (v1::StoredChannel& rec : stored) {
    TIPD_ASSIGN_OR_RETURN(crypto::PublicKey remote,
                          crypto::PublicKey::Parse(AsSpan(rec.remote_key())));
    TIPD_ASSIGN_OR_RETURN(channel::Channel ch, chdb_.Restore(rec.channel_id(), key_.public_key(),
                                                             options_.local_limits));
    TIPD_ASSIGN_OR_RETURN(channel::RestoredState state, chdb_.Load(rec.channel_id()));
    auto live = std::make_unique<Live>(rec, std::move(ch), remote);
    live->receipt = state.receipt;
    live->receipt_transferred = state.receipt_transferred;
    for (const v1::TipUpdate& u : state.in_flight) {
      if (u.tips_size() > 0) {
        live->last_index_of_nonce[u.proof().nonce()] = u.tips(u.tips_size() - 1).index();
      }
    }
    if (rec.phase() == v1::STORED_CHANNEL_PHASE_CLOSING) live->close_requested = true;
    std::string id = rec.channel_id();
    channels_.emplace(id, std::move(live));
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
  m.AddCollectHook([this, &opening, &open, &closing, &closed, &queued, &in_flight] {
    // Runs on the io thread (GET /metrics), like every other manager call.
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
  });
}

// ---------------------------------------------------------------------------
// Plumbing

ChannelManager::Live* ChannelManager::Find(const std::string& channel_id) {
  auto it = channels_.find(channel_id);
  return it == channels_.end() ? nullptr : it->second.get();
}

const ChannelManager::Live* ChannelManager::Find(const std::string& channel_id) const {
  auto it = channels_.find(channel_id);
  return it == channels_.end() ? nullptr : it->second.get();
}

ChannelManager::Live* ChannelManager::FindForPeer(p2p::PeerId peer, const std::string& channel_id) {
  Live* live = Find(channel_id);
  if (live == nullptr || live->session != peer) return nullptr;
  return live;
}

void ChannelManager::Send(p2p::PeerId peer, const v1::Envelope& env) {
  Status s = host_.Send(peer, env);
  if (!s.ok()) log_->warn("send to peer {}: {}", peer, s.ToString());
}

void ChannelManager::CommitThen(Live* live, storage::WriteBatch batch,
                                std::function<void(Status)> then) {
  if (live) ++live->commits_pending;
  // Events SetPhase staged into this batch are published once it is durable.
  std::vector<v1::Event> phase_events = std::exchange(phase_events_, {});
  committer_.Submit(std::move(batch), [this, alive = alive_, live, then = std::move(then),
                                       phase_events = std::move(phase_events)](Status s) mutable {
    boost::asio::post(io_, [this, alive, live, then = std::move(then), s,
                            phase_events = std::move(phase_events)]() {
      if (!*alive) return;
      if (!s.ok()) {
        log_->critical("channel write failed: {}; channel operations stop", s.ToString());
      }
      Settle(phase_events, s);
      if (live) --live->commits_pending;
      then(s);
      if (live && live->commits_pending == 0) {
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

void ChannelManager::Settle(const std::vector<v1::Event>& staged, const Status& written) {
  for (const v1::Event& e : staged) {
    if (written.ok()) {
      events_->Publish(e);
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

void ChannelManager::EmitChannel(const Live& live, const std::string& previous_state) {
  v1::Event e;
  e.set_type("channel");
  *e.mutable_channel()->mutable_channel() = ToApi(live);
  e.mutable_channel()->set_previous_state(previous_state);
  EmitNow(std::move(e));
}

void ChannelManager::SetPhase(Live& live, v1::StoredChannelPhase phase,
                              storage::WriteBatch* batch) {
  if (live.phase() == phase) return;
  const std::string previous = PhaseName(live.phase());
  Status s = chdb_.StagePhase(batch, &live.record, phase);
  if (!s.ok()) log_->error("channel {}: stage phase: {}", Short(live.id), s.ToString());
  log_->info("channel {} with {}: {} -> {}", Short(live.id), live.peer.Hex().substr(0, 16),
             previous, PhaseName(phase));
  v1::Event e;
  e.set_type("channel");
  *e.mutable_channel()->mutable_channel() = ToApi(live);
  e.mutable_channel()->set_previous_state(previous);
  Emit(batch, std::move(e), &phase_events_);
}

v1::Transaction ChannelManager::NewTx() {
  v1::Transaction tx;
  tx.set_chain_id(ledger_.chain().params().chain_id);
  tx.set_signer(Str(key_.XOnly()));
  tx.set_nonce(ledger_.NextNonce(key_.XOnly()));
  tx.set_fee(ledger_.chain().params().fee_per_tx);
  return tx;
}

void ChannelManager::SubmitTx(v1::Transaction tx, std::function<void(const SubmitOutcome&)> done) {
  if (Status s = ledger::SignTransaction(&tx, key_, rng_); !s.ok()) {
    SubmitOutcome out;
    out.code = "INTERNAL";
    out.message = s.message();
    done(out);
    return;
  }
  ledger_.Submit(tx, [this, alive = alive_, done = std::move(done)](const SubmitOutcome& out) {
    if (!*alive) return;
    if (!out.accepted) ledger_.ResetNonces();
    done(out);
  });
}

void ChannelManager::WaitForInclusion(const Hash32& tx_id, std::chrono::milliseconds wait,
                                      std::function<void(bool)> done) {
  auto answered = std::make_shared<bool>(false);
  auto timer = std::make_shared<boost::asio::steady_timer>(io_, wait);
  auto shared_done = std::make_shared<std::function<void(bool)>>(std::move(done));
  timer->async_wait([answered, shared_done, alive = alive_](const auto& ec) {
    if (ec || !*alive || *answered) return;
    *answered = true;
    (*shared_done)(false);
  });
  ledger_.WhenIncluded(tx_id, [answered, shared_done, timer, alive = alive_](uint64_t) {
    if (!*alive || *answered) return;
    *answered = true;
    timer->cancel();
    (*shared_done)(true);
  });
}

v1::ChannelApi ChannelManager::ToApi(const Live& live) const {
  v1::ChannelApi out;
  out.set_channel_id(Hex(live.id));
  out.set_peer_node_id(live.peer.Hex());
  out.set_state(PhaseName(live.phase()));
  const channel::ChannelSnapshot snap = live.ch.Snapshot();
  out.set_deposit_local(snap.deposit_local);
  out.set_deposit_remote(snap.deposit_remote);
  auto fb = live.ch.FinalBalancesNow();
  if (fb.ok()) {
    const bool a = live.record.local_is_a();
    out.set_balance_local(a ? fb->balance_a : fb->balance_b);
    out.set_balance_remote(a ? fb->balance_b : fb->balance_a);
  }
  out.set_tips_sent(snap.sent_tip_count);
  out.set_tips_received(snap.received_tip_count);
  out.set_settle_timeout(live.record.settle_timeout());
  out.set_close_reason(live.record.close_reason());
  return out;
}

std::vector<v1::ChannelApi> ChannelManager::ListChannels() const {
  std::vector<v1::ChannelApi> out;
  for (const auto& [id, live] : channels_) out.push_back(ToApi(*live));
  return out;
}

Result<v1::ChannelApi> ChannelManager::GetChannel(const std::string& channel_id) const {
  const Live* live = Find(channel_id);
  if (live == nullptr) return Status::NotFound("no channel " + Hex(channel_id));
  return ToApi(*live);
}

void ChannelManager::Balances(v1::BalanceResponse* out) const {
  for (const auto& [id, live] : channels_) {
    auto fb = live->ch.FinalBalancesNow();
    if (!fb.ok()) continue;
    const bool a = live->record.local_is_a();
    const uint64_t local = a ? fb->balance_a : fb->balance_b;
    const uint64_t remote = a ? fb->balance_b : fb->balance_a;
    switch (live->phase()) {
      case v1::STORED_CHANNEL_PHASE_OPEN:
        out->set_channels_local(out->channels_local() + local);
        out->set_channels_remote(out->channels_remote() + remote);
        break;
      case v1::STORED_CHANNEL_PHASE_CLOSING:
        out->set_pending_close(out->pending_close() + local);
        break;
      default:
        break;
    }
  }
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
    if (live->commits_pending == 0) SendReestablish(*live);
  }
}

void ChannelManager::OnPeerDisconnected(const p2p::DisconnectEvent& ev) {
  if (!ev.was_connected) return;
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
  for (auto it = negotiations_.begin(); it != negotiations_.end();) {
    if (it->second->session == ev.id) {
      auto neg = std::move(it->second);
      it = negotiations_.erase(it);
      neg->timer->cancel();
      ledger_.ResetNonces();
      neg->done(Status::Unavailable("peer disconnected during the open negotiation: " +
                                    ev.reason.ToString()),
                "");
    } else {
      ++it;
    }
  }
}

void ChannelManager::OnPeerError(p2p::PeerId peer, const v1::Error& error) {
  auto it = negotiations_.find(error.channel_id());
  if (it != negotiations_.end() && it->second->session == peer) {
    auto neg = std::move(it->second);
    negotiations_.erase(it);
    neg->timer->cancel();
    ledger_.ResetNonces();
    neg->done(Status::FailedPrecondition("peer refused the channel: " + error.code() + ": " +
                                         error.message()),
              "");
    return;
  }
  log_->warn("peer {} reports an error on channel {}: {}: {}", peer, Short(error.channel_id()),
             error.code(), error.message());
}

bool ChannelManager::OnMessage(p2p::PeerId peer, const v1::Envelope& env) {
  switch (env.msg_case()) {
    case v1::Envelope::kOpenChannel: {
      auto info = host_.GetPeer(peer);
      if (info) HandleOpenChannel(peer, info->node_id, env.open_channel());
      return true;
    }
    case v1::Envelope::kAcceptChannel:
      HandleAcceptChannel(peer, env.accept_channel());
      return true;
    case v1::Envelope::kRejectChannel:
      HandleRejectChannel(env.reject_channel());
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
// Opening

void ChannelManager::Open(const crypto::PublicKey& peer, uint64_t deposit, uint64_t push,
                          uint64_t settle_timeout, std::chrono::milliseconds wait,
                          ChannelCallback done) {
  const ledger::Params& params = ledger_.chain().params();
  auto session = host_.FindPeer(peer);
  if (!session) {
    return done(Status::FailedPrecondition("peer " + peer.Hex() +
                                           " is not connected; connect first (POST /v1/peers)"),
                "");
  }
  if (peer == key_.public_key()) {
    return done(Status::InvalidArgument("cannot open a channel with this node itself"), "");
  }
  if (settle_timeout == 0) {
    settle_timeout = std::clamp(options_.default_settle_timeout, params.min_settle_timeout,
                                params.max_settle_timeout);
  }
  if (settle_timeout < params.min_settle_timeout || settle_timeout > params.max_settle_timeout) {
    return done(Status::InvalidArgument("settle_timeout " + std::to_string(settle_timeout) +
                                        " is outside the ledger's bounds [" +
                                        std::to_string(params.min_settle_timeout) + ", " +
                                        std::to_string(params.max_settle_timeout) + "]"),
                "");
  }
  if (deposit > UINT64_MAX - push || deposit + push == 0) {
    return done(
        Status::InvalidArgument("deposit + push_deposit must be at least 1 and fit in 64 bits"),
        "");
  }
  const ledger::Account* acct = ledger_.chain().state().FindAccount(key_.XOnly());
  const uint64_t balance = acct ? acct->balance : 0;
  if (deposit > UINT64_MAX - params.fee_per_tx || balance < deposit + params.fee_per_tx) {
    return done(Status::FailedPrecondition("INSUFFICIENT_FUNDS: the ledger balance " +
                                           std::to_string(balance) + " cannot cover the deposit " +
                                           std::to_string(deposit) + " plus the fee " +
                                           std::to_string(params.fee_per_tx)),
                "");
  }
  auto neg = std::make_unique<OpenNeg>();
  std::array<uint8_t, 32> temp;
  rng_.Fill(temp);
  neg->temporary_id = Str(temp);
  neg->peer = peer;
  neg->session = *session;
  neg->deposit = deposit;
  neg->push = push;
  neg->settle_timeout = settle_timeout;
  neg->nonce_a = ledger_.NextNonce(key_.XOnly());
  neg->wait = wait;
  neg->done = std::move(done);
  neg->timer = std::make_shared<boost::asio::steady_timer>(io_, options_.negotiation_timeout);
  neg->timer->async_wait([this, alive = alive_, temp_id = neg->temporary_id](const auto& ec) {
    if (ec || !*alive) return;
    auto it = negotiations_.find(temp_id);
    if (it == negotiations_.end()) return;
    auto n = std::move(it->second);
    negotiations_.erase(it);
    ledger_.ResetNonces();
    n->done(Status::Unavailable("peer did not answer the open request in time"), "");
  });

  v1::Envelope env;
  v1::OpenChannel& m = *env.mutable_open_channel();
  m.set_temporary_id(neg->temporary_id);
  m.set_chain_id(params.chain_id);
  m.set_funder_key(Str(key_.XOnly()));
  m.set_deposit_a(deposit);
  m.set_deposit_b_requested(push);
  m.set_settle_timeout(settle_timeout);
  m.set_max_updates_in_flight(options_.max_updates_in_flight);
  m.set_max_tips_per_update(options_.max_tips_per_update);
  m.set_nonce_a(neg->nonce_a);
  Send(*session, env);
  negotiations_.emplace(neg->temporary_id, std::move(neg));
}

void ChannelManager::HandleOpenChannel(p2p::PeerId peer, const crypto::PublicKey& node,
                                       const v1::OpenChannel& m) {
  const ledger::Params& params = ledger_.chain().params();
  auto reject = [&](const std::string& code, const std::string& why) {
    log_->info("refusing channel from {}: {}: {}", node.Hex().substr(0, 16), code, why);
    v1::Envelope env;
    env.mutable_reject_channel()->set_temporary_id(m.temporary_id());
    env.mutable_reject_channel()->set_code(code);
    env.mutable_reject_channel()->set_message(why);
    Send(peer, env);
  };
  if (m.temporary_id().size() != 32) return reject("MALFORMED", "temporary_id must be 32 bytes");
  if (m.chain_id() != params.chain_id) {
    return reject("WRONG_CHAIN_ID", "this node is on chain " + params.chain_id);
  }
  if (m.funder_key() != Str(node.XOnly())) {
    return reject("WRONG_FUNDER", "funder_key is not the key of this connection");
  }
  if (m.settle_timeout() < params.min_settle_timeout ||
      m.settle_timeout() > params.max_settle_timeout) {
    return reject("BAD_SETTLE_TIMEOUT", "settle_timeout outside the ledger's bounds");
  }
  if (m.max_updates_in_flight() == 0 || m.max_tips_per_update() == 0) {
    return reject("MALFORMED", "window limits must be at least 1");
  }
  if (m.deposit_a() > UINT64_MAX - m.deposit_b_requested()) {
    return reject("OVERFLOW", "deposits overflow 64 bits");
  }
  const uint64_t push = m.deposit_b_requested();
  if (push > options_.max_accept_deposit) {
    return reject("DEPOSIT_REFUSED", "this node funds at most " +
                                         std::to_string(options_.max_accept_deposit) +
                                         " into a channel a peer opens");
  }
  const ledger::Account* acct = ledger_.chain().state().FindAccount(key_.XOnly());
  if ((acct ? acct->balance : 0) < push) {
    return reject("INSUFFICIENT_FUNDS",
                  "this node's ledger balance cannot cover the requested " + std::to_string(push));
  }
  v1::ChannelOpenTx open;
  open.set_party_a(m.funder_key());
  open.set_party_b(Str(key_.XOnly()));
  open.set_deposit_a(m.deposit_a());
  open.set_deposit_b(push);
  open.set_settle_timeout(m.settle_timeout());
  open.set_nonce_b(ledger_.NextNonce(key_.XOnly()));
  auto agreement = ledger::EncodeChannelOpenAgreement(params.chain_id, open, m.nonce_a());
  if (!agreement.ok()) return reject("MALFORMED", agreement.status().message());
  const std::string channel_id = Str(ledger::DeriveChannelId(
      params.chain_id, AsSpan(open.party_a()), AsSpan(open.party_b()), m.nonce_a()));
  if (Find(channel_id) != nullptr ||
      ledger_.chain().state().FindChannel(*HexDecodeFixed<32>(Hex(channel_id))) != nullptr) {
    return reject("CHANNEL_EXISTS", "a channel with this id exists");
  }
  channel::ChannelParams cp;
  cp.chain_id = params.chain_id;
  std::copy(channel_id.begin(), channel_id.end(), cp.channel_id.begin());
  cp.local_key = key_.public_key();
  cp.remote_key = node;
  cp.local_is_a = false;
  cp.deposit_local = push;
  cp.deposit_remote = m.deposit_a();
  cp.max_updates_in_flight = std::min(options_.max_updates_in_flight, m.max_updates_in_flight());
  cp.max_tips_per_update = std::min(options_.max_tips_per_update, m.max_tips_per_update());
  cp.max_update_bytes = options_.local_limits.max_update_bytes;
  cp.max_queued_tips = options_.local_limits.max_queued_tips;
  auto ch = channel::Channel::Open(cp);
  if (!ch.ok()) return reject("MALFORMED", ch.status().message());

  v1::StoredChannel rec;
  rec.set_channel_id(channel_id);
  rec.set_chain_id(params.chain_id);
  rec.set_local_key(Str(key_.public_key().bytes()));
  rec.set_remote_key(Str(node.bytes()));
  rec.set_local_is_a(false);
  rec.set_deposit_local(push);
  rec.set_deposit_remote(m.deposit_a());
  rec.set_settle_timeout(m.settle_timeout());
  rec.set_phase(v1::STORED_CHANNEL_PHASE_OPENING);
  rec.set_max_updates_in_flight(cp.max_updates_in_flight);
  rec.set_max_tips_per_update(cp.max_tips_per_update);
  rec.set_open_nonce_a(m.nonce_a());
  rec.set_open_nonce_b(open.nonce_b());
  storage::WriteBatch batch;
  if (Status s = chdb_.StageNewChannel(&batch, rec); !s.ok()) {
    return reject("INTERNAL", s.message());
  }
  auto live = std::make_unique<Live>(rec, std::move(*ch), node);
  Live* lp = live.get();
  lp->session = peer;
  channels_.emplace(channel_id, std::move(live));
  crypto::Signature sig_b = crypto::SignTagged(key_, ledger::kChannelOpenTag, *agreement, rng_);
  v1::Envelope env;
  v1::AcceptChannel& a = *env.mutable_accept_channel();
  a.set_temporary_id(m.temporary_id());
  a.set_acceptor_key(open.party_b());
  a.set_deposit_b(push);
  a.set_nonce_b(open.nonce_b());
  a.set_signature_b(Str(sig_b));
  a.set_max_updates_in_flight(cp.max_updates_in_flight);
  a.set_max_tips_per_update(cp.max_tips_per_update);
  // Our signature is a promise: the channel record is durable before it
  // leaves, so a restart still knows the channel when the ledger opens it.
  CommitThen(lp, std::move(batch), [this, peer, env, lp](Status s) {
    if (!s.ok()) return;
    log_->info("accepted channel {} from {} (deposits {} / {})", Short(lp->id),
               lp->peer.Hex().substr(0, 16), lp->record.deposit_remote(),
               lp->record.deposit_local());
    Send(peer, env);
    EmitChannel(*lp, "");
  });
}

void ChannelManager::HandleAcceptChannel(p2p::PeerId peer, const v1::AcceptChannel& m) {
  auto it = negotiations_.find(m.temporary_id());
  if (it == negotiations_.end() || it->second->session != peer) {
    log_->warn("peer {} accepted an unknown channel negotiation", peer);
    return;
  }
  std::unique_ptr<OpenNeg> neg = std::move(it->second);
  negotiations_.erase(it);
  neg->timer->cancel();
  const ledger::Params& params = ledger_.chain().params();
  auto fail = [&](Status s) {
    ledger_.ResetNonces();
    neg->done(std::move(s), "");
  };
  if (m.acceptor_key() != Str(neg->peer.XOnly())) {
    return fail(Status::FailedPrecondition("peer answered with another account key"));
  }
  if (m.deposit_b() != neg->push) {
    return fail(Status::FailedPrecondition("peer offered a deposit of " +
                                           std::to_string(m.deposit_b()) + ", not the " +
                                           std::to_string(neg->push) + " requested"));
  }
  if (m.max_updates_in_flight() == 0 || m.max_tips_per_update() == 0) {
    return fail(Status::FailedPrecondition("peer announced zero window limits"));
  }
  v1::Transaction tx;
  tx.set_chain_id(params.chain_id);
  tx.set_signer(Str(key_.XOnly()));
  tx.set_nonce(neg->nonce_a);
  tx.set_fee(params.fee_per_tx);
  v1::ChannelOpenTx& open = *tx.mutable_channel_open();
  open.set_party_a(Str(key_.XOnly()));
  open.set_party_b(m.acceptor_key());
  open.set_deposit_a(neg->deposit);
  open.set_deposit_b(m.deposit_b());
  open.set_settle_timeout(neg->settle_timeout);
  open.set_nonce_b(m.nonce_b());
  open.set_signature_b(m.signature_b());
  auto agreement = ledger::EncodeChannelOpenAgreement(params.chain_id, open, neg->nonce_a);
  crypto::Signature sig{};
  if (!agreement.ok() || m.signature_b().size() != sig.size()) {
    return fail(Status::FailedPrecondition("peer's open signature is malformed"));
  }
  std::copy(m.signature_b().begin(), m.signature_b().end(), sig.begin());
  if (!crypto::VerifyTagged(neg->peer.XOnly(), ledger::kChannelOpenTag, *agreement, sig)) {
    return fail(Status::FailedPrecondition("peer's signature on the open does not verify"));
  }
  if (Status st = ledger::SignTransaction(&tx, key_, rng_); !st.ok()) return fail(st);
  const std::string channel_id = Str(ledger::DeriveChannelId(
      params.chain_id, AsSpan(open.party_a()), AsSpan(open.party_b()), neg->nonce_a));
  channel::ChannelParams cp;
  cp.chain_id = params.chain_id;
  std::copy(channel_id.begin(), channel_id.end(), cp.channel_id.begin());
  cp.local_key = key_.public_key();
  cp.remote_key = neg->peer;
  cp.local_is_a = true;
  cp.deposit_local = neg->deposit;
  cp.deposit_remote = m.deposit_b();
  cp.max_updates_in_flight = std::min(options_.max_updates_in_flight, m.max_updates_in_flight());
  cp.max_tips_per_update = std::min(options_.max_tips_per_update, m.max_tips_per_update());
  cp.max_update_bytes = options_.local_limits.max_update_bytes;
  cp.max_queued_tips = options_.local_limits.max_queued_tips;
  auto ch = channel::Channel::Open(cp);
  if (!ch.ok()) return fail(ch.status());
  v1::StoredChannel rec;
  rec.set_channel_id(channel_id);
  rec.set_chain_id(params.chain_id);
  rec.set_local_key(Str(key_.public_key().bytes()));
  rec.set_remote_key(Str(neg->peer.bytes()));
  rec.set_local_is_a(true);
  rec.set_deposit_local(neg->deposit);
  rec.set_deposit_remote(m.deposit_b());
  rec.set_settle_timeout(neg->settle_timeout);
  rec.set_phase(v1::STORED_CHANNEL_PHASE_OPENING);
  rec.set_max_updates_in_flight(cp.max_updates_in_flight);
  rec.set_max_tips_per_update(cp.max_tips_per_update);
  rec.set_open_nonce_a(neg->nonce_a);
  rec.set_open_nonce_b(m.nonce_b());
  storage::WriteBatch batch;
  if (Status s = chdb_.StageNewChannel(&batch, rec); !s.ok()) return fail(s);
  auto live = std::make_unique<Live>(rec, std::move(*ch), neg->peer);
  Live* lp = live.get();
  lp->session = host_.FindPeer(neg->peer);
  channels_.emplace(channel_id, std::move(live));
  lp->open_waiters.push_back(std::move(neg->done));
  const auto wait = neg->wait;
  CommitThen(
      lp, std::move(batch), [this, lp, tx, peer, temp = m.temporary_id(), wait](Status s) mutable {
        if (!s.ok()) return;
        EmitChannel(*lp, "");
        Hash32 tx_id = *ledger::TransactionId(tx);
        ledger_.Submit(
            tx, [this, alive = alive_, lp, tx_id, peer, temp, wait](const SubmitOutcome& out) {
              if (!*alive) return;
              if (!out.accepted) {
                ledger_.ResetNonces();
                storage::WriteBatch b;
                lp->record.set_close_reason("ledger refused the open: " + out.code + ": " +
                                            out.message);
                SetPhase(*lp, v1::STORED_CHANNEL_PHASE_CLOSED, &b);
                CommitThen(lp, std::move(b), [](Status) {});
                auto waiters = std::move(lp->open_waiters);
                for (auto& w : waiters) {
                  w(LedgerRefusal("open", out), HexEncode(tx_id));
                }
                return;
              }
              v1::Envelope env;
              env.mutable_channel_opened()->set_temporary_id(temp);
              env.mutable_channel_opened()->set_channel_id(lp->id);
              env.mutable_channel_opened()->set_tx_id(Str(tx_id));
              if (host_.GetPeer(peer)) Send(peer, env);
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

void ChannelManager::HandleRejectChannel(const v1::RejectChannel& m) {
  auto it = negotiations_.find(m.temporary_id());
  if (it == negotiations_.end()) return;
  auto neg = std::move(it->second);
  negotiations_.erase(it);
  neg->timer->cancel();
  ledger_.ResetNonces();
  neg->done(
      Status::FailedPrecondition("peer refused the channel: " + m.code() + ": " + m.message()), "");
}

// ---------------------------------------------------------------------------
// Reestablish

void ChannelManager::SendReestablish(Live& live) {
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
  if (live.peer_reestablish && !live.reestablished) {
    v1::Reestablish peer = std::move(*live.peer_reestablish);
    live.peer_reestablish.reset();
    auto plan = live.ch.OnPeerReestablish(peer, peer.received_tip_count());
    if (!plan.ok()) {
      PeerBrokeRule(live, *live.session, plan.error(), 0);
      return;
    }
    if (plan->adopted_own_proof) {
      // Rare (we were restored from a backup): write it before going on.
      storage::WriteBatch batch;
      Status s =
          chdb_.StageAdoptedOwnProof(&batch, peer.received_proof(), peer.received_tip_count());
      if (s.ok()) s = committer_.SubmitAndWait(std::move(batch));
      if (!s.ok()) {
        log_->critical("channel {}: persisting the adopted proof failed: {}", Short(live.id),
                       s.ToString());
        return;
      }
      log_->warn("channel {}: adopted the peer's copy of our proof at nonce {}", Short(live.id),
                 peer.received_proof().nonce());
    }
    ApplyPlan(live, std::move(*plan));
  }
}

void ChannelManager::HandleReestablish(p2p::PeerId peer, const v1::Reestablish& m) {
  Live* live = FindForPeer(peer, m.channel_id());
  if (live == nullptr) {
    v1::Error e;
    e.set_channel_id(m.channel_id());
    e.set_code("UNKNOWN_CHANNEL");
    e.set_message("this node has no channel " + Hex(m.channel_id()) + " with you");
    Send(peer, Wrap(e));
    return;
  }
  live->peer_reestablish = m;
  live->reestablished = false;
  SendReestablish(*live);
}

void ChannelManager::ApplyPlan(Live& live, channel::ReestablishPlan plan) {
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
  for (const v1::Tip& t : plan.dropped_tips) {
    auto it = live.waiting.find(t.index());
    if (it == live.waiting.end()) continue;
    PendingTip p = std::move(it->second);
    live.waiting.erase(it);
    if (!p.idempotency_key.empty()) tips_by_key_.erase(p.idempotency_key);
    for (auto& d : p.done) {
      d(Refuse(Status::FailedPrecondition(
                   "the tip no longer fits the spendable balance after reestablish"),
               "INSUFFICIENT_SPENDABLE"));
    }
  }
  live.reestablished = true;
  log_->info("channel {} reestablished with {} (resent {} update(s))", Short(live.id),
             live.peer.Hex().substr(0, 16), plan.resend.size());
  Pump(live);
  TrySendShutdown(live);
  MaybeProposeClose(live);
}

// ---------------------------------------------------------------------------
// Tips: sending

void ChannelManager::SendTip(TipRequestIn req, std::function<void(TipResult)> done) {
  // Resolve the channel.
  Live* live = nullptr;
  if (!req.channel_id.empty()) {
    live = Find(req.channel_id);
    if (live == nullptr) {
      return done(Refuse(Status::NotFound("no channel " + Hex(req.channel_id)), "NOT_FOUND"));
    }
  } else if (req.peer) {
    for (auto& [id, l] : channels_) {
      if (l->peer != *req.peer || l->phase() != v1::STORED_CHANNEL_PHASE_OPEN) continue;
      if (live == nullptr || l->ch.SpendableLocal() > live->ch.SpendableLocal()) live = l.get();
    }
    if (live == nullptr) {
      return done(
          Refuse(Status::NotFound("no open channel with peer " + req.peer->Hex()), "NOT_FOUND"));
    }
  }
  const Hash32 request_hash = TipRequestHash(req);
  // Idempotency: an identical request in progress, or answered before.
  if (!req.idempotency_key.empty()) {
    if (req.idempotency_key.size() > 200) {
      return done(Refuse(Status::InvalidArgument("idempotency_key is longer than 200 bytes"),
                         "INVALID_ARGUMENT"));
    }
    auto running = tips_by_key_.find(req.idempotency_key);
    if (running != tips_by_key_.end()) {
      for (auto& [id, l] : channels_) {
        for (auto& [idx, p] : l->waiting) {
          if (p.idempotency_key != req.idempotency_key) continue;
          if (p.request_hash != request_hash) {
            return done(Refuse(Status::AlreadyExists("idempotency_key was used for a different "
                                                     "tip; use a new key"),
                               "IDEMPOTENCY_KEY_REUSED"));
          }
          p.done.push_back([done](TipResult r) {
            r.response.set_replayed(true);
            done(std::move(r));
          });
          return;
        }
      }
    }
    IdempotencyRecords records(&db_);
    auto prior = records.Get(TipIdempotencyKey(req.idempotency_key));
    if (!prior.ok()) return done(Refuse(prior.status(), "INTERNAL"));
    if (prior->has_value()) {
      if ((*prior)->request_hash() != AsStringView(request_hash)) {
        return done(Refuse(
            Status::AlreadyExists("idempotency_key was used for a different tip; use a new key"),
            "IDEMPOTENCY_KEY_REUSED"));
      }
      TipResult r;
      r.response.ParseFromString((*prior)->response());
      r.response.set_replayed(true);
      auto hex_id = HexDecode(r.response.tip().channel_id());
      Live* l = hex_id.ok() ? Find(Str(*hex_id)) : nullptr;
      const uint64_t nonce = r.response.tip().nonce();
      if (l && l->receipt && l->receipt->nonce() >= nonce) {
        v1::TipReceiptApi& rc = *r.response.mutable_receipt();
        rc.set_channel_id(Hex(l->id));
        rc.set_nonce(l->receipt->nonce());
        rc.set_tips_root(Hex(l->receipt->tips_root()));
        rc.set_transferred(l->receipt_transferred);
        *rc.mutable_ack() = *l->receipt;
        r.acked = true;
      } else if (l) {
        auto w = l->waiting.find(r.response.tip().tip().index());
        if (w != l->waiting.end()) {
          w->second.done.push_back([done](TipResult r2) {
            r2.response.set_replayed(true);
            done(std::move(r2));
          });
          return;
        }
      }
      return done(std::move(r));
    }
  }
  if (live->phase() != v1::STORED_CHANNEL_PHASE_OPEN || live->close_requested) {
    return done(Refuse(Status::FailedPrecondition("channel " + Hex(live->id) + " is " +
                                                  (live->phase() == v1::STORED_CHANNEL_PHASE_OPEN
                                                       ? std::string("closing")
                                                       : std::string(PhaseName(live->phase()))) +
                                                  "; tips need an open channel"),
                       "CHANNEL_NOT_OPEN"));
  }
  if (!live->session) {
    return done(Refuse(
        Status::Unavailable("peer " + live->peer.Hex() + " is not connected; the tip was not sent"),
        "PEER_OFFLINE"));
  }
  Reservation reservation;
  if (req.token) {
    auto r = spend_.Reserve(*req.token, req.draft.amount);
    if (!r.ok()) return done(Refuse(r.status(), "SPEND_CAP_EXCEEDED"));
    reservation = std::move(*r);
  }
  if (req.draft.created_at_ms == 0) {
    req.draft.created_at_ms = static_cast<uint64_t>(clock_.NowMs());
  }
  auto queued = live->ch.QueueTip(req.draft);
  if (!queued.ok()) {
    return done(Refuse(queued.error().ToStatus(), queued.error().code()));
  }
  PendingTip& p = live->waiting[*queued];
  p.done.push_back(std::move(done));
  p.idempotency_key = req.idempotency_key;
  p.request_hash = request_hash;
  p.reservation = std::move(reservation);
  p.queued_at = Clk::now();
  if (!req.idempotency_key.empty()) tips_by_key_.insert(req.idempotency_key);
  // Answer "pending" if the ack takes longer than ack_wait.
  p.timer = std::make_shared<boost::asio::steady_timer>(io_, options_.ack_wait);
  p.timer->async_wait([this, alive = alive_, lp = live, index = *queued](const auto& ec) {
    if (ec || !*alive) return;
    auto it = lp->waiting.find(index);
    if (it == lp->waiting.end() || it->second.done.empty()) return;
    auto callbacks = std::move(it->second.done);
    it->second.done.clear();
    TipResult r;
    r.response = it->second.response;
    for (auto& d : callbacks) d(r);  // acked == false: 202, still in flight
  });
  Pump(*live);
}

void ChannelManager::Pump(Live& live) {
  if (!live.usable() || live.proposal_sent || live.frozen() || live.close_submitted) return;
  const auto phase = live.phase();
  if (phase != v1::STORED_CHANNEL_PHASE_OPEN && phase != v1::STORED_CHANNEL_PHASE_CLOSING) return;
  for (;;) {
    const std::string root_before = live.ch.Snapshot().sent_tips_root;
    auto out = live.ch.TakeNextUpdate(key_, rng_);
    if (!out) break;
    std::map<uint64_t, std::string> keys;
    for (const v1::Tip& tip : out->update.tips()) {
      auto it = live.waiting.find(tip.index());
      if (it != live.waiting.end() && !it->second.idempotency_key.empty()) {
        keys.emplace(tip.index(), it->second.idempotency_key);
      }
    }
    storage::WriteBatch batch;
    if (Status s = chdb_.StageOutgoingUpdate(&batch, root_before, *out, keys); !s.ok()) {
      log_->critical("channel {}: staging update {}: {}", Short(live.id), out->nonce(),
                     s.ToString());
      return;
    }
    std::vector<v1::Event> staged;
    const uint64_t nonce = out->nonce();
    IdempotencyRecords records(&db_);
    for (const v1::Tip& tip : out->update.tips()) {
      auto it = live.waiting.find(tip.index());
      v1::TipApi api;
      api.set_channel_id(Hex(live.id));
      api.set_direction("sent");
      api.set_peer_node_id(live.peer.Hex());
      *api.mutable_tip() = tip;
      api.set_nonce(nonce);
      if (it != live.waiting.end()) {
        PendingTip& p = it->second;
        api.set_idempotency_key(p.idempotency_key);
        *p.response.mutable_tip() = api;
        if (!p.idempotency_key.empty()) {
          // The key's answer is durable with the payment: a retry after a
          // crash finds the tip and never pays twice.
          v1::StoredIdempotentResult rec;
          rec.set_request_hash(Str(p.request_hash));
          rec.set_response(p.response.SerializeAsString());
          records.Put(&batch, TipIdempotencyKey(p.idempotency_key), rec);
        }
        spend_.CommitToBatch(std::move(p.reservation), &batch);
      }
      v1::Event e;
      e.set_type("tip_sent");
      *e.mutable_tip() = api;
      Emit(&batch, std::move(e), &staged);
    }
    if (out->update.tips_size() > 0) {
      live.last_index_of_nonce[nonce] = out->update.tips(out->update.tips_size() - 1).index();
    }
    v1::Envelope env;
    *env.mutable_tip_update() = std::move(out->update);
    const uint64_t epoch = live.epoch;
    Live* lp = &live;
    CommitThen(
        lp, std::move(batch),
        [this, lp, env = std::move(env), epoch, nonce, staged = std::move(staged)](Status s) {
          Settle(staged, s);
          if (!s.ok()) return;
          const auto& u = env.tip_update();
          uint64_t amount = 0;
          for (const v1::Tip& t : u.tips()) {
            amount += t.amount();
            auto it = lp->waiting.find(t.index());
            if (it != lp->waiting.end()) it->second.durable = true;
          }
          if (tips_sent_) {
            tips_sent_->Inc(static_cast<double>(u.tips_size()));
            amount_sent_->Inc(static_cast<double>(amount));
            updates_sent_->Inc();
            tips_per_update_->Observe(static_cast<double>(u.tips_size()));
          }
          // A session that changed since is resynchronised by reestablish,
          // which resends every update still in flight.
          if (lp->session && lp->reestablished && lp->epoch == epoch) {
            lp->sent_at[nonce] = Clk::now();
            Send(*lp->session, env);
          }
        });
  }
}

// ---------------------------------------------------------------------------
// Tips: receiving and acks

void ChannelManager::PeerBrokeRule(Live& live, p2p::PeerId peer, const channel::ChannelError& e,
                                   uint64_t nonce) {
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
      (void)host_.Disconnect(peer, std::string("channel rule ") + e.code());
      break;
    case channel::Consequence::kCloseChannel:
      ForceClose(live, std::string("peer showed irreconcilable state: ") + e.code(), nullptr);
      (void)host_.Disconnect(peer, std::string("channel rule ") + e.code());
      break;
  }
}

void ChannelManager::HandleTipUpdate(p2p::PeerId peer, const v1::TipUpdate& m) {
  Live* live = FindForPeer(peer, m.channel_id());
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
    (void)host_.Disconnect(peer, "update before reestablish");
    return;
  }
  const auto phase = live->phase();
  if ((phase != v1::STORED_CHANNEL_PHASE_OPEN && phase != v1::STORED_CHANNEL_PHASE_CLOSING) ||
      live->proposal_sent || live->frozen()) {
    v1::Envelope env;
    v1::UpdateRejected& r = *env.mutable_update_rejected();
    r.set_channel_id(m.channel_id());
    r.set_nonce(nonce);
    r.set_code("CHANNEL_CLOSING");
    r.set_message("this channel is closing; no more updates are accepted");
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
    log_->critical("channel {}: staging received update {}: {}", Short(live->id), nonce,
                   s.ToString());
    return;
  }
  std::vector<v1::Event> staged;
  if (events_) {
    for (const v1::Tip& tip : m.tips()) {
      v1::Event e;
      e.set_type("tip_received");
      v1::TipApi& api = *e.mutable_tip();
      api.set_channel_id(Hex(live->id));
      api.set_direction("received");
      api.set_peer_node_id(live->peer.Hex());
      *api.mutable_tip() = tip;
      api.set_nonce(nonce);
      Emit(&batch, std::move(e), &staged);
    }
  }
  const uint64_t amount = validated->amount();
  const int count = m.tips_size();
  const uint64_t epoch = live->epoch;
  Live* lp = live;
  // Persist proof, tips and our ack; only then send the ack (a receipt for
  // tips we hold durably) and announce the tips.
  CommitThen(lp, std::move(batch),
             [this, lp, ack = *ack, epoch, amount, count, staged = std::move(staged)](Status s) {
               Settle(staged, s);
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
             });
}

void ChannelManager::HandleAck(p2p::PeerId peer, const v1::Ack& m) {
  Live* live = FindForPeer(peer, m.channel_id());
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
  const uint64_t transferred = live->ch.Snapshot().receipt_transferred;
  storage::WriteBatch batch;
  if (Status s = chdb_.StageAckReceived(&batch, m, transferred, previous_receipt); !s.ok()) {
    log_->critical("channel {}: staging ack {}: {}", Short(live->id), m.nonce(), s.ToString());
    return;
  }
  std::vector<v1::Event> staged;
  v1::Event e;
  e.set_type("ack");
  e.mutable_ack()->set_channel_id(Hex(live->id));
  e.mutable_ack()->set_nonce(m.nonce());
  e.mutable_ack()->set_latency_ms(latency_ms);
  Emit(&batch, std::move(e), &staged);
  Live* lp = live;
  CommitThen(lp, std::move(batch),
             [this, lp, m, transferred, staged = std::move(staged)](Status s) {
               Settle(staged, s);
               if (!s.ok()) return;
               if (!lp->receipt || lp->receipt->nonce() < m.nonce()) {
                 lp->receipt = m;
                 lp->receipt_transferred = transferred;
               }
               AnswerAcked(*lp);
             });
  Pump(*live);  // the window has room again
  TrySendShutdown(*live);
  MaybeProposeClose(*live);
}

void ChannelManager::AnswerAcked(Live& live) {
  if (!live.receipt) return;
  const uint64_t acked_nonce = live.receipt->nonce();
  uint64_t last_index = 0;
  for (auto it = live.last_index_of_nonce.begin();
       it != live.last_index_of_nonce.end() && it->first <= acked_nonce;) {
    last_index = std::max(last_index, it->second);
    it = live.last_index_of_nonce.erase(it);
  }
  while (!live.waiting.empty() && live.waiting.begin()->first <= last_index) {
    PendingTip p = std::move(live.waiting.begin()->second);
    live.waiting.erase(live.waiting.begin());
    if (p.timer) p.timer->cancel();
    if (!p.idempotency_key.empty()) tips_by_key_.erase(p.idempotency_key);
    TipResult r;
    r.acked = true;
    r.response = std::move(p.response);
    v1::TipReceiptApi& rc = *r.response.mutable_receipt();
    rc.set_channel_id(Hex(live.id));
    rc.set_nonce(acked_nonce);
    rc.set_tips_root(Hex(live.receipt->tips_root()));
    rc.set_transferred(live.receipt_transferred);
    *rc.mutable_ack() = *live.receipt;
    for (auto& d : p.done) d(r);
  }
}

void ChannelManager::HandleUpdateRejected(p2p::PeerId peer, const v1::UpdateRejected& m) {
  Live* live = FindForPeer(peer, m.channel_id());
  log_->warn("peer {} rejected update {} of channel {}: {}: {}", peer, m.nonce(),
             Short(m.channel_id()), m.code(), m.message());
  if (live == nullptr) return;
  if (m.code() == "CHANNEL_CLOSING") return;  // the close settles what is in flight
  // Our update and the peer's view disagree: reestablish resynchronises.
  (void)host_.Disconnect(peer, "peer rejected update " + std::to_string(m.nonce()));
}

// ---------------------------------------------------------------------------
// Closing

void ChannelManager::Close(const std::string& channel_id, bool force,
                           std::chrono::milliseconds wait, ChannelCallback done) {
  Live* live = Find(channel_id);
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
  const ledger::Channel* onchain =
      ledger_.chain().state().FindChannel(*HexDecodeFixed<32>(Hex(channel_id)));
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
  auto timer = std::make_shared<boost::asio::steady_timer>(io_, wait);
  timer->async_wait([this, alive = alive_, lp = live, timer](const auto& ec) {
    if (ec || !*alive) return;
    auto waiters = std::move(lp->close_waiters);
    for (auto& w : waiters) w(ToApi(*lp), "");  // still closing: 202
  });
  RequestClose(*live);
}

void ChannelManager::RequestClose(Live& live) {
  if (live.close_requested) return TrySendShutdown(live);
  live.close_requested = true;
  storage::WriteBatch batch;
  SetPhase(live, v1::STORED_CHANNEL_PHASE_CLOSING, &batch);
  CommitThen(&live, std::move(batch), [](Status) {});  // TrySendShutdown follows the commit
}

void ChannelManager::TrySendShutdown(Live& live) {
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

void ChannelManager::MaybeProposeClose(Live& live) {
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

void ChannelManager::GiveCloseSignature(Live& live, v1::Envelope env) {
  // Durable before the signature leaves: after a restart we still refuse
  // the peer's updates, since it could close on the signed balances.
  const uint64_t epoch = live.epoch;
  storage::WriteBatch batch;
  if (!live.record.close_signature_given()) {
    live.record.set_close_signature_given(true);
    (void)chdb_.StagePhase(&batch, &live.record, live.phase());
  }
  Live* lp = &live;
  CommitThen(lp, std::move(batch), [this, lp, env = std::move(env), epoch](Status s) {
    if (s.ok() && lp->session && lp->epoch == epoch) Send(*lp->session, env);
  });
}

void ChannelManager::HandleCloseRequest(p2p::PeerId peer, const v1::CloseRequest& m) {
  Live* live = FindForPeer(peer, m.channel_id());
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
    live->pending_proposal = m;
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
  Live* live = FindForPeer(peer, m.channel_id());
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
  v1::Transaction tx = NewTx();
  v1::CooperativeClose& c = *tx.mutable_cooperative_close()->mutable_close();
  c.set_chain_id(ledger_.chain().params().chain_id);
  c.set_channel_id(live->id);
  c.set_balance_a(fb.balance_a);
  c.set_balance_b(fb.balance_b);
  const bool a = live->record.local_is_a();
  c.set_signature_a(a ? Str(*ours) : m.signature());
  c.set_signature_b(a ? m.signature() : Str(*ours));
  Live* lp = live;
  SubmitTx(tx, [this, lp](const SubmitOutcome& out) {
    if (!out.accepted && out.code == "CHANNEL_NOT_OPEN") return;  // settled already
    if (!out.accepted) {
      lp->close_submitted = false;
      log_->warn("channel {}: ledger refused the cooperative close: {}: {}", Short(lp->id),
                 out.code, out.message);
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

void ChannelManager::ForceClose(Live& live, const std::string& why, ChannelCallback done) {
  if (live.close_submitted) {
    if (done) live.close_waiters.push_back(std::move(done));
    return;
  }
  live.close_submitted = true;
  live.close_requested = true;
  live.record.set_close_reason(why);
  storage::WriteBatch batch;
  SetPhase(live, v1::STORED_CHANNEL_PHASE_CLOSING, &batch);
  if (done) live.close_waiters.push_back(std::move(done));
  Live* lp = &live;
  CommitThen(lp, std::move(batch), [this, lp](Status s) {
    if (!s.ok()) return;
    v1::Transaction tx = NewTx();
    v1::UnilateralCloseTx& u = *tx.mutable_unilateral_close();
    u.set_channel_id(lp->id);
    v1::Reestablish view = lp->ch.MakeReestablish();
    if (view.has_received_proof() && view.received_proof().nonce() > 0) {
      *u.mutable_partner_proof() = view.received_proof();
    }
    SubmitTx(tx, [this, lp](const SubmitOutcome& out) {
      auto waiters = std::move(lp->close_waiters);
      if (!out.accepted) {
        lp->close_submitted = false;
        log_->warn("channel {}: ledger refused the unilateral close: {}: {}", Short(lp->id),
                   out.code, out.message);
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
  // Tips that were never folded into an update will not be sent.
  for (auto it = live.waiting.begin(); it != live.waiting.end();) {
    if (it->second.durable) {
      ++it;
      continue;
    }
    PendingTip p = std::move(it->second);
    it = live.waiting.erase(it);
    if (!p.idempotency_key.empty()) tips_by_key_.erase(p.idempotency_key);
    for (auto& d : p.done) {
      d(Refuse(Status::FailedPrecondition("the channel is closing; the tip was not sent"),
               "CHANNEL_NOT_OPEN"));
    }
  }
}

// ---------------------------------------------------------------------------
// Deposits

void ChannelManager::Deposit(const std::string& channel_id, uint64_t amount,
                             std::chrono::milliseconds wait, ChannelCallback done) {
  Live* live = Find(channel_id);
  if (live == nullptr) return done(Status::NotFound("no channel " + Hex(channel_id)), "");
  if (live->phase() != v1::STORED_CHANNEL_PHASE_OPEN) {
    return done(Status::FailedPrecondition(std::string("channel is ") + PhaseName(live->phase()) +
                                           "; deposits go only into an open channel"),
                "");
  }
  if (amount == 0) return done(Status::InvalidArgument("amount must be at least 1"), "");
  const ledger::Account* acct = ledger_.chain().state().FindAccount(key_.XOnly());
  const uint64_t fee = ledger_.chain().params().fee_per_tx;
  if (amount > UINT64_MAX - fee || (acct ? acct->balance : 0) < amount + fee) {
    return done(
        Status::FailedPrecondition("INSUFFICIENT_FUNDS: the ledger balance " +
                                   std::to_string(acct ? acct->balance : 0) + " cannot cover " +
                                   std::to_string(amount) + " plus the fee " + std::to_string(fee)),
        "");
  }
  v1::Transaction tx = NewTx();
  tx.mutable_deposit()->set_channel_id(channel_id);
  tx.mutable_deposit()->set_amount(amount);
  Live* lp = live;
  SubmitTx(tx, [this, lp, wait, done = std::move(done)](const SubmitOutcome& out) {
    if (!out.accepted) {
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

void ChannelManager::OnBlock(const v1::Block&) {
  for (auto& [id, live] : channels_) Reconcile(*live);
}

void ChannelManager::Reconcile(Live& live) {
  if (live.phase() == v1::STORED_CHANNEL_PHASE_CLOSED) return;
  const ledger::LedgerState& state = ledger_.chain().state();
  ledger::ChannelId cid{};
  std::copy(live.id.begin(), live.id.end(), cid.begin());
  const ledger::Channel* onchain = state.FindChannel(cid);
  Live* lp = &live;
  if (onchain == nullptr) {
    if (live.phase() != v1::STORED_CHANNEL_PHASE_OPENING) return;
    // The open can never be included once either party's nonce moved on.
    crypto::XOnlyPubKey a = live.record.local_is_a() ? key_.XOnly() : live.peer.XOnly();
    crypto::XOnlyPubKey b = live.record.local_is_a() ? live.peer.XOnly() : key_.XOnly();
    const ledger::Account* acct_a = state.FindAccount(a);
    const ledger::Account* acct_b = state.FindAccount(b);
    if ((acct_a && acct_a->nonce > live.record.open_nonce_a()) ||
        (acct_b && acct_b->nonce > live.record.open_nonce_b())) {
      storage::WriteBatch batch;
      live.record.set_close_reason("the open was abandoned: an account nonce it needed was used");
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
      (void)chdb_.StageDeposits(&batch, &live.record, std::max(dl, snap.deposit_local),
                                std::max(dr, snap.deposit_remote));
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
      break;
    case ledger::ChannelPhase::kClosing:
      if (live.phase() != v1::STORED_CHANNEL_PHASE_CLOSING) {
        live.record.set_close_reason(onchain->closer == key_.XOnly()
                                         ? "closed unilaterally by this node"
                                         : "closed unilaterally by the peer");
        SetPhase(live, v1::STORED_CHANNEL_PHASE_CLOSING, &batch);
        write = true;
      }
      live.close_requested = true;
      live.close_submitted = true;
      Watch(live, *onchain);
      break;
    case ledger::ChannelPhase::kSettled:
      if (live.record.close_reason().empty()) live.record.set_close_reason("settled");
      SetPhase(live, v1::STORED_CHANNEL_PHASE_CLOSED, &batch);
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
      for (auto& [idx, p] : lp->waiting) {
        if (!p.idempotency_key.empty()) tips_by_key_.erase(p.idempotency_key);
        for (auto& d : p.done) {
          d(Refuse(Status::FailedPrecondition("the channel closed before the tip was "
                                              "acknowledged"),
                   "CHANNEL_NOT_OPEN"));
        }
      }
      lp->waiting.clear();
    }
  });
}

void ChannelManager::Watch(Live& live, const ledger::Channel& onchain) {
  const uint64_t height = ledger_.chain().height();
  const bool we_closed = onchain.closer == key_.XOnly();
  Live* lp = &live;
  if (!we_closed && height <= onchain.WindowEnd()) {
    // The closer's direction: what it paid us. Submit our latest copy if the
    // ledger holds an older one.
    const bool peer_is_a = !live.record.local_is_a();
    const ledger::HeldProof& held = peer_is_a ? onchain.proof_a_to_b : onchain.proof_b_to_a;
    v1::Reestablish view = live.ch.MakeReestablish();
    const v1::BalanceProof& ours = view.received_proof();
    if (view.has_received_proof() && ours.nonce() > held.nonce &&
        ours.nonce() > live.proof_submitted_nonce) {
      live.proof_submitted_nonce = ours.nonce();
      v1::Transaction tx = NewTx();
      tx.mutable_update_proof()->set_channel_id(live.id);
      *tx.mutable_update_proof()->mutable_proof() = ours;
      log_->warn(
          "channel {}: the peer closed the channel holding its proof at nonce {}; "
          "submitting its latest proof (nonce {}) before height {}",
          Short(live.id), held.nonce, ours.nonce(), onchain.WindowEnd());
      SubmitTx(tx, [this, lp](const SubmitOutcome& out) {
        if (out.accepted) {
          log_->info("channel {}: proof submitted (tx {})", Short(lp->id),
                     HexEncode(out.tx_id).substr(0, 16));
        } else {
          log_->warn("channel {}: proof update refused: {}: {}", Short(lp->id), out.code,
                     out.message);
          if (out.code == "LEDGER_UNAVAILABLE") lp->proof_submitted_nonce = 0;  // retry
        }
      });
    }
  }
  // A transaction sent now lands at height + 1 or later: Settle is valid
  // once that is past the window.
  if (height >= onchain.WindowEnd() && !live.settle_submitted) {
    live.settle_submitted = true;
    v1::Transaction tx = NewTx();
    tx.mutable_settle()->set_channel_id(live.id);
    SubmitTx(tx, [this, lp](const SubmitOutcome& out) {
      if (out.accepted) {
        log_->info("channel {}: settle submitted (tx {})", Short(lp->id),
                   HexEncode(out.tx_id).substr(0, 16));
        return;
      }
      // The other party may have settled first; the next block shows it.
      log_->info("channel {}: settle refused: {}: {}", Short(lp->id), out.code, out.message);
      if (out.code == "LEDGER_UNAVAILABLE" || out.code == "SETTLE_WINDOW_OPEN") {
        lp->settle_submitted = false;
      }
    });
  }
}

// ---------------------------------------------------------------------------
// History

Result<v1::ListTipsResponse> ChannelManager::ListTips(const std::string& direction,
                                                      const std::string& channel_id, uint32_t limit,
                                                      const std::string& cursor) const {
  std::vector<storage::Direction> dirs;
  if (direction.empty() || direction == "sent") dirs.push_back(storage::Direction::kLocalToRemote);
  if (direction.empty() || direction == "received") {
    dirs.push_back(storage::Direction::kRemoteToLocal);
  }
  if (dirs.empty()) {
    return Status::InvalidArgument("direction must be \"sent\", \"received\" or empty");
  }
  if (limit == 0) limit = 100;
  // One below the store's page cap: each read asks for one more tip than
  // fits, to know whether a next page exists.
  limit = std::min<uint32_t>(limit, ChannelDb::kMaxHistoryPage - 1);
  // Cursor: <channel hex>.<direction 0|1>.<next index>
  std::string start_channel;
  int start_dir = 0;
  uint64_t start_index = 1;
  if (!cursor.empty()) {
    const size_t d1 = cursor.find('.');
    const size_t d2 = cursor.find('.', d1 == std::string::npos ? 0 : d1 + 1);
    auto id =
        d1 == 64 ? HexDecode(cursor.substr(0, 64)) : Result<Bytes>(Status::InvalidArgument(""));
    if (!id.ok() || d2 != d1 + 2 || (cursor[d1 + 1] != '0' && cursor[d1 + 1] != '1')) {
      return Status::InvalidArgument("cursor is not one this node returned");
    }
    start_channel = Str(*id);
    start_dir = cursor[d1 + 1] - '0';
    const std::string idx = cursor.substr(d2 + 1);
    auto [ptr, ec] = std::from_chars(idx.data(), idx.data() + idx.size(), start_index);
    if (ec != std::errc() || ptr != idx.data() + idx.size()) {
      return Status::InvalidArgument("cursor is not one this node returned");
    }
  }
  v1::ListTipsResponse out;
  for (auto it = channels_.lower_bound(start_channel); it != channels_.end(); ++it) {
    const Live& live = *it->second;
    if (!channel_id.empty() && live.id != channel_id) continue;
    for (storage::Direction dir : dirs) {
      const int d = static_cast<int>(dir);
      uint64_t from = 1;
      if (live.id == start_channel) {
        if (d < start_dir) continue;
        if (d == start_dir) from = start_index;
      }
      const size_t room = limit - static_cast<size_t>(out.tips_size());
      TIPD_ASSIGN_OR_RETURN(std::vector<v1::StoredTip> page,
                            chdb_.History(live.id, dir, from, room + 1));
      for (size_t i = 0; i < page.size(); ++i) {
        if (i == room) {
          out.set_next_cursor(Hex(live.id) + "." + std::to_string(d) + "." +
                              std::to_string(page[i].tip().index()));
          return out;
        }
        v1::TipApi* t = out.add_tips();
        t->set_channel_id(Hex(live.id));
        t->set_direction(dir == storage::Direction::kLocalToRemote ? "sent" : "received");
        t->set_peer_node_id(live.peer.Hex());
        *t->mutable_tip() = page[i].tip();
        t->set_nonce(page[i].nonce());
        t->set_idempotency_key(page[i].idempotency_key());
      }
    }
  }
  return out;
}

}  // namespace tipd::node
