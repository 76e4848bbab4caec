// Fuzz target: config and genesis parsing (node/config.h, ledger/genesis.h).
//
// The first input byte picks the parser, the rest is its text:
//  - a node or ledger config file: ParseConfigText, then the values resolved
//    and type-checked as the daemon does (ResolveNodeConfig /
//    ResolveLedgerConfig, with a data dir that holds no config file). Errors
//    are kInvalidArgument and a file error names the file; nothing crashes,
//    asserts or throws;
//  - the value parsers alone (host:port, peer and ledger addresses,
//    durations, booleans): what they accept renders back (ToString) to text
//    that parses to the same value;
//  - a genesis file: ParseGenesisJson accepts only a valid genesis
//    (ValidateGenesis agrees), and GenesisToJson -> ParseGenesisJson gives it
//    back unchanged, with the same genesis hash.
#include <google/protobuf/util/message_differencer.h>

#include <cstdint>
#include <string>

#include "ledger/codec.h"
#include "ledger/genesis.h"
#include "ledger/rules.h"
#include "node/config.h"
#include "tests/fuzz/fuzz_util.h"

namespace tipd::fuzz {
namespace {

constexpr const char* kFile = "fuzz.conf";
// Never exists, so no tipd.conf is discovered there.
constexpr const char* kDataDir = "/nonexistent/tipd-fuzz-datadir";

void ConfigFile(bool ledger, const std::string& text) {
  const auto& specs = ledger ? node::LedgerOptionSpecs() : node::NodeOptionSpecs();
  auto raw = node::ParseConfigText(text, kFile, specs);
  if (!raw.ok()) {
    Require(raw.status().code() == StatusCode::kInvalidArgument, "a bad file is kInvalidArgument");
    Require(raw.status().message().find(kFile) != std::string::npos, "the error names the file");
    return;
  }
  auto again = node::ParseConfigText(text, kFile, specs);
  Require(again.ok() && again->values.size() == raw->values.size(), "parsing is deterministic");
  // The daemon resolves file values below flags; feeding them as flags (with a
  // data dir that has no tipd.conf) type-checks every value the same way.
  node::RawValues flags = *raw;
  flags.values["datadir"] = {node::RawValue{kDataDir, "--datadir"}};
  if (ledger) {
    auto c = node::ResolveLedgerConfig(flags);
    if (c.ok()) Require(c->datadir == kDataDir, "the data dir flag wins");
  } else {
    auto c = node::ResolveNodeConfig(flags);
    if (c.ok()) {
      Require(c->datadir == kDataDir, "the data dir flag wins");
      Require(
          c->max_updates_in_flight >= 1 && c->max_tips_per_update >= 1 && c->max_queued_tips >= 1,
          "resolved limits are in range");
    }
  }
}

void Values(uint8_t which, const std::string& text) {
  switch (which % 5) {
    case 0: {
      auto hp = node::ParseHostPort(text, /*allow_port_zero=*/true);
      if (!hp.ok()) return;
      auto again = node::ParseHostPort(hp->ToString(), true);
      Require(again.ok() && *again == *hp, "host:port round-trips");
      break;
    }
    case 1: {
      auto peer = node::ParsePeerAddress(text);
      if (!peer.ok()) return;
      auto again = node::ParsePeerAddress(peer->ToString());
      Require(again.ok() && again->address == peer->address && again->node_id == peer->node_id,
              "a peer address round-trips");
      break;
    }
    case 2: {
      auto ledger = node::ParseLedgerAddress(text);
      if (!ledger.ok()) return;
      std::string key = ledger->sequencer_pubkey ? ledger->sequencer_pubkey->Hex()
                                                 : HexEncode(ledger->sequencer_xonly);
      auto again = node::ParseLedgerAddress(ledger->address.ToString() + "@" + key);
      Require(again.ok() && again->address == ledger->address &&
                  again->sequencer_xonly == ledger->sequencer_xonly,
              "a ledger address round-trips");
      if (ledger->sequencer_pubkey) {
        Require(ledger->sequencer_pubkey->XOnly() == ledger->sequencer_xonly,
                "the x-only key is the full key's");
      }
      break;
    }
    case 3: {
      auto ms = node::ParseDurationMs(text);
      if (!ms.ok()) return;
      auto again = node::ParseDurationMs(std::to_string(*ms) + "ms");
      Require(again.ok() && *again == *ms, "a duration in ms round-trips");
      break;
    }
    case 4: {
      auto b = node::ParseBool(text);
      if (!b.ok()) return;
      auto again = node::ParseBool(*b ? "true" : "false");
      Require(again.ok() && *again == *b, "a bool round-trips");
      break;
    }
  }
}

void Genesis(const std::string& text) {
  auto g = ledger::ParseGenesisJson(text);
  if (!g.ok()) {
    Require(g.status().code() == StatusCode::kInvalidArgument, "a bad genesis is kInvalidArgument");
    return;
  }
  Require(ledger::ValidateGenesis(*g).ok(), "an accepted genesis is valid");
  const std::string json = ledger::GenesisToJson(*g);
  auto again = ledger::ParseGenesisJson(json);
  Require(again.ok(), "a written genesis parses");
  Require(google::protobuf::util::MessageDifferencer::Equals(*g, *again),
          "ParseGenesisJson -> GenesisToJson -> ParseGenesisJson is equal");
  auto h1 = ledger::GenesisHash(*g);
  auto h2 = ledger::GenesisHash(*again);
  Require(h1.ok() && h2.ok() && *h1 == *h2, "the genesis hash survives the round trip");
}

}  // namespace
}  // namespace tipd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tipd::fuzz;
  if (size < 2) return 0;
  const std::string text(reinterpret_cast<const char*>(data + 2), size - 2);
  switch (data[0] % 4) {
    case 0:
      ConfigFile(/*ledger=*/false, text);
      break;
    case 1:
      ConfigFile(/*ledger=*/true, text);
      break;
    case 2:
      Values(data[1], text);
      break;
    case 3:
      Genesis(text);
      break;
  }
  return 0;
}
