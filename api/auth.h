// RPC authentication: bearer tokens verified by HMAC, scopes, and the daily
// spending cap (docs/api.md, "Authentication").
//
// A token is self-contained: its claims (id, scopes, expiry, daily cap) and an
// HMAC-SHA256 tag under the node's root key, so verifying one needs no
// database lookup. The root key lives in `<datadir>/rpc.key` (the node key
// file format: 64 hex characters, mode 0600, created atomically at first
// start, refused if group or others can access it). At first start the node
// also writes `<datadir>/admin.token` (mode 0600) holding an admin token for
// tipctl.
//
// Token text: "tipd1_" + lower-case hex of
//   version u8 (=1) | token_id [16] | scopes u32 BE | expires_at_ms u64 BE |
//   daily_cap u64 BE | tag [32]
// where tag = HMAC-SHA256(root_key, "tipd/rpc-token/v1" || the 37 bytes
// before it). 144 characters in all.
//
// A token stays valid until it expires, its record is revoked
// (api/token_registry.h: DELETE /v1/tokens/{id}), or the root key is
// replaced (delete rpc.key and restart: every token, including admin.token,
// is then reissued/invalidated).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "crypto/crypto.h"
#include "node/lifecycle.h"
#include "util/status.h"

namespace tipd::storage {
class Database;
class WriteBatch;
}  // namespace tipd::storage

namespace tipd::api {

// Scope bits. An admin token passes every scope check.
enum class Scope : uint32_t {
  kRead = 1u << 0,     // GET endpoints, events
  kReceive = 1u << 1,  // receive-side operations (e.g. invoices, tips received)
  kTip = 1u << 2,      // send tips (subject to the daily cap)
  kAdmin = 1u << 3,    // everything, including tokens, channels, transfers
};
inline constexpr uint32_t kAllScopes = 0xF;

// "read", "receive", "tip", "admin".
const char* ScopeName(Scope scope);
// Parses one scope name; kInvalidArgument naming the valid ones otherwise.
Result<Scope> ParseScope(std::string_view name);
// Comma-separated names in bit order, e.g. "read,tip"; "" for 0.
std::string ScopesToString(uint32_t scopes);

inline constexpr std::string_view kTokenPrefix = "tipd1_";
inline constexpr uint8_t kTokenVersion = 1;
using TokenId = std::array<uint8_t, 16>;

struct TokenClaims {
  TokenId id{};
  uint32_t scopes = 0;         // Scope bits
  uint64_t expires_at_ms = 0;  // Unix ms; 0 = never expires
  uint64_t daily_cap = 0;      // smallest unit per UTC day; 0 = no cap

  // True if the token carries `scope` or admin.
  bool Allows(Scope scope) const {
    return (scopes & (static_cast<uint32_t>(scope) | static_cast<uint32_t>(Scope::kAdmin))) != 0;
  }
  std::string IdHex() const;
  // True once `now_ms` has reached a set expiry.
  bool ExpiredAt(int64_t now_ms) const {
    return expires_at_ms != 0 && now_ms >= 0 && static_cast<uint64_t>(now_ms) >= expires_at_ms;
  }
};

// kPermissionDenied "token lacks scope 'tip' (it has: read)" unless
// claims.Allows(scope).
Status CheckScope(const TokenClaims& claims, Scope scope);

// Issues and verifies tokens under one root key. Immutable after
// construction, so safe to share between threads.
class TokenAuthority {
 public:
  // Loads `<datadir>/rpc.key`, creating it (with `rng`) if missing. Refuses a
  // key file group or others can access (kPermissionDenied), a symlink or
  // malformed file, as crypto::LoadKeyFile does.
  static Result<TokenAuthority> LoadOrCreate(const std::filesystem::path& datadir,
                                             crypto::RandomSource& rng);
  // For tests and tools that hold the key already.
  explicit TokenAuthority(const crypto::Key32& root_key);
  TokenAuthority(const TokenAuthority& other) = default;
  TokenAuthority& operator=(const TokenAuthority& other) = default;
  ~TokenAuthority();

  // Fresh claims with a random id.
  static TokenClaims NewClaims(uint32_t scopes, uint64_t expires_at_ms, uint64_t daily_cap,
                               crypto::RandomSource& rng);
  // The token text for `claims`.
  std::string Issue(const TokenClaims& claims) const;
  // The claims of a token this authority issued, if it has not expired at
  // `now_ms`. kInvalidArgument for text that is not a token (naming what is
  // wrong: prefix, length, hex, version), kPermissionDenied for a bad tag
  // ("token signature does not verify") or an expired token. Compares the
  // tag in constant time.
  Result<TokenClaims> Verify(std::string_view token, int64_t now_ms) const;
  // The same checks but the expiry: the claims of any token this authority
  // issued (the caller compares expires_at_ms with its clock).
  Result<TokenClaims> VerifySignature(std::string_view token) const;

 private:
  crypto::Key32 key_{};
};

// Writes `text` to `path` with mode 0600: a temporary file in the same
// directory, fsync, rename over `path`. Symlinks are not followed.
Status WriteFileAtomic0600(const std::filesystem::path& path, const std::string& text);

// The admin token file: `<datadir>/admin.token` holds one admin token and a
// newline, mode 0600. If the file exists and its token verifies under
// `authority`, returns that token. Otherwise (missing, or issued under an
// older root key) writes a fresh admin token (no expiry, no cap) atomically
// (temporary file, fsync, rename) and returns it. Refuses an existing file
// group or others can access (kPermissionDenied, naming the mode).
// `usable` (optional) may refuse a token that verifies (e.g. one whose record
// is revoked): it is then replaced too.
Result<std::string> EnsureAdminToken(const std::filesystem::path& datadir,
                                     const TokenAuthority& authority, crypto::RandomSource& rng,
                                     int64_t now_ms,
                                     const std::function<bool(const TokenClaims&)>& usable = {});
// Reads a token file (admin.token) for clients such as tipctl, with the same
// mode check. Trailing whitespace is dropped.
Result<std::string> ReadTokenFile(const std::filesystem::path& path);

// ---------------------------------------------------------------------------
// SpendLimiter: the daily spending cap of tip-scoped tokens.
//
// A request reserves its amount against its token's cap for the current UTC
// day (day = wall-clock ms / 86'400'000, from the Clock seam) before it pays,
// then commits the reservation once the payment is certain, or releases it
// (dropping an uncommitted Reservation releases it). A reservation succeeds
// only if spent + reserved + amount <= cap, and the check-and-add is one step
// under a mutex, so concurrent requests can never together exceed the cap.
// (The RPC server runs handlers on one io thread, which would serialize them
// anyway; the mutex makes the limiter safe from any thread.) A reservation
// counts against the day it was made, even if committed after midnight.
//
// Each committed spend is persisted in the node database as its own record
//   'S' token_id[16] day[8 BE] seq[8 BE]  ->  amount u64 BE (8 bytes)
// and the day's total is the sum of its records, read back once per day on
// first use, so a restart does not reset the day. Writing one record per
// spend (not a running total) keeps the stored total right whatever order
// concurrent commits reach the disk in. Commit writes the record either
// synchronously (Commit) or into the caller's batch (CommitToBatch), so the
// spend becomes durable together with the payment record that depends on
// it. Old days are never read again; pruning them is left to a later change.
// Tokens without a cap (daily_cap == 0) are not tracked.
inline constexpr char kSpendKeyFamily = 'S';
std::string SpendKey(const TokenId& id, uint64_t day, uint64_t seq);
// The prefix shared by every spend record of `id` on `day`.
std::string SpendDayPrefix(const TokenId& id, uint64_t day);

class SpendLimiter;

// A move-only claim on part of a token's daily cap.
class Reservation {
 public:
  Reservation() = default;
  Reservation(Reservation&& other) noexcept;
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  // Releases the reservation if it was neither committed nor released.
  ~Reservation();

  uint64_t amount() const { return amount_; }
  uint64_t day() const { return day_; }
  bool active() const { return limiter_ != nullptr; }

 private:
  friend class SpendLimiter;
  SpendLimiter* limiter_ = nullptr;  // null: empty, committed or released
  TokenId token_id_{};
  uint64_t day_ = 0;
  uint64_t amount_ = 0;
};

class SpendLimiter {
 public:
  // REQUIRES: `db` and `clock` outlive this object and every Reservation.
  SpendLimiter(storage::Database* db, const Clock& clock);
  SpendLimiter(const SpendLimiter&) = delete;
  SpendLimiter& operator=(const SpendLimiter&) = delete;

  static uint64_t DayOf(int64_t now_ms);

  // Reserves `amount` against `token`'s cap for today. Fails with
  // kResourceExhausted "daily spending cap of this token exceeded: cap C,
  // spent S, reserved R, requested A" (HTTP 429), kInvalidArgument for a
  // zero amount, or a storage error reading the persisted total. For an
  // uncapped token returns an inactive (no-op) Reservation.
  Result<Reservation> Reserve(const TokenClaims& token, uint64_t amount);
  // Makes the reservation spent and writes its spend record synchronously.
  // On a write error the amount stays spent in memory (fail closed).
  Status Commit(Reservation reservation);
  // Makes the reservation spent and adds its spend record to `batch`; the
  // caller commits the batch (in any order relative to other commits).
  void CommitToBatch(Reservation reservation, storage::WriteBatch* batch);
  // Gives the amount back. Same as dropping the Reservation.
  void Release(Reservation reservation);

  // Committed total for `id` today (reads the database if not cached).
  Result<uint64_t> SpentToday(const TokenId& id);
  uint64_t ReservedToday(const TokenId& id);

 private:
  friend class Reservation;
  struct DayTotal {
    uint64_t spent = 0;
    uint64_t reserved = 0;
    uint64_t next_seq = 0;  // sequence number of the next spend record
  };
  using Key = std::pair<TokenId, uint64_t>;
  // REQUIRES: mu_ held.
  Result<DayTotal*> LoadLocked(const TokenId& id, uint64_t day);
  // Moves the amount from reserved to spent; returns the record's key.
  std::string MarkSpent(Reservation& r);
  void ReleaseInternal(Reservation& r);

  storage::Database* db_;
  const Clock& clock_;
  std::mutex mu_;
  std::map<Key, DayTotal> totals_;  // guarded by mu_
};

}  // namespace tipd::api
