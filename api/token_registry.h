// Token records: every API token the node minted, its restrictions, its last
// use and its revocation (docs/api.md, "Tokens").
//
// A token's text still proves itself (an HMAC under rpc.key, api/auth.h);
// the record adds what the text cannot carry: a label, who minted it and
// when, the restrictions checked where tips are admitted (largest tip, tips
// per minute, allowed channels and peers), the last use and revocation.
// Records live in the node database as
//   'K' token_id[16]  ->  StoredToken {version, TokenRecord}
// and all of them are held in memory (one per token minted: small), so a
// request's check is a map lookup, never a read.
//
// Durability:
//   - Create and Revoke write synchronously before they return: a token is
//     known before its text is handed out, and a revocation is on disk before
//     the DELETE answers 200. A revocation takes effect in memory at once.
//   - last_used_ms changes in memory only; Flush writes the records that
//     changed (the daemon calls it every few seconds and at shutdown), so a
//     request never waits for a write. A crash loses at most the last few
//     seconds of last-used times.
//
// Tokens without a record (minted before records existed) are accepted as
// "legacy": the first request that uses one records it (created_by "legacy",
// flushed with the last-used times), after which it is listed and can be
// revoked like any other. RevokeUnknown writes a revoked record for an id
// never seen, so a legacy token can be revoked before it is used again.
//
// Tip restrictions (Admit): the amount against max_per_tip (403
// TIP_ABOVE_TOKEN_MAX), the channel and its peer against the allowed lists
// (403 CHANNEL_NOT_ALLOWED: a tip passes if both lists are empty, or its
// channel is in `channels`, or its peer is in `peers`), then the rate (429
// TOKEN_RATE_LIMITED), then the daily cap through the SpendLimiter. The rate
// is a sliding window: at most rate_per_minute tips admitted in any 60 000
// ms, counted when admitted; a tip that is refused later (the channel rule,
// the peer) gives its slot back, like its spend reservation. The window is
// in memory: a restart starts it empty.
//
// Threading: every method locks one mutex, so any thread may call it; the
// daemon calls it on the io thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api/auth.h"
#include "node/lifecycle.h"
#include "tipd/api.pb.h"
#include "util/status.h"

namespace tipd::storage {
class Database;
}  // namespace tipd::storage

namespace tipd::api {

inline constexpr char kTokenKeyFamily = 'K';
std::string TokenKey(const TokenId& id);

// Bounds on what a token record may ask for (POST /v1/tokens answers 400
// beyond them).
inline constexpr uint32_t kMaxRatePerMinute = 100'000;
inline constexpr size_t kMaxTokenLabelBytes = 200;
inline constexpr size_t kMaxTokenListEntries = 256;  // channels, and peers

// created_by of the node's admin token and of tokens minted with it.
inline constexpr char kCreatedByAdminToken[] = "admin.token";
inline constexpr char kCreatedByLegacy[] = "legacy";

// Why a request or tip is refused: an HTTP status, a machine code and a
// message; retry_after_ms for rate limits.
struct TokenRefusal {
  int http_status = 403;
  std::string code;
  std::string message;
  int64_t retry_after_ms = 0;
};

class TokenRegistry {
 public:
  // Loads every 'K' record. kCorruption naming the key for a bad one.
  // REQUIRES: `db`, `clock` and `spend` (may be null: no caps) outlive it.
  static Result<std::unique_ptr<TokenRegistry>> Open(storage::Database* db, const Clock& clock,
                                                     SpendLimiter* spend);
  ~TokenRegistry();
  TokenRegistry(const TokenRegistry&) = delete;
  TokenRegistry& operator=(const TokenRegistry&) = delete;

  // Writes a new record (synchronously). `record.token_id` must be the id
  // of `claims`; scopes, expiry and cap are taken from `claims`.
  // kAlreadyExists if the id has a record.
  Status Create(const TokenClaims& claims, v1::TokenRecord record);

  // The record of a token, creating a non-legacy one with `label` and
  // `created_by` if there is none (used for admin.token at start).
  Status Ensure(const TokenClaims& claims, const std::string& label, const std::string& created_by);

  // The request-time check, after the token's signature and expiry
  // verified: nullopt if it may proceed (and its last use is noted), else a
  // 401 TOKEN_REVOKED. A token without a record is recorded as legacy.
  std::optional<TokenRefusal> Authenticate(const TokenClaims& claims);
  // The same check without noting a use (for open event streams).
  bool IsRevoked(const TokenId& id) const;

  // Revokes `id`: the record is written with revoked_at_ms before this
  // returns. kNotFound for an id with no record (unless `force`: then a
  // revoked record is written for it, for legacy tokens never used since
  // records exist). Revoking a revoked token returns its record unchanged.
  Result<v1::TokenRecord> Revoke(const TokenId& id, bool force);

  // Every record, newest created first (legacy ones last).
  std::vector<v1::TokenRecord> List() const;
  std::optional<v1::TokenRecord> Get(const TokenId& id) const;

  // Checks a tip of `amount` on `channel_id` (32 bytes) to `peer_hex` (66
  // hex) against `claims`' record and reserves a rate slot and the daily
  // cap. On success returns a TipAdmission that holds both; dropping it
  // without Commit gives both back.
  class TipAdmission;
  Result<std::unique_ptr<TipAdmission>> AdmitTip(const TokenClaims& claims,
                                                 const std::string& channel_id,
                                                 const std::string& peer_hex, uint64_t amount,
                                                 TokenRefusal* refusal);

  // Writes the records whose last use changed since the last flush.
  Status Flush();
  size_t dirty_count() const;

 private:
  TokenRegistry(storage::Database* db, const Clock& clock, SpendLimiter* spend);
  struct Entry {
    v1::TokenRecord record;
    bool dirty = false;
    std::deque<int64_t> admitted;  // times (ms) of tips admitted in the window
  };
  Status WriteLocked(const v1::TokenRecord& record);
  void ReleaseSlot(const TokenId& id, int64_t at_ms);

  storage::Database* db_;
  const Clock& clock_;
  SpendLimiter* spend_;
  mutable std::mutex mu_;
  std::map<TokenId, Entry> entries_;  // guarded by mu_
};

// What a tip admitted by AdmitTip holds: its rate slot and its spend
// reservation. Commit makes both permanent (the spend written with `batch`).
// REQUIRES: the registry and the SpendLimiter outlive it.
class TokenRegistry::TipAdmission {
 public:
  TipAdmission() = default;
  TipAdmission(const TipAdmission&) = delete;
  TipAdmission& operator=(const TipAdmission&) = delete;
  ~TipAdmission();
  void CommitToBatch(storage::WriteBatch* batch);

 private:
  friend class TokenRegistry;
  TokenRegistry* registry_ = nullptr;
  TokenId id_{};
  int64_t slot_ms_ = -1;  // -1: no rate slot held
  SpendLimiter* spend_ = nullptr;
  Reservation reservation_;
};

// The record of freshly minted `claims` from a request's fields; validates
// them (kInvalidArgument naming the field).
Result<v1::TokenRecord> NewTokenRecord(const TokenClaims& claims,
                                       const v1::CreateTokenRequest& request,
                                       const std::string& created_by, int64_t now_ms);

}  // namespace tipd::api
