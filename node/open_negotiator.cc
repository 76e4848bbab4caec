#include "node/open_negotiator.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "ledger/codec.h"
#include "util/bytes.h"

namespace tipd::node {
namespace {
std::string Str(ByteSpan b) { return std::string(AsStringView(b)); }
}  // namespace

struct OpenNegotiator::Negotiation {
  std::string temporary_id;
  crypto::PublicKey peer;
  p2p::PeerId session = 0;
  uint64_t deposit = 0;
  uint64_t push = 0;
  uint64_t settle_timeout = 0;
  uint64_t nonce_a = 0;
  std::chrono::milliseconds wait{0};
  ChannelCallback done;
  Timers::Id timer = 0;
};

OpenNegotiator::OpenNegotiator(const crypto::KeyPair& key, ledger::LedgerLink& ledger,
                               TxSender& txs, PeerTransport& peers, Timers& timers,
                               crypto::RandomSource& rng, OpenPolicy policy, Callbacks callbacks,
                               std::shared_ptr<spdlog::logger> log)
    : key_(key),
      ledger_(ledger),
      txs_(txs),
      peers_(peers),
      timers_(timers),
      rng_(rng),
      policy_(policy),
      callbacks_(std::move(callbacks)),
      log_(std::move(log)),
      alive_(std::make_shared<bool>(true)) {}

OpenNegotiator::~OpenNegotiator() {
  *alive_ = false;
  for (auto& [id, n] : negotiations_) timers_.Cancel(n->timer);
}

void OpenNegotiator::End(const std::string& temporary_id, Status why) {
  auto it = negotiations_.find(temporary_id);
  if (it == negotiations_.end()) return;
  std::unique_ptr<Negotiation> n = std::move(it->second);
  negotiations_.erase(it);
  timers_.Cancel(n->timer);
  // nonce_a was handed out for an open that will not happen: the next
  // transaction takes it (node/tx_sender.h).
  txs_.Release(n->nonce_a);
  n->done(std::move(why), "");
}

void OpenNegotiator::Open(const crypto::PublicKey& peer, uint64_t deposit, uint64_t push,
                          uint64_t settle_timeout, std::chrono::milliseconds wait,
                          ChannelCallback done) {
  const ledger::Params& params = ledger_.chain().params();
  auto session = peers_.FindPeer(peer);
  if (!session) {
    return done(Status::FailedPrecondition("peer " + peer.Hex() +
                                           " is not connected; connect first (POST /v1/peers)"),
                "");
  }
  if (peer == key_.public_key()) {
    return done(Status::InvalidArgument("cannot open a channel with this node itself"), "");
  }
  if (settle_timeout == 0) {
    settle_timeout =
        std::clamp(std::max(policy_.default_settle_timeout, policy_.min_settle_timeout),
                   params.min_settle_timeout, params.max_settle_timeout);
  }
  if (settle_timeout < policy_.min_settle_timeout) {
    return done(
        Status::InvalidArgument(
            "settle_timeout " + std::to_string(settle_timeout) +
            " is below this node's minimum of " + std::to_string(policy_.min_settle_timeout) +
            " blocks (min-settle-seconds): its watcher needs that long to defend"),
        "");
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
  // The deposit, the open's fee, and the reserve for every channel this node
  // will then have (the new one included) must all fit.
  const uint64_t reserve = callbacks_.fee_reserve(1);
  const unsigned __int128 need =
      static_cast<unsigned __int128>(deposit) + params.fee_per_tx + reserve;
  if (need > balance) {
    return done(
        Status::FailedPrecondition(
            "INSUFFICIENT_FUNDS: the ledger balance " + std::to_string(balance) +
            " cannot cover the deposit " + std::to_string(deposit) + " plus the fee " +
            std::to_string(params.fee_per_tx) + " plus the fee reserve " + std::to_string(reserve) +
            " this node keeps to close, update and settle " + "its channels"),
        "");
  }
  // The open's nonce is fixed before it is sent (B signs over it): one open
  // holds one at a time (node/tx_sender.h), so this negotiation may wait
  // for the one before it to agree or end.
  txs_.Reserve([this, txs = &txs_, alive = alive_, peer, deposit, push, settle_timeout, wait,
                done = std::move(done)](uint64_t nonce_a) mutable {
    if (!*alive) return txs->Release(nonce_a);  // the TxSender outlives its callbacks
    Begin(peer, deposit, push, settle_timeout, wait, std::move(done), nonce_a);
  });
}

void OpenNegotiator::Begin(const crypto::PublicKey& peer, uint64_t deposit, uint64_t push,
                           uint64_t settle_timeout, std::chrono::milliseconds wait,
                           ChannelCallback done, uint64_t nonce_a) {
  const ledger::Params& params = ledger_.chain().params();
  auto session = peers_.FindPeer(peer);
  if (!session) {
    txs_.Release(nonce_a);
    return done(Status::Unavailable("peer " + peer.Hex() +
                                    " disconnected before the open request could be sent"),
                "");
  }
  auto n = std::make_unique<Negotiation>();
  std::array<uint8_t, 32> temp;
  rng_.Fill(temp);
  n->temporary_id = Str(temp);
  n->peer = peer;
  n->session = *session;
  n->deposit = deposit;
  n->push = push;
  n->settle_timeout = settle_timeout;
  n->nonce_a = nonce_a;
  n->wait = wait;
  n->done = std::move(done);
  n->timer =
      timers_.After(policy_.negotiation_timeout, [this, alive = alive_, temp_id = n->temporary_id] {
        if (!*alive) return;
        End(temp_id, Status::Unavailable("peer did not answer the open request in time"));
      });
  v1::Envelope env;
  v1::OpenChannel& m = *env.mutable_open_channel();
  m.set_temporary_id(n->temporary_id);
  m.set_chain_id(params.chain_id);
  m.set_funder_key(Str(key_.XOnly()));
  m.set_deposit_a(deposit);
  m.set_deposit_b_requested(push);
  m.set_settle_timeout(settle_timeout);
  m.set_max_updates_in_flight(policy_.max_updates_in_flight);
  m.set_max_tips_per_update(policy_.max_tips_per_update);
  m.set_nonce_a(n->nonce_a);
  const std::string temp_id = n->temporary_id;
  negotiations_.emplace(temp_id, std::move(n));
  if (Status s = peers_.Send(*session, env); !s.ok()) {
    End(temp_id, Status::Unavailable("cannot send the open request: " + s.message()));
  }
}

void OpenNegotiator::HandleOpenChannel(p2p::PeerId peer, const crypto::PublicKey& node,
                                       const v1::OpenChannel& m) {
  const ledger::Params& params = ledger_.chain().params();
  auto reject = [&](const std::string& code, const std::string& why) {
    log_->info("refusing channel from {}: {}: {}", node.Hex().substr(0, 16), code, why);
    v1::Envelope env;
    env.mutable_reject_channel()->set_temporary_id(m.temporary_id());
    env.mutable_reject_channel()->set_code(code);
    env.mutable_reject_channel()->set_message(why);
    (void)peers_.Send(peer, env);
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
  if (m.settle_timeout() < policy_.min_settle_timeout) {
    return reject("SETTLE_TIMEOUT_TOO_SHORT", "this node accepts settle windows of at least " +
                                                  std::to_string(policy_.min_settle_timeout) +
                                                  " blocks");
  }
  if (m.max_updates_in_flight() == 0 || m.max_tips_per_update() == 0) {
    return reject("MALFORMED", "window limits must be at least 1");
  }
  if (m.deposit_a() > UINT64_MAX - m.deposit_b_requested()) {
    return reject("OVERFLOW", "deposits overflow 64 bits");
  }
  const auto [with_peer, in_all] = callbacks_.pending_opens(node);
  if (with_peer >= policy_.max_pending_opens_per_peer || in_all >= policy_.max_pending_opens) {
    return reject("TOO_MANY_PENDING_OPENS", "this node holds " + std::to_string(with_peer) +
                                                " unopened channel(s) from you and " +
                                                std::to_string(in_all) +
                                                " in all; wait for the ledger to open them");
  }
  // The opener must be able to pay its deposit and the open's fee now, or the
  // record we write would never become a channel.
  {
    const ledger::Account* opener = ledger_.chain().state().FindAccount(node.XOnly());
    const unsigned __int128 need =
        static_cast<unsigned __int128>(m.deposit_a()) + params.fee_per_tx;
    if (opener == nullptr || opener->balance < need || m.nonce_a() < opener->nonce) {
      return reject("OPENER_CANNOT_FUND", "the ledger shows your account cannot pay deposit_a " +
                                              std::to_string(m.deposit_a()) +
                                              " plus the fee at nonce " +
                                              std::to_string(m.nonce_a()));
    }
  }
  const uint64_t push = m.deposit_b_requested();
  if (push > policy_.max_accept_deposit) {
    return reject("DEPOSIT_REFUSED", "this node funds at most " +
                                         std::to_string(policy_.max_accept_deposit) +
                                         " into a channel a peer opens");
  }
  // Funding the peer's request must leave this node its fee reserve. A
  // channel it does not fund costs it nothing on the ledger (escrow pays the
  // fees of its proof update and settle: docs/ledger.md).
  if (push > 0) {
    const ledger::Account* acct = ledger_.chain().state().FindAccount(key_.XOnly());
    const uint64_t balance = acct ? acct->balance : 0;
    const uint64_t reserve = callbacks_.fee_reserve(1);
    if (static_cast<unsigned __int128>(push) + reserve > balance) {
      return reject("INSUFFICIENT_FUNDS", "this node's ledger balance cannot cover the requested " +
                                              std::to_string(push) + " and its fee reserve " +
                                              std::to_string(reserve));
    }
  }
  v1::ChannelOpenTx open;
  open.set_party_a(m.funder_key());
  open.set_party_b(Str(key_.XOnly()));
  open.set_deposit_a(m.deposit_a());
  open.set_deposit_b(push);
  open.set_settle_timeout(m.settle_timeout());
  // B uses no account nonce for an open (docs/ledger.md): agreeing costs
  // this node nothing on the ledger until A's transaction lands.
  open.set_nonce_b(0);
  auto agreement = ledger::EncodeChannelOpenAgreement(params.chain_id, open, m.nonce_a());
  if (!agreement.ok()) return reject("MALFORMED", agreement.status().message());
  const ledger::ChannelId cid = ledger::DeriveChannelId(params.chain_id, AsSpan(open.party_a()),
                                                        AsSpan(open.party_b()), m.nonce_a());
  const std::string channel_id = Str(cid);
  if (callbacks_.channel_exists(channel_id) ||
      ledger_.chain().state().FindChannel(cid) != nullptr) {
    return reject("CHANNEL_EXISTS", "a channel with this id exists");
  }
  AgreedChannel agreed;
  agreed.peer = node;
  agreed.session = peer;
  channel::ChannelParams& cp = agreed.params;
  cp.chain_id = params.chain_id;
  cp.channel_id = cid;
  cp.local_key = key_.public_key();
  cp.remote_key = node;
  cp.local_is_a = false;
  cp.deposit_local = push;
  cp.deposit_remote = m.deposit_a();
  cp.max_updates_in_flight = std::min(policy_.max_updates_in_flight, m.max_updates_in_flight());
  cp.max_tips_per_update = std::min(policy_.max_tips_per_update, m.max_tips_per_update());
  cp.max_update_bytes = policy_.max_update_bytes;
  cp.max_queued_tips = policy_.max_queued_tips;
  if (auto ch = channel::Channel::Open(cp); !ch.ok()) {
    return reject("MALFORMED", ch.status().message());
  }
  v1::StoredChannel& rec = agreed.record;
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
  callbacks_.accepted(std::move(agreed), std::move(env));
}

void OpenNegotiator::HandleAcceptChannel(p2p::PeerId peer, const v1::AcceptChannel& m) {
  auto it = negotiations_.find(m.temporary_id());
  if (it == negotiations_.end() || it->second->session != peer) {
    log_->warn("peer {} accepted an unknown channel negotiation", peer);
    return;
  }
  const Negotiation& n = *it->second;
  const ledger::Params& params = ledger_.chain().params();
  auto fail = [&](Status s) { End(m.temporary_id(), std::move(s)); };
  if (m.acceptor_key() != Str(n.peer.XOnly())) {
    return fail(Status::FailedPrecondition("peer answered with another account key"));
  }
  if (m.deposit_b() != n.push) {
    return fail(Status::FailedPrecondition("peer offered a deposit of " +
                                           std::to_string(m.deposit_b()) + ", not the " +
                                           std::to_string(n.push) + " requested"));
  }
  if (m.max_updates_in_flight() == 0 || m.max_tips_per_update() == 0) {
    return fail(Status::FailedPrecondition("peer announced zero window limits"));
  }
  v1::Transaction tx;
  tx.set_chain_id(params.chain_id);
  tx.set_signer(Str(key_.XOnly()));
  tx.set_nonce(n.nonce_a);
  tx.set_fee(params.fee_per_tx);
  v1::ChannelOpenTx& open = *tx.mutable_channel_open();
  open.set_party_a(Str(key_.XOnly()));
  open.set_party_b(m.acceptor_key());
  open.set_deposit_a(n.deposit);
  open.set_deposit_b(m.deposit_b());
  open.set_settle_timeout(n.settle_timeout);
  open.set_nonce_b(m.nonce_b());
  open.set_signature_b(m.signature_b());
  auto agreement = ledger::EncodeChannelOpenAgreement(params.chain_id, open, n.nonce_a);
  crypto::Signature sig{};
  if (!agreement.ok() || m.signature_b().size() != sig.size()) {
    return fail(Status::FailedPrecondition("peer's open signature is malformed"));
  }
  std::copy(m.signature_b().begin(), m.signature_b().end(), sig.begin());
  if (!crypto::VerifyTagged(n.peer.XOnly(), ledger::kChannelOpenTag, *agreement, sig)) {
    return fail(Status::FailedPrecondition("peer's signature on the open does not verify"));
  }
  if (Status st = ledger::SignTransaction(&tx, key_, rng_); !st.ok()) return fail(st);
  const ledger::ChannelId cid = ledger::DeriveChannelId(params.chain_id, AsSpan(open.party_a()),
                                                        AsSpan(open.party_b()), n.nonce_a);
  AgreedChannel agreed;
  agreed.peer = n.peer;
  agreed.session = peer;
  channel::ChannelParams& cp = agreed.params;
  cp.chain_id = params.chain_id;
  cp.channel_id = cid;
  cp.local_key = key_.public_key();
  cp.remote_key = n.peer;
  cp.local_is_a = true;
  cp.deposit_local = n.deposit;
  cp.deposit_remote = m.deposit_b();
  cp.max_updates_in_flight = std::min(policy_.max_updates_in_flight, m.max_updates_in_flight());
  cp.max_tips_per_update = std::min(policy_.max_tips_per_update, m.max_tips_per_update());
  cp.max_update_bytes = policy_.max_update_bytes;
  cp.max_queued_tips = policy_.max_queued_tips;
  if (auto ch = channel::Channel::Open(cp); !ch.ok()) return fail(ch.status());
  v1::StoredChannel& rec = agreed.record;
  rec.set_channel_id(Str(cid));
  rec.set_chain_id(params.chain_id);
  rec.set_local_key(Str(key_.public_key().bytes()));
  rec.set_remote_key(Str(n.peer.bytes()));
  rec.set_local_is_a(true);
  rec.set_deposit_local(n.deposit);
  rec.set_deposit_remote(m.deposit_b());
  rec.set_settle_timeout(n.settle_timeout);
  rec.set_phase(v1::STORED_CHANNEL_PHASE_OPENING);
  rec.set_max_updates_in_flight(cp.max_updates_in_flight);
  rec.set_max_tips_per_update(cp.max_tips_per_update);
  rec.set_open_nonce_a(n.nonce_a);
  rec.set_open_nonce_b(m.nonce_b());
  // The negotiation is over; the channel carries on.
  std::unique_ptr<Negotiation> done = std::move(it->second);
  negotiations_.erase(it);
  timers_.Cancel(done->timer);
  callbacks_.agreed(std::move(agreed), std::move(tx), m.temporary_id(), done->wait,
                    std::move(done->done));
}

void OpenNegotiator::HandleRejectChannel(p2p::PeerId peer, const v1::RejectChannel& m) {
  auto it = negotiations_.find(m.temporary_id());
  if (it == negotiations_.end() || it->second->session != peer) return;
  End(m.temporary_id(),
      Status::FailedPrecondition("peer refused the channel: " + m.code() + ": " + m.message()));
}

bool OpenNegotiator::OnPeerError(p2p::PeerId peer, const v1::Error& error) {
  auto it = negotiations_.find(error.channel_id());
  if (it == negotiations_.end() || it->second->session != peer) return false;
  End(error.channel_id(), Status::FailedPrecondition("peer refused the channel: " + error.code() +
                                                     ": " + error.message()));
  return true;
}

void OpenNegotiator::OnPeerDisconnected(p2p::PeerId peer, const std::string& why) {
  std::vector<std::string> ended;
  for (const auto& [id, n] : negotiations_) {
    if (n->session == peer) ended.push_back(id);
  }
  for (const std::string& id : ended) {
    End(id, Status::Unavailable("peer disconnected during the open negotiation: " + why));
  }
}

}  // namespace tipd::node
