#include "ledger/rules.h"

#include <algorithm>

#include "channel/codec.h"

namespace tipd::ledger {
namespace {

std::string Short(ByteSpan id) { return HexEncode(id.first(std::min<size_t>(id.size(), 8))); }

TxError Err(TxRule rule, std::string reason) { return TxError{rule, std::move(reason)}; }

bool ToId(const std::string& s, Hash32* out) {
  if (s.size() != 32) return false;
  std::copy(s.begin(), s.end(), out->begin());
  return true;
}

void WriteChannel(ByteWriter& w, const Channel& ch) {
  w.Raw(ch.id);
  w.Raw(ch.party_a);
  w.Raw(ch.party_b);
  w.U64(ch.deposit_a);
  w.U64(ch.deposit_b);
  w.U64(ch.settle_timeout);
  w.U8(static_cast<uint8_t>(ch.phase));
  w.U64(ch.opened_height);
  w.U64(ch.close_height);
  w.Raw(ch.closer);
  for (const HeldProof* p : {&ch.proof_a_to_b, &ch.proof_b_to_a}) {
    w.U64(p->nonce);
    w.U64(p->transferred);
    w.Raw(p->tips_root);
  }
  w.U64(ch.payout_a);
  w.U64(ch.payout_b);
  // State encoding v2 (docs/ledger.md): the escrow-paid fee debts.
  w.U64(ch.fee_debt_a);
  w.U64(ch.fee_debt_b);
}

}  // namespace

const char* TxRuleCode(TxRule rule) {
  switch (rule) {
    case TxRule::kMalformed:
      return "MALFORMED";
    case TxRule::kWrongChainId:
      return "WRONG_CHAIN_ID";
    case TxRule::kBadSignature:
      return "BAD_SIGNATURE";
    case TxRule::kBadNonce:
      return "BAD_NONCE";
    case TxRule::kFeeTooLow:
      return "FEE_TOO_LOW";
    case TxRule::kInsufficientFunds:
      return "INSUFFICIENT_FUNDS";
    case TxRule::kOverflow:
      return "OVERFLOW";
    case TxRule::kZeroAmount:
      return "ZERO_AMOUNT";
    case TxRule::kSelfTransfer:
      return "SELF_TRANSFER";
    case TxRule::kUnknownChannel:
      return "UNKNOWN_CHANNEL";
    case TxRule::kChannelExists:
      return "CHANNEL_EXISTS";
    case TxRule::kSameParties:
      return "SAME_PARTIES";
    case TxRule::kNotAParty:
      return "NOT_A_PARTY";
    case TxRule::kWrongSigner:
      return "WRONG_SIGNER";
    case TxRule::kSettleTimeoutOutOfBounds:
      return "SETTLE_TIMEOUT_OUT_OF_BOUNDS";
    case TxRule::kChannelNotOpen:
      return "CHANNEL_NOT_OPEN";
    case TxRule::kChannelNotClosing:
      return "CHANNEL_NOT_CLOSING";
    case TxRule::kWindowClosed:
      return "SETTLE_WINDOW_CLOSED";
    case TxRule::kWindowOpen:
      return "SETTLE_WINDOW_OPEN";
    case TxRule::kBadProof:
      return "BAD_PROOF";
    case TxRule::kStaleProof:
      return "STALE_PROOF";
    case TxRule::kBalancesMismatch:
      return "BALANCES_MISMATCH";
    case TxRule::kNotBeneficiary:
      return "NOT_BENEFICIARY";
    case TxRule::kEscrowFeeLimit:
      return "ESCROW_FEE_LIMIT";
  }
  return "UNKNOWN";
}

std::string TxError::ToString() const { return std::string(TxRuleCode(rule)) + ": " + reason; }

Result<Params> ValidateGenesis(const v1::GenesisParams& g) {
  Params p;
  if (!channel::IsValidChainId(g.chain_id())) {
    return Status::InvalidArgument("genesis chain_id must be 1..64 bytes of [a-z0-9._-]");
  }
  p.chain_id = g.chain_id();
  auto seq = crypto::ParseXOnly(AsSpan(g.sequencer_key()));
  if (!seq.ok()) return Status::InvalidArgument("genesis sequencer_key is not a valid x-only key");
  p.sequencer = *seq;
  if (g.min_settle_timeout() < 1 || g.min_settle_timeout() > g.max_settle_timeout()) {
    return Status::InvalidArgument("genesis needs 1 <= min_settle_timeout <= max_settle_timeout");
  }
  p.fee_per_tx = g.fee_per_tx();
  p.min_settle_timeout = g.min_settle_timeout();
  p.max_settle_timeout = g.max_settle_timeout();
  p.block_interval_ms = g.block_interval_ms();
  p.genesis_time_ms = g.genesis_time_ms();
  std::set<AccountId> seen;
  for (const auto& a : g.allocations()) {
    auto id = crypto::ParseXOnly(AsSpan(a.account()));
    if (!id.ok()) {
      return Status::InvalidArgument("genesis allocation " + HexEncode(AsSpan(a.account())) +
                                     " is not a valid x-only key");
    }
    if (!seen.insert(*id).second) {
      return Status::InvalidArgument("genesis allocates to " + HexEncode(*id) + " twice");
    }
    if (!CheckedAdd(p.total_supply, a.amount(), &p.total_supply)) {
      return Status::InvalidArgument("genesis allocations exceed 2^64 - 1");
    }
    p.allocations.emplace_back(*id, a.amount());
  }
  TIPD_ASSIGN_OR_RETURN(p.genesis_hash, GenesisHash(g));
  return p;
}

LedgerState::LedgerState(Params params) : params_(std::move(params)) {
  for (const auto& [id, amount] : params_.allocations) accounts_[id].balance = amount;
}

const Account* LedgerState::FindAccount(const AccountId& id) const {
  auto it = accounts_.find(id);
  return it == accounts_.end() ? nullptr : &it->second;
}

const Channel* LedgerState::FindChannel(const ChannelId& id) const {
  auto it = channels_.find(id);
  return it == channels_.end() ? nullptr : &it->second;
}

bool VerifyTransactionSignature(const v1::Transaction& tx) {
  auto bytes = EncodeTransaction(tx);
  crypto::Signature sig;
  if (!bytes.ok() || tx.signature().size() != sig.size()) return false;
  AccountId signer_id;
  ToId(tx.signer(), &signer_id);
  std::copy(tx.signature().begin(), tx.signature().end(), sig.begin());
  return crypto::VerifyTagged(signer_id, kTxTag, *bytes, sig);
}

std::optional<TxError> LedgerState::Apply(const v1::Transaction& tx, uint64_t height) {
  return ApplyChecked(tx, height, /*signature_verified=*/false);
}

std::optional<TxError> LedgerState::ApplyPreverified(const v1::Transaction& tx, uint64_t height) {
  return ApplyChecked(tx, height, /*signature_verified=*/true);
}

std::optional<TxError> LedgerState::ApplyChecked(const v1::Transaction& tx, uint64_t height,
                                                 bool signature_verified) {
  if (tx.chain_id() != params_.chain_id) {
    return Err(TxRule::kWrongChainId, "transaction is for chain '" + tx.chain_id() +
                                          "', this ledger is '" + params_.chain_id + "'");
  }
  auto bytes = EncodeTransaction(tx);
  if (!bytes.ok()) return Err(TxRule::kMalformed, bytes.status().message());
  AccountId signer_id;
  ToId(tx.signer(), &signer_id);
  crypto::Signature sig;
  if (tx.signature().size() != sig.size()) {
    return Err(TxRule::kBadSignature, "signature must be 64 bytes");
  }
  std::copy(tx.signature().begin(), tx.signature().end(), sig.begin());
  if (!signature_verified && !crypto::VerifyTagged(signer_id, kTxTag, *bytes, sig)) {
    return Err(TxRule::kBadSignature, "signature does not verify for signer " + Short(signer_id));
  }
  auto it = accounts_.find(signer_id);
  const bool signer_exists = it != accounts_.end();
  // A party of a closing channel may have the escrow pay the fee of its
  // UpdateProof or Settle, even without an account (ApplyBody decides).
  const bool escrow_may_pay =
      tx.body_case() == v1::Transaction::kUpdateProof || tx.body_case() == v1::Transaction::kSettle;
  if (!signer_exists && !escrow_may_pay) {
    return Err(TxRule::kInsufficientFunds,
               "signer " + Short(signer_id) + " has no account (balance 0) to pay the fee");
  }
  Account blank;  // balance 0, nonce 0: a signer without an account
  Account& signer = signer_exists ? it->second : blank;
  if (tx.nonce() != signer.nonce) {
    return Err(TxRule::kBadNonce, "nonce " + std::to_string(tx.nonce()) +
                                      " is not the next nonce " + std::to_string(signer.nonce) +
                                      " of " + Short(signer_id) +
                                      (tx.nonce() < signer.nonce ? " (replay)" : " (gap)"));
  }
  if (tx.fee() < params_.fee_per_tx) {
    return Err(TxRule::kFeeTooLow, "fee " + std::to_string(tx.fee()) + " is below " +
                                       std::to_string(params_.fee_per_tx));
  }
  uint64_t fees_after;
  if (!CheckedAdd(fees_, tx.fee(), &fees_after))
    return Err(TxRule::kOverflow, "fee total overflows");
  // The body checks everything first and mutates last; `spent` is what it
  // takes from the signer on top of the fee.
  uint64_t spent = 0;
  bool fee_from_escrow = false;
  if (auto e = ApplyBody(tx, height, signer, signer_exists, &spent, &fee_from_escrow)) return e;
  if (fee_from_escrow) {
    // The escrow paid the fee (spent is 0). The account only advances its
    // nonce; one that did not exist is created here (balance 0, or the
    // payout Settle just credited), so the transaction cannot be replayed.
    accounts_[signer_id].nonce += 1;
  } else {
    // ApplyBody verified signer.balance >= spent + fee before mutating (and
    // a signer without an account always has the escrow pay).
    signer.balance -= spent + tx.fee();
    signer.nonce += 1;
  }
  fees_ = fees_after;
  dirty_accounts_.insert(signer_id);
  return std::nullopt;
}

std::optional<TxError> LedgerState::CheckProof(const Channel& ch, const v1::BalanceProof& proof,
                                               const AccountId& expected_signer) const {
  if (proof.chain_id() != params_.chain_id) {
    return Err(TxRule::kBadProof, "proof is for chain '" + proof.chain_id() + "'");
  }
  if (proof.channel_id() != AsStringView(ch.id)) {
    return Err(TxRule::kBadProof, "proof is for another channel");
  }
  if (proof.locked() != 0) return Err(TxRule::kBadProof, "locked amounts are not supported");
  if (proof.nonce() == 0) return Err(TxRule::kStaleProof, "proof nonce 0 carries nothing");
  auto s = channel::VerifyBalanceProof(proof, expected_signer);
  if (!s.ok()) {
    return Err(TxRule::kBadProof, "proof signature does not verify for " + Short(expected_signer) +
                                      ": " + s.error().reason);
  }
  return std::nullopt;
}

std::optional<TxError> LedgerState::ApplyBody(const v1::Transaction& tx, uint64_t height,
                                              Account& signer, bool signer_exists, uint64_t* spent,
                                              bool* fee_from_escrow) {
  AccountId signer_id;
  ToId(tx.signer(), &signer_id);
  auto need = [&](uint64_t amount) -> std::optional<TxError> {
    uint64_t total;
    if (!CheckedAdd(amount, tx.fee(), &total)) {
      return Err(TxRule::kOverflow, "amount + fee overflows");
    }
    if (signer.balance < total) {
      return Err(TxRule::kInsufficientFunds, "balance " + std::to_string(signer.balance) +
                                                 " cannot cover " + std::to_string(amount) +
                                                 " + fee " + std::to_string(tx.fee()));
    }
    return std::nullopt;
  };
  // Who pays the fee of an UpdateProof or Settle on `ch`, given the final
  // balances `fb` under the proofs held after this transaction: the signer's
  // account when it can; otherwise, for a party, its share of the escrow —
  // at exactly the base fee, once per party for UpdateProof (Settle ends the
  // channel), and only while that share covers the party's debt plus this
  // fee. Sets *fee_from_escrow; changes nothing.
  auto choose_fee_payer = [&](const Channel& ch, const channel::FinalBalances& fb,
                              bool settle) -> std::optional<TxError> {
    *fee_from_escrow = false;
    if (signer_exists && signer.balance >= tx.fee()) return std::nullopt;
    const std::string cannot_pay =
        signer_exists ? "balance " + std::to_string(signer.balance) + " cannot cover the fee " +
                            std::to_string(tx.fee())
                      : "signer " + Short(signer_id) + " has no account (balance 0) to pay the fee";
    const bool is_a = signer_id == ch.party_a;
    if (!is_a && signer_id != ch.party_b) {
      return Err(TxRule::kInsufficientFunds,
                 cannot_pay + ", and only a party's fee can come from the escrow");
    }
    if (tx.fee() != params_.fee_per_tx) {
      return Err(TxRule::kEscrowFeeLimit, cannot_pay +
                                              "; a fee paid from the escrow must be "
                                              "exactly the base fee " +
                                              std::to_string(params_.fee_per_tx));
    }
    const uint64_t debt = is_a ? ch.fee_debt_a : ch.fee_debt_b;
    if (!settle && debt != 0) {
      return Err(TxRule::kEscrowFeeLimit,
                 cannot_pay + "; the escrow already paid an update-proof fee of " +
                     Short(signer_id) + " in this channel (debt " + std::to_string(debt) + ")");
    }
    const uint64_t share = is_a ? fb.balance_a : fb.balance_b;
    uint64_t owed;
    if (!CheckedAdd(debt, tx.fee(), &owed)) return Err(TxRule::kOverflow, "fee debt overflows");
    if (share < owed || ch.Escrow() < tx.fee()) {
      return Err(TxRule::kInsufficientFunds,
                 cannot_pay + ", and its share " + std::to_string(share) +
                     " of the escrow under the held proofs cannot cover its fee debt " +
                     std::to_string(debt) + " + fee " + std::to_string(tx.fee()));
    }
    *fee_from_escrow = true;
    return std::nullopt;
  };
  auto find_channel = [&](const std::string& raw, Channel** out) -> std::optional<TxError> {
    ChannelId id;
    ToId(raw, &id);
    auto it = channels_.find(id);
    if (it == channels_.end()) return Err(TxRule::kUnknownChannel, "no channel " + Short(id));
    *out = &it->second;
    return std::nullopt;
  };

  switch (tx.body_case()) {
    case v1::Transaction::kTransfer: {
      const auto& t = tx.transfer();
      AccountId to;
      ToId(t.to(), &to);
      if (t.amount() == 0) return Err(TxRule::kZeroAmount, "transfer amount must be >= 1");
      if (to == signer_id) return Err(TxRule::kSelfTransfer, "transfer to the signer itself");
      if (auto e = need(t.amount())) return e;
      if (!crypto::ParseXOnly(to).ok()) {
        return Err(TxRule::kMalformed, "recipient " + Short(to) + " is not a valid x-only key");
      }
      const Account* dest = FindAccount(to);
      uint64_t new_balance;
      if (!CheckedAdd(dest ? dest->balance : 0, t.amount(), &new_balance)) {
        return Err(TxRule::kOverflow, "recipient balance overflows");
      }
      accounts_[to].balance = new_balance;  // std::map insertion keeps `signer` valid
      dirty_accounts_.insert(to);
      *spent = t.amount();
      return std::nullopt;
    }
    case v1::Transaction::kChannelOpen: {
      const auto& o = tx.channel_open();
      AccountId a, b;
      ToId(o.party_a(), &a);
      ToId(o.party_b(), &b);
      if (a != signer_id) return Err(TxRule::kWrongSigner, "a channel open is signed by party A");
      if (a == b) return Err(TxRule::kSameParties, "a channel needs two different parties");
      if (!crypto::ParseXOnly(b).ok()) {
        return Err(TxRule::kMalformed, "party B " + Short(b) + " is not a valid x-only key");
      }
      if (o.settle_timeout() < params_.min_settle_timeout ||
          o.settle_timeout() > params_.max_settle_timeout) {
        return Err(TxRule::kSettleTimeoutOutOfBounds,
                   "settle timeout " + std::to_string(o.settle_timeout()) + " outside [" +
                       std::to_string(params_.min_settle_timeout) + ", " +
                       std::to_string(params_.max_settle_timeout) + "]");
      }
      uint64_t total;
      if (!CheckedAdd(o.deposit_a(), o.deposit_b(), &total)) {
        return Err(TxRule::kOverflow, "deposits overflow");
      }
      if (total == 0) return Err(TxRule::kZeroAmount, "a channel needs a deposit");
      if (auto e = need(o.deposit_a())) return e;
      const Account* acct_b = FindAccount(b);
      // B's signature covers A's nonce, so it opens exactly one channel id:
      // B needs no account nonce of its own, and an open B agreed to never
      // blocks B's own transactions. The field stays in the signed layout.
      if (o.nonce_b() != 0) {
        return Err(TxRule::kMalformed, "nonce_b is reserved and must be 0");
      }
      uint64_t balance_b = acct_b ? acct_b->balance : 0;
      if (balance_b < o.deposit_b()) {
        return Err(TxRule::kInsufficientFunds, "party B balance " + std::to_string(balance_b) +
                                                   " cannot cover deposit " +
                                                   std::to_string(o.deposit_b()));
      }
      auto agreement = EncodeChannelOpenAgreement(params_.chain_id, o, tx.nonce());
      if (!agreement.ok()) return Err(TxRule::kMalformed, agreement.status().message());
      crypto::Signature sig_b;
      std::copy(o.signature_b().begin(), o.signature_b().end(), sig_b.begin());
      if (!crypto::VerifyTagged(b, kChannelOpenTag, *agreement, sig_b)) {
        return Err(TxRule::kBadSignature, "party B's signature on the open does not verify");
      }
      ChannelId id = DeriveChannelId(params_.chain_id, a, b, tx.nonce());
      if (channels_.count(id))
        return Err(TxRule::kChannelExists, "channel " + Short(id) + " exists");
      Account& mb = accounts_[b];
      mb.balance -= o.deposit_b();
      dirty_accounts_.insert(b);
      Channel ch;
      ch.id = id;
      ch.party_a = a;
      ch.party_b = b;
      ch.deposit_a = o.deposit_a();
      ch.deposit_b = o.deposit_b();
      ch.settle_timeout = o.settle_timeout();
      ch.phase = ChannelPhase::kOpen;
      ch.opened_height = height;
      channels_[id] = ch;
      dirty_channels_.insert(id);
      *spent = o.deposit_a();
      return std::nullopt;
    }
    case v1::Transaction::kDeposit: {
      const auto& d = tx.deposit();
      Channel* ch;
      if (auto e = find_channel(d.channel_id(), &ch)) return e;
      if (ch->phase != ChannelPhase::kOpen) {
        return Err(TxRule::kChannelNotOpen, "deposits go only into an open channel");
      }
      bool is_a = signer_id == ch->party_a;
      if (!is_a && signer_id != ch->party_b) {
        return Err(TxRule::kNotAParty, Short(signer_id) + " is not a party of the channel");
      }
      if (d.amount() == 0) return Err(TxRule::kZeroAmount, "deposit amount must be >= 1");
      if (auto e = need(d.amount())) return e;
      uint64_t new_deposit, total;
      if (!CheckedAdd(is_a ? ch->deposit_a : ch->deposit_b, d.amount(), &new_deposit) ||
          !CheckedAdd(ch->deposit_a + ch->deposit_b, d.amount(), &total)) {
        return Err(TxRule::kOverflow, "channel deposits overflow");
      }
      (is_a ? ch->deposit_a : ch->deposit_b) = new_deposit;
      dirty_channels_.insert(ch->id);
      *spent = d.amount();
      return std::nullopt;
    }
    case v1::Transaction::kCooperativeClose: {
      const auto& c = tx.cooperative_close().close();
      Channel* ch;
      if (auto e = find_channel(c.channel_id(), &ch)) return e;
      if (ch->phase == ChannelPhase::kSettled) {
        return Err(TxRule::kChannelNotOpen, "channel is already settled");
      }
      if (signer_id != ch->party_a && signer_id != ch->party_b) {
        return Err(TxRule::kNotAParty, Short(signer_id) + " is not a party of the channel");
      }
      // The escrow: the deposits, less any fee it already paid while closing.
      uint64_t sum;
      if (!CheckedAdd(c.balance_a(), c.balance_b(), &sum) || sum != ch->Escrow()) {
        return Err(TxRule::kBalancesMismatch,
                   "balances " + std::to_string(c.balance_a()) + " + " +
                       std::to_string(c.balance_b()) + " do not equal the channel's escrow " +
                       std::to_string(ch->Escrow()) + " (deposits " +
                       std::to_string(ch->deposit_a + ch->deposit_b) + " less fees it paid " +
                       std::to_string(ch->fee_debt_a + ch->fee_debt_b) + ")");
      }
      for (const auto& [sig, key] :
           {std::pair{&c.signature_a(), &ch->party_a}, std::pair{&c.signature_b(), &ch->party_b}}) {
        auto s = channel::VerifyCooperativeClose(params_.chain_id, ch->id, c.balance_a(),
                                                 c.balance_b(), AsSpan(*sig), *key);
        if (!s.ok()) {
          return Err(TxRule::kBadSignature,
                     "cooperative close signature of " + Short(*key) + " does not verify");
        }
      }
      const Account* pa = FindAccount(ch->party_a);
      const Account* pb = FindAccount(ch->party_b);
      uint64_t na, nb;
      if (!CheckedAdd(pa ? pa->balance : 0, c.balance_a(), &na) ||
          !CheckedAdd(pb ? pb->balance : 0, c.balance_b(), &nb)) {
        return Err(TxRule::kOverflow, "payout overflows an account balance");
      }
      // The signer is a party, so its payout counts towards the fee.
      if ((signer_id == ch->party_a ? na : nb) < tx.fee()) {
        return Err(TxRule::kInsufficientFunds, "balance after payout cannot cover the fee");
      }
      accounts_[ch->party_a].balance = na;
      accounts_[ch->party_b].balance = nb;
      dirty_accounts_.insert(ch->party_a);
      dirty_accounts_.insert(ch->party_b);
      if (ch->phase == ChannelPhase::kOpen) {
        ch->close_height = height;
        ch->closer = signer_id;
      }
      ch->phase = ChannelPhase::kSettled;
      ch->payout_a = c.balance_a();
      ch->payout_b = c.balance_b();
      dirty_channels_.insert(ch->id);
      return std::nullopt;
    }
    case v1::Transaction::kUnilateralClose: {
      const auto& u = tx.unilateral_close();
      Channel* ch;
      if (auto e = find_channel(u.channel_id(), &ch)) return e;
      if (ch->phase != ChannelPhase::kOpen) {
        return Err(TxRule::kChannelNotOpen, "only an open channel can be closed unilaterally");
      }
      bool is_a = signer_id == ch->party_a;
      if (!is_a && signer_id != ch->party_b) {
        return Err(TxRule::kNotAParty, Short(signer_id) + " is not a party of the channel");
      }
      if (auto e = need(0)) return e;
      const AccountId& partner = is_a ? ch->party_b : ch->party_a;
      HeldProof* held = is_a ? &ch->proof_b_to_a : &ch->proof_a_to_b;
      HeldProof next = *held;
      if (u.has_partner_proof()) {
        if (auto e = CheckProof(*ch, u.partner_proof(), partner)) return e;
        next = HeldProof{u.partner_proof().nonce(), u.partner_proof().transferred(), {}};
        ToId(u.partner_proof().tips_root(), &next.tips_root);
      }
      *held = next;
      ch->phase = ChannelPhase::kClosing;
      ch->close_height = height;
      ch->closer = signer_id;
      dirty_channels_.insert(ch->id);
      return std::nullopt;
    }
    case v1::Transaction::kUpdateProof: {
      const auto& u = tx.update_proof();
      Channel* ch;
      if (auto e = find_channel(u.channel_id(), &ch)) return e;
      if (ch->phase != ChannelPhase::kClosing) {
        return Err(TxRule::kChannelNotClosing, "proofs are updated only while a channel closes");
      }
      if (height > ch->WindowEnd()) {
        return Err(TxRule::kWindowClosed, "settle window ended at height " +
                                              std::to_string(ch->WindowEnd()) + ", now " +
                                              std::to_string(height));
      }
      // A proof of direction X->Y is accepted only from Y, the side it pays:
      // X could otherwise sign a fresh proof with a huge nonce and
      // transferred 0 and erase what it paid.
      const bool signer_is_a = signer_id == ch->party_a;
      if (!signer_is_a && signer_id != ch->party_b) {
        return Err(TxRule::kNotBeneficiary,
                   Short(signer_id) +
                       " is not a party of the channel: a proof is submitted only by the party "
                       "it pays");
      }
      const AccountId& payer = signer_is_a ? ch->party_b : ch->party_a;
      if (auto e = CheckProof(*ch, u.proof(), payer)) {
        if (CheckProof(*ch, u.proof(), signer_id) == std::nullopt) {
          return Err(TxRule::kNotBeneficiary, "the proof is signed by " + Short(signer_id) +
                                                  " and pays " + Short(payer) + ": only " +
                                                  Short(payer) + " may submit it");
        }
        return e;
      }
      HeldProof* held = signer_is_a ? &ch->proof_b_to_a : &ch->proof_a_to_b;
      if (u.proof().nonce() <= held->nonce) {
        return Err(TxRule::kStaleProof, "proof nonce " + std::to_string(u.proof().nonce()) +
                                            " is not above the held nonce " +
                                            std::to_string(held->nonce));
      }
      // The final balances once this proof is held decide whether the
      // signer's share can carry an escrow-paid fee.
      auto fb = channel::ComputeFinalBalances(
          ch->deposit_a, ch->deposit_b,
          signer_is_a ? ch->proof_a_to_b.transferred : u.proof().transferred(),
          signer_is_a ? u.proof().transferred() : ch->proof_b_to_a.transferred);
      if (!fb.ok()) return Err(TxRule::kOverflow, fb.error().reason);
      if (auto e = choose_fee_payer(*ch, *fb, /*settle=*/false)) return e;
      if (*fee_from_escrow) (signer_is_a ? ch->fee_debt_a : ch->fee_debt_b) += tx.fee();
      held->nonce = u.proof().nonce();
      held->transferred = u.proof().transferred();
      ToId(u.proof().tips_root(), &held->tips_root);
      dirty_channels_.insert(ch->id);
      return std::nullopt;
    }
    case v1::Transaction::kSettle: {
      Channel* ch;
      if (auto e = find_channel(tx.settle().channel_id(), &ch)) return e;
      if (ch->phase != ChannelPhase::kClosing) {
        return Err(TxRule::kChannelNotClosing, "only a closing channel can be settled");
      }
      if (height <= ch->WindowEnd()) {
        return Err(TxRule::kWindowOpen, "settle window lasts until height " +
                                            std::to_string(ch->WindowEnd()) + ", now " +
                                            std::to_string(height));
      }
      auto fb = channel::ComputeFinalBalances(
          ch->deposit_a, ch->deposit_b, ch->proof_a_to_b.transferred, ch->proof_b_to_a.transferred);
      if (!fb.ok()) return Err(TxRule::kOverflow, fb.error().reason);
      if (auto e = choose_fee_payer(*ch, *fb, /*settle=*/true)) return e;
      const bool signer_is_a = signer_id == ch->party_a;
      uint64_t debt_a = ch->fee_debt_a, debt_b = ch->fee_debt_b;
      if (*fee_from_escrow) (signer_is_a ? debt_a : debt_b) += tx.fee();  // checked above
      // What the escrow still holds is shared out: A gets its final balance
      // less its fee debt, clamped to [0, remaining], and B the rest — so
      // the payouts always add up to the escrow. Without debts this is
      // exactly (balance_a, balance_b).
      const uint64_t remaining = ch->deposit_a + ch->deposit_b - debt_a - debt_b;
      __int128 pay_a = static_cast<__int128>(fb->balance_a) - debt_a;
      pay_a = std::clamp<__int128>(pay_a, 0, remaining);
      const uint64_t payout_a = static_cast<uint64_t>(pay_a);
      const uint64_t payout_b = remaining - payout_a;
      const Account* pa = FindAccount(ch->party_a);
      const Account* pb = FindAccount(ch->party_b);
      uint64_t na, nb;
      if (!CheckedAdd(pa ? pa->balance : 0, payout_a, &na) ||
          !CheckedAdd(pb ? pb->balance : 0, payout_b, &nb)) {
        return Err(TxRule::kOverflow, "payout overflows an account balance");
      }
      accounts_[ch->party_a].balance = na;
      accounts_[ch->party_b].balance = nb;
      dirty_accounts_.insert(ch->party_a);
      dirty_accounts_.insert(ch->party_b);
      ch->fee_debt_a = debt_a;
      ch->fee_debt_b = debt_b;
      ch->phase = ChannelPhase::kSettled;
      ch->payout_a = payout_a;
      ch->payout_b = payout_b;
      dirty_channels_.insert(ch->id);
      return std::nullopt;
    }
    case v1::Transaction::BODY_NOT_SET:
      return Err(TxRule::kMalformed, "transaction has no body");
  }
  return Err(TxRule::kMalformed, "unknown transaction kind");
}

Status LedgerState::CheckSupply() const {
  unsigned __int128 total = fees_;
  for (const auto& [id, a] : accounts_) total += a.balance;
  for (const auto& [id, ch] : channels_) total += ch.Escrow();
  if (total != params_.total_supply) {
    return Status::Internal("supply not conserved: accounts + escrows + fees = " +
                            std::to_string(static_cast<uint64_t>(total)) + ", genesis supply " +
                            std::to_string(params_.total_supply));
  }
  return Status::Ok();
}

Hash32 LedgerState::CommitStateHash(const Hash32& previous) {
  ByteWriter w;
  w.Raw(previous);
  for (const AccountId& id : dirty_accounts_) {
    const Account& a = accounts_.at(id);
    w.U8('A');
    w.Raw(id);
    w.U64(a.balance);
    w.U64(a.nonce);
  }
  for (const ChannelId& id : dirty_channels_) {
    w.U8('H');
    WriteChannel(w, channels_.at(id));
  }
  w.U8('F');
  w.U64(fees_);
  dirty_accounts_.clear();
  dirty_channels_.clear();
  return crypto::TaggedHash(kStateTag, w.bytes());
}

Hash32 LedgerState::GenesisStateHash() const {
  ByteWriter w;
  w.Raw(params_.genesis_hash);
  for (const auto& [id, a] : accounts_) {
    w.U8('A');
    w.Raw(id);
    w.U64(a.balance);
    w.U64(a.nonce);
  }
  w.U8('F');
  w.U64(0);
  return crypto::TaggedHash(kStateTag, w.bytes());
}

void LedgerState::RestoreAccount(const AccountId& id, const Account& account) {
  accounts_[id] = account;
}

void LedgerState::RestoreChannel(const Channel& channel) { channels_[channel.id] = channel; }

v1::ChannelState ChannelToProto(const Channel& ch) {
  v1::ChannelState p;
  p.set_version(2);  // 2: fee debts (docs/ledger.md)
  p.set_channel_id(std::string(AsStringView(ch.id)));
  p.set_party_a(std::string(AsStringView(ch.party_a)));
  p.set_party_b(std::string(AsStringView(ch.party_b)));
  p.set_deposit_a(ch.deposit_a);
  p.set_deposit_b(ch.deposit_b);
  p.set_settle_timeout(ch.settle_timeout);
  p.set_status(static_cast<v1::ChannelStatus>(ch.phase));
  p.set_opened_height(ch.opened_height);
  p.set_close_height(ch.close_height);
  p.set_closer(std::string(AsStringView(ch.closer)));
  for (auto [held, out] : {std::pair{&ch.proof_a_to_b, p.mutable_proof_a_to_b()},
                           std::pair{&ch.proof_b_to_a, p.mutable_proof_b_to_a()}}) {
    out->set_nonce(held->nonce);
    out->set_transferred(held->transferred);
    out->set_tips_root(std::string(AsStringView(held->tips_root)));
  }
  p.set_payout_a(ch.payout_a);
  p.set_payout_b(ch.payout_b);
  p.set_fee_debt_a(ch.fee_debt_a);
  p.set_fee_debt_b(ch.fee_debt_b);
  return p;
}

Result<Channel> ChannelFromProto(const v1::ChannelState& p) {
  Channel ch;
  if (!ToId(p.channel_id(), &ch.id) || !ToId(p.party_a(), &ch.party_a) ||
      !ToId(p.party_b(), &ch.party_b) || !ToId(p.closer(), &ch.closer) ||
      !ToId(p.proof_a_to_b().tips_root(), &ch.proof_a_to_b.tips_root) ||
      !ToId(p.proof_b_to_a().tips_root(), &ch.proof_b_to_a.tips_root)) {
    return Status::Corruption("channel record has a field of the wrong size");
  }
  if (p.status() < v1::CHANNEL_STATUS_OPEN || p.status() > v1::CHANNEL_STATUS_SETTLED) {
    return Status::Corruption("channel record has an unknown status");
  }
  ch.deposit_a = p.deposit_a();
  ch.deposit_b = p.deposit_b();
  ch.settle_timeout = p.settle_timeout();
  ch.phase = static_cast<ChannelPhase>(p.status());
  ch.opened_height = p.opened_height();
  ch.close_height = p.close_height();
  ch.proof_a_to_b.nonce = p.proof_a_to_b().nonce();
  ch.proof_a_to_b.transferred = p.proof_a_to_b().transferred();
  ch.proof_b_to_a.nonce = p.proof_b_to_a().nonce();
  ch.proof_b_to_a.transferred = p.proof_b_to_a().transferred();
  ch.payout_a = p.payout_a();
  ch.payout_b = p.payout_b();
  // Version 1 records predate fee debts: theirs are 0 (fields absent).
  ch.fee_debt_a = p.fee_debt_a();
  ch.fee_debt_b = p.fee_debt_b();
  if (static_cast<unsigned __int128>(ch.fee_debt_a) + ch.fee_debt_b >
      static_cast<unsigned __int128>(ch.deposit_a) + ch.deposit_b) {
    return Status::Corruption("channel record has fee debts above its deposits");
  }
  return ch;
}

}  // namespace tipd::ledger
