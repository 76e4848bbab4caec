#include "ledger/chain.h"

#include <algorithm>
#include <thread>

namespace tipd::ledger {
namespace {

constexpr std::string_view kTipName = "chain_tip";

std::string Str(ByteSpan b) { return std::string(AsStringView(b)); }

bool To32(const std::string& s, Hash32* out) {
  if (s.size() != 32) return false;
  std::copy(s.begin(), s.end(), out->begin());
  return true;
}

using BlockRecords = storage::RecordStore<v1::StoredBlock>;
using TxRecords = storage::RecordStore<v1::StoredTxLocation>;
using TipRecords = storage::RecordStore<v1::ChainTip>;
using AccountRecords = storage::RecordStore<v1::AccountState>;
using ChannelRecords = storage::RecordStore<v1::ChannelState>;

std::string Family(storage::KeyFamily f, ByteSpan id) {
  std::string k(1, static_cast<char>(f));
  k.append(AsStringView(id));
  return k;
}

}  // namespace

std::string BlockKey(uint64_t height) {
  std::string k(1, static_cast<char>(storage::KeyFamily::kBlock));
  storage::AppendBigEndian64(&k, height);
  return k;
}
std::string TxKey(const Hash32& id) { return Family(storage::KeyFamily::kTx, id); }
std::string AccountKey(const AccountId& id) { return Family(storage::KeyFamily::kAccount, id); }
std::string ChannelStateKey(const ChannelId& id) {
  return Family(storage::KeyFamily::kChannelState, id);
}

Chain::Chain(storage::Database* db, Params params) : db_(db), state_(std::move(params)) {}

Result<std::unique_ptr<Chain>> Chain::Open(storage::Database* db, Params params) {
  std::unique_ptr<Chain> chain(new Chain(db, std::move(params)));
  TIPD_RETURN_IF_ERROR(chain->Load());
  return chain;
}

Status Chain::Load() {
  const Params& p = state_.params();
  TipRecords tips(db_);
  std::string tip_key = storage::MetaKey(kTipName);
  TIPD_ASSIGN_OR_RETURN(std::optional<v1::ChainTip> tip, tips.Get(tip_key));
  if (!tip) {
    height_ = 0;
    tip_hash_ = p.genesis_hash;
    state_hash_ = state_.GenesisStateHash();
    tip_time_ms_ = p.genesis_time_ms;
    return Status::Ok();
  }
  if (tip->genesis_hash() != AsStringView(p.genesis_hash)) {
    return Status::FailedPrecondition(
        "the chain in " + db_->path().string() + " was built from another genesis (" +
        HexEncode(AsSpan(tip->genesis_hash())) + ", expected " + HexEncode(p.genesis_hash) + ")");
  }
  if (!To32(tip->block_hash(), &tip_hash_) || !To32(tip->state_hash(), &state_hash_)) {
    return Status::Corruption("chain tip record at key " + storage::EscapeKey(tip_key) +
                              " has hashes of the wrong size");
  }
  height_ = tip->height();
  tip_time_ms_ = tip->time_ms();
  state_.RestoreFees(tip->fees_collected());
  std::string a_prefix(1, static_cast<char>(storage::KeyFamily::kAccount));
  AccountRecords accounts(db_);
  TIPD_RETURN_IF_ERROR(
      accounts.Scan(a_prefix, storage::PrefixEnd(a_prefix), SIZE_MAX,
                    [&](std::string_view key, v1::AccountState rec) -> Status {
                      AccountId id;
                      if (key.size() != 33)
                        return Status::Corruption("account key " + storage::EscapeKey(key));
                      std::copy(key.begin() + 1, key.end(), id.begin());
                      state_.RestoreAccount(id, Account{rec.balance(), rec.nonce()});
                      return Status::Ok();
                    }));
  std::string h_prefix(1, static_cast<char>(storage::KeyFamily::kChannelState));
  ChannelRecords channels(db_);
  TIPD_RETURN_IF_ERROR(channels.Scan(h_prefix, storage::PrefixEnd(h_prefix), SIZE_MAX,
                                     [&](std::string_view key, v1::ChannelState rec) -> Status {
                                       auto ch = ChannelFromProto(rec);
                                       if (!ch.ok()) {
                                         return Status::Corruption("channel state at key " +
                                                                   storage::EscapeKey(key) + ": " +
                                                                   ch.status().message());
                                       }
                                       state_.RestoreChannel(*ch);
                                       return Status::Ok();
                                     }));
  // The restored state replaces the genesis allocations wholesale: genesis
  // accounts that were never written keep their allocation, which is right
  // because every account a block touches is persisted.
  Status supply = state_.CheckSupply();
  if (!supply.ok()) {
    return Status::Corruption("stored ledger state in " + db_->path().string() +
                              " does not conserve supply: " + supply.message());
  }
  return Status::Ok();
}

std::optional<TxError> Chain::AddToPending(const v1::Transaction& tx) {
  if (!poisoned_.ok()) return TxError{TxRule::kMalformed, "ledger halted: " + poisoned_.message()};
  auto id = TransactionId(tx);
  if (!id.ok()) return TxError{TxRule::kMalformed, id.status().message()};
  if (auto e = state_.Apply(tx, height_ + 1)) return e;
  pending_.push_back(tx);
  pending_ids_.push_back(*id);
  return std::nullopt;
}

Result<v1::Block> Chain::SealBlock(uint64_t time_ms, const crypto::KeyPair& sequencer,
                                   crypto::RandomSource& rng) {
  TIPD_RETURN_IF_ERROR(poisoned_);
  if (sequencer.XOnly() != state_.params().sequencer) {
    return Status::PermissionDenied("this key is not the genesis sequencer key");
  }
  v1::Block block;
  v1::BlockHeader* h = block.mutable_header();
  h->set_chain_id(state_.params().chain_id);
  h->set_height(height_ + 1);
  h->set_prev_hash(Str(tip_hash_));
  h->set_time_ms(std::max(time_ms, tip_time_ms_));
  h->set_tx_root(Str(MerkleRoot(pending_ids_)));
  h->set_tx_count(static_cast<uint32_t>(pending_.size()));
  for (auto& tx : pending_) *block.add_transactions() = std::move(tx);
  std::vector<Hash32> ids = std::move(pending_ids_);
  pending_.clear();
  pending_ids_.clear();

  storage::WriteBatch batch;
  Hash32 new_state = StageState(&batch);
  h->set_state_hash(Str(new_state));
  auto hash = BlockHash(*h);
  if (!hash.ok()) {
    poisoned_ = Status::Internal("sealed header does not encode: " + hash.status().message());
    return poisoned_;
  }
  crypto::Key32 aux;
  rng.Fill(aux);
  h->set_signature(Str(crypto::SchnorrSign(sequencer, *hash, aux)));
  Status s = WriteBlock(std::move(batch), block, ids, *hash, new_state);
  if (!s.ok()) return s;
  return block;
}

Status Chain::AcceptBlock(const v1::Block& block) {
  TIPD_RETURN_IF_ERROR(poisoned_);
  const v1::BlockHeader& h = block.header();
  TIPD_RETURN_IF_ERROR(CheckHeader(h));
  if (h.tx_count() != static_cast<uint32_t>(block.transactions_size())) {
    return Status::InvalidArgument("block " + std::to_string(h.height()) + " claims " +
                                   std::to_string(h.tx_count()) + " transactions but carries " +
                                   std::to_string(block.transactions_size()));
  }
  std::vector<Hash32> ids;
  ids.reserve(block.transactions_size());
  for (const auto& tx : block.transactions()) {
    auto id = TransactionId(tx);
    if (!id.ok()) {
      return Status::InvalidArgument("block " + std::to_string(h.height()) +
                                     " carries a malformed transaction: " + id.status().message());
    }
    ids.push_back(*id);
  }
  if (h.tx_root() != AsStringView(MerkleRoot(ids))) {
    return Status::InvalidArgument("block " + std::to_string(h.height()) +
                                   " transaction root does not match its transactions");
  }
  // Signatures are the bulk of the work and independent of the state: check
  // them all first, on two threads for larger blocks. A bad one rejects the
  // block before the state is touched.
  const int n = block.transactions_size();
  std::vector<char> sig_ok(static_cast<size_t>(n), 0);
  auto verify_range = [&](int from, int to) {
    for (int i = from; i < to; ++i) sig_ok[i] = VerifyTransactionSignature(block.transactions(i));
  };
  if (n >= 32) {
    std::thread helper(verify_range, n / 2, n);
    verify_range(0, n / 2);
    helper.join();
  } else {
    verify_range(0, n);
  }
  for (int i = 0; i < n; ++i) {
    if (!sig_ok[i]) {
      return Status::InvalidArgument("block " + std::to_string(h.height()) + " transaction " +
                                     std::to_string(i) + " (" + HexEncode(ids[i]) +
                                     ") has a bad signature");
    }
  }
  // From here on the in-memory state changes; any failure poisons the chain.
  for (int i = 0; i < n; ++i) {
    if (auto e = state_.ApplyPreverified(block.transactions(i), h.height())) {
      poisoned_ = Status::Corruption("block " + std::to_string(h.height()) + " transaction " +
                                     std::to_string(i) + " (" + HexEncode(ids[i]) +
                                     ") is invalid: " + e->ToString());
      return poisoned_;
    }
  }
  storage::WriteBatch batch;
  Hash32 new_state = StageState(&batch);
  if (h.state_hash() != AsStringView(new_state)) {
    poisoned_ = Status::Corruption("block " + std::to_string(h.height()) + " state hash " +
                                   HexEncode(AsSpan(h.state_hash())) + " differs from ours " +
                                   HexEncode(new_state) + ": the sequencer's execution disagrees");
    return poisoned_;
  }
  auto hash = BlockHash(h);
  return WriteBlock(std::move(batch), block, ids, *hash, new_state);
}

Hash32 Chain::StageState(storage::WriteBatch* batch) {
  AccountRecords accounts(db_);
  ChannelRecords channels(db_);
  for (const AccountId& id : state_.dirty_accounts()) {
    const Account* a = state_.FindAccount(id);
    v1::AccountState rec;
    rec.set_balance(a->balance);
    rec.set_nonce(a->nonce);
    accounts.Put(batch, AccountKey(id), rec);
  }
  for (const ChannelId& id : state_.dirty_channels()) {
    channels.Put(batch, ChannelStateKey(id), ChannelToProto(*state_.FindChannel(id)));
  }
  return state_.CommitStateHash(state_hash_);
}

Status Chain::WriteBlock(storage::WriteBatch batch, const v1::Block& block,
                         const std::vector<Hash32>& tx_ids, const Hash32& block_hash,
                         const Hash32& new_state) {
  // Supply is checked on every block, by the sequencer and every follower.
  Status supply = state_.CheckSupply();
  if (!supply.ok()) {
    poisoned_ = supply;
    return supply;
  }
  const v1::BlockHeader& h = block.header();
  v1::StoredBlock stored;
  *stored.mutable_block() = block;
  BlockRecords(db_).Put(&batch, BlockKey(h.height()), stored);
  TxRecords txs(db_);
  for (size_t i = 0; i < tx_ids.size(); ++i) {
    v1::StoredTxLocation loc;
    loc.set_height(h.height());
    loc.set_index(static_cast<uint32_t>(i));
    txs.Put(&batch, TxKey(tx_ids[i]), loc);
  }
  v1::ChainTip tip;
  tip.set_height(h.height());
  tip.set_block_hash(Str(block_hash));
  tip.set_state_hash(Str(new_state));
  tip.set_fees_collected(state_.fees_collected());
  tip.set_genesis_hash(Str(state_.params().genesis_hash));
  tip.set_time_ms(h.time_ms());
  TipRecords(db_).Put(&batch, storage::MetaKey(kTipName), tip);
  Status s = db_->Write(batch);
  if (!s.ok()) {
    poisoned_ = Status::IOError("writing block " + std::to_string(h.height()) +
                                " failed; the ledger halts: " + s.message());
    return poisoned_;
  }
  height_ = h.height();
  tip_hash_ = block_hash;
  state_hash_ = new_state;
  tip_time_ms_ = h.time_ms();
  return Status::Ok();
}

Status Chain::CheckHeader(const v1::BlockHeader& h) const {
  if (h.chain_id() != state_.params().chain_id) {
    return Status::InvalidArgument("block is for chain '" + h.chain_id() + "'");
  }
  if (h.height() != height_ + 1) {
    return Status::InvalidArgument("block height " + std::to_string(h.height()) +
                                   " does not follow our tip " + std::to_string(height_));
  }
  if (h.prev_hash() != AsStringView(tip_hash_)) {
    return Status::InvalidArgument("block " + std::to_string(h.height()) +
                                   " does not link to our tip " + HexEncode(tip_hash_));
  }
  if (h.time_ms() < tip_time_ms_) {
    return Status::InvalidArgument(
        "block " + std::to_string(h.height()) + " time " + std::to_string(h.time_ms()) +
        " goes back before the previous block's time " + std::to_string(tip_time_ms_) +
        (height_ == 0 ? " (the genesis time)" : ""));
  }
  auto hash = BlockHash(h);
  if (!hash.ok()) return Status::InvalidArgument("block header: " + hash.status().message());
  crypto::Signature sig;
  if (h.signature().size() != sig.size()) {
    return Status::InvalidArgument("block signature must be 64 bytes");
  }
  std::copy(h.signature().begin(), h.signature().end(), sig.begin());
  if (!crypto::SchnorrVerify(state_.params().sequencer, *hash, sig)) {
    return Status::InvalidArgument("block " + std::to_string(h.height()) +
                                   " is not signed by the sequencer");
  }
  return Status::Ok();
}

Result<std::optional<v1::Block>> Chain::GetBlock(uint64_t height) const {
  TIPD_ASSIGN_OR_RETURN(std::optional<v1::StoredBlock> rec,
                        BlockRecords(db_).Get(BlockKey(height)));
  if (!rec) return std::optional<v1::Block>();
  return std::optional<v1::Block>(std::move(*rec->mutable_block()));
}

Result<std::optional<v1::StoredTxLocation>> Chain::FindTransaction(const Hash32& id) const {
  return TxRecords(db_).Get(TxKey(id));
}

Result<std::optional<v1::AccountState>> Chain::GetStoredAccount(const AccountId& id) const {
  TIPD_ASSIGN_OR_RETURN(std::optional<v1::AccountState> rec,
                        AccountRecords(db_).Get(AccountKey(id)));
  if (rec) return rec;
  for (const auto& [acct, amount] : state_.params().allocations) {
    if (acct == id) {
      v1::AccountState genesis;
      genesis.set_version(1);
      genesis.set_balance(amount);
      return std::optional<v1::AccountState>(genesis);
    }
  }
  return std::optional<v1::AccountState>();
}

Result<std::optional<v1::ChannelState>> Chain::GetStoredChannel(const ChannelId& id) const {
  return ChannelRecords(db_).Get(ChannelStateKey(id));
}

}  // namespace tipd::ledger
