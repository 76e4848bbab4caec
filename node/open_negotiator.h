// The open negotiation: two nodes agree on a channel before either signs the
// ledger transaction that opens it.
//
//   A (opener)                                   B (acceptor)
//   Open(): checks, OpenChannel{deposit_a,   ->  HandleOpenChannel: chain, funder
//     push request, settle timeout, limits,      key = session key, bounds,
//     nonce_a}; a timer bounds the wait          limits, its policy and balance;
//                                                then `accepted` (the manager
//                                                persists the channel) and only
//                                           <-   then AcceptChannel{B's
//                                                signature over the agreement}
//   HandleAcceptChannel: verifies B's
//     signature, signs ChannelOpenTx, then
//     `agreed` (the manager persists, submits
//     and waits for the block)
//
// Refusals travel as RejectChannel (code + reason); a negotiation ends on an
// answer, a refusal, the peer's disconnect or the timeout, and then forgets
// every handed-out account nonce so that no gap is left.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "channel/channel.h"
#include "crypto/crypto.h"
#include "ledger/link.h"
#include "node/seams.h"
#include "node/tx_sender.h"
#include "tipd/api.pb.h"
#include "tipd/storage.pb.h"
#include "tipd/wire.pb.h"

namespace spdlog {
class logger;
}

namespace tipd::node {

// Answer to a channel API call: the channel as it stands, and the id of the
// ledger transaction it submitted (hex; may be empty).
using ChannelCallback = std::function<void(Result<v1::ChannelApi>, std::string tx_id)>;

struct OpenPolicy {
  // Limits we announce and accept.
  uint32_t max_updates_in_flight = 16;
  uint32_t max_tips_per_update = 256;
  size_t max_update_bytes = channel::kDefaultMaxUpdateBytes;
  size_t max_queued_tips = 4096;
  // Settle timeout (blocks) when an open request gives none; raised to the
  // minimum and clamped to the genesis bounds.
  uint64_t default_settle_timeout = 20;
  // The shortest settle window (blocks) this node opens or accepts: its
  // watcher must be able to act within it, whatever the opener asks.
  uint64_t min_settle_timeout = 0;
  // Most an accepting node puts into a channel a peer opens (the peer's
  // push_deposit request); 0 = never fund a channel the peer opens.
  uint64_t max_accept_deposit = 0;
  // A negotiation the peer does not answer in time.
  std::chrono::milliseconds negotiation_timeout{30'000};
  // Channels peers opened that the ledger has not opened yet: each costs a
  // record and a signature, so a peer may have only a few at once.
  size_t max_pending_opens_per_peer = 4;
  size_t max_pending_opens = 64;
  // An open this node accepted without funding it (deposit_b 0) that the
  // ledger has not opened this many blocks after the node stored it (or
  // restarted) is abandoned: its slot is freed, so peers that never submit
  // their opens cannot hold the limits above for ever. Should it land later
  // anyway, this node has nothing in it and ignores it; the opener can close
  // it alone.
  uint64_t unfunded_open_deadline_blocks = 100;
};

// A channel both sides agreed on, not yet opened on the ledger.
struct AgreedChannel {
  v1::StoredChannel record;  // phase OPENING
  channel::ChannelParams params;
  crypto::PublicKey peer;
  p2p::PeerId session = 0;
};

class OpenNegotiator {
 public:
  struct Callbacks {
    // Whether this node already has a channel with this id.
    std::function<bool(const std::string& channel_id)> channel_exists;
    // The ledger balance this node must keep to defend its channels, counting
    // `extra` channels more (docs/channels.md, "Fee reserve").
    std::function<uint64_t(uint64_t extra)> fee_reserve;
    // Channels still OPENING with this peer, and in all.
    std::function<std::pair<size_t, size_t>(const crypto::PublicKey& peer)> pending_opens;
    // B: the peer's open is acceptable. Persist the channel, then send
    // `accept` to the peer (our signature is a promise).
    std::function<void(AgreedChannel channel, v1::Envelope accept)> accepted;
    // A: the peer signed. Persist the channel, then submit `open_tx` (signed)
    // and answer `done` once the ledger includes it or after `wait`.
    std::function<void(AgreedChannel channel, v1::Transaction open_tx, std::string temporary_id,
                       std::chrono::milliseconds wait, ChannelCallback done)>
        agreed;
  };

  OpenNegotiator(const crypto::KeyPair& key, ledger::LedgerLink& ledger, TxSender& txs,
                 PeerTransport& peers, Timers& timers, crypto::RandomSource& rng, OpenPolicy policy,
                 Callbacks callbacks, std::shared_ptr<spdlog::logger> log);
  ~OpenNegotiator();
  OpenNegotiator(const OpenNegotiator&) = delete;
  OpenNegotiator& operator=(const OpenNegotiator&) = delete;

  // A: starts a negotiation (refuses at once what this node cannot do).
  void Open(const crypto::PublicKey& peer, uint64_t deposit, uint64_t push_deposit,
            uint64_t settle_timeout, std::chrono::milliseconds wait, ChannelCallback done);

  void HandleOpenChannel(p2p::PeerId peer, const crypto::PublicKey& node, const v1::OpenChannel& m);
  void HandleAcceptChannel(p2p::PeerId peer, const v1::AcceptChannel& m);
  void HandleRejectChannel(p2p::PeerId peer, const v1::RejectChannel& m);
  // An Error naming a negotiation's temporary id ends it; true if it did.
  bool OnPeerError(p2p::PeerId peer, const v1::Error& error);
  void OnPeerDisconnected(p2p::PeerId peer, const std::string& why);

  size_t pending() const { return negotiations_.size(); }
  const OpenPolicy& policy() const { return policy_; }

 private:
  struct Negotiation;
  // Sends the open request once the open's nonce is reserved.
  void Begin(const crypto::PublicKey& peer, uint64_t deposit, uint64_t push,
             uint64_t settle_timeout, std::chrono::milliseconds wait, ChannelCallback done,
             uint64_t nonce_a);
  // Ends a negotiation we started with `why` (not OK) for its caller, and
  // gives its nonce back.
  void End(const std::string& temporary_id, Status why);

  const crypto::KeyPair& key_;
  ledger::LedgerLink& ledger_;
  TxSender& txs_;
  PeerTransport& peers_;
  Timers& timers_;
  crypto::RandomSource& rng_;
  OpenPolicy policy_;
  Callbacks callbacks_;
  std::shared_ptr<spdlog::logger> log_;
  std::map<std::string, std::unique_ptr<Negotiation>> negotiations_;  // by temporary id
  std::shared_ptr<bool> alive_;
};

}  // namespace tipd::node
