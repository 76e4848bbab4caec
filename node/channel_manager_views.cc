// ChannelManager as the API sees it: channel views, balances, the fee reserve,
// receipts and the tip history.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "ledger/codec.h"
#include "node/channel_manager.h"
#include "node/channel_manager_internal.h"

namespace tipd::node {

using namespace internal;

std::optional<v1::TipReceiptApi> ChannelManager::ReceiptOf(const std::string& channel_id,
                                                           uint64_t nonce) const {
  const LiveChannel* live = Find(channel_id);
  if (live == nullptr) return std::nullopt;
  const auto& receipt = live->ch.receipt();
  if (!receipt || receipt->nonce() < nonce) return std::nullopt;
  v1::TipReceiptApi rc;
  rc.set_channel_id(Hex(live->id));
  rc.set_nonce(receipt->nonce());
  rc.set_tips_root(Hex(receipt->tips_root()));
  rc.set_transferred(live->ch.receipt_transferred());
  *rc.mutable_ack() = *receipt;
  return rc;
}

v1::ChannelApi ChannelManager::ToApi(const LiveChannel& live) const {
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
  out.set_restored_awaiting_peer(live.record.restored_awaiting_peer());
  return out;
}

std::vector<v1::RecoveryChannel> ChannelManager::RecoveryChannels() const {
  std::vector<v1::RecoveryChannel> out;
  for (const auto& [id, live] : channels_) {
    const auto phase = live->phase();
    if (phase != v1::STORED_CHANNEL_PHASE_OPEN && phase != v1::STORED_CHANNEL_PHASE_CLOSING) {
      continue;
    }
    const channel::ChannelSnapshot snap = live->ch.Snapshot();
    v1::RecoveryChannel c;
    c.set_channel_id(Hex(live->id));
    c.set_peer_node_id(live->peer.Hex());
    c.set_local_is_a(live->record.local_is_a());
    c.set_deposit_local(snap.deposit_local);
    c.set_deposit_remote(snap.deposit_remote);
    c.set_settle_timeout(live->record.settle_timeout());
    c.set_state(PhaseName(phase));
    c.set_max_updates_in_flight(live->record.max_updates_in_flight());
    c.set_max_tips_per_update(live->record.max_tips_per_update());
    if (snap.sent_nonce > 0) *c.mutable_own_latest_proof() = live->ch.own_proof();
    c.set_own_tip_count(snap.sent_tip_count);
    if (snap.received_nonce > 0) *c.mutable_peer_latest_proof() = live->ch.received_proof();
    c.set_peer_tip_count(snap.received_tip_count);
    if (live->record.peer_evidence_proof().nonce() > snap.received_nonce) {
      *c.mutable_peer_evidence_proof() = live->record.peer_evidence_proof();
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<v1::ChannelApi> ChannelManager::ListChannels() const {
  std::vector<v1::ChannelApi> out;
  for (const auto& [id, live] : channels_) out.push_back(ToApi(*live));
  return out;
}

Result<v1::ListChannelsResponse> ChannelManager::ListChannelsPage(uint32_t limit,
                                                                  const std::string& cursor) const {
  v1::ListChannelsResponse out;
  auto it = channels_.begin();
  if (!cursor.empty()) {
    auto id = cursor.size() == 64 ? HexDecode(cursor) : Result<Bytes>(Status::InvalidArgument(""));
    if (!id.ok()) return Status::InvalidArgument("cursor is not one this node returned");
    it = channels_.upper_bound(Str(*id));  // a seek, whatever the number of channels
  }
  for (; it != channels_.end(); ++it) {
    if (static_cast<uint32_t>(out.channels_size()) == limit) {
      out.set_next_cursor(Hex(std::prev(it)->first));
      break;
    }
    *out.add_channels() = ToApi(*it->second);
  }
  return out;
}

Result<v1::ChannelApi> ChannelManager::GetChannel(const std::string& channel_id) const {
  const LiveChannel* live = Find(channel_id);
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

uint64_t ChannelManager::FeeReserve(uint64_t extra) const {
  uint64_t live = extra;
  unsigned __int128 promised = 0;
  for (const auto& [id, ch] : channels_) {
    if (ch->phase() == v1::STORED_CHANNEL_PHASE_CLOSED) continue;
    ++live;
    // A signed open can still land (the opener holds it): its deposit is
    // spoken for until the ledger opens the channel or abandons the open.
    if (ch->phase() == v1::STORED_CHANNEL_PHASE_OPENING) promised += ch->record.deposit_local();
  }
  // A unilateral close, a proof update and a settle per channel.
  const unsigned __int128 reserve =
      static_cast<unsigned __int128>(live) * 3 * ledger_.chain().params().fee_per_tx + promised;
  return reserve > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(reserve);
}

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
  // Seek from tip to tip: each step finds the next stored tip with one
  // LevelDB seek, so channels and directions without history in between cost
  // nothing, and a deep cursor costs what the first page does.
  if (!channel_id.empty() && start_channel < channel_id) {
    start_channel = channel_id;
    start_dir = 0;
    start_index = 1;
  }
  auto wanted = [&](storage::Direction d) {
    return std::find(dirs.begin(), dirs.end(), d) != dirs.end();
  };
  v1::ListTipsResponse out;
  if (!channel_id.empty() && start_channel > channel_id) return out;
  TIPD_ASSIGN_OR_RETURN(
      std::optional<storage::TipPosition> pos,
      chdb_.FirstTipFrom(start_channel, static_cast<storage::Direction>(start_dir), start_index));
  while (pos) {
    if (!channel_id.empty() && pos->channel_id != channel_id) break;
    const LiveChannel* live = Find(pos->channel_id);
    if (live == nullptr || !wanted(pos->direction)) {
      // Not listed: the next direction, or the next channel.
      if (live != nullptr && pos->direction == storage::Direction::kLocalToRemote) {
        TIPD_ASSIGN_OR_RETURN(
            pos, chdb_.FirstTipFrom(pos->channel_id, storage::Direction::kRemoteToLocal, 1));
      } else {
        TIPD_ASSIGN_OR_RETURN(pos, chdb_.FirstTipAfterChannel(pos->channel_id));
      }
      continue;
    }
    const int d = static_cast<int>(pos->direction);
    const size_t room = limit - static_cast<size_t>(out.tips_size());
    if (room == 0) {
      out.set_next_cursor(Hex(pos->channel_id) + "." + std::to_string(d) + "." +
                          std::to_string(pos->index));
      return out;
    }
    TIPD_ASSIGN_OR_RETURN(std::vector<v1::StoredTip> page,
                          chdb_.History(live->id, pos->direction, pos->index, room));
    if (page.empty()) {
      return Status::Corruption("tip " + std::to_string(pos->index) + " of channel " +
                                Hex(live->id) + " is stored but cannot be read");
    }
    std::vector<v1::TipApi*> added;
    for (const v1::StoredTip& stored : page) {
      v1::TipApi* t = out.add_tips();
      added.push_back(t);
      t->set_channel_id(Hex(live->id));
      t->set_direction(pos->direction == storage::Direction::kLocalToRemote ? "sent" : "received");
      t->set_peer_node_id(live->peer.Hex());
      *t->mutable_tip() = stored.tip();
      t->set_nonce(stored.nonce());
      t->set_idempotency_key(stored.idempotency_key());
    }
    TIPD_RETURN_IF_ERROR(AnnotateRefunds(*live, pos->direction, added));
    const uint64_t last = page.back().tip().index();
    if (last == UINT64_MAX) {
      TIPD_ASSIGN_OR_RETURN(
          pos, pos->direction == storage::Direction::kLocalToRemote
                   ? chdb_.FirstTipFrom(pos->channel_id, storage::Direction::kRemoteToLocal, 1)
                   : chdb_.FirstTipAfterChannel(pos->channel_id));
    } else {
      // The rest of this direction, or (past its end) wherever the next tip is.
      TIPD_ASSIGN_OR_RETURN(pos, chdb_.FirstTipFrom(pos->channel_id, pos->direction, last + 1));
    }
  }
  return out;
}

}  // namespace tipd::node
