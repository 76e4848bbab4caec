#include "api/token_registry.h"

#include <algorithm>
#include <cctype>
#include <limits>

#include "crypto/crypto.h"
#include "storage/storage.h"
#include "util/bytes.h"

namespace tipd::api {

namespace {

using TokenStore = storage::RecordStore<v1::StoredToken>;

constexpr int64_t kRateWindowMs = 60'000;

bool Contains(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& v) {
  return std::find(list.begin(), list.end(), v) != list.end();
}

void FillFromClaims(const TokenClaims& claims, v1::TokenRecord* record) {
  record->set_token_id(claims.IdHex());
  record->clear_scopes();
  for (uint32_t bit = 1; bit <= static_cast<uint32_t>(Scope::kAdmin); bit <<= 1) {
    if (claims.scopes & bit) record->add_scopes(ScopeName(static_cast<Scope>(bit)));
  }
  record->set_expires_at_ms(claims.expires_at_ms);
  record->set_daily_spend_cap(claims.daily_cap);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::string TokenKey(const TokenId& id) {
  std::string key(1, kTokenKeyFamily);
  key.append(reinterpret_cast<const char*>(id.data()), id.size());
  return key;
}

Result<v1::TokenRecord> NewTokenRecord(const TokenClaims& claims,
                                       const v1::CreateTokenRequest& request,
                                       const std::string& created_by, int64_t now_ms) {
  if (request.label().size() > kMaxTokenLabelBytes) {
    return Status::InvalidArgument("label is longer than " + std::to_string(kMaxTokenLabelBytes) +
                                   " bytes");
  }
  if (request.rate_per_minute() > kMaxRatePerMinute) {
    return Status::InvalidArgument("rate_per_minute must be at most " +
                                   std::to_string(kMaxRatePerMinute) + " (0 = no limit), got " +
                                   std::to_string(request.rate_per_minute()));
  }
  if (request.channels_size() > static_cast<int>(kMaxTokenListEntries) ||
      request.peers_size() > static_cast<int>(kMaxTokenListEntries)) {
    return Status::InvalidArgument("channels and peers hold at most " +
                                   std::to_string(kMaxTokenListEntries) + " entries each");
  }
  v1::TokenRecord r;
  FillFromClaims(claims, &r);
  r.set_label(request.label());
  r.set_max_per_tip(request.max_per_tip());
  r.set_rate_per_minute(request.rate_per_minute());
  for (const std::string& c : request.channels()) {
    auto bytes = HexDecode(c);
    if (!bytes.ok() || bytes->size() != 32) {
      return Status::InvalidArgument("channels: '" + c + "' is not a 64-hex channel id");
    }
    const std::string id = Lower(c);
    if (!Contains(r.channels(), id)) r.add_channels(id);
  }
  for (const std::string& p : request.peers()) {
    auto key = crypto::PublicKey::FromHex(p);
    if (!key.ok()) {
      return Status::InvalidArgument("peers: '" + p + "' is not a 66-hex compressed node id");
    }
    const std::string id = key->Hex();
    if (!Contains(r.peers(), id)) r.add_peers(id);
  }
  r.set_created_by(created_by);
  r.set_created_at_ms(now_ms > 0 ? static_cast<uint64_t>(now_ms) : 0);
  return r;
}

// ---- TokenRegistry ----

TokenRegistry::TokenRegistry(storage::Database* db, const Clock& clock, SpendLimiter* spend)
    : db_(db), clock_(clock), spend_(spend) {}

TokenRegistry::~TokenRegistry() = default;

Result<std::unique_ptr<TokenRegistry>> TokenRegistry::Open(storage::Database* db,
                                                           const Clock& clock,
                                                           SpendLimiter* spend) {
  std::unique_ptr<TokenRegistry> reg(new TokenRegistry(db, clock, spend));
  const std::string prefix(1, kTokenKeyFamily);
  TIPD_RETURN_IF_ERROR(db->ScanPrefix(
      prefix, std::numeric_limits<size_t>::max(),
      [&](std::string_view key, std::string_view value) -> Status {
        TIPD_ASSIGN_OR_RETURN(v1::StoredToken stored, TokenStore::Decode(key, value));
        auto id = HexDecodeFixed<16>(stored.record().token_id());
        if (key.size() != 17 || !id.ok() ||
            key.substr(1) != std::string_view(reinterpret_cast<const char*>(id->data()), 16)) {
          return Status::Corruption("token record " + storage::EscapeKey(key) +
                                    " does not match its token_id '" + stored.record().token_id() +
                                    "'");
        }
        TokenId tid;
        std::copy(id->begin(), id->end(), tid.begin());
        reg->entries_[tid].record = std::move(*stored.mutable_record());
        return Status::Ok();
      }));
  return reg;
}

Status TokenRegistry::WriteLocked(const v1::TokenRecord& record) {
  auto id = HexDecodeFixed<16>(record.token_id());
  if (!id.ok()) return Status::Internal("token record with a bad id " + record.token_id());
  TokenId tid;
  std::copy(id->begin(), id->end(), tid.begin());
  v1::StoredToken stored;
  *stored.mutable_record() = record;
  storage::WriteBatch batch;
  TokenStore(db_).Put(&batch, TokenKey(tid), stored);
  return db_->Write(batch);
}

Status TokenRegistry::Create(const TokenClaims& claims, v1::TokenRecord record) {
  FillFromClaims(claims, &record);
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.count(claims.id)) {
    return Status::AlreadyExists("token " + claims.IdHex() + " already has a record");
  }
  TIPD_RETURN_IF_ERROR(WriteLocked(record));
  entries_[claims.id].record = std::move(record);
  return Status::Ok();
}

Status TokenRegistry::Ensure(const TokenClaims& claims, const std::string& label,
                             const std::string& created_by) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (entries_.count(claims.id)) return Status::Ok();
  }
  v1::TokenRecord record;
  record.set_label(label);
  record.set_created_by(created_by);
  record.set_created_at_ms(static_cast<uint64_t>(std::max<int64_t>(0, clock_.NowMs())));
  Status s = Create(claims, std::move(record));
  return s.code() == StatusCode::kAlreadyExists ? Status::Ok() : s;
}

std::optional<TokenRefusal> TokenRegistry::Authenticate(const TokenClaims& claims) {
  const int64_t now = clock_.NowMs();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(claims.id);
  if (it == entries_.end()) {
    // Minted before token records existed: recorded as legacy now (written
    // by the next Flush).
    Entry& e = entries_[claims.id];
    FillFromClaims(claims, &e.record);
    e.record.set_created_by(kCreatedByLegacy);
    e.record.set_legacy(true);
    e.record.set_last_used_ms(static_cast<uint64_t>(std::max<int64_t>(0, now)));
    e.dirty = true;
    return std::nullopt;
  }
  Entry& e = it->second;
  if (e.record.revoked_at_ms() != 0) {
    return TokenRefusal{401, "TOKEN_REVOKED",
                        "token " + claims.IdHex() + " was revoked at " +
                            std::to_string(e.record.revoked_at_ms()) +
                            " ms (Unix); ask the node's operator for a new one",
                        0};
  }
  const uint64_t used = static_cast<uint64_t>(std::max<int64_t>(0, now));
  if (used > e.record.last_used_ms()) {
    e.record.set_last_used_ms(used);
    e.dirty = true;
  }
  return std::nullopt;
}

bool TokenRegistry::IsRevoked(const TokenId& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  return it != entries_.end() && it->second.record.revoked_at_ms() != 0;
}

Result<v1::TokenRecord> TokenRegistry::Revoke(const TokenId& id, bool force) {
  const int64_t now = clock_.NowMs();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  v1::TokenRecord record;
  if (it == entries_.end()) {
    if (!force) {
      return Status::NotFound("no token " + HexEncode(id) +
                              " is known to this node; a token minted before token records "
                              "existed is recorded when first used (revoke it with force=true "
                              "to record it as revoked now)");
    }
    record.set_token_id(HexEncode(id));
    record.set_created_by(kCreatedByLegacy);
    record.set_legacy(true);
  } else {
    record = it->second.record;
    if (record.revoked_at_ms() != 0) return record;
  }
  record.set_revoked_at_ms(static_cast<uint64_t>(std::max<int64_t>(1, now)));
  TIPD_RETURN_IF_ERROR(WriteLocked(record));
  Entry& e = entries_[id];
  e.record = record;
  e.dirty = false;
  e.admitted.clear();
  return record;
}

std::vector<v1::TokenRecord> TokenRegistry::List() const {
  std::vector<v1::TokenRecord> out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out.reserve(entries_.size());
    for (const auto& [id, e] : entries_) out.push_back(e.record);
  }
  std::stable_sort(out.begin(), out.end(), [](const v1::TokenRecord& a, const v1::TokenRecord& b) {
    if (a.created_at_ms() != b.created_at_ms()) return a.created_at_ms() > b.created_at_ms();
    return a.token_id() < b.token_id();
  });
  return out;
}

std::optional<v1::TokenRecord> TokenRegistry::Get(const TokenId& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  return it->second.record;
}

Result<std::unique_ptr<TokenRegistry::TipAdmission>> TokenRegistry::AdmitTip(
    const TokenClaims& claims, const std::string& channel_id, const std::string& peer_hex,
    uint64_t amount, TokenRefusal* refusal) {
  auto admission = std::make_unique<TipAdmission>();
  admission->registry_ = this;
  admission->id_ = claims.id;
  admission->spend_ = spend_;
  const int64_t now = clock_.NowMs();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(claims.id);
    if (it != entries_.end()) {
      Entry& e = it->second;
      const v1::TokenRecord& r = e.record;
      if (r.revoked_at_ms() != 0) {
        *refusal = {401, "TOKEN_REVOKED", "token " + claims.IdHex() + " was revoked", 0};
        return Status::PermissionDenied(refusal->message);
      }
      if (r.max_per_tip() != 0 && amount > r.max_per_tip()) {
        *refusal = {403, "TIP_ABOVE_TOKEN_MAX",
                    "a tip of " + std::to_string(amount) + " is above this token's maximum of " +
                        std::to_string(r.max_per_tip()) + " per tip",
                    0};
        return Status::PermissionDenied(refusal->message);
      }
      if (r.channels_size() != 0 || r.peers_size() != 0) {
        const std::string channel_hex = HexEncode(AsSpan(channel_id));
        if (!Contains(r.channels(), channel_hex) && !Contains(r.peers(), peer_hex)) {
          *refusal = {403, "CHANNEL_NOT_ALLOWED",
                      "this token may not tip on channel " + channel_hex + " (peer " + peer_hex +
                          "); it allows " + std::to_string(r.channels_size()) + " channel(s) and " +
                          std::to_string(r.peers_size()) +
                          " peer(s): GET /v1/tokens/self lists them",
                      0};
          return Status::PermissionDenied(refusal->message);
        }
      }
      if (r.rate_per_minute() != 0) {
        while (!e.admitted.empty() && e.admitted.front() <= now - kRateWindowMs) {
          e.admitted.pop_front();
        }
        if (e.admitted.size() >= r.rate_per_minute()) {
          const int64_t wait = std::max<int64_t>(1, e.admitted.front() + kRateWindowMs - now);
          *refusal = {429, "TOKEN_RATE_LIMITED",
                      "this token may send " + std::to_string(r.rate_per_minute()) +
                          " tips per minute and has; retry in " + std::to_string(wait) + " ms",
                      wait};
          return Status::ResourceExhausted(refusal->message);
        }
        // Times only grow (a clock stepping back is clamped to the newest).
        const int64_t at = e.admitted.empty() ? now : std::max(now, e.admitted.back());
        e.admitted.push_back(at);
        admission->slot_ms_ = at;
      }
    }
  }
  if (spend_ != nullptr && claims.daily_cap != 0) {
    auto r = spend_->Reserve(claims, amount);
    if (!r.ok()) {
      *refusal = {429, "SPEND_CAP_EXCEEDED", r.status().message(), 0};
      return r.status();  // the admission's destructor gives the slot back
    }
    admission->reservation_ = std::move(*r);
  }
  return admission;
}

void TokenRegistry::ReleaseSlot(const TokenId& id, int64_t at_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  auto& q = it->second.admitted;
  for (auto rit = q.rbegin(); rit != q.rend(); ++rit) {
    if (*rit == at_ms) {
      q.erase(std::next(rit).base());
      return;
    }
  }
}

Status TokenRegistry::Flush() {
  storage::WriteBatch batch;
  std::vector<TokenId> written;
  std::lock_guard<std::mutex> lock(mu_);
  TokenStore store(db_);
  for (auto& [id, e] : entries_) {
    if (!e.dirty) continue;
    v1::StoredToken stored;
    *stored.mutable_record() = e.record;
    store.Put(&batch, TokenKey(id), stored);
    written.push_back(id);
  }
  if (written.empty()) return Status::Ok();
  TIPD_RETURN_IF_ERROR(db_->Write(batch));
  for (const TokenId& id : written) entries_[id].dirty = false;
  return Status::Ok();
}

size_t TokenRegistry::dirty_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& [id, e] : entries_) n += e.dirty ? 1 : 0;
  return n;
}

// ---- TipAdmission ----

TokenRegistry::TipAdmission::~TipAdmission() {
  if (registry_ != nullptr && slot_ms_ >= 0) registry_->ReleaseSlot(id_, slot_ms_);
}

void TokenRegistry::TipAdmission::CommitToBatch(storage::WriteBatch* batch) {
  slot_ms_ = -1;  // the slot stays taken
  if (spend_ != nullptr && reservation_.active()) {
    spend_->CommitToBatch(std::move(reservation_), batch);
  }
}

}  // namespace tipd::api
