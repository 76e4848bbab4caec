// The watcher: defends this node's channels once the ledger shows them
// CLOSING (LDK's ChannelMonitor plays this part).
//
// After every followed block (and at start, so a restart resumes the watch)
// the channel manager calls Check for each of its channels the ledger shows
// closing, with the newest proof the peer signed that this node holds:
//   - while the settle window is open and the ledger holds an older proof of
//     the peer's direction (whoever closed), submit ours (UpdateProof): it
//     pays this node, so the ledger takes it only from us;
//   - once a transaction sent now would land after the window, submit Settle.
// Retry policy: a duty is done only when the ledger shows it done (our proof
// or a newer one held; the channel settled). A submission in flight is
// awaited; one the sequencer accepted gets one block to be included; after
// that, or after any refusal or unknown outcome, the next block submits
// again (TxSender gives the nonce a refused transaction did not use to the
// next one, so a refusal never leaves a nonce gap). Nothing here is persisted: the facts
// come from the ledger and the channel store.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "ledger/rules.h"
#include "node/tx_sender.h"
#include "tipd/channel.pb.h"

namespace spdlog {
class logger;
}

namespace tipd::node {

struct WatchView {
  std::string channel_id;  // 32 bytes
  bool local_is_a = false;
  // The newest proof of the peer's direction this node holds (signed by the
  // peer; it pays us), if any.
  std::optional<v1::BalanceProof> partner_proof;
};

class Watcher {
 public:
  Watcher(TxSender& txs, std::shared_ptr<spdlog::logger> log);
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  // `onchain` is the ledger's view of the channel at followed `height`.
  void Check(const WatchView& view, const ledger::Channel& onchain, uint64_t height);
  // The channel settled or is no longer ours to watch.
  void Forget(const std::string& channel_id);

  struct Counts {
    uint64_t proofs_submitted = 0;
    uint64_t settles_submitted = 0;
    uint64_t refusals = 0;
  };
  const Counts& counts() const { return counts_; }

 private:
  // One kind of submission for one channel.
  struct Attempt {
    bool in_flight = false;
    bool accepted = false;     // the last answer was "accepted"
    uint64_t sent_height = 0;  // followed height when it was sent
    uint64_t nonce = 0;        // the proof's nonce (UpdateProof only)
    // Whether to (re)submit now, at followed `height`.
    bool Due(uint64_t height) const;
  };
  struct Duty {
    Attempt proof;
    Attempt settle;
  };
  void SubmitProof(const std::string& id, const v1::BalanceProof& proof, uint64_t height);
  void SubmitSettle(const std::string& id, uint64_t height);
  void Submit(const std::string& id, Attempt Duty::*which, v1::Transaction tx, uint64_t height,
              const char* what);

  TxSender& txs_;
  std::shared_ptr<spdlog::logger> log_;
  std::map<std::string, Duty> duties_;
  Counts counts_;
  std::shared_ptr<bool> alive_;
};

}  // namespace tipd::node
