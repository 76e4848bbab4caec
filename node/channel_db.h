// ChannelDb: the one place that maps channel::Channel state to LevelDB and
// back.
//
// Writing. Every step of a channel (open, an update we send, an ack we
// receive, an update we receive with the ack we answer it with, a proof
// adopted at reestablish, a phase or deposit change) has one Stage* function
// that ADDS that step's records to a caller's storage::WriteBatch. The caller
// submits the batch through the GroupCommitter and only acts on the step (sends
// the update, sends the ack) from the completion, once it is durable
// ("persist before you promise", docs/protocol.md). Everything one step needs
// is in one batch, so after a crash a step is either wholly present or wholly
// absent. Stage functions write only records whose whole content comes from
// their arguments, so several staged batches of one channel may be pending in
// the committer at once (a window of updates in flight) without one
// overwriting another's facts with stale ones. One reads: StageAckReceived
// reads the keys of the in-flight records it deletes, which are durable by
// then (the peer can only ack what was sent, and nothing is sent before it is
// durable).
//
// Reading. Load() returns the channel::RestoredState the records describe and
// Restore() rebuilds the Channel from it, so that after any sequence of
// persisted steps `Restore(...)->Snapshot()` equals the live channel's
// Snapshot() (minus queued tips, which were never promised and are not
// stored). A record that does not decode, has an unknown version or does not
// fit the others is kCorruption naming its key.
//
// Key layout (docs/storage.md has the shared families):
//   'C' channel_id                 StoredChannel        params, deposits, phase
//   'D' channel_id direction       StoredDirection      latest proof + tip_count
//   'T' channel_id direction index StoredTip            tip history
//   'R' channel_id direction       StoredReceipt        latest ack of a direction
//   'O' channel_id nonce[8 BE]     StoredOutgoingUpdate our updates awaiting ack
// 'R' and 'O' are this file's families. Direction 0 is local->remote, 1 is
// remote->local. For 0 the receipt is the peer's ack of our proofs; for 1 it
// is the ack we signed for the peer's proofs.
//
// Thread safety: like the storage stores, safe from many threads; a
// WriteBatch is one thread's at a time. Per channel, the caller stages steps
// in the order the Channel took them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "channel/channel.h"
#include "crypto/crypto.h"
#include "storage/storage.h"
#include "tipd/storage.pb.h"
#include "tipd/wire.pb.h"
#include "util/status.h"

namespace tipd::node {

// Node-local sending limits of a channel. They are configuration, not channel
// facts, so they are not stored with the channel.
struct ChannelLocalLimits {
  size_t max_update_bytes = channel::kDefaultMaxUpdateBytes;
  size_t max_queued_tips = 4096;
};

class ChannelDb {
 public:
  // Most tips History() returns at once.
  static constexpr size_t kMaxHistoryPage = 1000;

  // REQUIRES: `db` outlives this object.
  explicit ChannelDb(storage::Database* db);

  // ---- Staging (adds to `batch`; nothing is written until it commits) ----

  // The channel record of a new channel (nothing sent or received yet).
  // kInvalidArgument (nothing staged) if the channel id is not 32 bytes or a
  // key is not a 33-byte compressed key.
  Status StageNewChannel(storage::WriteBatch* batch, const v1::StoredChannel& channel) const;
  // Sets `channel->phase` and stages the whole record. `channel` is the
  // caller's current copy of the record (from StageNewChannel's argument or
  // ListChannels); the caller keeps it, so two staged changes of one record
  // never lose each other even while both are pending.
  Status StagePhase(storage::WriteBatch* batch, v1::StoredChannel* channel,
                    v1::StoredChannelPhase phase) const;
  // Sets both deposits (after Channel::SetDeposit*) and stages the record;
  // same convention as StagePhase.
  Status StageDeposits(storage::WriteBatch* batch, v1::StoredChannel* channel,
                       uint64_t deposit_local, uint64_t deposit_remote) const;

  // An update we signed, before it is sent: our latest proof and tip count,
  // its tips in the local->remote history (each with the update's nonce and
  // its root_after) and its in-flight record. `tips_root_before` is our
  // sent_tips_root before TakeNextUpdate made `update` (Snapshot()); the tips
  // are chained from it and must reach the proof's root, else
  // kInvalidArgument and nothing is staged.
  // `idempotency_keys` (tip index -> the API key that sent it) are kept with
  // the tips in the history.
  Status StageOutgoingUpdate(storage::WriteBatch* batch, std::string_view tips_root_before,
                             const channel::OutgoingUpdate& update,
                             const std::map<uint64_t, std::string>& idempotency_keys = {}) const;

  // The peer's receipt once Channel::OnAck released updates
  // (AckOutcome::updates_acked > 0; a duplicate ack needs nothing), with
  // `acked_transferred` = Snapshot().receipt_transferred. Deletes the
  // in-flight records with nonce <= ack.nonce(). Reads the in-flight keys to
  // delete: every update the peer can ack was sent, so it is durable.
  // `previous_receipt_nonce` (Snapshot().receipt_nonce before OnAck; 0 if
  // unknown) bounds the scan: no record at or below it is left.
  Status StageAckReceived(storage::WriteBatch* batch, const v1::Ack& ack,
                          uint64_t acked_transferred, uint64_t previous_receipt_nonce = 0) const;

  // An update the peer sent, after Channel::CheckUpdate accepted it, together
  // with the ack we will send for it (Channel::MakeAck after ApplyUpdate; the
  // ack is sent only after this batch is durable). `tips_root_before` is our
  // received_tips_root before ApplyUpdate. kInvalidArgument (nothing staged)
  // if the ack is not for this update's nonce and root or the tips do not
  // chain from `tips_root_before` to the proof's root.
  Status StageReceivedUpdate(storage::WriteBatch* batch, std::string_view tips_root_before,
                             const channel::ValidatedUpdate& validated,
                             const v1::Ack& ack_we_will_send) const;

  // Reestablish adopted the peer's copy of our latest proof
  // (ReestablishPlan::adopted_own_proof): it becomes our latest proof with
  // `tip_count` tips (the peer's received_tip_count) and the only update in
  // flight, held without tips. Deletes our older in-flight records.
  // REQUIRES: none of this channel's outgoing updates is staged but not yet
  // committed (reestablish runs before new updates are sent).
  Status StageAdoptedOwnProof(storage::WriteBatch* batch, const v1::BalanceProof& proof,
                              uint64_t tip_count) const;

  // ---- Reading ----

  // Every stored channel, in channel id order.
  Result<std::vector<v1::StoredChannel>> ListChannels() const;
  // kNotFound if the channel has no record.
  Result<v1::StoredChannel> GetChannel(std::string_view channel_id) const;

  // The persisted state of a channel's directions. A channel without any
  // update yet loads as the empty state.
  Result<channel::RestoredState> Load(std::string_view channel_id) const;

  // Rebuilds the Channel: params from the channel record, state from Load().
  // kFailedPrecondition if the record's local key is not `local` (a database
  // of another node key); kCorruption if a record is damaged or the records
  // do not fit together.
  Result<channel::Channel> Restore(std::string_view channel_id, const crypto::PublicKey& local,
                                   const ChannelLocalLimits& limits = {}) const;
  // The same from a record the caller already read (ListChannels): one
  // read less per channel at start, and the channel records' blocks do not
  // all land in the block cache.
  Result<channel::Channel> Restore(const v1::StoredChannel& record, const crypto::PublicKey& local,
                                   const ChannelLocalLimits& limits = {}) const;

  // The tips of one direction with from_index <= index < from_index +
  // min(limit, kMaxHistoryPage), in index order; reads only that range.
  // Indices start at 1 and are gapless (except below a proof adopted at
  // reestablish), so the next page starts at the last returned index + 1.
  Result<std::vector<v1::StoredTip>> History(std::string_view channel_id,
                                             storage::Direction direction, uint64_t from_index,
                                             size_t limit) const;
  // Where the next stored tip is, at or after a position, in any channel
  // (storage::TipHistoryStore::FirstFrom / FirstAfterChannel): one seek.
  Result<std::optional<storage::TipPosition>> FirstTipFrom(std::string_view channel_id,
                                                           storage::Direction direction,
                                                           uint64_t from_index) const {
    return tips_.FirstFrom(channel_id, direction, from_index);
  }
  Result<std::optional<storage::TipPosition>> FirstTipAfterChannel(
      std::string_view channel_id) const {
    return tips_.FirstAfterChannel(channel_id);
  }

 private:
  storage::Database* db_;
  storage::ChannelStore channels_;
  storage::DirectionStore directions_;
  storage::TipHistoryStore tips_;
  storage::RecordStore<v1::StoredReceipt> receipts_;
  storage::RecordStore<v1::StoredOutgoingUpdate> outgoing_;
};

// Key builders of ChannelDb's own families. REQUIRES: 32-byte channel id.
std::string ReceiptKey(std::string_view channel_id, storage::Direction direction);
std::string OutgoingUpdatePrefix(std::string_view channel_id);
std::string OutgoingUpdateKey(std::string_view channel_id, uint64_t nonce);

}  // namespace tipd::node
