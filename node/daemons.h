// The long-running processes: `tipd ledger` (the sequencer) and `tipd node`
// (a payment-channel node following the ledger), and `tipd ledger init`.
// Each Run* owns its subsystems (the composition root), returns the process
// exit code, and stops gracefully on SIGTERM/SIGINT.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "node/config.h"

namespace tipd::node {

struct LedgerInitOptions {
  std::filesystem::path datadir;
  std::string chain_id = "tipd-devnet";
  // Accounts to fund: x-only (64 hex) or node id (66 hex) -> amount.
  std::vector<std::pair<std::string, uint64_t>> allocations;
  uint64_t fee_per_tx = 1;
  uint64_t min_settle_timeout = 3;
  uint64_t max_settle_timeout = 1000;
  uint64_t block_interval_ms = 1000;
  HostPort listen{"127.0.0.1", 9736};
};
// Writes <datadir>/sequencer.key (0600; its public key has even Y, so the
// x-only key in the genesis also names the node id 02||x), <datadir>/genesis.json
// and <datadir>/tipd.conf. Refuses to overwrite an existing genesis. Prints
// the ledger address nodes use (`HOST:PORT@NODEID`).
int RunLedgerInit(const LedgerInitOptions& options);

int RunLedger(const LedgerConfig& config);
int RunNode(const NodeConfig& config);

// "localhost" -> "127.0.0.1"; p2p dials numeric addresses only.
std::string NumericHost(const std::string& host);

}  // namespace tipd::node
