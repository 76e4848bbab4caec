// A node's link to the ledger: follows the sequencer's chain into the node's
// own store (re-executing every block with ledger::Chain) and submits
// transactions.
//
// Sync: on every (re)connect it subscribes from its height + 1; the sequencer
// answers with the blocks it lacks and then pushes each new block. A gap (a
// push it missed) triggers GetBlocks from its height + 1. A block that fails
// verification or re-execution stops following for good, loudly: the node
// keeps serving from its last good state but never applies another block
// until an operator investigates and restarts it.
//
// Threading: everything runs on the io_context thread that drives the Host.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "crypto/crypto.h"
#include "ledger/chain.h"
#include "ledger/link.h"
#include "p2p/p2p.h"

namespace spdlog {
class logger;
}

namespace tipd::ledger {

class LedgerClient final : public LedgerLink {
 public:
  // `host` must already be listening or at least constructed; the caller
  // routes Host events here (see On* below). References must outlive this.
  LedgerClient(p2p::Host& host, Chain& chain, const crypto::PublicKey& sequencer,
               std::string address, uint16_t port, std::shared_ptr<spdlog::logger> log);
  ~LedgerClient() override;

  // Starts the persistent connection to the sequencer.
  Status Start();

  // Host event routing. Each returns true if the event belonged to the ledger
  // connection (and was handled), false to let the caller handle it.
  bool OnConnected(const p2p::PeerInfo& info);
  bool OnDisconnected(const p2p::DisconnectEvent& ev);
  bool OnMessage(p2p::PeerId peer, const v1::Envelope& env);

  bool connected() const override { return peer_.has_value(); }
  uint64_t height() const { return chain_.height(); }
  // Not OK once following stopped on a bad block.
  const Status& health() const { return halted_; }
  // The highest height the sequencer announced (a Blocks reply's tip, a
  // pushed block); 0 until the first answer. GET /readyz compares it with
  // height().
  uint64_t sequencer_height() const { return sequencer_height_; }
  // True once a Blocks reply found this node caught up (since start).
  bool synced() const { return synced_; }
  const Chain& chain() const override { return chain_; }

  // LedgerLink. Submit answers kUnknown ("LEDGER_UNAVAILABLE") without a
  // connection or when it drops before the answer.
  void Submit(const v1::Transaction& tx, std::function<void(const SubmitOutcome&)> done) override;
  WaitId WhenIncluded(const Hash32& tx_id, std::function<void(uint64_t height)> done) override;
  void CancelWait(WaitId id) override;
  void AddBlockObserver(std::function<void(const v1::Block&)> observer) override;
  uint64_t NextNonce(const AccountId& account) override;
  void ResetNonces() override { next_nonce_.clear(); }
  size_t inclusion_waits() const { return inclusion_waiters_.size(); }

 private:
  void RequestBlocks();
  void ApplyBlock(const v1::Block& block);
  void Halt(const Status& why);
  void FailPending(const std::string& why);

  p2p::Host& host_;
  Chain& chain_;
  crypto::PublicKey sequencer_;
  std::string address_;
  uint16_t port_;
  std::optional<p2p::PeerId> peer_;
  bool sync_in_flight_ = false;
  uint64_t next_request_id_ = 1;
  std::map<uint64_t, std::function<void(const SubmitOutcome&)>> submits_;
  struct Wait {
    Hash32 tx_id;
    std::function<void(uint64_t)> done;
  };
  WaitId next_wait_id_ = 1;
  std::map<WaitId, Wait> inclusion_waiters_;
  std::multimap<Hash32, WaitId> waits_by_tx_;
  std::vector<std::function<void(const v1::Block&)>> observers_;
  std::map<AccountId, uint64_t> next_nonce_;
  Status halted_;
  uint64_t sequencer_height_ = 0;
  bool synced_ = false;
  std::shared_ptr<spdlog::logger> log_;
};

}  // namespace tipd::ledger
