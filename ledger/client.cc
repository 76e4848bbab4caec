#include "ledger/client.h"

#include <spdlog/spdlog.h>
#include <algorithm>

#include "ledger/codec.h"

namespace tipd::ledger {

LedgerClient::LedgerClient(p2p::Host& host, Chain& chain, const crypto::PublicKey& sequencer,
                           std::string address, uint16_t port, std::shared_ptr<spdlog::logger> log)
    : host_(host),
      chain_(chain),
      sequencer_(sequencer),
      address_(std::move(address)),
      port_(port),
      log_(std::move(log)) {}

LedgerClient::~LedgerClient() = default;

Status LedgerClient::Start() {
  if (sequencer_.XOnly() != chain_.params().sequencer) {
    return Status::InvalidArgument("ledger key " + sequencer_.Hex() +
                                   " is not the genesis sequencer key " +
                                   HexEncode(chain_.params().sequencer));
  }
  return host_.AddPersistentPeer(address_, port_, sequencer_);
}

bool LedgerClient::OnConnected(const p2p::PeerInfo& info) {
  if (info.node_id != sequencer_) return false;
  peer_ = info.id;
  sync_in_flight_ = false;
  log_->info("connected to the ledger at {}; local height {}", info.address, chain_.height());
  if (!halted_.ok()) return true;
  v1::Envelope env;
  env.mutable_subscribe_blocks()->set_from_height(chain_.height() + 1);
  Status s = host_.Send(info.id, env);
  if (!s.ok()) log_->warn("subscribe failed: {}", s.ToString());
  sync_in_flight_ = true;  // the subscription answers with a catch-up batch
  return true;
}

bool LedgerClient::OnDisconnected(const p2p::DisconnectEvent& ev) {
  if (!peer_ || ev.id != *peer_) {
    return ev.node_id.has_value() && *ev.node_id == sequencer_;
  }
  peer_.reset();
  sync_in_flight_ = false;
  log_->warn("ledger connection lost: {}", ev.reason.ToString());
  FailPending("the ledger connection dropped before it answered");
  return true;
}

void LedgerClient::FailPending(const std::string& why) {
  auto pending = std::move(submits_);
  submits_.clear();
  for (auto& [id, done] : pending) {
    done(SubmitOutcome::Unknown(why));
  }
}

bool LedgerClient::OnMessage(p2p::PeerId peer, const v1::Envelope& env) {
  if (!peer_ || peer != *peer_) return false;
  switch (env.msg_case()) {
    case v1::Envelope::kSubmitTxResult: {
      const auto& r = env.submit_tx_result();
      auto it = submits_.find(r.request_id());
      if (it == submits_.end()) return true;
      auto done = std::move(it->second);
      submits_.erase(it);
      SubmitOutcome out;
      if (r.tx_id().size() == 32) std::copy(r.tx_id().begin(), r.tx_id().end(), out.tx_id.begin());
      out.message = r.message();
      if (r.accepted()) {
        out.kind = SubmitOutcome::Kind::kAccepted;
      } else if (auto rule = ParseTxRuleCode(r.code())) {
        out.kind = SubmitOutcome::Kind::kRefused;
        out.rule = rule;
      } else if (r.code() == "TOO_LARGE") {
        // Refused before the rules: it can never fit a block.
        out.kind = SubmitOutcome::Kind::kRefused;
        out.rule = TxRule::kMalformed;
      } else {
        // A code this node does not know: the sequencer runs other rules.
        // Treat it as unknown rather than as a refusal we understand.
        out.kind = SubmitOutcome::Kind::kUnknown;
        out.message = "unrecognised ledger answer " + r.code() + ": " + r.message();
      }
      done(out);
      return true;
    }
    case v1::Envelope::kBlocks: {
      sync_in_flight_ = false;
      for (const auto& block : env.blocks().blocks()) {
        if (!halted_.ok()) return true;
        if (block.header().height() <= chain_.height()) continue;
        ApplyBlock(block);
      }
      sequencer_height_ = std::max(sequencer_height_, env.blocks().tip_height());
      if (halted_.ok() && env.blocks().tip_height() > chain_.height()) {
        RequestBlocks();
      } else if (halted_.ok()) {
        synced_ = true;
      }
      return true;
    }
    case v1::Envelope::kNewBlock: {
      const auto& block = env.new_block().block();
      uint64_t h = block.header().height();
      sequencer_height_ = std::max(sequencer_height_, h);
      if (!halted_.ok() || h <= chain_.height()) return true;
      if (h == chain_.height() + 1 && !sync_in_flight_) {
        ApplyBlock(block);
      } else if (!sync_in_flight_) {
        RequestBlocks();  // we missed a push
      }
      return true;
    }
    default:
      log_->warn("unexpected message {} from the ledger", static_cast<int>(env.msg_case()));
      return true;
  }
}

void LedgerClient::RequestBlocks() {
  if (!peer_ || sync_in_flight_) return;
  v1::Envelope env;
  env.mutable_get_blocks()->set_request_id(next_request_id_++);
  env.mutable_get_blocks()->set_from_height(chain_.height() + 1);
  Status s = host_.Send(*peer_, env);
  if (!s.ok()) {
    log_->warn("block request failed: {}", s.ToString());
    return;
  }
  sync_in_flight_ = true;
}

void LedgerClient::ApplyBlock(const v1::Block& block) {
  Status s = chain_.AcceptBlock(block);
  if (!s.ok()) {
    Halt(s);
    return;
  }
  uint64_t h = block.header().height();
  if (block.header().tx_count() > 0 || h % 100 == 0) {
    log_->info("followed block {} ({} transaction(s)) state {}", h, block.header().tx_count(),
               HexEncode(chain_.state_hash()));
  }
  if (!inclusion_waiters_.empty()) {
    for (const auto& tx : block.transactions()) {
      auto id = TransactionId(tx);
      if (!id.ok()) continue;
      auto [lo, hi] = waits_by_tx_.equal_range(*id);
      std::vector<std::function<void(uint64_t)>> ready;
      for (auto it = lo; it != hi; ++it) {
        auto w = inclusion_waiters_.find(it->second);
        if (w == inclusion_waiters_.end()) continue;
        ready.push_back(std::move(w->second.done));
        inclusion_waiters_.erase(w);
      }
      waits_by_tx_.erase(lo, hi);
      for (auto& done : ready) done(h);
    }
  }
  for (auto& observer : observers_) observer(block);
}

void LedgerClient::Halt(const Status& why) {
  halted_ = why;
  // A block this node could not write is its own disk's fault, not the
  // sequencer's: say so, since the operator's remedy differs.
  const bool disk = why.code() == StatusCode::kIOError;
  if (disk) {
    log_->critical(
        "STOPPED FOLLOWING THE LEDGER at height {}: {}. This node could not write the block to "
        "its database; no further block will be applied. Fix the disk (space, permissions, "
        "hardware), then restart: the node resumes from the last block it wrote.",
        chain_.height(), why.ToString());
  } else {
    log_->critical(
        "STOPPED FOLLOWING THE LEDGER at height {}: {}. The sequencer sent a block this node "
        "cannot verify or re-execute; no further block will be applied. Investigate, then "
        "restart.",
        chain_.height(), why.ToString());
  }
  if (peer_) {
    Status s = host_.Disconnect(
        *peer_, (disk ? "cannot write block: " : "invalid block: ") + why.message());
    (void)s;
  }
  Status s = host_.RemovePersistentPeer(sequencer_);
  (void)s;
}

void LedgerClient::Submit(const v1::Transaction& tx,
                          std::function<void(const SubmitOutcome&)> done) {
  if (!peer_) {
    done(SubmitOutcome::Unknown("not connected to the ledger"));
    return;
  }
  uint64_t id = next_request_id_++;
  v1::Envelope env;
  env.mutable_submit_tx()->set_request_id(id);
  *env.mutable_submit_tx()->mutable_tx() = tx;
  Status s = host_.Send(*peer_, env);
  if (!s.ok()) {
    done(SubmitOutcome::Unknown("cannot send to the ledger: " + s.message()));
    return;
  }
  submits_.emplace(id, std::move(done));
}

LedgerLink::WaitId LedgerClient::WhenIncluded(const Hash32& tx_id,
                                              std::function<void(uint64_t height)> done) {
  auto loc = chain_.FindTransaction(tx_id);
  if (loc.ok() && loc->has_value()) {
    done((*loc)->height());
    return 0;
  }
  const WaitId id = next_wait_id_++;
  inclusion_waiters_.emplace(id, Wait{tx_id, std::move(done)});
  waits_by_tx_.emplace(tx_id, id);
  return id;
}

void LedgerClient::CancelWait(WaitId id) {
  auto it = inclusion_waiters_.find(id);
  if (it == inclusion_waiters_.end()) return;
  auto [lo, hi] = waits_by_tx_.equal_range(it->second.tx_id);
  for (auto w = lo; w != hi; ++w) {
    if (w->second == id) {
      waits_by_tx_.erase(w);
      break;
    }
  }
  inclusion_waiters_.erase(it);
}

void LedgerClient::AddBlockObserver(std::function<void(const v1::Block&)> observer) {
  observers_.push_back(std::move(observer));
}

uint64_t LedgerClient::NextNonce(const AccountId& account) {
  const Account* a = chain_.state().FindAccount(account);
  uint64_t& next = next_nonce_[account];
  next = std::max(next, a ? a->nonce : uint64_t{0});
  return next++;
}

}  // namespace tipd::ledger
