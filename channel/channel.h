// The channel state machine: one Channel object holds both directions of a
// payment channel as seen by one party (the "local" side).
//
// Pure: no I/O, no clock, no threads, no globals. Signatures draw their BIP-340
// aux bytes from the crypto::RandomSource passed in; times are values passed
// in (Tip.created_at_ms). The node persists what this class produces and
// feeds it what arrives from the peer.
//
// Tour:
//   sending    QueueTip -> TakeNextUpdate (persist, then send) -> OnAck
//   receiving  CheckUpdate (const) -> ApplyUpdate -> MakeAck -> persist proof,
//              tips and ack -> send the ack (the node's memory may run ahead
//              of its disk until the write is durable; nothing leaves before)
//   reconnect  MakeReestablish (send) ; OnPeerReestablish -> ReestablishPlan
//   restart    Channel::Restore(params, RestoredState)
//   close      FinalBalancesNow, SignCooperativeClose, CheckCooperativeClose
//
// Every method that refuses its input returns a ChannelError and leaves the
// channel exactly as it was (Snapshot() before == Snapshot() after).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "channel/codec.h"
#include "channel/rules.h"
#include "crypto/crypto.h"
#include "tipd/channel.pb.h"
#include "tipd/wire.pb.h"
#include "util/boxed_optional.h"
#include "util/bytes.h"
#include "util/lazy_deque.h"
#include "util/status.h"

namespace tipd::channel {

// The largest frame body of the transport is 65535 bytes; the Envelope around
// a TipUpdate adds a tag and a length (at most 4 bytes). The default budget
// keeps a wide margin for future envelope fields.
inline constexpr size_t kMaxFrameBody = 65535;
inline constexpr size_t kDefaultMaxUpdateBytes = kMaxFrameBody - 1024;
// Any valid single tip fits in an update of this many bytes (1000-byte
// message, 8 entries of 32-byte keys and 256-byte values, proof, framing).
inline constexpr size_t kMinUpdateBytesBudget = 8192;

struct ChannelParams {
  std::string chain_id;
  ChannelId channel_id{};
  crypto::PublicKey local_key;
  crypto::PublicKey remote_key;
  bool local_is_a = true;
  uint64_t deposit_local = 0;
  uint64_t deposit_remote = 0;
  // How many of our updates may await an ack at once (>= 1).
  uint32_t max_updates_in_flight = 8;
  // Most tips one update may carry, ours and the peer's (>= 1).
  uint32_t max_tips_per_update = 256;
  // Upper bound on the protobuf size of one TipUpdate we send
  // (kMinUpdateBytesBudget..kMaxFrameBody).
  size_t max_update_bytes = kDefaultMaxUpdateBytes;
  // Tips waiting for a window slot before QueueTip answers kQueueFull (>= 1).
  size_t max_queued_tips = 4096;
};

// What a user asks to send. QueueTip sorts the metadata (a std::map is
// ordered bytewise), so callers never see kMetadataNotSorted.
struct TipDraft {
  uint64_t amount = 0;
  std::string message;
  std::map<std::string, std::string> metadata;
  uint64_t created_at_ms = 0;
};

// An update we signed. CONTRACT: the caller persists it (proof and tips,
// synced) BEFORE sending `update`, so we never forget a nonce we signed.
struct OutgoingUpdate {
  v1::TipUpdate update;
  uint64_t nonce() const { return update.proof().nonce(); }
};

// A peer update that passed every rule, bound to the state it was checked
// against. Only Channel::CheckUpdate makes one; only ApplyUpdate consumes it.
class ValidatedUpdate {
 public:
  const v1::TipUpdate& update() const { return update_; }
  // Sum of the tip amounts.
  uint64_t amount() const { return amount_; }

 private:
  friend class Channel;
  ValidatedUpdate(v1::TipUpdate update, uint64_t previous_nonce, uint64_t amount)
      : update_(std::move(update)), previous_nonce_(previous_nonce), amount_(amount) {}

  v1::TipUpdate update_;
  uint64_t previous_nonce_;  // the received nonce it was checked against
  uint64_t amount_;
};

struct AckOutcome {
  uint64_t acked_nonce = 0;
  size_t updates_acked = 0;  // in-flight updates this ack released (0: duplicate)
  size_t tips_acked = 0;
};

// What to do after both Reestablish messages are exchanged, in this order:
// 1. if send_ack, send MakeAck() (acks must precede our updates: the peer
//    counts only acknowledged receipts as our spendable);
// 2. send every update in `resend`, in order;
// 3. then new updates (TakeNextUpdate).
struct ReestablishPlan {
  bool send_ack = false;
  std::vector<v1::TipUpdate> resend;
  // We were behind on our own direction (restored from a backup) and took
  // the peer's copy of our latest proof, verified against our own key.
  bool adopted_own_proof = false;
  // Queued tips (newest first dropped) that no longer fit the spendable after
  // adopting the peer's copy, which may show more transferred than we
  // remembered. Report them to their requesters as failed.
  std::vector<v1::Tip> dropped_tips;
};

// What a node persists to rebuild a channel after a restart
// (storage.proto StoredDirection holds the same facts).
struct RestoredState {
  // Local -> remote: our latest signed proof (nonce 0 / unset: none yet),
  // how many tips it covers, and the updates still awaiting an ack, oldest
  // first; the last one's proof must equal `own_latest`. With no update in
  // flight and a receipt behind `own_latest`, the latest proof is taken as
  // awaiting its ack without tips (the state after adopting the peer's copy).
  v1::BalanceProof own_latest;
  uint64_t own_tip_count = 0;
  std::vector<v1::TipUpdate> in_flight;
  // The peer's latest receipt for our direction and the transferred amount
  // of the proof it acknowledged.
  std::optional<v1::Ack> receipt;
  uint64_t receipt_transferred = 0;
  // Remote -> local: the latest proof received (unset: none) and the tips it
  // covers, plus our latest ack (for that proof or an older one) and the
  // transferred amount of the proof it acknowledged. Our spendable counts only
  // acknowledged receipts, so without the ack it under-counts until
  // reestablish sends a fresh one.
  v1::BalanceProof received_latest;
  uint64_t received_tip_count = 0;
  std::optional<v1::Ack> sent_ack;
  uint64_t sent_ack_transferred = 0;
};

// A comparable summary of every field that matters; tests compare it
// before/after a rejected input, the node exposes it for status and metrics.
struct ChannelSnapshot {
  uint64_t deposit_local = 0;
  uint64_t deposit_remote = 0;
  uint64_t sent_nonce = 0;
  uint64_t sent_transferred = 0;
  std::string sent_tips_root;
  uint64_t sent_tip_count = 0;
  std::vector<uint64_t> in_flight_nonces;
  size_t queued_tips = 0;
  uint64_t queued_amount = 0;
  uint64_t receipt_nonce = 0;
  uint64_t receipt_transferred = 0;
  uint64_t received_nonce = 0;
  uint64_t received_transferred = 0;
  std::string received_tips_root;
  uint64_t received_tip_count = 0;
  uint64_t acked_received_nonce = 0;
  uint64_t acked_received_transferred = 0;
  bool operator==(const ChannelSnapshot&) const = default;
};

class Channel {
 public:
  // A fresh channel (nothing sent or received). Fails with kInvalidArgument
  // on bad parameters (chain id, equal keys, zero window, budget range).
  static Result<Channel> Open(ChannelParams params);
  // Rebuilds a channel from persisted state; kCorruption if the pieces do not
  // fit together (nonces, roots, tip counts).
  static Result<Channel> Restore(ChannelParams params, RestoredState state);

  const ChannelParams& params() const { return params_; }
  ChannelSnapshot Snapshot() const;

  // Raises a deposit after the ledger shows a top-up. Deposits never shrink
  // while the channel is open: kInvalidArgument if `new_total` is lower.
  Status SetDepositLocal(uint64_t new_total);
  Status SetDepositRemote(uint64_t new_total);

  // ---- Sending ----
  // What we can still spend: dLocal + T(remote->local) we acked -
  // T(local->remote) signed - queued amounts. Never negative.
  uint64_t SpendableLocal() const;
  // Validates the draft (tip content rules, spendable counting queued and
  // in-flight amounts, queue bound) and queues it. Returns the index the tip
  // will carry. On refusal nothing changes (consequence kRefuseRequest).
  ChannelResult<uint64_t> QueueTip(const TipDraft& draft);
  // If fewer than max_updates_in_flight updates await an ack and tips are
  // queued, folds the oldest queued tips (up to max_tips_per_update and
  // max_update_bytes) into ONE signed update with the next nonce and records
  // it as in flight. Persist the result before sending it.
  std::optional<OutgoingUpdate> TakeNextUpdate(const crypto::KeyPair& local,
                                               crypto::RandomSource& rng);
  // Verifies the peer's receipt and releases every in-flight update up to its
  // nonce (acks are cumulative). An ack at or below the latest receipt is a
  // harmless duplicate (updates_acked == 0). Persist the receipt.
  ChannelResult<AckOutcome> OnAck(const v1::Ack& ack);
  size_t updates_in_flight() const { return in_flight_.size(); }
  size_t queued_tips() const { return queue_.size(); }
  // The peer's latest receipt for our direction (empty before the first)
  // and the transferred amount of the proof it acknowledged.
  const BoxedOptional<v1::Ack>& receipt() const { return receipt_; }
  uint64_t receipt_transferred() const { return receipt_transferred_; }
  // Tips of ours an ack covers: they carry indexes 1..acked_tip_count().
  uint64_t acked_tip_count() const;

  // ---- Receiving ----
  // Checks every rule without changing anything.
  ChannelResult<ValidatedUpdate> CheckUpdate(const v1::TipUpdate& update) const;
  // Adopts a validated update. CONTRACT: the caller persists proof, tips and
  // the ack MakeAck then signs in one write, and sends nothing about them
  // (no ack, no event) before that write is durable; if it fails, the caller
  // must stop acknowledging (its memory is ahead of its disk) and rebuild from
  // disk. Fails (kNonceNotIncreasing) if the channel moved since the check.
  ChannelStatus ApplyUpdate(const ValidatedUpdate& validated);
  // Our signed receipt for the latest applied update (nullopt before the
  // first one). Signs once per nonce and returns the same ack afterwards.
  // Send it before any later update of ours.
  std::optional<v1::Ack> MakeAck(const crypto::KeyPair& local, crypto::RandomSource& rng);

  // The latest proof the peer signed for its direction: what this node
  // submits to the ledger to be paid. Nonce 0: none, and every field is
  // empty (an idle channel holds no proof; the roots are then 32 zero bytes,
  // as Snapshot and MakeReestablish show).
  const v1::BalanceProof& received_proof() const { return received_; }
  // The latest proof this node signed for its own direction (nonce 0: none,
  // every field empty).
  const v1::BalanceProof& own_proof() const { return own_; }

  // ---- Reestablish ----
  v1::Reestablish MakeReestablish() const;
  // Compares the peer's view with ours and returns what to send, in order.
  // `peer_received_tip_count` is how many tips of our direction the peer
  // holds. v1::Reestablish has no field for it yet (docs/protocol.md, "Open
  // point"): when given it is cross-checked; adopting the peer's copy of our
  // proof needs it (without it, that case is kMalformed). If the plan says
  // adopted_own_proof, persist the adopted proof as our latest (it awaits its
  // ack without tips; Restore rebuilds it that way). On error nothing
  // changes.
  ChannelResult<ReestablishPlan> OnPeerReestablish(
      const v1::Reestablish& peer, std::optional<uint64_t> peer_received_tip_count = std::nullopt);
  // The peer's latest proof of its own direction (Reestablish.sent_proof) if
  // it is newer than the one we hold and checks out: its nonce and root are
  // the announced ones, it names this chain and channel, has nothing locked,
  // does not lower `transferred`, and carries the peer's signature. A node
  // restored from a stale backup lost the updates it had received since; this
  // proof pays it what the peer last signed, so it is what the node closes
  // (or defends a close) with. nullopt otherwise; nothing changes.
  std::optional<v1::BalanceProof> PeerEvidence(const v1::Reestablish& peer) const;

  // ---- Close ----
  // Final balances from the latest proofs of both directions.
  ChannelResult<FinalBalances> FinalBalancesNow() const;
  // Our signature over the final balances; kUpdatesInFlight while any update
  // of ours awaits its ack (the peer must hold what we close on).
  ChannelResult<crypto::Signature> SignCooperativeClose(const crypto::KeyPair& local,
                                                        crypto::RandomSource& rng) const;
  // Checks a peer's proposal: the balances must equal FinalBalancesNow()
  // (kCloseBalanceMismatch) and the signature the remote key's.
  ChannelStatus CheckCooperativeClose(uint64_t balance_a, uint64_t balance_b,
                                      ByteSpan remote_signature) const;

 private:
  explicit Channel(ChannelParams params);

  std::string ChannelIdBytes() const;
  // The proof before nonce 1 (zero roots, nothing transferred); own_ and
  // received_ stay empty until their first proof, which saves an idle
  // channel about 450 bytes of strings.
  v1::BalanceProof InitialProof() const;
  // The tips root `proof` stands for: 32 zero bytes at nonce 0.
  static const std::string& TipsRoot(const v1::BalanceProof& proof);
  ChannelStatus CheckChannelIdField(const std::string& field, const char* what) const;
  // dLocal + acked T(remote->local) - T(local->remote) signed - queued, in
  // 128 bits (may be negative only after adopting a peer's copy).
  __int128 SpendableWide() const;

  ChannelParams params_;
  crypto::XOnlyPubKey local_xonly_{};
  crypto::XOnlyPubKey remote_xonly_{};

  // Local -> remote.
  v1::BalanceProof own_;  // latest signed (nonce 0: none, empty)
  uint64_t own_tip_count_ = 0;
  // Both queues hold no memory while empty (util/lazy_deque.h).
  LazyDeque<OutgoingUpdate> in_flight_;  // oldest first
  // The two acks are on the heap: an idle channel holds neither.
  BoxedOptional<v1::Ack> receipt_;
  uint64_t receipt_transferred_ = 0;
  LazyDeque<v1::Tip> queue_;  // validated; index assigned when folded
  uint64_t queued_amount_ = 0;

  // Remote -> local.
  v1::BalanceProof received_;  // latest applied (nonce 0: none, empty)
  uint64_t received_tip_count_ = 0;
  BoxedOptional<v1::Ack> sent_ack_;  // for received_ or an older nonce
  uint64_t acked_received_transferred_ = 0;
};

// The wire answer to a rejected update.
v1::UpdateRejected MakeUpdateRejected(const ChannelId& channel_id, uint64_t nonce,
                                      const ChannelError& error);

}  // namespace tipd::channel
