// The ledger's rules: pure and deterministic. No I/O, no clock, no threads.
//
// `LedgerState` holds accounts, channels and collected fees, and applies one
// transaction at a time at a given block height. A rejected transaction leaves
// the state exactly as it was and names the rule it broke. The sequencer and
// every follower run this same code, so a follower never trusts the
// sequencer's arithmetic: it re-executes and compares state hashes.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ledger/codec.h"
#include "tipd/channel.pb.h"
#include "tipd/ledger.pb.h"

namespace tipd::ledger {

// One value per rule a transaction can break. Codes are stable strings.
enum class TxRule {
  kMalformed,          // wrong field sizes, missing body, undecodable proof
  kWrongChainId,       // tx.chain_id is not this ledger's
  kBadSignature,       // signer's (or party B's) signature does not verify
  kBadNonce,           // not the signer's next account nonce: replay or gap
  kFeeTooLow,          // fee below the genesis fee_per_tx
  kInsufficientFunds,  // balance cannot cover amount + fee (overspend)
  kOverflow,           // a sum exceeds 2^64 - 1
  kZeroAmount,         // transfer or deposit of 0
  kSelfTransfer,       // transfer to oneself
  kUnknownChannel,     // no channel with that id
  kChannelExists,      // an open would reuse a channel id
  kSameParties,        // a channel with oneself
  kNotAParty,          // signer is neither party A nor party B
  kWrongSigner,        // channel open not signed by party A
  kSettleTimeoutOutOfBounds,
  kChannelNotOpen,     // deposit/close on a channel that is not OPEN
  kChannelNotClosing,  // update proof/settle on a channel that is not CLOSING
  kWindowClosed,       // update proof after the settle window
  kWindowOpen,         // settle before the settle window ended
  kBadProof,           // proof for another chain/channel, or its signature fails
  kStaleProof,         // proof nonce not higher than the one the ledger holds
  kBalancesMismatch,   // cooperative close balances do not sum to the deposits
  kNotBeneficiary,     // update proof not submitted by the party the proof pays
  kEscrowFeeLimit,     // the escrow may not pay this fee (bound used, or not the base fee)
};
const char* TxRuleCode(TxRule rule);

struct TxError {
  TxRule rule;
  std::string reason;
  std::string ToString() const;
};

struct Account {
  uint64_t balance = 0;
  uint64_t nonce = 0;  // the next transaction from this account must carry it
  bool operator==(const Account&) const = default;
};

// What the ledger holds of one direction's balance proof.
struct HeldProof {
  uint64_t nonce = 0;
  uint64_t transferred = 0;
  Hash32 tips_root{};
  bool operator==(const HeldProof&) const = default;
};

enum class ChannelPhase : uint8_t { kOpen = 1, kClosing = 2, kSettled = 3 };

struct Channel {
  ChannelId id{};
  AccountId party_a{};
  AccountId party_b{};
  uint64_t deposit_a = 0;
  uint64_t deposit_b = 0;
  uint64_t settle_timeout = 0;  // blocks
  ChannelPhase phase = ChannelPhase::kOpen;
  uint64_t opened_height = 0;
  uint64_t close_height = 0;  // height of the block holding the close
  AccountId closer{};
  HeldProof proof_a_to_b;  // signed by A
  HeldProof proof_b_to_a;  // signed by B
  uint64_t payout_a = 0;
  uint64_t payout_b = 0;
  // Fees of a party's UpdateProof/Settle that the escrow paid because the
  // party's account could not (docs/ledger.md, "Fees paid from the escrow").
  // They left the escrow at once and come out of that party's payout.
  uint64_t fee_debt_a = 0;
  uint64_t fee_debt_b = 0;
  // Escrowed amount still held by the channel (0 once settled): the deposits
  // less the fees the escrow paid. Never negative (the rules keep it so).
  uint64_t Escrow() const {
    return phase == ChannelPhase::kSettled ? 0 : deposit_a + deposit_b - fee_debt_a - fee_debt_b;
  }
  // Last height at which UpdateProof is accepted; Settle needs a greater one.
  uint64_t WindowEnd() const { return close_height + settle_timeout; }
  bool operator==(const Channel&) const = default;
};

// Validated genesis parameters.
struct Params {
  std::string chain_id;
  AccountId sequencer{};
  uint64_t fee_per_tx = 0;
  uint64_t min_settle_timeout = 0;
  uint64_t max_settle_timeout = 0;
  uint64_t block_interval_ms = 0;
  uint64_t genesis_time_ms = 0;
  std::vector<std::pair<AccountId, uint64_t>> allocations;
  uint64_t total_supply = 0;
  Hash32 genesis_hash{};
};
// Checks the genesis: chain id form, a valid sequencer key, valid and unique
// allocation accounts, a supply that fits in u64, 1 <= min <= max timeouts.
Result<Params> ValidateGenesis(const v1::GenesisParams& genesis);

class LedgerState {
 public:
  explicit LedgerState(Params params);

  const Params& params() const { return params_; }

  // Applies `tx` as part of the block at `height`. On error nothing changed.
  // On success the touched accounts and channels are recorded for the next
  // TakeStateDiff().
  std::optional<TxError> Apply(const v1::Transaction& tx, uint64_t height);
  // As Apply, but the caller has already checked the signer's signature with
  // VerifyTransactionSignature (e.g. for a whole block, in parallel). Every
  // other rule, including signatures inside the body, is still checked.
  std::optional<TxError> ApplyPreverified(const v1::Transaction& tx, uint64_t height);

  const Account* FindAccount(const AccountId& id) const;
  const Channel* FindChannel(const ChannelId& id) const;
  uint64_t fees_collected() const { return fees_; }
  size_t account_count() const { return accounts_.size(); }
  size_t channel_count() const { return channels_.size(); }

  // Supply conservation: accounts + channel escrows + fees == genesis supply.
  // kInternal with both figures if it does not hold (a bug, never input).
  Status CheckSupply() const;

  // The state hash after a block: TaggedHash(kStateTag, prev || diff), where
  // diff encodes, in key order, every account and channel written since the
  // last call, and the fee total. Clears the set of written entries.
  Hash32 CommitStateHash(const Hash32& previous);
  // The state hash of the genesis state (every allocation, fees 0).
  Hash32 GenesisStateHash() const;

  // Entries written since the last CommitStateHash (for persistence).
  const std::set<AccountId>& dirty_accounts() const { return dirty_accounts_; }
  const std::set<ChannelId>& dirty_channels() const { return dirty_channels_; }

  // Restores entries read back from storage (no validation of transitions).
  void RestoreAccount(const AccountId& id, const Account& account);
  void RestoreChannel(const Channel& channel);
  void RestoreFees(uint64_t fees) { fees_ = fees; }

 private:
  std::optional<TxError> ApplyChecked(const v1::Transaction& tx, uint64_t height,
                                      bool signature_verified);
  // `signer` is the signer's account, or a blank one when `signer_exists` is
  // false (only UpdateProof and Settle get that far). Sets *fee_from_escrow
  // when the channel's escrow pays the fee instead of the account.
  std::optional<TxError> ApplyBody(const v1::Transaction& tx, uint64_t height, Account& signer,
                                   bool signer_exists, uint64_t* spent, bool* fee_from_escrow);
  std::optional<TxError> CheckProof(const Channel& ch, const v1::BalanceProof& proof,
                                    const AccountId& expected_signer) const;

  Params params_;
  std::map<AccountId, Account> accounts_;
  std::map<ChannelId, Channel> channels_;
  uint64_t fees_ = 0;
  std::set<AccountId> dirty_accounts_;
  std::set<ChannelId> dirty_channels_;
};

// The signer's signature over the canonical transaction bytes: the check
// Apply starts with. Thread-safe (pure).
bool VerifyTransactionSignature(const v1::Transaction& tx);

// Channel <-> stored record.
v1::ChannelState ChannelToProto(const Channel& ch);
Result<Channel> ChannelFromProto(const v1::ChannelState& p);

}  // namespace tipd::ledger
