#include "api/auth.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "storage/storage.h"
#include "util/bytes.h"

namespace tipd::api {

namespace {

constexpr std::string_view kTagDomain = "tipd/rpc-token/v1";
constexpr size_t kClaimsSize = 1 + 16 + 4 + 8 + 8;
constexpr size_t kTagSize = 32;
constexpr size_t kTokenBytes = kClaimsSize + kTagSize;
constexpr int64_t kMsPerDay = 86'400'000;

struct ScopeEntry {
  Scope scope;
  const char* name;
};
constexpr ScopeEntry kScopes[] = {{Scope::kRead, "read"},
                                  {Scope::kReceive, "receive"},
                                  {Scope::kTip, "tip"},
                                  {Scope::kAdmin, "admin"}};

void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<uint8_t>(v);
    v >>= 8;
  }
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

std::array<uint8_t, kClaimsSize> EncodeClaims(const TokenClaims& c) {
  std::array<uint8_t, kClaimsSize> out{};
  out[0] = kTokenVersion;
  std::memcpy(out.data() + 1, c.id.data(), 16);
  for (int i = 0; i < 4; ++i) out[17 + i] = static_cast<uint8_t>(c.scopes >> (24 - 8 * i));
  PutU64(out.data() + 21, c.expires_at_ms);
  PutU64(out.data() + 29, c.daily_cap);
  return out;
}

Hash32 Tag(const crypto::Key32& key, ByteSpan claims) {
  Bytes msg(kTagDomain.begin(), kTagDomain.end());
  msg.insert(msg.end(), claims.begin(), claims.end());
  return crypto::HmacSha256(key, msg);
}

bool ConstantTimeEqual(const uint8_t* a, const uint8_t* b, size_t n) {
  volatile uint8_t diff = 0;
  for (size_t i = 0; i < n; ++i) diff = static_cast<uint8_t>(diff | (a[i] ^ b[i]));
  return diff == 0;
}

std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string Errno(int err) { return std::strerror(err); }

}  // namespace

Status WriteFileAtomic0600(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  std::array<uint8_t, 8> suffix;
  crypto::SystemRng().Fill(suffix);
  const std::filesystem::path tmp =
      dir / ("." + path.filename().string() + ".tmp-" + HexEncode(suffix));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IOError("create " + tmp.string() + ": " + Errno(errno));
  Status s;
  if (::fchmod(fd, 0600) != 0) s = Status::IOError("chmod " + tmp.string() + ": " + Errno(errno));
  size_t off = 0;
  while (s.ok() && off < text.size()) {
    ssize_t w = ::write(fd, text.data() + off, text.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      s = Status::IOError("write " + tmp.string() + ": " + Errno(errno));
    } else {
      off += static_cast<size_t>(w);
    }
  }
  if (s.ok() && ::fsync(fd) != 0)
    s = Status::IOError("fsync " + tmp.string() + ": " + Errno(errno));
  if (::close(fd) != 0 && s.ok())
    s = Status::IOError("close " + tmp.string() + ": " + Errno(errno));
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = Status::IOError("rename " + tmp.string() + " to " + path.string() + ": " + Errno(errno));
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Status::IOError("open directory " + dir.string() + ": " + Errno(errno));
  const int rc = ::fsync(dfd);
  ::close(dfd);
  if (rc != 0) return Status::IOError("fsync directory " + dir.string() + ": " + Errno(errno));
  return Status::Ok();
}

const char* ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kRead:
      return "read";
    case Scope::kReceive:
      return "receive";
    case Scope::kTip:
      return "tip";
    case Scope::kAdmin:
      return "admin";
  }
  return "?";
}

Result<Scope> ParseScope(std::string_view name) {
  for (const ScopeEntry& e : kScopes) {
    if (name == e.name) return e.scope;
  }
  return Status::InvalidArgument("unknown scope '" + std::string(name) +
                                 "'; valid scopes are read, receive, tip, admin");
}

std::string ScopesToString(uint32_t scopes) {
  std::string out;
  for (const ScopeEntry& e : kScopes) {
    if (scopes & static_cast<uint32_t>(e.scope)) {
      if (!out.empty()) out += ',';
      out += e.name;
    }
  }
  return out;
}

std::string TokenClaims::IdHex() const { return HexEncode(id); }

Status CheckScope(const TokenClaims& claims, Scope scope) {
  if (claims.Allows(scope)) return Status::Ok();
  const std::string has = ScopesToString(claims.scopes);
  return Status::PermissionDenied(std::string("token lacks scope '") + ScopeName(scope) +
                                  "' (it has: " + (has.empty() ? "none" : has) + ")");
}

// ---- TokenAuthority ----

Result<TokenAuthority> TokenAuthority::LoadOrCreate(const std::filesystem::path& datadir,
                                                    crypto::RandomSource& rng) {
  // The root key uses the node key file format (and its mode checks and
  // atomic creation); any 32 random bytes below the curve order make a fine
  // HMAC key.
  TIPD_ASSIGN_OR_RETURN(crypto::KeyPair kp, crypto::LoadOrCreateKeyFile(datadir / "rpc.key", rng));
  return TokenAuthority(kp.secret().bytes());
}

TokenAuthority::TokenAuthority(const crypto::Key32& root_key) : key_(root_key) {}

TokenAuthority::~TokenAuthority() { crypto::SecureWipe(key_.data(), key_.size()); }

TokenClaims TokenAuthority::NewClaims(uint32_t scopes, uint64_t expires_at_ms, uint64_t daily_cap,
                                      crypto::RandomSource& rng) {
  TokenClaims c;
  rng.Fill(c.id);
  c.scopes = scopes;
  c.expires_at_ms = expires_at_ms;
  c.daily_cap = daily_cap;
  return c;
}

std::string TokenAuthority::Issue(const TokenClaims& claims) const {
  const auto body = EncodeClaims(claims);
  const Hash32 tag = Tag(key_, body);
  Bytes all(body.begin(), body.end());
  all.insert(all.end(), tag.begin(), tag.end());
  return std::string(kTokenPrefix) + HexEncode(all);
}

Result<TokenClaims> TokenAuthority::Verify(std::string_view token, int64_t now_ms) const {
  TIPD_ASSIGN_OR_RETURN(TokenClaims c, VerifySignature(token));
  if (c.ExpiredAt(now_ms)) {
    return Status::PermissionDenied("token expired at " + std::to_string(c.expires_at_ms) +
                                    " ms (Unix); create a new one");
  }
  return c;
}

Result<TokenClaims> TokenAuthority::VerifySignature(std::string_view token) const {
  if (token.substr(0, kTokenPrefix.size()) != kTokenPrefix) {
    return Status::InvalidArgument("token is malformed: it must start with \"tipd1_\"");
  }
  token.remove_prefix(kTokenPrefix.size());
  if (token.size() != 2 * kTokenBytes) {
    return Status::InvalidArgument(
        "token is malformed: expected " + std::to_string(2 * kTokenBytes) +
        " hex characters after tipd1_, got " + std::to_string(token.size()));
  }
  Result<Bytes> raw = HexDecode(token);
  if (!raw.ok()) return Status::InvalidArgument("token is malformed: not hex");
  const uint8_t* p = raw->data();
  if (p[0] != kTokenVersion) {
    return Status::InvalidArgument("token is malformed: unknown version " + std::to_string(p[0]));
  }
  const Hash32 want = Tag(key_, ByteSpan(p, kClaimsSize));
  if (!ConstantTimeEqual(want.data(), p + kClaimsSize, kTagSize)) {
    return Status::PermissionDenied(
        "token signature does not verify (issued by another node or for an older rpc.key)");
  }
  TokenClaims c;
  std::memcpy(c.id.data(), p + 1, 16);
  c.scopes = static_cast<uint32_t>(p[17]) << 24 | static_cast<uint32_t>(p[18]) << 16 |
             static_cast<uint32_t>(p[19]) << 8 | p[20];
  c.expires_at_ms = GetU64(p + 21);
  c.daily_cap = GetU64(p + 29);
  return c;
}

// ---- token files ----

Result<std::string> ReadTokenFile(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound("token file " + path.string() + " does not exist");
    return Status::IOError("open token file " + path.string() + ": " + Errno(err));
  }
  struct stat st;
  Status s;
  if (::fstat(fd, &st) != 0) {
    s = Status::IOError("stat token file " + path.string() + ": " + Errno(errno));
  } else if (!S_ISREG(st.st_mode)) {
    s = Status::InvalidArgument("token file " + path.string() + " is not a regular file");
  } else if ((st.st_mode & 077) != 0) {
    s = Status::PermissionDenied("token file " + path.string() + " has mode " + Octal(st.st_mode) +
                                 "; group and others must have no access (run: chmod 600 " +
                                 path.string() + ")");
  }
  std::string text;
  char buf[512];
  while (s.ok()) {
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      s = Status::IOError("read token file " + path.string() + ": " + Errno(errno));
    } else if (r == 0) {
      break;
    } else {
      text.append(buf, static_cast<size_t>(r));
      if (text.size() > 4096)
        s = Status::Corruption("token file " + path.string() + " is too long");
    }
  }
  ::close(fd);
  TIPD_RETURN_IF_ERROR(s);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  return text;
}

Result<std::string> EnsureAdminToken(const std::filesystem::path& datadir,
                                     const TokenAuthority& authority, crypto::RandomSource& rng,
                                     int64_t now_ms,
                                     const std::function<bool(const TokenClaims&)>& usable) {
  const std::filesystem::path path = datadir / "admin.token";
  Result<std::string> existing = ReadTokenFile(path);
  if (existing.ok()) {
    Result<TokenClaims> claims = authority.Verify(*existing, now_ms);
    if (claims.ok() && claims->Allows(Scope::kAdmin) && (!usable || usable(*claims))) {
      return existing;
    }
    // Issued under an older rpc.key, edited, or revoked: replace it below.
  } else if (existing.status().code() != StatusCode::kNotFound) {
    return existing.status();
  }
  const std::string token =
      authority.Issue(TokenAuthority::NewClaims(static_cast<uint32_t>(Scope::kAdmin), 0, 0, rng));
  TIPD_RETURN_IF_ERROR(WriteFileAtomic0600(path, token + "\n"));
  return token;
}

// ---- SpendLimiter ----

std::string SpendDayPrefix(const TokenId& id, uint64_t day) {
  std::string key(1, kSpendKeyFamily);
  key.append(reinterpret_cast<const char*>(id.data()), id.size());
  storage::AppendBigEndian64(&key, day);
  return key;
}

std::string SpendKey(const TokenId& id, uint64_t day, uint64_t seq) {
  std::string key = SpendDayPrefix(id, day);
  storage::AppendBigEndian64(&key, seq);
  return key;
}

Reservation::Reservation(Reservation&& other) noexcept
    : limiter_(std::exchange(other.limiter_, nullptr)),
      token_id_(other.token_id_),
      day_(other.day_),
      amount_(other.amount_) {}

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    if (limiter_ != nullptr) limiter_->ReleaseInternal(*this);
    limiter_ = std::exchange(other.limiter_, nullptr);
    token_id_ = other.token_id_;
    day_ = other.day_;
    amount_ = other.amount_;
  }
  return *this;
}

Reservation::~Reservation() {
  if (limiter_ != nullptr) limiter_->ReleaseInternal(*this);
}

SpendLimiter::SpendLimiter(storage::Database* db, const Clock& clock) : db_(db), clock_(clock) {}

uint64_t SpendLimiter::DayOf(int64_t now_ms) {
  return now_ms <= 0 ? 0 : static_cast<uint64_t>(now_ms / kMsPerDay);
}

Result<SpendLimiter::DayTotal*> SpendLimiter::LoadLocked(const TokenId& id, uint64_t day) {
  auto it = totals_.find({id, day});
  if (it != totals_.end()) return &it->second;
  const std::string prefix = SpendDayPrefix(id, day);
  DayTotal total;
  TIPD_RETURN_IF_ERROR(db_->ScanPrefix(
      prefix, std::numeric_limits<size_t>::max(),
      [&](std::string_view key, std::string_view value) -> Status {
        if (key.size() != prefix.size() + 8 || value.size() != 8) {
          return Status::Corruption("spend record " + storage::EscapeKey(key) + " has a " +
                                    std::to_string(key.size()) + "-byte key and " +
                                    std::to_string(value.size()) + " value bytes, expected " +
                                    std::to_string(prefix.size() + 8) + " and 8");
        }
        const uint64_t amount = GetU64(reinterpret_cast<const uint8_t*>(value.data()));
        const uint64_t seq = GetU64(reinterpret_cast<const uint8_t*>(key.data()) + prefix.size());
        if (amount > std::numeric_limits<uint64_t>::max() - total.spent) {
          return Status::Corruption("spend records under " + storage::EscapeKey(prefix) +
                                    " overflow 64 bits");
        }
        total.spent += amount;
        total.next_seq = std::max(total.next_seq, seq + 1);
        return Status::Ok();
      }));
  return &totals_.emplace(Key{id, day}, total).first->second;
}

Result<Reservation> SpendLimiter::Reserve(const TokenClaims& token, uint64_t amount) {
  if (amount == 0) return Status::InvalidArgument("amount must be at least 1");
  Reservation r;
  if (token.daily_cap == 0) return r;
  const uint64_t day = DayOf(clock_.NowMs());
  std::lock_guard<std::mutex> lock(mu_);
  TIPD_ASSIGN_OR_RETURN(DayTotal * total, LoadLocked(token.id, day));
  const uint64_t used = total->spent + total->reserved;  // both <= cap, no overflow
  if (used > token.daily_cap || amount > token.daily_cap - used) {
    return Status::ResourceExhausted("daily spending cap of this token exceeded: cap " +
                                     std::to_string(token.daily_cap) + ", spent " +
                                     std::to_string(total->spent) + ", reserved " +
                                     std::to_string(total->reserved) + ", requested " +
                                     std::to_string(amount) + "; the cap resets at 00:00 UTC");
  }
  total->reserved += amount;
  r.limiter_ = this;
  r.token_id_ = token.id;
  r.day_ = day;
  r.amount_ = amount;
  return r;
}

std::string SpendLimiter::MarkSpent(Reservation& r) {
  std::lock_guard<std::mutex> lock(mu_);
  DayTotal& total = totals_[{r.token_id_, r.day_}];  // present: reserved in it
  total.reserved -= r.amount_;
  total.spent += r.amount_;
  r.limiter_ = nullptr;
  return SpendKey(r.token_id_, r.day_, total.next_seq++);
}

Status SpendLimiter::Commit(Reservation reservation) {
  if (!reservation.active()) return Status::Ok();
  storage::WriteBatch batch;
  CommitToBatch(std::move(reservation), &batch);
  return db_->Write(batch);
}

void SpendLimiter::CommitToBatch(Reservation reservation, storage::WriteBatch* batch) {
  if (!reservation.active()) return;
  const std::string key = MarkSpent(reservation);
  uint8_t value[8];
  PutU64(value, reservation.amount_);
  batch->Put(key, std::string_view(reinterpret_cast<const char*>(value), sizeof(value)));
}

void SpendLimiter::Release(Reservation reservation) {
  if (reservation.active()) ReleaseInternal(reservation);
}

void SpendLimiter::ReleaseInternal(Reservation& r) {
  std::lock_guard<std::mutex> lock(mu_);
  totals_[{r.token_id_, r.day_}].reserved -= r.amount_;
  r.limiter_ = nullptr;
}

Result<uint64_t> SpendLimiter::SpentToday(const TokenId& id) {
  std::lock_guard<std::mutex> lock(mu_);
  TIPD_ASSIGN_OR_RETURN(DayTotal * total, LoadLocked(id, DayOf(clock_.NowMs())));
  return total->spent;
}

uint64_t SpendLimiter::ReservedToday(const TokenId& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = totals_.find({id, DayOf(clock_.NowMs())});
  return it == totals_.end() ? 0 : it->second.reserved;
}

}  // namespace tipd::api
