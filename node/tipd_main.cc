// tipd: the payment-channel node, the ledger sequencer, and their tools.
//
//   tipd node   --datadir D [--ledger HOST:PORT@ID] [--listen HOST:PORT] ...
//   tipd ledger init --datadir D [--fund ACCOUNT=AMOUNT]...
//   tipd ledger --datadir D [--listen HOST:PORT] ...
//
// Options come from flags, then <datadir>/tipd.conf (or --config), then
// defaults: docs/configuration.md.
#include <CLI/CLI.hpp>
#include <charconv>
#include <iostream>

#include "node/config.h"
#include "node/daemons.h"

namespace {

int Fail(const tipd::Status& s) {
  std::cerr << "tipd: " << s.message() << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tipd: payment channels for per-message tips"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tipd 0.1.0");

  CLI::App* node_cmd = app.add_subcommand("node", "run a payment-channel node");
  tipd::node::RawValues node_flags;
  if (auto s = tipd::node::AddFlags(node_cmd, tipd::node::NodeOptionSpecs(), &node_flags);
      !s.ok()) {
    return Fail(s);
  }

  CLI::App* ledger_cmd = app.add_subcommand("ledger", "run the ledger sequencer");
  tipd::node::RawValues ledger_flags;
  if (auto s = tipd::node::AddFlags(ledger_cmd, tipd::node::LedgerOptionSpecs(), &ledger_flags);
      !s.ok()) {
    return Fail(s);
  }
  CLI::App* init_cmd =
      ledger_cmd->add_subcommand("init", "write a devnet genesis and sequencer key");
  tipd::node::LedgerInitOptions init;
  std::string init_datadir, init_listen = "127.0.0.1:9736";
  std::vector<std::string> funds;
  init_cmd->add_option("--datadir", init_datadir, "ledger data directory")->required();
  init_cmd->add_option("--chain-id", init.chain_id, "chain id")->capture_default_str();
  init_cmd->add_option("--fund", funds,
                       "ACCOUNT=AMOUNT to allocate (x-only key or node id, hex); repeatable");
  init_cmd->add_option("--fee", init.fee_per_tx, "fee per transaction")->capture_default_str();
  init_cmd->add_option("--min-settle-timeout", init.min_settle_timeout, "blocks")
      ->capture_default_str();
  init_cmd->add_option("--max-settle-timeout", init.max_settle_timeout, "blocks")
      ->capture_default_str();
  init_cmd->add_option("--block-interval-ms", init.block_interval_ms, "milliseconds")
      ->capture_default_str();
  init_cmd->add_option("--listen", init_listen, "address the ledger will listen on")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (init_cmd->parsed()) {
    init.datadir = init_datadir;
    auto listen = tipd::node::ParseHostPort(init_listen);
    if (!listen.ok()) return Fail(listen.status());
    init.listen = *listen;
    for (const std::string& f : funds) {
      size_t eq = f.find('=');
      uint64_t amount = 0;
      const char* end = f.data() + f.size();
      if (eq == std::string::npos || eq + 1 == f.size() ||
          std::from_chars(f.data() + eq + 1, end, amount).ptr != end) {
        return Fail(
            tipd::Status::InvalidArgument("--fund expects ACCOUNT=AMOUNT, got '" + f + "'"));
      }
      init.allocations.emplace_back(f.substr(0, eq), amount);
    }
    return tipd::node::RunLedgerInit(init);
  }
  if (ledger_cmd->parsed()) {
    auto config = tipd::node::ResolveLedgerConfig(ledger_flags);
    if (!config.ok()) return Fail(config.status());
    return tipd::node::RunLedger(*config);
  }
  if (node_cmd->parsed()) {
    auto config = tipd::node::ResolveNodeConfig(node_flags);
    if (!config.ok()) return Fail(config.status());
    return tipd::node::RunNode(*config);
  }
  return 1;
}
