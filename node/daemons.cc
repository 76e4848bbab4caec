#include "node/daemons.h"

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>

#include "ledger/chain.h"
#include "ledger/genesis.h"
#include "ledger/server.h"
#include "node/context.h"
#include "node/lifecycle.h"
#include "node/logging.h"
#include "p2p/p2p.h"
#include "storage/storage.h"
#include "util/metrics.h"

namespace tipd::node {
namespace {

int Fail(const std::string& what, const Status& s) {
  auto log = Logger("main");
  log->critical("{}: {}", what, s.ToString());
  FlushLogs();
  std::cerr << "tipd: " << what << ": " << s.message() << "\n";
  return 1;
}

// A key pair whose public key has even Y, so its x-only form (what the
// genesis records) and its node id (02 || x) name the same key.
crypto::KeyPair EvenYKey(crypto::RandomSource& rng) {
  for (;;) {
    crypto::KeyPair kp = crypto::KeyPair::Generate(rng);
    if (kp.public_key().bytes()[0] == 0x02) return kp;
  }
}

Result<crypto::XOnlyPubKey> ParseAccount(const std::string& text) {
  auto bytes = HexDecode(text);
  if (bytes.ok() && bytes->size() == 33) {
    TIPD_ASSIGN_OR_RETURN(crypto::PublicKey pk, crypto::PublicKey::Parse(*bytes));
    return pk.XOnly();
  }
  if (bytes.ok() && bytes->size() == 32) return crypto::ParseXOnly(*bytes);
  return Status::InvalidArgument("account '" + text +
                                 "' is neither a 64-hex x-only key nor a 66-hex node id");
}

}  // namespace

std::string NumericHost(const std::string& host) {
  return host == "localhost" ? "127.0.0.1" : host;
}

int RunLedgerInit(const LedgerInitOptions& o) {
  Status s = PrepareDataDir(o.datadir);
  if (!s.ok()) return Fail("data dir", s);
  auto genesis_path = o.datadir / "genesis.json";
  auto key_path = o.datadir / "sequencer.key";
  if (std::filesystem::exists(genesis_path)) {
    return Fail("ledger init",
                Status::AlreadyExists(genesis_path.string() + " exists; refusing to overwrite"));
  }
  crypto::KeyPair seq = EvenYKey(crypto::SystemRng());
  if (std::filesystem::exists(key_path)) {
    auto existing = crypto::LoadKeyFile(key_path);
    if (!existing.ok()) return Fail("sequencer key", existing.status());
    seq = crypto::KeyPair::FromSecret(*existing);
  } else {
    s = crypto::SaveKeyFile(key_path, seq.secret());
    if (!s.ok()) return Fail("sequencer key", s);
  }
  std::vector<std::pair<ledger::AccountId, uint64_t>> allocations;
  for (const auto& [text, amount] : o.allocations) {
    auto acct = ParseAccount(text);
    if (!acct.ok()) return Fail("--fund", acct.status());
    allocations.emplace_back(*acct, amount);
  }
  SystemClock clock;
  v1::GenesisParams g = ledger::MakeDevnetGenesis(o.chain_id, seq.XOnly(), allocations,
                                                  static_cast<uint64_t>(clock.NowMs()));
  g.set_fee_per_tx(o.fee_per_tx);
  g.set_min_settle_timeout(o.min_settle_timeout);
  g.set_max_settle_timeout(o.max_settle_timeout);
  g.set_block_interval_ms(o.block_interval_ms);
  if (auto valid = ledger::ValidateGenesis(g); !valid.ok()) return Fail("genesis", valid.status());
  s = ledger::WriteGenesisFile(genesis_path, g);
  if (!s.ok()) return Fail("genesis", s);
  auto conf_path = o.datadir / "tipd.conf";
  if (!std::filesystem::exists(conf_path)) {
    std::ofstream conf(conf_path);
    conf << "# tipd ledger configuration (docs/configuration.md)\nlisten = " << o.listen.ToString()
         << "\n";
  }
  std::cout << "wrote " << genesis_path.string() << " (chain " << g.chain_id() << ", "
            << allocations.size() << " funded account(s))\n"
            << "sequencer key " << key_path.string() << "\n"
            << "start it:   tipd ledger --datadir " << o.datadir.string() << "\n"
            << "nodes use:  --ledger " << o.listen.ToString() << "@" << seq.public_key().Hex()
            << " and a copy of genesis.json in their data dir\n";
  return 0;
}

int RunLedger(const LedgerConfig& config) {
  Status s = PrepareDataDir(config.datadir);
  if (!s.ok()) return Fail("data dir", s);
  auto lock = PidLock::Acquire(config.datadir);
  if (!lock.ok()) return Fail("data dir", lock.status());
  s = InitLogging(config.log_level, config.log_file, "tipd-ledger");
  if (!s.ok()) return Fail("logging", s);
  auto log = Logger("main");

  auto genesis = ledger::LoadGenesisFile(config.genesis);
  if (!genesis.ok()) return Fail("genesis", genesis.status());
  auto params = ledger::ValidateGenesis(*genesis);
  if (!params.ok()) return Fail("genesis", params.status());
  auto secret = crypto::LoadKeyFile(config.sequencer_key);
  if (!secret.ok()) return Fail("sequencer key", secret.status());
  crypto::KeyPair sequencer = crypto::KeyPair::FromSecret(*secret);
  if (sequencer.XOnly() != params->sequencer) {
    return Fail("sequencer key", Status::PermissionDenied(config.sequencer_key.string() +
                                                          " is not the sequencer key named in " +
                                                          config.genesis.string()));
  }
  auto db = storage::Database::Open(config.datadir / "db");
  if (!db.ok()) return Fail("database", db.status());
  auto chain = ledger::Chain::Open(db->get(), *params);
  if (!chain.ok()) return Fail("chain", chain.status());

  boost::asio::io_context io;
  SystemClock clock;
  p2p::HostOptions host_options;
  host_options.chain_id = params->chain_id;
  host_options.max_inbound_per_address = config.max_inbound_per_address;
  p2p::Host host(io, sequencer, crypto::SystemRng(), host_options);
  auto port = host.Listen(NumericHost(config.listen.host), config.listen.port);
  if (!port.ok()) return Fail("listen " + config.listen.ToString(), port.status());

  ledger::LedgerServerOptions server_options;
  server_options.block_interval_ms = config.block_interval_ms.value_or(params->block_interval_ms);
  server_options.seal_on_submit = config.seal_on_submit;
  server_options.seal_on_demand = config.seal_on_demand;
  ledger::LedgerServer server(io, host, **chain, sequencer, crypto::SystemRng(), clock,
                              server_options, Logger("ledger"));
  server.Start();
  // --seal-on-demand: SIGUSR1 seals one block (tests drive protocol time with
  // it). Installed before the "listening on" line, which is what a starter
  // waits for before it may signal. Without the flag SIGUSR1 is not caught.
  std::optional<boost::asio::signal_set> seal_signal;
  std::function<void()> wait_seal;
  if (config.seal_on_demand) {
    log->warn(
        "sealing on demand only (--seal-on-demand): no block is produced unless the ledger "
        "gets SIGUSR1; for tests, never for a real network");
    seal_signal.emplace(io, SIGUSR1);
    wait_seal = [&] {
      seal_signal->async_wait([&](const boost::system::error_code& ec, int) {
        if (ec) return;
        const uint64_t before = (*chain)->height();
        server.SealNow();
        if ((*chain)->height() > before) {
          log->info("sealed on demand: block {}", (*chain)->height());
        } else {
          log->error("SIGUSR1: no block sealed on demand (the ledger is halted)");
        }
        wait_seal();
      });
    };
    wait_seal();
  }
  // The port actually bound (--listen with port 0 picks a free one); tests
  // and starters read it from this line.
  log->info("ledger {} at height {} listening on {}:{} as {} (block interval {} ms{})",
            params->chain_id, (*chain)->height(), config.listen.host, *port,
            sequencer.public_key().Hex(), server_options.block_interval_ms,
            std::string(server_options.seal_on_submit ? ", sealing on submit" : "") +
                (server_options.seal_on_demand ? ", sealing on demand (SIGUSR1)" : ""));

  ShutdownSignals signals(io, [&](int signo) {
    log->info("signal {}: stopping", signo);
    if (seal_signal) seal_signal->cancel();
    server.Stop();
    host.Shutdown();
    io.stop();
  });
  io.run();
  log->info("stopped at height {}", (*chain)->height());
  FlushLogs();
  return (*chain)->health().ok() ? 0 : 1;
}

int RunNode(const NodeConfig& config) {
  Status s = PrepareDataDir(config.datadir);
  if (!s.ok()) return Fail("data dir", s);
  auto lock = PidLock::Acquire(config.datadir);
  if (!lock.ok()) return Fail("data dir", lock.status());
  s = InitLogging(config.log_level, config.log_file, "tipd-node");
  if (!s.ok()) return Fail("logging", s);
  auto log = Logger("main");
  SystemClock clock;
  auto node = NodeContext::Create(config, clock);
  if (!node.ok()) return Fail("node", node.status());
  s = (*node)->Start();
  if (!s.ok()) return Fail("node", s);
  {
    // The signal set lives on the node's io_context: it goes before it.
    ShutdownSignals signals((*node)->io(), [&](int signo) {
      log->info("signal {}: stopping", signo);
      (*node)->Stop();
    });
    (*node)->io().run();
  }
  const uint64_t height = (*node)->chain().height();
  node->reset();  // everything submitted is durable before the process exits
  log->info("stopped at ledger height {}", height);
  FlushLogs();
  return 0;
}

}  // namespace tipd::node
