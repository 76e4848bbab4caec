// Multi-process test network: a real `tipd ledger` and real `tipd node`
// processes on loopback, plus an in-test client built from the project's own
// libraries (p2p Host + LedgerClient + a follower Chain) that submits
// transactions and follows the chain like any node.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/crypto.h"
#include "ledger/chain.h"
#include "ledger/client.h"
#include "ledger/codec.h"
#include "ledger/genesis.h"
#include "p2p/p2p.h"
#include "storage/storage.h"
#include "tests/support/process.h"
#include "tests/support/test_support.h"

namespace tipd::testing {

using namespace std::chrono_literals;

inline std::string Str(ByteSpan b) { return std::string(AsStringView(b)); }

// Runs `io` until `done()` or the deadline; true if done.
template <typename Pred>
bool RunUntil(boost::asio::io_context& io, Pred done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    io.restart();
    io.run_one_for(20ms);
  }
  return true;
}

// The in-test ledger client: follows the chain into its own store.
class TestClient {
 public:
  TestClient(const std::filesystem::path& dir, const v1::GenesisParams& genesis,
             const crypto::PublicKey& sequencer, uint16_t ledger_port);
  ~TestClient();

  boost::asio::io_context& io() { return io_; }
  ledger::LedgerClient& ledger() { return *client_; }
  ledger::Chain& chain() { return *chain_; }
  bool WaitConnected(std::chrono::milliseconds timeout = 20s);
  // Submits and waits for the answer.
  ledger::SubmitOutcome SubmitAndWait(const v1::Transaction& tx,
                                      std::chrono::milliseconds timeout = 20s);
  // Submits, expects acceptance, and waits until a followed block holds it;
  // returns the height (0 on failure, with a gtest failure recorded).
  uint64_t SubmitAndInclude(const v1::Transaction& tx, std::chrono::milliseconds timeout = 30s);
  bool WaitHeight(uint64_t height, std::chrono::milliseconds timeout = 30s);

 private:
  boost::asio::io_context io_;
  crypto::KeyPair identity_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<ledger::Chain> chain_;
  std::unique_ptr<p2p::Host> host_;
  std::unique_ptr<ledger::LedgerClient> client_;
};

// Funded accounts the test signs for.
struct Account {
  crypto::KeyPair key;
  uint64_t nonce = 0;
};

// The TCP port in the first "<prefix><digits>" of `text`, if any (e.g.
// PortAfter(log, "listening on 127.0.0.1:")).
std::optional<uint16_t> PortAfter(const std::string& text, std::string_view prefix);

// Starts `argv` (output appended to `log_path`) and waits until its output
// shows `ready`. A start that fails because a fixed port is taken ("Address
// already in use": another test's process or a connection's ephemeral port
// holds it for a moment) is retried until `timeout`. nullptr with the
// reason (and the output) in *error otherwise.
std::unique_ptr<Process> StartListening(const std::vector<std::string>& argv,
                                        const std::filesystem::path& log_path,
                                        std::string_view ready, std::chrono::milliseconds timeout,
                                        std::string* error);

// Ports: every process binds port 0 on its first start and the fixture reads
// the bound port from its log ("listening on 127.0.0.1:PORT"), so parallel
// tests (ctest -j) never race for a pre-chosen free port. A restart keeps
// the port (peers and nodes know it), retrying while it is briefly taken.
class NetworkFixture : public ::testing::Test {
 protected:
  NetworkFixture();
  ~NetworkFixture() override;

  // `tipd ledger init` with the test accounts funded (the ledger listens on
  // port 0: StartLedger learns the real one).
  void InitLedger(uint64_t block_interval_ms, uint64_t min_settle_timeout = 3);
  // Starts (or restarts, on the same port) the ledger process; waits until
  // it listens. Pass kSealOnDemand (and kSealOnSubmit) to hold block
  // production under the test's control (SealBlocks).
  void StartLedger(const std::vector<std::string>& extra = {});
  void StopLedger(int signo = SIGTERM);

  // Ledger flags: no block timer, SIGUSR1 seals one block (docs/ledger.md);
  // and seal a block as soon as a transaction arrives.
  static constexpr const char* kSealOnDemand = "--seal-on-demand";
  static constexpr const char* kSealOnSubmit = "--seal-on-submit";
  // With a ledger started with kSealOnDemand: seals `n` blocks, one SIGUSR1
  // at a time, each awaited in the ledger's log ("sealed on demand: block
  // H"). Returns the last height sealed (0 with a gtest failure if a seal was
  // not seen within 30 s).
  uint64_t SealBlocks(int n = 1);
  // Seals one block at a time until `done()`: after each block, `c` follows
  // it and `done` gets `per_block` to become true. False (not a gtest
  // failure) if `max_blocks` were sealed without it. Protocol time advances
  // only as the test decides: a window of W blocks cannot close before W
  // blocks were sealed here, however slow the machine.
  template <typename Pred>
  bool SealUntil(TestClient& c, Pred done, int max_blocks,
                 std::chrono::milliseconds per_block = std::chrono::seconds(10)) {
    for (int i = 0; i < max_blocks; ++i) {
      if (done()) return true;
      const uint64_t h = SealBlocks(1);
      if (h == 0 || !c.WaitHeight(h)) return false;
      if (RunUntil(c.io(), done, per_block)) return true;
    }
    return done();
  }

  // Starts node `name` following the ledger; waits until it reports ready.
  // `key`, if given, becomes the node's key (so the genesis can fund it);
  // `rpc_port`, if non-zero, is its API port (0: the one it had before, or
  // any free one; RpcPort() tells).
  // `p2p_port` (0: the one it had before, or any free one) is its peer port;
  // `extra` are further flags.
  Process* StartNode(const std::string& name, const crypto::KeyPair* key = nullptr,
                     uint16_t rpc_port = 0, uint16_t p2p_port = 0,
                     const std::vector<std::string>& extra = {});
  uint16_t P2pPort(const std::string& name) const { return p2p_ports_.at(name); }
  uint16_t RpcPort(const std::string& name) const { return rpc_ports_.at(name); }
  std::filesystem::path NodeDir(const std::string& name) const { return dir_.path() / name; }
  std::unique_ptr<TestClient> Client(const std::string& name = "client");

  v1::Transaction Transfer(Account& from, const Account& to, uint64_t amount);

  TempDir dir_{"tipd-net"};
  std::filesystem::path ledger_dir_;
  uint16_t ledger_port_ = 0;
  std::unique_ptr<Process> ledger_;
  std::map<std::string, std::unique_ptr<Process>> nodes_;
  std::map<std::string, uint16_t> p2p_ports_;
  std::map<std::string, uint16_t> rpc_ports_;
  size_t seal_log_offset_ = 0;  // in ledger_'s output: past the last seal seen
  v1::GenesisParams genesis_;
  crypto::PublicKey sequencer_;
  std::vector<Account> accounts_;
};

}  // namespace tipd::testing
