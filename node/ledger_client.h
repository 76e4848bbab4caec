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
#include "p2p/p2p.h"

namespace spdlog {
class logger;
}

namespace tipd::node {

struct SubmitOutcome {
  bool accepted = false;
  Hash32 tx_id{};
  std::string code;  // rejection code (ledger rule, or LEDGER_UNAVAILABLE)
  std::string message;
};

class LedgerClient {
 public:
  // `host` must already be listening or at least constructed; the caller
  // routes Host events here (see On* below). References must outlive this.
  LedgerClient(p2p::Host& host, ledger::Chain& chain, const crypto::PublicKey& sequencer,
               std::string address, uint16_t port);
  ~LedgerClient();

  // Starts the persistent connection to the sequencer.
  Status Start();

  // Host event routing. Each returns true if the event belonged to the ledger
  // connection (and was handled), false to let the caller handle it.
  bool OnConnected(const p2p::PeerInfo& info);
  bool OnDisconnected(const p2p::DisconnectEvent& ev);
  bool OnMessage(p2p::PeerId peer, const v1::Envelope& env);

  bool connected() const { return peer_.has_value(); }
  uint64_t height() const { return chain_.height(); }
  // Not OK once following stopped on a bad block.
  const Status& health() const { return halted_; }
  const ledger::Chain& chain() const { return chain_; }

  // Sends `tx` to the sequencer; `done` runs once with the answer, or with
  // code LEDGER_UNAVAILABLE if there is no connection or it drops first (the
  // transaction may then still have been accepted: check inclusion or nonce).
  void Submit(const v1::Transaction& tx, std::function<void(const SubmitOutcome&)> done);
  // Runs `done(height)` once a block holding `tx_id` is persisted here
  // (at once if it already is).
  void WhenIncluded(const Hash32& tx_id, std::function<void(uint64_t height)> done);
  // Runs after every block is persisted here, in order.
  void AddBlockObserver(std::function<void(const v1::Block&)> observer);

  // The account nonce for `account`'s next transaction: the chain's nonce,
  // or one past the last nonce handed out if that is higher (several
  // transactions may be pending at once). Every sender of this node's
  // transactions (API transfers, the channel manager) draws from here.
  uint64_t NextNonce(const ledger::AccountId& account);
  // Forgets handed-out nonces (after a rejection): the next NextNonce starts
  // from the chain's nonce again.
  void ResetNonces() { next_nonce_.clear(); }

 private:
  void RequestBlocks();
  void ApplyBlock(const v1::Block& block);
  void Halt(const Status& why);
  void FailPending(const std::string& why);

  p2p::Host& host_;
  ledger::Chain& chain_;
  crypto::PublicKey sequencer_;
  std::string address_;
  uint16_t port_;
  std::optional<p2p::PeerId> peer_;
  bool sync_in_flight_ = false;
  uint64_t next_request_id_ = 1;
  std::map<uint64_t, std::function<void(const SubmitOutcome&)>> submits_;
  std::multimap<Hash32, std::function<void(uint64_t)>> inclusion_waiters_;
  std::vector<std::function<void(const v1::Block&)>> observers_;
  std::map<ledger::AccountId, uint64_t> next_nonce_;
  Status halted_;
  std::shared_ptr<spdlog::logger> log_;
};

}  // namespace tipd::node
