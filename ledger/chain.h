// The persisted chain: executes blocks with the ledger rules and writes each
// block together with the state it produces in one synced batch.
//
// The sequencer and every follower use the same class:
//  - the sequencer applies each submitted transaction at once to a pending
//    block (so the submitter learns acceptance or the exact rule broken
//    immediately), then seals, signs and persists the pending block;
//  - a follower verifies a block from the sequencer (height, link, chain id,
//    signature, Merkle root), re-executes every transaction, checks supply
//    conservation and compares its own state hash with the header's. It never
//    trusts the sequencer's arithmetic.
// Nothing is reported as included before the synced write returned.
//
// Thread-compatible: callers serialize access (the sequencer and the follower
// each own one Chain on one strand).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "crypto/crypto.h"
#include "ledger/rules.h"
#include "storage/storage.h"
#include "tipd/ledger.pb.h"
#include "tipd/storage.pb.h"

namespace tipd::ledger {

class Chain {
 public:
  // Opens the chain stored in `db` for the genesis `params`. An empty store
  // starts at height 0 with the genesis allocations; a used one resumes at its
  // persisted tip and refuses to open under a different genesis.
  // REQUIRES: `db` outlives the Chain.
  static Result<std::unique_ptr<Chain>> Open(storage::Database* db, Params params);

  uint64_t height() const { return height_; }
  const Hash32& tip_hash() const { return tip_hash_; }
  const Hash32& state_hash() const { return state_hash_; }
  uint64_t tip_time_ms() const { return tip_time_ms_; }
  const Params& params() const { return state_.params(); }
  // The state including the pending block (sequencer) — equal to the
  // persisted state when nothing is pending.
  const LedgerState& state() const { return state_; }

  // ---- sequencer ----
  // Applies `tx` to the pending block at height() + 1. On error nothing
  // changed and the error names the rule.
  std::optional<TxError> AddToPending(const v1::Transaction& tx);
  size_t pending_count() const { return pending_.size(); }
  // Seals the pending block (possibly empty) with `time_ms` (raised to the
  // previous block's time if the clock went backwards), signs it, and
  // persists block + state + tip in one synced write. On a write failure the
  // chain is poisoned: the in-memory state is ahead of the disk.
  Result<v1::Block> SealBlock(uint64_t time_ms, const crypto::KeyPair& sequencer,
                              crypto::RandomSource& rng);

  // ---- follower ----
  // Verifies, re-executes and persists the next block. Any mismatch is an
  // error naming what differs; the chain is then poisoned (its memory may be
  // ahead of the disk) and must be reopened to continue.
  Status AcceptBlock(const v1::Block& block);

  // Verifies the header alone: chain id, height, link, a time not below the
  // previous block's (the genesis time for block 1) and the sequencer's
  // signature.
  Status CheckHeader(const v1::BlockHeader& header) const;

  // A poisoned chain refuses every further change.
  const Status& health() const { return poisoned_; }

  // ---- reads (from disk) ----
  Result<std::optional<v1::Block>> GetBlock(uint64_t height) const;
  Result<std::optional<v1::StoredTxLocation>> FindTransaction(const Hash32& id) const;
  // Sealed (persisted) state of an account — its genesis allocation if no
  // block touched it yet — or of a channel; nullopt if unknown.
  Result<std::optional<v1::AccountState>> GetStoredAccount(const AccountId& id) const;
  Result<std::optional<v1::ChannelState>> GetStoredChannel(const ChannelId& id) const;

 private:
  Chain(storage::Database* db, Params params);
  Status Load();
  // Puts every account and channel the pending transactions wrote into
  // `batch` and returns the new state hash.
  Hash32 StageState(storage::WriteBatch* batch);
  // Checks supply, then writes the staged state, the block, its transaction
  // index and the tip in one synced batch; advances the tip on success.
  Status WriteBlock(storage::WriteBatch batch, const v1::Block& block,
                    const std::vector<Hash32>& tx_ids, const Hash32& block_hash,
                    const Hash32& new_state);

  storage::Database* db_;
  LedgerState state_;
  uint64_t height_ = 0;
  Hash32 tip_hash_{};
  Hash32 state_hash_{};
  uint64_t tip_time_ms_ = 0;
  std::vector<v1::Transaction> pending_;
  std::vector<Hash32> pending_ids_;
  Status poisoned_;
};

// Storage keys of the chain families (see storage::KeyFamily).
std::string BlockKey(uint64_t height);
std::string TxKey(const Hash32& id);
std::string AccountKey(const AccountId& id);
std::string ChannelStateKey(const ChannelId& id);

}  // namespace tipd::ledger
