// The channel manager's seams: everything it needs from outside the node's
// channel logic, as small interfaces. The daemon plugs in the real parts
// (p2p::Host, the asio timers, the event log, the token spend caps); the
// in-process tests plug in an in-memory transport, manual timers and a
// ledger they seal by hand (tests/support/node_harness.h). The ledger seam
// is ledger::LedgerLink (ledger/link.h), the time seams tipd::Clock and
// tipd::Timers (util/clock.h).
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "crypto/crypto.h"
#include "p2p/p2p.h"
#include "storage/storage.h"
#include "tipd/api.pb.h"
#include "tipd/wire.pb.h"
#include "util/clock.h"
#include "util/status.h"

namespace tipd::node {

// The peers: sessions identified by p2p::PeerId, each authenticated as a
// node key. Send never blocks; a refused send (queue full, peer gone) is
// reported, and the caller decides (the manager drops the session so that
// reestablish resends what was lost).
class PeerTransport {
 public:
  virtual ~PeerTransport() = default;
  virtual Status Send(p2p::PeerId peer, const v1::Envelope& env) = 0;
  virtual void Disconnect(p2p::PeerId peer, const std::string& reason) = 0;
  // The node key of a connected session.
  virtual std::optional<crypto::PublicKey> PeerKey(p2p::PeerId peer) const = 0;
  // The connected session with this node key.
  virtual std::optional<p2p::PeerId> FindPeer(const crypto::PublicKey& node) const = 0;
  // How many more messages the session takes before its send queue is full
  // (a full queue drops the session); large if the transport has no bound.
  virtual size_t SendRoom(p2p::PeerId peer) const = 0;
};

// PeerTransport over the real p2p::Host.
class HostTransport final : public PeerTransport {
 public:
  // `max_send_queue`: the host's HostOptions::max_send_queue_messages.
  HostTransport(p2p::Host& host, size_t max_send_queue)
      : host_(host), max_send_queue_(max_send_queue) {}
  Status Send(p2p::PeerId peer, const v1::Envelope& env) override { return host_.Send(peer, env); }
  void Disconnect(p2p::PeerId peer, const std::string& reason) override {
    (void)host_.Disconnect(peer, reason);
  }
  std::optional<crypto::PublicKey> PeerKey(p2p::PeerId peer) const override;
  std::optional<p2p::PeerId> FindPeer(const crypto::PublicKey& node) const override {
    return host_.FindPeer(node);
  }
  size_t SendRoom(p2p::PeerId peer) const override;

 private:
  p2p::Host& host_;
  size_t max_send_queue_;
};

// Timers on an io_context (steady_timer); callbacks run on its thread.
class AsioTimers final : public Timers {
 public:
  explicit AsioTimers(boost::asio::io_context& io);
  ~AsioTimers() override;
  Id After(std::chrono::milliseconds delay, std::function<void()> fn) override;
  void Cancel(Id id) override;
  size_t pending() const { return timers_.size(); }

 private:
  struct Entry;
  boost::asio::io_context& io_;
  Id next_id_ = 1;
  std::map<Id, std::shared_ptr<Entry>> timers_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Where the manager's events go (GET /v1/events). Stage assigns the event's
// id and adds its record to the batch; Publish delivers it once that batch is
// durable; Append persists and publishes an event that has no other write.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual uint64_t Stage(storage::WriteBatch* batch, v1::Event* event) = 0;
  virtual void Publish(const v1::Event& event) = 0;
  virtual void Append(v1::Event event) = 0;
  // The batch holding a staged event failed: later events must not wait for it.
  virtual void Abandon(uint64_t id) = 0;
};

// What a tip may spend of its requester's budget (a token's daily cap). The
// manager reserves only once the request is known to be new (a replay is
// never charged), stages the spend in the batch that pays the tip, and
// drops the charge otherwise (dropping releases a reservation).
// Why a charge refused a tip (see TipCharge::Admit).
struct ChargeRefusal {
  enum class Kind {
    kBudget,       // the budget cannot cover it (TipError::kSpendCapExceeded)
    kNotAllowed,   // the requester may not send this tip (TipError::kNotAllowed)
    kRateLimited,  // too many tips too fast (TipError::kRateLimited)
  };
  Kind kind = Kind::kBudget;
  std::string code;  // the API's machine code; empty: the TipError's own
  std::string message;
  int64_t retry_after_ms = 0;  // kRateLimited: when a retry may pass
};

class TipCharge {
 public:
  virtual ~TipCharge() = default;
  // kResourceExhausted when the budget cannot cover `amount`.
  virtual Status Reserve(uint64_t amount) = 0;
  // Makes the reservation spent, written with `batch`.
  virtual void CommitToBatch(storage::WriteBatch* batch) = 0;
  // The manager's call once the channel is resolved (and the request known
  // to be new): the requester's restrictions on this tip (a token's largest
  // tip, its channels and peers, its rate) and then its budget. The default
  // is Reserve alone.
  virtual std::optional<ChargeRefusal> Admit(const std::string& channel_id,
                                             const crypto::PublicKey& peer, uint64_t amount) {
    (void)channel_id;
    (void)peer;
    Status s = Reserve(amount);
    if (s.ok()) return std::nullopt;
    return ChargeRefusal{ChargeRefusal::Kind::kBudget, "", s.message(), 0};
  }
};

}  // namespace tipd::node
