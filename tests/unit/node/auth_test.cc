#include "api/auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <thread>
#include <vector>

#include "storage/storage.h"
#include "tests/support/test_support.h"

namespace tipd::api {
namespace {

namespace fs = std::filesystem;

mode_t ModeOf(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

crypto::Key32 KeyOf(uint8_t b) {
  crypto::Key32 k;
  k.fill(b);
  return k;
}

TEST(AuthTest, TokenRoundTripCarriesClaims) {
  TokenAuthority auth(KeyOf(7));
  TokenClaims c = TokenAuthority::NewClaims(
      static_cast<uint32_t>(Scope::kRead) | static_cast<uint32_t>(Scope::kTip), 1'800'000'000'000,
      5000, crypto::SystemRng());
  const std::string tok = auth.Issue(c);
  EXPECT_EQ(tok.rfind("tipd1_", 0), 0u);
  EXPECT_EQ(tok.size(), 6u + 138u);
  Result<TokenClaims> v = auth.Verify(tok, 1'700'000'000'000);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->id, c.id);
  EXPECT_EQ(v->scopes, c.scopes);
  EXPECT_EQ(v->expires_at_ms, c.expires_at_ms);
  EXPECT_EQ(v->daily_cap, 5000u);
  EXPECT_TRUE(v->Allows(Scope::kTip));
  EXPECT_FALSE(v->Allows(Scope::kAdmin));
  EXPECT_EQ(ScopesToString(v->scopes), "read,tip");
}

TEST(AuthTest, VerifyRejectsMalformedForgedAndExpired) {
  TokenAuthority auth(KeyOf(7));
  TokenAuthority other(KeyOf(8));
  TokenClaims c =
      TokenAuthority::NewClaims(static_cast<uint32_t>(Scope::kRead), 2000, 0, crypto::SystemRng());
  const std::string tok = auth.Issue(c);
  EXPECT_EQ(auth.Verify("abc", 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(auth.Verify("tipd1_abcd", 0).status().code(), StatusCode::kInvalidArgument);
  std::string nothex = tok;
  nothex[10] = 'z';
  EXPECT_EQ(auth.Verify(nothex, 0).status().code(), StatusCode::kInvalidArgument);
  Result<TokenClaims> forged = auth.Verify(other.Issue(c), 0);
  EXPECT_EQ(forged.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(forged.status().message().find("does not verify"), std::string::npos);
  // Flipping a claim bit (scopes -> admin) breaks the tag.
  std::string tampered = tok;
  tampered[6 + 2 * 20 + 1] = '9';  // low nibble of the scopes' last byte
  EXPECT_EQ(auth.Verify(tampered, 0).status().code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(auth.Verify(tok, 1999).ok());
  Result<TokenClaims> expired = auth.Verify(tok, 2000);
  EXPECT_EQ(expired.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(expired.status().message().find("expired"), std::string::npos);
}

TEST(AuthTest, ScopesParseAndCheck) {
  EXPECT_EQ(ParseScope("receive").value(), Scope::kReceive);
  EXPECT_FALSE(ParseScope("root").ok());
  TokenClaims c;
  c.scopes = static_cast<uint32_t>(Scope::kRead);
  EXPECT_TRUE(CheckScope(c, Scope::kRead).ok());
  Status s = CheckScope(c, Scope::kTip);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "token lacks scope 'tip' (it has: read)");
  c.scopes = static_cast<uint32_t>(Scope::kAdmin);
  EXPECT_TRUE(CheckScope(c, Scope::kTip).ok());  // admin implies every scope
}

TEST(AuthTest, RootKeyFileIsCreated0600AndReused) {
  testing::TempDir dir;
  auto a = TokenAuthority::LoadOrCreate(dir.path(), crypto::SystemRng());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(ModeOf(dir.path() / "rpc.key"), 0600u);
  const std::string tok = a->Issue(TokenAuthority::NewClaims(1, 0, 0, crypto::SystemRng()));
  auto b = TokenAuthority::LoadOrCreate(dir.path(), crypto::SystemRng());
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->Verify(tok, 0).ok());  // same key after a restart
}

TEST(AuthTest, RootKeyFileReadableByGroupIsRefused) {
  testing::TempDir dir;
  ASSERT_TRUE(TokenAuthority::LoadOrCreate(dir.path(), crypto::SystemRng()).ok());
  ASSERT_EQ(::chmod((dir.path() / "rpc.key").c_str(), 0640), 0);
  auto a = TokenAuthority::LoadOrCreate(dir.path(), crypto::SystemRng());
  EXPECT_EQ(a.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(a.status().message().find("0640"), std::string::npos);
}

TEST(AuthTest, AdminTokenFileWrittenOnceAndReissuedForNewKey) {
  testing::TempDir dir;
  auto a = TokenAuthority::LoadOrCreate(dir.path(), crypto::SystemRng());
  ASSERT_TRUE(a.ok());
  auto t1 = EnsureAdminToken(dir.path(), *a, crypto::SystemRng(), 1000);
  ASSERT_TRUE(t1.ok()) << t1.status().ToString();
  EXPECT_EQ(ModeOf(dir.path() / "admin.token"), 0600u);
  auto read = ReadTokenFile(dir.path() / "admin.token");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, *t1);
  auto claims = a->Verify(*read, 1000);
  ASSERT_TRUE(claims.ok());
  EXPECT_TRUE(claims->Allows(Scope::kAdmin));
  auto t2 = EnsureAdminToken(dir.path(), *a, crypto::SystemRng(), 1000);
  ASSERT_TRUE(t2.ok());
  EXPECT_EQ(*t2, *t1);  // kept across restarts

  TokenAuthority fresh(KeyOf(3));  // the root key was replaced
  auto t3 = EnsureAdminToken(dir.path(), fresh, crypto::SystemRng(), 1000);
  ASSERT_TRUE(t3.ok());
  EXPECT_NE(*t3, *t1);
  EXPECT_TRUE(fresh.Verify(*t3, 1000).ok());

  ASSERT_EQ(::chmod((dir.path() / "admin.token").c_str(), 0644), 0);
  EXPECT_EQ(EnsureAdminToken(dir.path(), fresh, crypto::SystemRng(), 1000).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(ReadTokenFile(dir.path() / "admin.token").status().code(),
            StatusCode::kPermissionDenied);
}

class SpendLimiterTest : public ::testing::Test {
 protected:
  void Open() {
    db_.reset();
    auto db = storage::Database::Open(dir_.path() / "db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(*db);
  }
  void SetUp() override {
    Open();
    claims_ =
        TokenAuthority::NewClaims(static_cast<uint32_t>(Scope::kTip), 0, 100, crypto::SystemRng());
  }
  testing::TempDir dir_;
  std::unique_ptr<storage::Database> db_;
  ManualClock clock_{1'700'000'000'000};
  TokenClaims claims_;
};

TEST_F(SpendLimiterTest, ReserveCommitReleaseAndDrop) {
  SpendLimiter lim(db_.get(), clock_);
  auto r1 = lim.Reserve(claims_, 60);
  ASSERT_TRUE(r1.ok());
  auto r2 = lim.Reserve(claims_, 50);  // 60 reserved + 50 > 100
  EXPECT_EQ(r2.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r2.status().message().find("cap 100"), std::string::npos);
  lim.Release(std::move(*r1));
  EXPECT_EQ(lim.ReservedToday(claims_.id), 0u);
  {
    auto dropped = lim.Reserve(claims_, 100);
    ASSERT_TRUE(dropped.ok());
    EXPECT_EQ(lim.ReservedToday(claims_.id), 100u);
  }  // dropping an uncommitted reservation releases it
  EXPECT_EQ(lim.ReservedToday(claims_.id), 0u);
  auto r3 = lim.Reserve(claims_, 40);
  ASSERT_TRUE(r3.ok());
  ASSERT_TRUE(lim.Commit(std::move(*r3)).ok());
  EXPECT_EQ(lim.SpentToday(claims_.id).value(), 40u);
  auto r4 = lim.Reserve(claims_, 60);
  ASSERT_TRUE(r4.ok());
  storage::WriteBatch batch;
  lim.CommitToBatch(std::move(*r4), &batch);
  EXPECT_EQ(batch.count(), 1u);
  ASSERT_TRUE(db_->Write(batch).ok());
  EXPECT_EQ(lim.Reserve(claims_, 1).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(lim.Reserve(claims_, 0).status().code(), StatusCode::kInvalidArgument);
  // Uncapped tokens are not tracked.
  TokenClaims uncapped = claims_;
  uncapped.daily_cap = 0;
  auto u = lim.Reserve(uncapped, 1'000'000);
  ASSERT_TRUE(u.ok());
  EXPECT_FALSE(u->active());
}

TEST_F(SpendLimiterTest, ConcurrentReservationsNeverExceedCapAndSurviveRestart) {
  {
    SpendLimiter lim(db_.get(), clock_);
    std::atomic<int> ok{0}, refused{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 50; ++i) {
          auto r = lim.Reserve(claims_, 7);
          if (!r.ok()) {
            EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
            ++refused;
            continue;
          }
          if (i % 3 == 0) {
            lim.Release(std::move(*r));  // a failed payment gives it back
          } else {
            EXPECT_TRUE(lim.Commit(std::move(*r)).ok());
            ++ok;
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 100 / 7);  // 14 * 7 = 98 <= 100
    EXPECT_EQ(lim.SpentToday(claims_.id).value(), 98u);
    EXPECT_EQ(lim.ReservedToday(claims_.id), 0u);
    EXPECT_GT(refused.load(), 0);
  }
  Open();  // restart: the day's total is read back
  SpendLimiter lim(db_.get(), clock_);
  EXPECT_EQ(lim.SpentToday(claims_.id).value(), 98u);
  EXPECT_EQ(lim.Reserve(claims_, 3).status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(lim.Reserve(claims_, 2).ok());
  clock_.AdvanceMs(86'400'000);  // next UTC day: a fresh cap
  EXPECT_EQ(lim.SpentToday(claims_.id).value(), 0u);
  EXPECT_TRUE(lim.Reserve(claims_, 100).ok());
}

TEST_F(SpendLimiterTest, CommitsReachingDiskOutOfOrderKeepTheRightTotal) {
  {
    SpendLimiter lim(db_.get(), clock_);
    auto a = lim.Reserve(claims_, 30);
    auto b = lim.Reserve(claims_, 20);
    ASSERT_TRUE(a.ok() && b.ok());
    storage::WriteBatch first, second;
    lim.CommitToBatch(std::move(*a), &first);
    lim.CommitToBatch(std::move(*b), &second);
    ASSERT_TRUE(db_->Write(second).ok());  // the later commit lands first
    ASSERT_TRUE(db_->Write(first).ok());
    EXPECT_EQ(lim.SpentToday(claims_.id).value(), 50u);
  }
  Open();
  SpendLimiter lim(db_.get(), clock_);
  EXPECT_EQ(lim.SpentToday(claims_.id).value(), 50u);
  auto c = lim.Reserve(claims_, 50);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(lim.Commit(std::move(*c)).ok());  // a new record, not an overwrite
  Open();
  SpendLimiter again(db_.get(), clock_);
  EXPECT_EQ(again.SpentToday(claims_.id).value(), 100u);
}

TEST_F(SpendLimiterTest, CorruptSpendRecordIsAnErrorNamingTheKey) {
  const uint64_t day = SpendLimiter::DayOf(clock_.NowMs());
  storage::WriteBatch batch;
  batch.Put(SpendKey(claims_.id, day, 0), "abc");
  ASSERT_TRUE(db_->Write(batch).ok());
  SpendLimiter lim(db_.get(), clock_);
  auto r = lim.Reserve(claims_, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_NE(r.status().message().find("spend record"), std::string::npos);
}

// The cap is per UTC day (docs/api.md): a spend at 23:59:59 and one at
// 00:00:00 count against different days, a cap used up before midnight
// allows spending right after it, and the new day's total survives a restart
// while the old day's stays what it was.
TEST_F(SpendLimiterTest, DailyCapResetsAtUtcMidnight) {
  constexpr int64_t kDayMs = 86'400'000;
  const int64_t midnight = (clock_.NowMs() / kDayMs + 1) * kDayMs;  // 00:00:00.000 UTC
  const uint64_t day_before = SpendLimiter::DayOf(midnight - 1000);
  ASSERT_EQ(SpendLimiter::DayOf(midnight), day_before + 1);
  {
    SpendLimiter lim(db_.get(), clock_);
    clock_.SetNowMs(midnight - 1000);  // 23:59:59.000
    auto late = lim.Reserve(claims_, 70);
    ASSERT_TRUE(late.ok()) << late.status().ToString();
    ASSERT_TRUE(lim.Commit(std::move(*late)).ok());
    clock_.SetNowMs(midnight - 1);  // 23:59:59.999: still the same day
    auto rest = lim.Reserve(claims_, 30);
    ASSERT_TRUE(rest.ok());
    ASSERT_TRUE(lim.Commit(std::move(*rest)).ok());
    EXPECT_EQ(lim.SpentToday(claims_.id).value(), 100u);
    auto over = lim.Reserve(claims_, 1);
    EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);  // cap reached

    clock_.SetNowMs(midnight);  // 00:00:00.000: a new day, a fresh cap
    EXPECT_EQ(lim.SpentToday(claims_.id).value(), 0u);
    auto early = lim.Reserve(claims_, 60);
    ASSERT_TRUE(early.ok()) << early.status().ToString();
    EXPECT_EQ(early->day(), day_before + 1);
    ASSERT_TRUE(lim.Commit(std::move(*early)).ok());
    EXPECT_EQ(lim.SpentToday(claims_.id).value(), 60u);
    auto too_much = lim.Reserve(claims_, 41);  // 60 + 41 > 100
    EXPECT_EQ(too_much.status().code(), StatusCode::kResourceExhausted);
    EXPECT_NE(too_much.status().message().find("spent 60"), std::string::npos)
        << too_much.status().ToString();
  }
  Open();  // restart: each day's total is read back from its own records
  SpendLimiter lim(db_.get(), clock_);
  EXPECT_EQ(lim.SpentToday(claims_.id).value(), 60u);
  clock_.SetNowMs(midnight - 1);
  EXPECT_EQ(lim.SpentToday(claims_.id).value(), 100u);
  EXPECT_EQ(lim.Reserve(claims_, 1).status().code(), StatusCode::kResourceExhausted);
}

TEST(SpendKeyTest, LayoutIsFamilyIdDaySeq) {
  TokenId id;
  id.fill(0xab);
  const std::string k = SpendKey(id, 0x0102, 0x0304);
  ASSERT_EQ(k.size(), 33u);
  EXPECT_EQ(k[0], 'S');
  EXPECT_EQ(static_cast<uint8_t>(k[1]), 0xab);
  EXPECT_EQ(k.substr(17, 8), std::string("\0\0\0\0\0\0\x01\x02", 8));
  EXPECT_EQ(k.substr(25), std::string("\0\0\0\0\0\0\x03\x04", 8));
  EXPECT_EQ(k.substr(0, 25), SpendDayPrefix(id, 0x0102));
}

}  // namespace
}  // namespace tipd::api
