#include "ledger/genesis.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace tipd::ledger {
namespace {

Result<std::string> HexField(std::string_view name, const std::string& hex) {
  auto b = HexDecode(hex);
  if (!b.ok() || b->size() != 32) {
    return Status::InvalidArgument(std::string(name) + " must be 64 hex characters (a 32-byte " +
                                   "x-only public key), got '" + hex + "'");
  }
  return std::string(b->begin(), b->end());
}

}  // namespace

Result<v1::GenesisParams> ParseGenesisJson(std::string_view json) {
  v1::GenesisFile file;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  auto st = google::protobuf::util::JsonStringToMessage(std::string(json), &file, opts);
  if (!st.ok()) return Status::InvalidArgument("genesis JSON: " + std::string(st.message()));
  v1::GenesisParams g;
  g.set_chain_id(file.chain_id());
  TIPD_ASSIGN_OR_RETURN(std::string seq, HexField("sequencer_key", file.sequencer_key()));
  g.set_sequencer_key(seq);
  for (int i = 0; i < file.allocations_size(); ++i) {
    const auto& a = file.allocations(i);
    TIPD_ASSIGN_OR_RETURN(std::string acct,
                          HexField("allocations[" + std::to_string(i) + "].account", a.account()));
    auto* out = g.add_allocations();
    out->set_account(acct);
    out->set_amount(a.amount());
  }
  g.set_fee_per_tx(file.fee_per_tx());
  g.set_min_settle_timeout(file.min_settle_timeout());
  g.set_max_settle_timeout(file.max_settle_timeout());
  g.set_block_interval_ms(file.block_interval_ms());
  g.set_genesis_time_ms(file.genesis_time_ms());
  auto valid = ValidateGenesis(g);
  if (!valid.ok()) return valid.status();
  return g;
}

Result<v1::GenesisParams> LoadGenesisFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read genesis file " + path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  auto g = ParseGenesisJson(ss.str());
  if (!g.ok()) return Status(g.status().code(), path.string() + ": " + g.status().message());
  return g;
}

std::string GenesisToJson(const v1::GenesisParams& g, const std::vector<std::string>& labels) {
  v1::GenesisFile file;
  file.set_chain_id(g.chain_id());
  file.set_sequencer_key(HexEncode(AsSpan(g.sequencer_key())));
  for (int i = 0; i < g.allocations_size(); ++i) {
    auto* a = file.add_allocations();
    a->set_account(HexEncode(AsSpan(g.allocations(i).account())));
    a->set_amount(g.allocations(i).amount());
    if (static_cast<size_t>(i) < labels.size()) a->set_label(labels[i]);
  }
  file.set_fee_per_tx(g.fee_per_tx());
  file.set_min_settle_timeout(g.min_settle_timeout());
  file.set_max_settle_timeout(g.max_settle_timeout());
  file.set_block_interval_ms(g.block_interval_ms());
  file.set_genesis_time_ms(g.genesis_time_ms());
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(file, &out, opts);
  return out;
}

Status WriteGenesisFile(const std::filesystem::path& path, const v1::GenesisParams& genesis,
                        const std::vector<std::string>& labels) {
  std::string json = GenesisToJson(genesis, labels);
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError("cannot create " + tmp.string());
  bool ok = ::write(fd, json.data(), json.size()) == static_cast<ssize_t>(json.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return Status::IOError("cannot write genesis file " + path.string());
  }
  return Status::Ok();
}

v1::GenesisParams MakeDevnetGenesis(std::string chain_id, const AccountId& sequencer,
                                    const std::vector<std::pair<AccountId, uint64_t>>& allocations,
                                    uint64_t genesis_time_ms) {
  v1::GenesisParams g;
  g.set_chain_id(std::move(chain_id));
  g.set_sequencer_key(std::string(AsStringView(sequencer)));
  for (const auto& [id, amount] : allocations) {
    auto* a = g.add_allocations();
    a->set_account(std::string(AsStringView(id)));
    a->set_amount(amount);
  }
  g.set_fee_per_tx(1);
  g.set_min_settle_timeout(3);
  g.set_max_settle_timeout(1000);
  g.set_block_interval_ms(1000);
  g.set_genesis_time_ms(genesis_time_ms);
  return g;
}

}  // namespace tipd::ledger
