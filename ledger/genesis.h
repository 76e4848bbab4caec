// The genesis file: JSON (protobuf JSON mapping of tipd.v1.GenesisFile, keys
// in hex) that fixes a chain's id, sequencer, allocations and parameters.
// Example in docs/ledger.md.
#pragma once

#include <filesystem>

#include "ledger/rules.h"
#include "tipd/ledger.pb.h"

namespace tipd::ledger {

// Reads, parses and validates a genesis file. Errors name the file and what
// is wrong (unknown field, bad hex, invalid key, inconsistent bounds).
Result<v1::GenesisParams> LoadGenesisFile(const std::filesystem::path& path);
Result<v1::GenesisParams> ParseGenesisJson(std::string_view json);
// Writes `genesis` as indented JSON (atomically: temp file + rename).
// `labels`, if given, names allocations in the file (same order).
Status WriteGenesisFile(const std::filesystem::path& path, const v1::GenesisParams& genesis,
                        const std::vector<std::string>& labels = {});
std::string GenesisToJson(const v1::GenesisParams& genesis,
                          const std::vector<std::string>& labels = {});

// Devnet defaults: fee 1, settle timeout 3..1000 blocks, 1 s blocks.
v1::GenesisParams MakeDevnetGenesis(std::string chain_id, const AccountId& sequencer,
                                    const std::vector<std::pair<AccountId, uint64_t>>& allocations,
                                    uint64_t genesis_time_ms);

}  // namespace tipd::ledger
