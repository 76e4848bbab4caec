#include "node/recovery.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>

#include "channel/codec.h"
#include "storage/storage.h"
#include "tipd/storage.pb.h"

namespace tipd::node {
namespace {

Result<std::string> Bytes32(const std::string& hex, const std::string& what) {
  auto b = HexDecode(hex);
  if (!b.ok() || b->size() != 32) {
    return Status::InvalidArgument(what + " must be 64 hex characters");
  }
  return std::string(AsStringView(*b));
}

// A proof of `channel_id` on `chain_id` signed by `signer` (or none).
Status CheckProof(const v1::BalanceProof& p, const std::string& channel_id,
                  const std::string& chain_id, const crypto::PublicKey& signer,
                  const std::string& what) {
  if (p.nonce() == 0) return Status::Ok();
  if (p.channel_id() != channel_id || p.chain_id() != chain_id) {
    return Status::InvalidArgument(what + " names another channel or chain");
  }
  if (!channel::VerifyBalanceProof(p, signer.XOnly()).ok()) {
    return Status::InvalidArgument(what + " is not signed by " + signer.Hex());
  }
  return Status::Ok();
}

}  // namespace

Result<v1::RecoveryExport> ParseRecoveryExport(const std::string& json) {
  v1::RecoveryExport out;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto s = google::protobuf::util::JsonStringToMessage(json, &out, options);
  if (!s.ok()) {
    return Status::InvalidArgument("not a recovery export: " + std::string(s.message()));
  }
  if (out.format_version() != 1) {
    return Status::InvalidArgument("recovery export format " +
                                   std::to_string(out.format_version()) +
                                   "; this build reads format 1");
  }
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> RecoveryRecords(
    const v1::RecoveryExport& ex, const crypto::KeyPair& node_key) {
  if (ex.node_id() != node_key.public_key().Hex()) {
    return Status::PermissionDenied("the export is of node " + ex.node_id() +
                                    ", but this key is node " + node_key.public_key().Hex());
  }
  std::vector<std::pair<std::string, std::string>> records;
  for (const v1::RecoveryChannel& c : ex.channels()) {
    TIPD_ASSIGN_OR_RETURN(std::string id, Bytes32(c.channel_id(), "channel_id"));
    auto peer = crypto::PublicKey::FromHex(c.peer_node_id());
    if (!peer.ok()) {
      return Status::InvalidArgument("channel " + c.channel_id() + ": peer_node_id is not a key");
    }
    const std::string what = "channel " + c.channel_id().substr(0, 16) + ": ";
    TIPD_RETURN_IF_ERROR(CheckProof(c.own_latest_proof(), id, ex.chain_id(), node_key.public_key(),
                                    what + "own_latest_proof"));
    TIPD_RETURN_IF_ERROR(
        CheckProof(c.peer_latest_proof(), id, ex.chain_id(), *peer, what + "peer_latest_proof"));
    TIPD_RETURN_IF_ERROR(CheckProof(c.peer_evidence_proof(), id, ex.chain_id(), *peer,
                                    what + "peer_evidence_proof"));
    v1::StoredChannel rec;
    rec.set_channel_id(id);
    rec.set_chain_id(ex.chain_id());
    rec.set_local_key(std::string(AsStringView(node_key.public_key().bytes())));
    rec.set_remote_key(std::string(AsStringView(peer->bytes())));
    rec.set_local_is_a(c.local_is_a());
    rec.set_deposit_local(c.deposit_local());
    rec.set_deposit_remote(c.deposit_remote());
    rec.set_settle_timeout(c.settle_timeout());
    if (c.state() == "open") {
      rec.set_phase(v1::STORED_CHANNEL_PHASE_OPEN);
    } else if (c.state() == "closing") {
      rec.set_phase(v1::STORED_CHANNEL_PHASE_CLOSING);
      rec.set_close_reason("restored from a recovery export while closing");
    } else {
      return Status::InvalidArgument(what + "state '" + c.state() + "' is not open or closing");
    }
    rec.set_max_updates_in_flight(c.max_updates_in_flight());
    rec.set_max_tips_per_update(c.max_tips_per_update());
    rec.set_restored_awaiting_peer(true);
    if (c.peer_evidence_proof().nonce() > c.peer_latest_proof().nonce()) {
      *rec.mutable_peer_evidence_proof() = c.peer_evidence_proof();
    }
    records.emplace_back(storage::ChannelKey(id),
                         storage::RecordStore<v1::StoredChannel>::Encode(rec));
    if (c.own_latest_proof().nonce() > 0) {
      v1::StoredDirection d;
      *d.mutable_latest() = c.own_latest_proof();
      d.set_tip_count(c.own_tip_count());
      records.emplace_back(storage::DirectionKey(id, storage::Direction::kLocalToRemote),
                           storage::RecordStore<v1::StoredDirection>::Encode(d));
    }
    if (c.peer_latest_proof().nonce() > 0) {
      v1::StoredDirection d;
      *d.mutable_latest() = c.peer_latest_proof();
      d.set_tip_count(c.peer_tip_count());
      records.emplace_back(storage::DirectionKey(id, storage::Direction::kRemoteToLocal),
                           storage::RecordStore<v1::StoredDirection>::Encode(d));
    }
  }
  for (const v1::RecoveryPeer& p : ex.peers()) {
    auto id = crypto::PublicKey::FromHex(p.node_id());
    if (!id.ok()) return Status::InvalidArgument("peer " + p.node_id() + " is not a node id");
    v1::StoredPeer rec;
    rec.set_node_id(std::string(AsStringView(id->bytes())));
    rec.set_address(p.address());
    std::string key(1, static_cast<char>(storage::KeyFamily::kPeer));
    key += rec.node_id();
    records.emplace_back(key, storage::RecordStore<v1::StoredPeer>::Encode(rec));
  }
  std::sort(records.begin(), records.end());
  for (size_t i = 1; i < records.size(); ++i) {
    if (records[i].first == records[i - 1].first) {
      return Status::InvalidArgument("the export names a channel or peer twice");
    }
  }
  return records;
}

}  // namespace tipd::node
