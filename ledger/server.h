// The sequencer's network face: serves the ledger protocol over p2p and seals
// blocks on a timer (or, for tests, on demand: LedgerServerOptions::seal_on_demand).
//
// Protocol (messages in proto/tipd/wire.proto, see docs/ledger.md):
//   SubmitTx        -> SubmitTxResult: accepted into the pending block (with
//                      its id), or rejected with the rule's code and reason.
//                      Accepted is not included: inclusion is a block.
//   GetBlocks       -> Blocks: consecutive blocks from a height, as many as
//                      fit one frame, plus the tip height.
//   SubscribeBlocks -> NewBlock for every block sealed from then on. A
//                      subscriber whose send queue is full misses the push and
//                      catches up with GetBlocks when it sees the gap.
//   GetAccount      -> AccountInfo;  GetChannel -> ChannelInfo (sealed state).
//
// Serving blocks is rate-limited per peer (LedgerServerOptions::serve_*): the
// bytes of Blocks replies (GetBlocks and the catch-up of SubscribeBlocks) are
// charged against a token bucket. A request that finds the bucket empty, or
// the peer's send queue above serve_max_queued_bytes, waits (answered later,
// in order); a peer that has more than serve_max_waiting requests waiting
// gets Error RATE_LIMITED and is disconnected. An honest follower has one
// request in flight at a time, so it is only ever delayed, never refused.
//
// Threading: everything runs on the io_context thread that drives the Host.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>

#include "crypto/crypto.h"
#include "ledger/chain.h"
#include "p2p/p2p.h"
#include "util/clock.h"

namespace spdlog {
class logger;
}

namespace tipd::ledger {

struct LedgerServerOptions {
  uint64_t block_interval_ms = 1000;
  // Seal as soon as transactions arrive (coalescing whatever arrived in the
  // same io_context turn) instead of waiting for the interval. For tests and
  // devnets that want low latency.
  bool seal_on_submit = false;
  // No block timer: blocks are sealed only when SealNow() is called (in
  // `tipd ledger --seal-on-demand`, on SIGUSR1), by seal_on_submit, or when
  // the pending block is full. Block production is then under the control
  // of whoever calls SealNow: the integration tests use it to hold a settle
  // window open or to close it exactly, instead of racing a timer. Never for
  // a real network (docs/ledger.md "Sealing on demand").
  bool seal_on_demand = false;
  // A block's transactions never exceed this many serialized bytes, so every
  // block fits one transport frame; a full pending block is sealed at once.
  size_t max_block_tx_bytes = 60'000;
  // Block serving budget per peer: bytes of Blocks replies per second, and
  // the bucket size (a new peer starts with a full bucket).
  size_t serve_bytes_per_second = 4 << 20;
  size_t serve_burst_bytes = 16 << 20;
  // A request is not served while the peer's p2p send queue holds more than
  // this (it is not reading): replies then wait instead of piling up.
  size_t serve_max_queued_bytes = 256 << 10;
  // Requests per peer that may wait for the budget; one more is refused with
  // Error RATE_LIMITED and the peer is disconnected.
  size_t serve_max_waiting = 4;
};

// Error code sent to a peer that exceeds the block-serving limits.
inline constexpr char kRateLimitedCode[] = "RATE_LIMITED";

class LedgerServer {
 public:
  // All references must outlive the server.
  LedgerServer(boost::asio::io_context& io, p2p::Host& host, ledger::Chain& chain,
               const crypto::KeyPair& sequencer, crypto::RandomSource& rng, const Clock& clock,
               LedgerServerOptions options, std::shared_ptr<spdlog::logger> log);
  ~LedgerServer();

  // Installs the Host callbacks and starts the block timer (none with
  // seal_on_demand).
  void Start();
  // Seals what is pending (so accepted transactions are not dropped by a
  // graceful stop) and stops the timer.
  void Stop();

  // Seals the pending block now (an empty one if nothing is pending).
  // Errors are logged and halt the ledger.
  void SealNow();

  uint64_t height() const { return chain_.height(); }
  const Status& health() const { return chain_.health(); }
  // Block requests waiting for a peer's serving budget, over all peers.
  size_t waiting_requests() const;

 private:
  void OnMessage(p2p::PeerId peer, const v1::Envelope& env);
  void HandleSubmit(p2p::PeerId peer, const v1::SubmitTx& req);
  // Serves now if the peer's budget allows, else queues it (or refuses).
  void HandleGetBlocks(p2p::PeerId peer, const v1::GetBlocks& req);
  void ServeBlocks(p2p::PeerId peer, const v1::GetBlocks& req);
  void HandleGetAccount(p2p::PeerId peer, const v1::GetAccount& req);
  void HandleGetChannel(p2p::PeerId peer, const v1::GetChannel& req);
  void Reply(p2p::PeerId peer, const v1::Envelope& env);
  void ScheduleTimer();
  void ScheduleSealSoon();
  void Broadcast(const v1::Block& block);

  // Per-peer block-serving budget (see LedgerServerOptions::serve_*).
  struct ServeBudget {
    double tokens = 0;  // bytes; may go negative by at most one reply
    std::chrono::steady_clock::time_point refilled_at;
    std::deque<v1::GetBlocks> waiting;
  };
  // Refills `b`; true if a reply may be sent to `peer` now.
  bool CanServe(p2p::PeerId peer, ServeBudget& b);
  // Serves waiting requests that the budgets now allow; re-arms serve_timer_.
  void ServeWaiting();
  void ArmServeTimer();

  boost::asio::io_context& io_;
  p2p::Host& host_;
  ledger::Chain& chain_;
  const crypto::KeyPair& sequencer_;
  crypto::RandomSource& rng_;
  const Clock& clock_;
  LedgerServerOptions options_;
  boost::asio::steady_timer timer_;
  std::chrono::steady_clock::time_point next_seal_{};
  std::set<p2p::PeerId> subscribers_;
  std::map<p2p::PeerId, ServeBudget> budgets_;
  boost::asio::steady_timer serve_timer_;
  bool serve_timer_armed_ = false;
  size_t pending_bytes_ = 0;
  bool seal_scheduled_ = false;
  bool stopped_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::shared_ptr<spdlog::logger> log_;
};

// Fills `out` with consecutive stored blocks from `from` while they fit in
// `max_bytes` (at least one if any exists) and `max_blocks`.
Status CollectBlocks(const ledger::Chain& chain, uint64_t from, size_t max_blocks, size_t max_bytes,
                     v1::Blocks* out);

}  // namespace tipd::ledger
