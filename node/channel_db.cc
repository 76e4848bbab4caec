#include "node/channel_db.h"

#include <algorithm>
#include <utility>

namespace tipd::node {
namespace {

using storage::Direction;
using storage::EscapeKey;

constexpr char kReceiptFamily = static_cast<char>(storage::KeyFamily::kReceipt);
constexpr char kOutgoingFamily = static_cast<char>(storage::KeyFamily::kOutgoingUpdate);

std::string U(uint64_t v) { return std::to_string(v); }

uint64_t ReadBigEndian64(std::string_view bytes) {
  uint64_t v = 0;
  for (char c : bytes) v = (v << 8) | static_cast<unsigned char>(c);
  return v;
}

Status CheckRoot(std::string_view root, const char* what) {
  if (root.size() != 32) {
    return Status::InvalidArgument(std::string(what) + " has " + U(root.size()) +
                                   " bytes, expected 32");
  }
  return Status::Ok();
}

// Chains `tips` from `root_before` into history records carrying `nonce`;
// kInvalidArgument unless the chain ends at `root_after_all` and the indices
// are consecutive.
Result<std::vector<v1::StoredTip>> ChainTips(
    std::string_view root_before, const google::protobuf::RepeatedPtrField<v1::Tip>& tips,
    uint64_t nonce, std::string_view root_after_all) {
  TIPD_RETURN_IF_ERROR(CheckRoot(root_before, "tips_root_before"));
  Hash32 root;
  std::copy(root_before.begin(), root_before.end(), root.begin());
  std::vector<v1::StoredTip> out;
  out.reserve(static_cast<size_t>(tips.size()));
  for (const v1::Tip& tip : tips) {
    if (!out.empty() && tip.index() != out.back().tip().index() + 1) {
      return Status::InvalidArgument("update nonce " + U(nonce) + " has tip index " +
                                     U(tip.index()) + " after " + U(out.back().tip().index()));
    }
    auto hash = channel::TipHash(tip);
    if (!hash.ok()) {
      return Status::InvalidArgument("update nonce " + U(nonce) + " tip " + U(tip.index()) + ": " +
                                     hash.error().ToString());
    }
    root = channel::ChainTipsRoot(root, *hash);
    v1::StoredTip& stored = out.emplace_back();
    *stored.mutable_tip() = tip;
    stored.set_nonce(nonce);
    stored.set_root_after(std::string(AsStringView(root)));
  }
  if (AsStringView(root) != root_after_all) {
    return Status::InvalidArgument("the tips of update nonce " + U(nonce) +
                                   " do not chain from tips_root_before to the proof's root");
  }
  return out;
}

v1::StoredDirection DirectionRecord(const v1::BalanceProof& latest, uint64_t tip_count) {
  v1::StoredDirection d;
  *d.mutable_latest() = latest;
  d.set_tip_count(tip_count);
  return d;
}

Status CheckStoredChannel(const v1::StoredChannel& channel) {
  TIPD_RETURN_IF_ERROR(storage::CheckChannelId(channel.channel_id()));
  if (!crypto::PublicKey::Parse(AsSpan(channel.local_key())).ok() ||
      !crypto::PublicKey::Parse(AsSpan(channel.remote_key())).ok()) {
    return Status::InvalidArgument("channel keys must be 33-byte compressed public keys");
  }
  return Status::Ok();
}

}  // namespace

std::string ReceiptKey(std::string_view channel_id, Direction direction) {
  assert(channel_id.size() == storage::kChannelIdSize);
  std::string key(1, kReceiptFamily);
  key.append(channel_id);
  key.push_back(static_cast<char>(direction));
  return key;
}

std::string OutgoingUpdatePrefix(std::string_view channel_id) {
  assert(channel_id.size() == storage::kChannelIdSize);
  std::string key(1, kOutgoingFamily);
  key.append(channel_id);
  return key;
}

std::string OutgoingUpdateKey(std::string_view channel_id, uint64_t nonce) {
  std::string key = OutgoingUpdatePrefix(channel_id);
  storage::AppendBigEndian64(&key, nonce);
  return key;
}

ChannelDb::ChannelDb(storage::Database* db)
    : db_(db), channels_(db), directions_(db), tips_(db), receipts_(db), outgoing_(db) {}

// ---------------------------------------------------------------- staging --

Status ChannelDb::StageNewChannel(storage::WriteBatch* batch,
                                  const v1::StoredChannel& channel) const {
  TIPD_RETURN_IF_ERROR(CheckStoredChannel(channel));
  return channels_.Put(batch, channel);
}

Status ChannelDb::StagePhase(storage::WriteBatch* batch, v1::StoredChannel* channel,
                             v1::StoredChannelPhase phase) const {
  TIPD_RETURN_IF_ERROR(CheckStoredChannel(*channel));
  channel->set_phase(phase);
  return channels_.Put(batch, *channel);
}

Status ChannelDb::StageDeposits(storage::WriteBatch* batch, v1::StoredChannel* channel,
                                uint64_t deposit_local, uint64_t deposit_remote) const {
  TIPD_RETURN_IF_ERROR(CheckStoredChannel(*channel));
  channel->set_deposit_local(deposit_local);
  channel->set_deposit_remote(deposit_remote);
  return channels_.Put(batch, *channel);
}

Status ChannelDb::StageOutgoingUpdate(
    storage::WriteBatch* batch, std::string_view tips_root_before,
    const channel::OutgoingUpdate& outgoing,
    const std::map<uint64_t, std::string>& idempotency_keys) const {
  const v1::TipUpdate& update = outgoing.update;
  const v1::BalanceProof& proof = update.proof();
  const std::string& id = update.channel_id();
  TIPD_RETURN_IF_ERROR(storage::CheckChannelId(id));
  if (update.tips().empty()) {
    return Status::InvalidArgument("outgoing update nonce " + U(proof.nonce()) +
                                   " carries no tips");
  }
  TIPD_ASSIGN_OR_RETURN(
      std::vector<v1::StoredTip> tips,
      ChainTips(tips_root_before, update.tips(), proof.nonce(), proof.tips_root()));
  const uint64_t first = tips.front().tip().index();
  const uint64_t last = tips.back().tip().index();
  for (v1::StoredTip& t : tips) {
    auto key = idempotency_keys.find(t.tip().index());
    if (key != idempotency_keys.end()) t.set_idempotency_key(key->second);
  }

  TIPD_RETURN_IF_ERROR(
      directions_.Put(batch, id, Direction::kLocalToRemote, DirectionRecord(proof, last)));
  TIPD_RETURN_IF_ERROR(tips_.Append(batch, id, Direction::kLocalToRemote, tips));
  v1::StoredOutgoingUpdate in_flight;
  *in_flight.mutable_proof() = proof;
  in_flight.set_first_tip_index(first);
  in_flight.set_tip_count(static_cast<uint32_t>(tips.size()));
  outgoing_.Put(batch, OutgoingUpdateKey(id, proof.nonce()), in_flight);
  return Status::Ok();
}

Status ChannelDb::StageAckReceived(storage::WriteBatch* batch, const v1::Ack& ack,
                                   uint64_t acked_transferred,
                                   uint64_t previous_receipt_nonce) const {
  const std::string& id = ack.channel_id();
  TIPD_RETURN_IF_ERROR(storage::CheckChannelId(id));
  // Collect first, so a failed scan stages nothing.
  std::vector<std::string> released;
  const std::string prefix = OutgoingUpdatePrefix(id);
  // Starting past the previous receipt skips the tombstones of every update
  // released before, which LevelDB would otherwise walk on each ack.
  const std::string start =
      previous_receipt_nonce == 0 ? prefix : OutgoingUpdateKey(id, previous_receipt_nonce + 1);
  TIPD_RETURN_IF_ERROR(db_->Scan(start, OutgoingUpdateKey(id, ack.nonce()) + '\0', SIZE_MAX,
                                 [&](std::string_view key, std::string_view) -> Status {
                                   released.emplace_back(key);
                                   return Status::Ok();
                                 }));
  v1::StoredReceipt receipt;
  *receipt.mutable_ack() = ack;
  receipt.set_transferred(acked_transferred);
  receipts_.Put(batch, ReceiptKey(id, Direction::kLocalToRemote), receipt);
  for (const std::string& key : released) batch->Delete(key);
  return Status::Ok();
}

Status ChannelDb::StageReceivedUpdate(storage::WriteBatch* batch, std::string_view tips_root_before,
                                      const channel::ValidatedUpdate& validated,
                                      const v1::Ack& ack_we_will_send) const {
  const v1::TipUpdate& update = validated.update();
  const v1::BalanceProof& proof = update.proof();
  const std::string& id = update.channel_id();
  TIPD_RETURN_IF_ERROR(storage::CheckChannelId(id));
  if (ack_we_will_send.channel_id() != id || ack_we_will_send.nonce() != proof.nonce() ||
      ack_we_will_send.tips_root() != proof.tips_root()) {
    return Status::InvalidArgument("ack (nonce " + U(ack_we_will_send.nonce()) +
                                   ") does not acknowledge the received update (nonce " +
                                   U(proof.nonce()) + ")");
  }
  // CheckUpdate guarantees at least one tip.
  TIPD_ASSIGN_OR_RETURN(
      std::vector<v1::StoredTip> tips,
      ChainTips(tips_root_before, update.tips(), proof.nonce(), proof.tips_root()));
  TIPD_RETURN_IF_ERROR(directions_.Put(batch, id, Direction::kRemoteToLocal,
                                       DirectionRecord(proof, tips.back().tip().index())));
  TIPD_RETURN_IF_ERROR(tips_.Append(batch, id, Direction::kRemoteToLocal, tips));
  v1::StoredReceipt receipt;
  *receipt.mutable_ack() = ack_we_will_send;
  receipt.set_transferred(proof.transferred());
  receipts_.Put(batch, ReceiptKey(id, Direction::kRemoteToLocal), receipt);
  return Status::Ok();
}

Status ChannelDb::StageAdoptedOwnProof(storage::WriteBatch* batch, const v1::BalanceProof& proof,
                                       uint64_t tip_count) const {
  const std::string& id = proof.channel_id();
  TIPD_RETURN_IF_ERROR(storage::CheckChannelId(id));
  std::vector<std::string> stale;
  const std::string prefix = OutgoingUpdatePrefix(id);
  TIPD_RETURN_IF_ERROR(
      db_->ScanPrefix(prefix, SIZE_MAX, [&](std::string_view key, std::string_view) -> Status {
        stale.emplace_back(key);
        return Status::Ok();
      }));
  for (const std::string& key : stale) batch->Delete(key);
  TIPD_RETURN_IF_ERROR(
      directions_.Put(batch, id, Direction::kLocalToRemote, DirectionRecord(proof, tip_count)));
  v1::StoredOutgoingUpdate in_flight;
  *in_flight.mutable_proof() = proof;
  in_flight.set_first_tip_index(tip_count + 1);
  in_flight.set_tip_count(0);
  outgoing_.Put(batch, OutgoingUpdateKey(id, proof.nonce()), in_flight);
  return Status::Ok();
}

// ---------------------------------------------------------------- reading --

Result<std::vector<v1::StoredChannel>> ChannelDb::ListChannels() const { return channels_.List(); }

Result<v1::StoredChannel> ChannelDb::GetChannel(std::string_view channel_id) const {
  TIPD_RETURN_IF_ERROR(storage::CheckChannelId(channel_id));
  TIPD_ASSIGN_OR_RETURN(std::optional<v1::StoredChannel> channel, channels_.Get(channel_id));
  if (!channel) {
    return Status::NotFound("no channel record at key \"" +
                            EscapeKey(storage::ChannelKey(channel_id)) + "\"");
  }
  return std::move(*channel);
}

Result<channel::RestoredState> ChannelDb::Load(std::string_view channel_id) const {
  TIPD_RETURN_IF_ERROR(storage::CheckChannelId(channel_id));
  channel::RestoredState state;

  TIPD_ASSIGN_OR_RETURN(std::optional<v1::StoredDirection> own,
                        directions_.Get(channel_id, Direction::kLocalToRemote));
  if (own) {
    state.own_latest = own->latest();
    state.own_tip_count = own->tip_count();
  }
  TIPD_ASSIGN_OR_RETURN(std::optional<v1::StoredReceipt> receipt,
                        receipts_.Get(ReceiptKey(channel_id, Direction::kLocalToRemote)));
  if (receipt) {
    state.receipt = receipt->ack();
    state.receipt_transferred = receipt->transferred();
  }

  // Our updates awaiting an ack, oldest first, each with its tips from the
  // history.
  const std::string prefix = OutgoingUpdatePrefix(channel_id);
  TIPD_RETURN_IF_ERROR(outgoing_.Scan(
      prefix, storage::PrefixEnd(prefix), SIZE_MAX,
      [&](std::string_view key, v1::StoredOutgoingUpdate record) -> Status {
        const uint64_t key_nonce = ReadBigEndian64(key.substr(prefix.size()));
        if (key.size() != prefix.size() + 8 || record.proof().nonce() != key_nonce) {
          return Status::Corruption("StoredOutgoingUpdate record at key \"" + EscapeKey(key) +
                                    "\" holds nonce " + U(record.proof().nonce()));
        }
        v1::TipUpdate& update = state.in_flight.emplace_back();
        update.set_channel_id(std::string(channel_id));
        *update.mutable_proof() = std::move(*record.mutable_proof());
        if (record.tip_count() == 0) return Status::Ok();
        TIPD_ASSIGN_OR_RETURN(std::vector<v1::StoredTip> tips,
                              tips_.ReadRange(channel_id, Direction::kLocalToRemote,
                                              record.first_tip_index(), record.tip_count()));
        if (tips.size() != record.tip_count() ||
            tips.front().tip().index() != record.first_tip_index() ||
            tips.back().tip().index() != record.first_tip_index() + record.tip_count() - 1 ||
            tips.back().root_after() != update.proof().tips_root()) {
          return Status::Corruption(
              "StoredOutgoingUpdate record at key \"" + EscapeKey(key) + "\" names tips " +
              U(record.first_tip_index()) + ".." +
              U(record.first_tip_index() + record.tip_count() - 1) + " but the history under \"" +
              EscapeKey(storage::TipPrefix(channel_id, Direction::kLocalToRemote)) +
              "\" does not hold exactly those tips ending at the proof's root");
        }
        for (v1::StoredTip& tip : tips) *update.add_tips() = std::move(*tip.mutable_tip());
        return Status::Ok();
      }));

  TIPD_ASSIGN_OR_RETURN(std::optional<v1::StoredDirection> received,
                        directions_.Get(channel_id, Direction::kRemoteToLocal));
  if (received) {
    state.received_latest = received->latest();
    state.received_tip_count = received->tip_count();
  }
  TIPD_ASSIGN_OR_RETURN(std::optional<v1::StoredReceipt> sent_ack,
                        receipts_.Get(ReceiptKey(channel_id, Direction::kRemoteToLocal)));
  if (sent_ack) {
    state.sent_ack = sent_ack->ack();
    state.sent_ack_transferred = sent_ack->transferred();
  }
  return state;
}

Result<channel::Channel> ChannelDb::Restore(std::string_view channel_id,
                                            const crypto::PublicKey& local,
                                            const ChannelLocalLimits& limits) const {
  TIPD_ASSIGN_OR_RETURN(v1::StoredChannel record, GetChannel(channel_id));
  return Restore(record, local, limits);
}

Result<channel::Channel> ChannelDb::Restore(const v1::StoredChannel& record,
                                            const crypto::PublicKey& local,
                                            const ChannelLocalLimits& limits) const {
  TIPD_RETURN_IF_ERROR(storage::CheckChannelId(record.channel_id()));
  const std::string_view channel_id = record.channel_id();
  const std::string key = EscapeKey(storage::ChannelKey(channel_id));
  auto local_key = crypto::PublicKey::Parse(AsSpan(record.local_key()));
  auto remote_key = crypto::PublicKey::Parse(AsSpan(record.remote_key()));
  if (!local_key.ok() || !remote_key.ok()) {
    return Status::Corruption("StoredChannel record at key \"" + key +
                              "\" holds a malformed channel key");
  }
  if (*local_key != local) {
    return Status::FailedPrecondition("channel at key \"" + key + "\" belongs to node key " +
                                      local_key->Hex() + ", not " + local.Hex());
  }
  channel::ChannelParams params;
  params.chain_id = record.chain_id();
  std::copy(record.channel_id().begin(), record.channel_id().end(), params.channel_id.begin());
  params.local_key = *local_key;
  params.remote_key = *remote_key;
  params.local_is_a = record.local_is_a();
  params.deposit_local = record.deposit_local();
  params.deposit_remote = record.deposit_remote();
  params.max_updates_in_flight = record.max_updates_in_flight();
  params.max_tips_per_update = record.max_tips_per_update();
  params.max_update_bytes = limits.max_update_bytes;
  params.max_queued_tips = limits.max_queued_tips;

  TIPD_ASSIGN_OR_RETURN(channel::RestoredState state, Load(channel_id));
  auto restored = channel::Channel::Restore(std::move(params), std::move(state));
  if (!restored.ok()) {
    const Status& s = restored.status();
    return Status(s.code(), "channel at key \"" + key + "\": " + s.message());
  }
  return restored;
}

Result<std::vector<v1::StoredTip>> ChannelDb::History(std::string_view channel_id,
                                                      Direction direction, uint64_t from_index,
                                                      size_t limit) const {
  return tips_.ReadRange(channel_id, direction, from_index, std::min(limit, kMaxHistoryPage));
}

}  // namespace tipd::node
