#include "channel/channel.h"

#include <google/protobuf/io/coded_stream.h>

#include <algorithm>
#include <utility>

namespace tipd::channel {
namespace {

using google::protobuf::io::CodedOutputStream;

const std::string kZeroRoot(32, '\0');

std::string U(uint64_t v) { return std::to_string(v); }

std::string ShortHex(const std::string& b) {
  std::string h = HexEncode(AsSpan(b));
  return h.size() > 16 ? h.substr(0, 16) + "..." : h;
}

Hash32 ToHash(const std::string& s) {
  assert(s.size() == 32);
  Hash32 h;
  std::copy(s.begin(), s.end(), h.begin());
  return h;
}

std::string FromHash(const Hash32& h) { return std::string(AsStringView(h)); }

// Size a repeated message element adds to its parent: tag + length + body.
size_t RepeatedElementSize(size_t body) { return 1 + CodedOutputStream::VarintSize64(body) + body; }

}  // namespace

Channel::Channel(ChannelParams params) : params_(std::move(params)) {
  local_xonly_ = params_.local_key.XOnly();
  remote_xonly_ = params_.remote_key.XOnly();
}

const std::string& Channel::TipsRoot(const v1::BalanceProof& proof) {
  return proof.nonce() == 0 ? kZeroRoot : proof.tips_root();
}

v1::BalanceProof Channel::InitialProof() const {
  v1::BalanceProof p;
  p.set_chain_id(params_.chain_id);
  p.set_channel_id(ChannelIdBytes());
  p.set_locks_root(kZeroRoot);
  p.set_tips_root(kZeroRoot);
  return p;
}

std::string Channel::ChannelIdBytes() const { return FromHash(params_.channel_id); }

Result<Channel> Channel::Open(ChannelParams params) {
  if (!IsValidChainId(params.chain_id)) {
    return Status::InvalidArgument("chain id must be 1..64 bytes of [a-z0-9._-]");
  }
  if (params.local_key == params.remote_key) {
    return Status::InvalidArgument("local and remote keys are the same");
  }
  if (params.max_updates_in_flight == 0 || params.max_tips_per_update == 0 ||
      params.max_queued_tips == 0) {
    return Status::InvalidArgument(
        "max_updates_in_flight, max_tips_per_update and max_queued_tips must be >= 1");
  }
  if (params.max_update_bytes < kMinUpdateBytesBudget || params.max_update_bytes > kMaxFrameBody) {
    return Status::InvalidArgument("max_update_bytes " + U(params.max_update_bytes) + " outside " +
                                   U(kMinUpdateBytesBudget) + ".." + U(kMaxFrameBody));
  }
  uint64_t total;
  if (!CheckedAdd(params.deposit_local, params.deposit_remote, &total)) {
    return Status::InvalidArgument("deposits " + U(params.deposit_local) + " + " +
                                   U(params.deposit_remote) + " exceed the u64 range");
  }
  return Channel(std::move(params));
}

Result<Channel> Channel::Restore(ChannelParams params, RestoredState state) {
  auto opened = Open(std::move(params));
  if (!opened.ok()) return opened.status();
  Channel ch = std::move(opened).value();
  auto check_proof = [&](const v1::BalanceProof& p, const char* what) -> Status {
    if (p.nonce() == 0) return Status::Ok();
    auto bytes = EncodeBalanceProof(p);
    if (!bytes.ok()) {
      return Status::Corruption(std::string(what) + ": " + bytes.error().ToString());
    }
    if (p.chain_id() != ch.params_.chain_id || p.channel_id() != ch.ChannelIdBytes()) {
      return Status::Corruption(std::string(what) + " belongs to another chain or channel");
    }
    return Status::Ok();
  };
  TIPD_RETURN_IF_ERROR(check_proof(state.own_latest, "own latest proof"));
  TIPD_RETURN_IF_ERROR(check_proof(state.received_latest, "received latest proof"));

  if (state.own_latest.nonce() > 0) ch.own_ = state.own_latest;
  ch.own_tip_count_ = state.own_tip_count;
  // We sign nonces 1, 2, 3... and every update carries at least one tip.
  if (state.own_tip_count < ch.own_.nonce()) {
    return Status::Corruption("own proof nonce " + U(ch.own_.nonce()) + " cannot cover only " +
                              U(state.own_tip_count) + " tips");
  }
  uint64_t receipt_nonce = state.receipt ? state.receipt->nonce() : 0;
  if (receipt_nonce > ch.own_.nonce()) {
    return Status::Corruption("receipt nonce " + U(receipt_nonce) + " exceeds own nonce " +
                              U(ch.own_.nonce()));
  }
  uint64_t previous = receipt_nonce;
  for (size_t i = 0; i < state.in_flight.size(); ++i) {
    const v1::TipUpdate& u = state.in_flight[i];
    if (u.proof().nonce() <= previous) {
      return Status::Corruption("in-flight update nonce " + U(u.proof().nonce()) +
                                " does not exceed " + U(previous));
    }
    previous = u.proof().nonce();
    if (!u.tips().empty() && u.tips(u.tips_size() - 1).index() > state.own_tip_count) {
      return Status::Corruption("in-flight update nonce " + U(previous) + " carries tip " +
                                U(u.tips(u.tips_size() - 1).index()) + " beyond tip count " +
                                U(state.own_tip_count));
    }
    ch.in_flight_.push_back(OutgoingUpdate{u});
  }
  if (!state.in_flight.empty()) {
    const v1::BalanceProof& last = state.in_flight.back().proof();
    if (last.nonce() != ch.own_.nonce() || last.tips_root() != ch.own_.tips_root() ||
        last.transferred() != ch.own_.transferred()) {
      return Status::Corruption("last in-flight update (nonce " + U(last.nonce()) +
                                ") differs from the own latest proof (nonce " + U(ch.own_.nonce()) +
                                ")");
    }
  } else if (receipt_nonce != ch.own_.nonce()) {
    // Our latest proof awaits its ack but we hold no tips for it: the state
    // after adopting the peer's copy (OnPeerReestablish). Keep it in flight
    // so the peer's ack for it is recognised.
    v1::TipUpdate adopted_update;
    adopted_update.set_channel_id(ch.ChannelIdBytes());
    *adopted_update.mutable_proof() = ch.own_;
    ch.in_flight_.push_back(OutgoingUpdate{std::move(adopted_update)});
  }
  if (state.receipt_transferred > ch.own_.transferred()) {
    return Status::Corruption("receipt transferred " + U(state.receipt_transferred) +
                              " exceeds own transferred " + U(ch.own_.transferred()));
  }
  ch.receipt_ = std::move(state.receipt);
  ch.receipt_transferred_ = state.receipt_transferred;

  if (state.received_latest.nonce() > 0) ch.received_ = state.received_latest;
  ch.received_tip_count_ = state.received_tip_count;
  if (state.sent_ack && state.sent_ack->nonce() > 0) {
    const v1::Ack& ack = *state.sent_ack;
    if (ack.nonce() > ch.received_.nonce() ||
        state.sent_ack_transferred > ch.received_.transferred()) {
      return Status::Corruption(
          "stored ack (nonce " + U(ack.nonce()) + ", transferred " + U(state.sent_ack_transferred) +
          ") is ahead of the received proof (nonce " + U(ch.received_.nonce()) + ")");
    }
    if (ack.nonce() == ch.received_.nonce() &&
        (ack.tips_root() != ch.received_.tips_root() ||
         state.sent_ack_transferred != ch.received_.transferred())) {
      return Status::Corruption("stored ack differs from the received proof it acknowledges");
    }
    ch.sent_ack_ = std::move(state.sent_ack);
    ch.acked_received_transferred_ = state.sent_ack_transferred;
  }
  return ch;
}

ChannelSnapshot Channel::Snapshot() const {
  ChannelSnapshot s;
  s.deposit_local = params_.deposit_local;
  s.deposit_remote = params_.deposit_remote;
  s.sent_nonce = own_.nonce();
  s.sent_transferred = own_.transferred();
  s.sent_tips_root = TipsRoot(own_);
  s.sent_tip_count = own_tip_count_;
  for (const OutgoingUpdate& u : in_flight_) s.in_flight_nonces.push_back(u.nonce());
  s.queued_tips = queue_.size();
  s.queued_amount = queued_amount_;
  s.receipt_nonce = receipt_ ? receipt_->nonce() : 0;
  s.receipt_transferred = receipt_transferred_;
  s.received_nonce = received_.nonce();
  s.received_transferred = received_.transferred();
  s.received_tips_root = TipsRoot(received_);
  s.received_tip_count = received_tip_count_;
  s.acked_received_nonce = sent_ack_ ? sent_ack_->nonce() : 0;
  s.acked_received_transferred = acked_received_transferred_;
  return s;
}

Status Channel::SetDepositLocal(uint64_t new_total) {
  uint64_t total;
  if (new_total < params_.deposit_local) {
    return Status::InvalidArgument("local deposit cannot shrink from " + U(params_.deposit_local) +
                                   " to " + U(new_total));
  }
  if (!CheckedAdd(new_total, params_.deposit_remote, &total)) {
    return Status::InvalidArgument("deposits would exceed the u64 range");
  }
  params_.deposit_local = new_total;
  return Status::Ok();
}

Status Channel::SetDepositRemote(uint64_t new_total) {
  uint64_t total;
  if (new_total < params_.deposit_remote) {
    return Status::InvalidArgument("remote deposit cannot shrink from " +
                                   U(params_.deposit_remote) + " to " + U(new_total));
  }
  if (!CheckedAdd(new_total, params_.deposit_local, &total)) {
    return Status::InvalidArgument("deposits would exceed the u64 range");
  }
  params_.deposit_remote = new_total;
  return Status::Ok();
}

// ---------------------------------------------------------------- sending --

__int128 Channel::SpendableWide() const {
  return static_cast<__int128>(params_.deposit_local) + acked_received_transferred_ -
         own_.transferred() - own_.locked() - queued_amount_;
}

uint64_t Channel::acked_tip_count() const {
  uint64_t in_flight_tips = 0;
  for (const OutgoingUpdate& u : in_flight_) in_flight_tips += u.update.tips_size();
  return own_tip_count_ - in_flight_tips;
}

uint64_t Channel::SpendableLocal() const {
  __int128 s = SpendableWide();
  return s <= 0 ? 0 : static_cast<uint64_t>(s);
}

ChannelResult<uint64_t> Channel::QueueTip(const TipDraft& draft) {
  if (queue_.size() >= params_.max_queued_tips) {
    return LocalError(ChannelRule::kQueueFull, U(queue_.size()) + " tips already queued, limit " +
                                                   U(params_.max_queued_tips));
  }
  const uint64_t index = own_tip_count_ + queue_.size() + 1;
  v1::Tip tip;
  tip.set_index(index);
  tip.set_amount(draft.amount);
  tip.set_message(draft.message);
  tip.set_created_at_ms(draft.created_at_ms);
  for (const auto& [key, value] : draft.metadata) {
    v1::MetadataEntry* e = tip.add_metadata();
    e->set_key(key);
    e->set_value(value);
  }
  ChannelStatus content = CheckTipContent(tip);
  if (!content.ok()) return LocalError(content.rule(), content.error().reason);
  uint64_t queued, total;
  if (!CheckedAdd(queued_amount_, draft.amount, &queued) ||
      !CheckedAdd(own_.transferred(), queued, &total)) {
    return LocalError(ChannelRule::kOverflow, "amount " + U(draft.amount) +
                                                  " on top of transferred " +
                                                  U(own_.transferred()) + " and queued " +
                                                  U(queued_amount_) + " exceeds the u64 range");
  }
  const __int128 spendable = SpendableWide();
  if (spendable < static_cast<__int128>(draft.amount)) {
    return LocalError(ChannelRule::kInsufficientSpendable,
                      "amount " + U(draft.amount) + " exceeds spendable " + U(SpendableLocal()) +
                          " (deposit " + U(params_.deposit_local) + " + received " +
                          U(acked_received_transferred_) + " - sent " + U(own_.transferred()) +
                          " - queued " + U(queued_amount_) + ")");
  }
  queue_.push_back(std::move(tip));
  queued_amount_ = queued;
  return index;
}

std::optional<OutgoingUpdate> Channel::TakeNextUpdate(const crypto::KeyPair& local,
                                                      crypto::RandomSource& rng) {
  assert(local.public_key() == params_.local_key);
  if (queue_.empty() || in_flight_.size() >= params_.max_updates_in_flight) return std::nullopt;

  v1::TipUpdate update;
  update.set_channel_id(ChannelIdBytes());
  v1::BalanceProof* proof = update.mutable_proof();
  // Nonce 0: nothing signed yet, own_ is empty; start from the initial proof.
  *proof = own_.nonce() > 0 ? own_ : InitialProof();
  // Size the envelope with the widest values the proof can take, so the
  // final update can only be smaller than what we budget here.
  proof->set_nonce(UINT64_MAX);
  proof->set_transferred(UINT64_MAX);
  proof->set_signature(std::string(64, '\xff'));
  size_t size = update.ByteSizeLong();

  Hash32 root = ToHash(TipsRoot(own_));
  uint64_t amount = 0;
  size_t count = 0;
  while (count < queue_.size() && count < params_.max_tips_per_update) {
    const v1::Tip& queued = queue_[count];
    const size_t add = RepeatedElementSize(queued.ByteSizeLong());
    if (count > 0 && size + add > params_.max_update_bytes) break;
    // kMinUpdateBytesBudget guarantees that one valid tip always fits.
    assert(size + add <= params_.max_update_bytes);
    size += add;
    v1::Tip* tip = update.add_tips();
    *tip = std::move(queue_[count]);  // erased below: moved, not copied
    tip->set_index(own_tip_count_ + count + 1);
    auto hash = TipHash(*tip);
    assert(hash.ok());  // content was validated by QueueTip
    root = ChainTipsRoot(root, *hash);
    amount += tip->amount();  // QueueTip checked the running total fits
    ++count;
  }

  proof->set_nonce(own_.nonce() + 1);
  proof->set_transferred(own_.transferred() + amount);
  proof->set_tips_root(FromHash(root));
  ChannelStatus signed_ok = SignBalanceProof(proof, local, rng);
  assert(signed_ok.ok());  // our own proof always encodes
  (void)signed_ok;
  assert(update.ByteSizeLong() <= params_.max_update_bytes);

  own_ = *proof;
  own_tip_count_ += count;
  queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(count));
  queued_amount_ -= amount;
  in_flight_.push_back(OutgoingUpdate{std::move(update)});
  return in_flight_.back();  // the one copy: the caller sends it, in_flight_ keeps it for resends
}

ChannelStatus Channel::CheckChannelIdField(const std::string& field, const char* what) const {
  if (field.size() != 32) {
    return PeerError(ChannelRule::kMalformed,
                     std::string(what) + " has " + U(field.size()) + " bytes, expected 32");
  }
  if (field != ChannelIdBytes()) {
    return PeerError(ChannelRule::kWrongChannelId, std::string(what) + " " + ShortHex(field) +
                                                       " is not this channel " +
                                                       ShortHex(ChannelIdBytes()));
  }
  return {};
}

ChannelResult<AckOutcome> Channel::OnAck(const v1::Ack& ack) {
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckChannelIdField(ack.channel_id(), "ack channel_id"));
  if (ack.tips_root().size() != 32 || ack.signature().size() != 64) {
    return PeerError(ChannelRule::kMalformed,
                     "ack tips_root/signature have " + U(ack.tips_root().size()) + "/" +
                         U(ack.signature().size()) + " bytes, expected 32/64");
  }
  const uint64_t latest = receipt_ ? receipt_->nonce() : 0;
  if (ack.nonce() <= latest) {
    // A resent or stale receipt: harmless, it releases nothing.
    if (receipt_ && ack.nonce() == latest && ack.tips_root() != receipt_->tips_root()) {
      return PeerError(ChannelRule::kAckRootMismatch,
                       "ack nonce " + U(ack.nonce()) + " root " + ShortHex(ack.tips_root()) +
                           " differs from the receipt held " + ShortHex(receipt_->tips_root()));
    }
    return AckOutcome{ack.nonce(), 0, 0};
  }
  auto it = std::find_if(in_flight_.begin(), in_flight_.end(),
                         [&](const OutgoingUpdate& u) { return u.nonce() == ack.nonce(); });
  if (it == in_flight_.end()) {
    std::string span = in_flight_.empty() ? "none in flight"
                                          : "in flight: " + U(in_flight_.front().nonce()) + ".." +
                                                U(in_flight_.back().nonce());
    return PeerError(ChannelRule::kUnknownAckNonce,
                     "ack for nonce " + U(ack.nonce()) + " but " + span);
  }
  if (ack.tips_root() != it->update.proof().tips_root()) {
    return PeerError(ChannelRule::kAckRootMismatch, "ack nonce " + U(ack.nonce()) + " root " +
                                                        ShortHex(ack.tips_root()) +
                                                        " differs from the signed proof's " +
                                                        ShortHex(it->update.proof().tips_root()));
  }
  TIPD_CHANNEL_RETURN_IF_ERROR(VerifyAck(params_.chain_id, ack, remote_xonly_));

  AckOutcome out;
  out.acked_nonce = ack.nonce();
  receipt_transferred_ = it->update.proof().transferred();
  const auto end = std::next(it);
  for (auto i = in_flight_.begin(); i != end; ++i) {
    ++out.updates_acked;
    out.tips_acked += static_cast<size_t>(i->update.tips_size());
  }
  in_flight_.erase(in_flight_.begin(), end);
  receipt_ = ack;
  return out;
}

// -------------------------------------------------------------- receiving --

ChannelResult<ValidatedUpdate> Channel::CheckUpdate(const v1::TipUpdate& update) const {
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckChannelIdField(update.channel_id(), "update channel_id"));
  if (!update.has_proof()) return PeerError(ChannelRule::kMalformed, "update has no proof");
  const v1::BalanceProof& proof = update.proof();
  if (proof.tips_root().size() != 32 || proof.locks_root().size() != 32 ||
      proof.signature().size() != 64) {
    return PeerError(ChannelRule::kMalformed,
                     "proof tips_root/locks_root/signature have " + U(proof.tips_root().size()) +
                         "/" + U(proof.locks_root().size()) + "/" + U(proof.signature().size()) +
                         " bytes, expected 32/32/64");
  }
  if (proof.chain_id() != params_.chain_id) {
    return PeerError(ChannelRule::kWrongChainId, "proof chain id \"" +
                                                     proof.chain_id().substr(0, 64) +
                                                     "\" is not \"" + params_.chain_id + "\"");
  }
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckChannelIdField(proof.channel_id(), "proof channel_id"));
  if (proof.nonce() <= received_.nonce()) {
    return PeerError(
        ChannelRule::kNonceNotIncreasing,
        "nonce " + U(proof.nonce()) + " does not exceed current " + U(received_.nonce()));
  }
  if (update.tips().empty()) {
    return PeerError(ChannelRule::kEmptyUpdate,
                     "update nonce " + U(proof.nonce()) + " carries no tips");
  }
  if (static_cast<size_t>(update.tips_size()) > params_.max_tips_per_update) {
    return PeerError(ChannelRule::kTooManyTips, "update carries " + U(update.tips_size()) +
                                                    " tips, limit " +
                                                    U(params_.max_tips_per_update));
  }
  if (proof.locked() != 0 || proof.locks_root() != kZeroRoot) {
    return PeerError(ChannelRule::kLockedNotSupported,
                     "locked " + U(proof.locked()) + " / locks_root " +
                         ShortHex(proof.locks_root()) + " must be 0 / zero hash");
  }
  Hash32 root = ToHash(TipsRoot(received_));
  uint64_t amount = 0;
  uint64_t expected_index = received_tip_count_ + 1;
  for (const v1::Tip& tip : update.tips()) {
    if (tip.index() != expected_index) {
      return PeerError(ChannelRule::kTipIndexGap, "tip index " + U(tip.index()) + " where " +
                                                      U(expected_index) + " was expected");
    }
    TIPD_CHANNEL_RETURN_IF_ERROR(CheckTipContent(tip));
    if (!CheckedAdd(amount, tip.amount(), &amount)) {
      return PeerError(ChannelRule::kOverflow,
                       "sum of tip amounts exceeds the u64 range at tip " + U(tip.index()));
    }
    auto hash = TipHash(tip);
    if (!hash.ok()) return hash.error();
    root = ChainTipsRoot(root, *hash);
    ++expected_index;
  }
  uint64_t expected_transferred;
  if (!CheckedAdd(received_.transferred(), amount, &expected_transferred)) {
    return PeerError(ChannelRule::kOverflow, "transferred " + U(received_.transferred()) + " + " +
                                                 U(amount) + " exceeds the u64 range");
  }
  if (proof.transferred() != expected_transferred) {
    return PeerError(ChannelRule::kTransferredMismatch,
                     "transferred " + U(proof.transferred()) + " is not " +
                         U(received_.transferred()) + " + " + U(amount) + " = " +
                         U(expected_transferred));
  }
  if (proof.tips_root() != FromHash(root)) {
    return PeerError(ChannelRule::kTipsRootMismatch, "tips_root " + ShortHex(proof.tips_root()) +
                                                         " is not the chain over the " +
                                                         U(update.tips_size()) + " tips (" +
                                                         HexEncode(root).substr(0, 16) + "...)");
  }
  // Spendable of the peer: dRemote + T(local->remote) it acknowledged -
  // T(remote->local) - locked(remote->local) >= 0.
  const __int128 spendable = static_cast<__int128>(params_.deposit_remote) + receipt_transferred_ -
                             proof.transferred() - proof.locked();
  if (spendable < 0) {
    return PeerError(ChannelRule::kInsufficientSpendable,
                     "transferred " + U(proof.transferred()) + " exceeds the peer's deposit " +
                         U(params_.deposit_remote) + " + acknowledged receipts " +
                         U(receipt_transferred_));
  }
  TIPD_CHANNEL_RETURN_IF_ERROR(VerifyBalanceProof(proof, remote_xonly_));
  return ValidatedUpdate(update, received_.nonce(), amount);
}

ChannelStatus Channel::ApplyUpdate(const ValidatedUpdate& validated) {
  const v1::TipUpdate& update = validated.update();
  if (validated.previous_nonce_ != received_.nonce() || update.tips().empty() ||
      update.tips(0).index() != received_tip_count_ + 1) {
    return PeerError(ChannelRule::kNonceNotIncreasing,
                     "update was validated against nonce " + U(validated.previous_nonce_) +
                         " but the channel is at " + U(received_.nonce()));
  }
  received_ = update.proof();
  received_tip_count_ += static_cast<uint64_t>(update.tips_size());
  return {};
}

std::optional<v1::Ack> Channel::MakeAck(const crypto::KeyPair& local, crypto::RandomSource& rng) {
  assert(local.public_key() == params_.local_key);
  if (received_.nonce() == 0) return std::nullopt;
  if (sent_ack_ && sent_ack_->nonce() == received_.nonce()) return *sent_ack_;
  v1::Ack ack;
  ack.set_channel_id(ChannelIdBytes());
  ack.set_nonce(received_.nonce());
  ack.set_tips_root(received_.tips_root());
  ChannelStatus signed_ok = SignAck(params_.chain_id, &ack, local, rng);
  assert(signed_ok.ok());  // fields come from a validated proof
  (void)signed_ok;
  sent_ack_ = ack;
  acked_received_transferred_ = received_.transferred();
  return ack;
}

// ------------------------------------------------------------ reestablish --

v1::Reestablish Channel::MakeReestablish() const {
  v1::Reestablish r;
  r.set_channel_id(ChannelIdBytes());
  r.set_sent_nonce(own_.nonce());
  r.set_sent_tips_root(TipsRoot(own_));
  r.set_received_nonce(received_.nonce());
  r.set_received_tips_root(TipsRoot(received_));
  if (received_.nonce() > 0) *r.mutable_received_proof() = received_;
  r.set_acked_received_nonce(sent_ack_ ? sent_ack_->nonce() : 0);
  r.set_received_tip_count(received_tip_count_);
  if (own_.nonce() > 0) *r.mutable_sent_proof() = own_;
  return r;
}

std::optional<v1::BalanceProof> Channel::PeerEvidence(const v1::Reestablish& peer) const {
  if (!peer.has_sent_proof()) return std::nullopt;
  const v1::BalanceProof& p = peer.sent_proof();
  if (p.nonce() <= received_.nonce() || p.nonce() != peer.sent_nonce() ||
      p.tips_root() != peer.sent_tips_root() || p.chain_id() != params_.chain_id ||
      p.channel_id() != ChannelIdBytes() || p.locked() != 0 || p.locks_root() != kZeroRoot ||
      p.transferred() < received_.transferred()) {
    return std::nullopt;
  }
  if (!VerifyBalanceProof(p, remote_xonly_).ok()) return std::nullopt;
  return p;
}

ChannelResult<ReestablishPlan> Channel::OnPeerReestablish(
    const v1::Reestablish& peer, std::optional<uint64_t> peer_received_tip_count) {
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckChannelIdField(peer.channel_id(), "reestablish channel_id"));
  if (peer.sent_tips_root().size() != 32 || peer.received_tips_root().size() != 32) {
    return PeerError(ChannelRule::kMalformed, "reestablish roots must be 32 bytes");
  }
  if (peer.acked_received_nonce() > peer.received_nonce()) {
    return PeerError(ChannelRule::kMalformed, "peer acked nonce " + U(peer.acked_received_nonce()) +
                                                  " beyond the nonce it holds " +
                                                  U(peer.received_nonce()));
  }
  // The peer's direction: if it is ahead it resends, if it is behind it
  // adopts the copy in our Reestablish; equal nonces must agree.
  if (peer.sent_nonce() == received_.nonce() && peer.sent_tips_root() != TipsRoot(received_)) {
    return PeerError(ChannelRule::kConflictingState,
                     "peer's nonce " + U(peer.sent_nonce()) + " has root " +
                         ShortHex(peer.sent_tips_root()) + ", we hold " +
                         ShortHex(TipsRoot(received_)));
  }

  ReestablishPlan plan;
  plan.send_ack = received_.nonce() > 0;
  const uint64_t theirs = peer.received_nonce();
  const uint64_t mine = own_.nonce();
  if (theirs == mine) {
    if (peer.received_tips_root() != TipsRoot(own_) ||
        (peer_received_tip_count && *peer_received_tip_count != own_tip_count_)) {
      return PeerError(ChannelRule::kConflictingState,
                       "peer holds our nonce " + U(theirs) + " with root " +
                           ShortHex(peer.received_tips_root()) + " and " +
                           U(peer_received_tip_count.value_or(own_tip_count_)) +
                           " tips, we signed root " + ShortHex(TipsRoot(own_)) + " with " +
                           U(own_tip_count_) + " tips");
    }
    return plan;
  }
  if (theirs < mine) {
    const uint64_t receipt_nonce = receipt_ ? receipt_->nonce() : 0;
    if (theirs < receipt_nonce) {
      return PeerError(ChannelRule::kPeerLostAckedUpdates,
                       "peer holds our nonce " + U(theirs) + " but acknowledged " +
                           U(receipt_nonce) + "; acknowledged updates are not kept for resend");
    }
    for (const OutgoingUpdate& u : in_flight_) {
      if (u.nonce() == theirs && u.update.proof().tips_root() != peer.received_tips_root()) {
        return PeerError(ChannelRule::kConflictingState,
                         "peer holds our nonce " + U(theirs) + " with root " +
                             ShortHex(peer.received_tips_root()) + ", we signed " +
                             ShortHex(u.update.proof().tips_root()));
      }
      if (u.nonce() > theirs) {
        if (u.update.tips().empty()) {
          return PeerError(ChannelRule::kPeerLostAckedUpdates,
                           "peer lacks our nonce " + U(u.nonce()) +
                               ", which we only hold as a copy without tips");
        }
        plan.resend.push_back(u.update);
      }
    }
    return plan;
  }

  // theirs > mine: we are behind on our own direction (restored from a
  // backup). Take the peer's copy only if it carries our own signature, so we
  // never sign a second, different state under a nonce already used.
  if (!peer.has_received_proof()) {
    return PeerError(ChannelRule::kForgedProof, "peer claims our nonce " + U(theirs) +
                                                    " (we signed up to " + U(mine) +
                                                    ") but shows no proof");
  }
  const v1::BalanceProof& copy = peer.received_proof();
  if (copy.nonce() != theirs || copy.tips_root() != peer.received_tips_root()) {
    return PeerError(ChannelRule::kForgedProof, "peer claims our nonce " + U(theirs) +
                                                    " but shows a proof with nonce " +
                                                    U(copy.nonce()) + " and another root");
  }
  if (copy.chain_id() != params_.chain_id || copy.channel_id() != ChannelIdBytes()) {
    return PeerError(ChannelRule::kForgedProof,
                     "peer's copy of our proof names another chain or channel");
  }
  ChannelStatus sig = VerifyBalanceProof(copy, local_xonly_);
  if (!sig.ok()) {
    return PeerError(ChannelRule::kForgedProof, "peer's copy of our proof nonce " + U(theirs) +
                                                    " is not signed by us: " + sig.error().reason);
  }
  if (!peer_received_tip_count) {
    // Without the count we cannot number our next tip; see the header.
    return PeerError(ChannelRule::kMalformed, "peer holds our nonce " + U(theirs) + " beyond our " +
                                                  U(mine) +
                                                  " but did not say how many of our tips it holds");
  }
  const uint64_t tip_count = *peer_received_tip_count;
  if (copy.locked() != 0 || copy.locks_root() != kZeroRoot ||
      copy.transferred() < own_.transferred() || tip_count < own_tip_count_ + (theirs - mine)) {
    return PeerError(ChannelRule::kConflictingState,
                     "our signed proof nonce " + U(theirs) + " (transferred " +
                         U(copy.transferred()) + ", " + U(tip_count) +
                         " tips) cannot follow our nonce " + U(mine) + " (transferred " +
                         U(own_.transferred()) + ", " + U(own_tip_count_) + " tips)");
  }

  // Everything checked: adopt. The copy stays "in flight" (without tips) until
  // the peer's receipt for it arrives; reestablish makes the peer resend it.
  plan.adopted_own_proof = true;
  own_ = copy;
  own_tip_count_ = tip_count;
  in_flight_.clear();
  v1::TipUpdate adopted_update;
  adopted_update.set_channel_id(ChannelIdBytes());
  *adopted_update.mutable_proof() = copy;
  in_flight_.push_back(OutgoingUpdate{std::move(adopted_update)});
  // Queued tips were checked against the old transferred amount; drop the
  // newest ones until the rest fit again, and renumber nothing: indices are
  // assigned when tips are folded into an update.
  while (!queue_.empty() &&
         (SpendableWide() < 0 ||
          static_cast<__int128>(own_.transferred()) + queued_amount_ > UINT64_MAX)) {
    queued_amount_ -= queue_.back().amount();
    plan.dropped_tips.push_back(std::move(queue_.back()));
    queue_.pop_back();
  }
  return plan;
}

// ------------------------------------------------------------------ close --

ChannelResult<FinalBalances> Channel::FinalBalancesNow() const {
  const uint64_t local_to_remote = own_.transferred();
  const uint64_t remote_to_local = received_.transferred();
  if (params_.local_is_a) {
    return ComputeFinalBalances(params_.deposit_local, params_.deposit_remote, local_to_remote,
                                remote_to_local);
  }
  return ComputeFinalBalances(params_.deposit_remote, params_.deposit_local, remote_to_local,
                              local_to_remote);
}

ChannelResult<crypto::Signature> Channel::SignCooperativeClose(const crypto::KeyPair& local,
                                                               crypto::RandomSource& rng) const {
  assert(local.public_key() == params_.local_key);
  if (!in_flight_.empty()) {
    return LocalError(ChannelRule::kUpdatesInFlight,
                      U(in_flight_.size()) + " updates still await the peer's ack");
  }
  auto balances = FinalBalancesNow();
  if (!balances.ok()) return balances.error();
  return channel::SignCooperativeClose(params_.chain_id, params_.channel_id, balances->balance_a,
                                       balances->balance_b, local, rng);
}

ChannelStatus Channel::CheckCooperativeClose(uint64_t balance_a, uint64_t balance_b,
                                             ByteSpan remote_signature) const {
  auto balances = FinalBalancesNow();
  if (!balances.ok()) return balances.error();
  if (balances->balance_a != balance_a || balances->balance_b != balance_b) {
    return PeerError(ChannelRule::kCloseBalanceMismatch,
                     "proposed balances A " + U(balance_a) + " / B " + U(balance_b) + ", ours A " +
                         U(balances->balance_a) + " / B " + U(balances->balance_b));
  }
  return VerifyCooperativeClose(params_.chain_id, params_.channel_id, balance_a, balance_b,
                                remote_signature, remote_xonly_);
}

v1::UpdateRejected MakeUpdateRejected(const ChannelId& channel_id, uint64_t nonce,
                                      const ChannelError& error) {
  v1::UpdateRejected r;
  r.set_channel_id(FromHash(channel_id));
  r.set_nonce(nonce);
  r.set_code(error.code());
  r.set_message(error.reason);
  return r;
}

}  // namespace tipd::channel
