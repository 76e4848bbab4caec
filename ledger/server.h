// The sequencer's network face: serves the ledger protocol over p2p and seals
// blocks on a timer.
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
// Threading: everything runs on the io_context thread that drives the Host.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
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
  // A block's transactions never exceed this many serialized bytes, so every
  // block fits one transport frame; a full pending block is sealed at once.
  size_t max_block_tx_bytes = 60'000;
};

class LedgerServer {
 public:
  // All references must outlive the server.
  LedgerServer(boost::asio::io_context& io, p2p::Host& host, ledger::Chain& chain,
               const crypto::KeyPair& sequencer, crypto::RandomSource& rng, const Clock& clock,
               LedgerServerOptions options, std::shared_ptr<spdlog::logger> log);
  ~LedgerServer();

  // Installs the Host callbacks and starts the block timer.
  void Start();
  // Seals what is pending (so accepted transactions are not dropped by a
  // graceful stop) and stops the timer.
  void Stop();

  // Seals the pending block now. Errors are logged and halt the ledger.
  void SealNow();

  uint64_t height() const { return chain_.height(); }
  const Status& health() const { return chain_.health(); }

 private:
  void OnMessage(p2p::PeerId peer, const v1::Envelope& env);
  void HandleSubmit(p2p::PeerId peer, const v1::SubmitTx& req);
  void HandleGetBlocks(p2p::PeerId peer, const v1::GetBlocks& req);
  void HandleGetAccount(p2p::PeerId peer, const v1::GetAccount& req);
  void HandleGetChannel(p2p::PeerId peer, const v1::GetChannel& req);
  void Reply(p2p::PeerId peer, const v1::Envelope& env);
  void ScheduleTimer();
  void ScheduleSealSoon();
  void Broadcast(const v1::Block& block);

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
