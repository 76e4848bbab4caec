// Token records (api/token_registry.h): durability of create, revoke and
// last use; the tip restrictions (largest tip, channels and peers, the
// sliding-minute rate, the daily cap) with a manual clock.
#include "api/token_registry.h"

#include <gtest/gtest.h>

#include "storage/storage.h"
#include "tests/support/test_support.h"

namespace tipd::api {
namespace {

constexpr uint32_t kTipScope = static_cast<uint32_t>(Scope::kTip);

std::string ChannelId(uint8_t b) { return std::string(32, static_cast<char>(b)); }
std::string ChannelHex(uint8_t b) { return HexEncode(AsSpan(ChannelId(b))); }
std::string PeerHex(uint8_t b) {
  crypto::Key32 k;
  k.fill(b);
  return crypto::KeyPair::FromSecret(crypto::SecretKey::FromBytes(k).value()).public_key().Hex();
}

class TokenRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    registry_.reset();
    spend_.reset();
    db_.reset();
    auto db = storage::Database::Open(dir_.path() / "db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(*db);
    spend_ = std::make_unique<SpendLimiter>(db_.get(), clock_);
    auto reg = TokenRegistry::Open(db_.get(), clock_, spend_.get());
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    registry_ = std::move(*reg);
  }
  // Mints a token with `req`'s restrictions and records it.
  TokenClaims Mint(v1::CreateTokenRequest req, uint64_t cap = 0) {
    TokenClaims c = TokenAuthority::NewClaims(kTipScope, 0, cap, crypto::SystemRng());
    auto rec = NewTokenRecord(c, req, kCreatedByAdminToken, clock_.NowMs());
    EXPECT_TRUE(rec.ok()) << rec.status().ToString();
    EXPECT_TRUE(registry_->Create(c, *rec).ok());
    return c;
  }
  std::unique_ptr<TokenRegistry::TipAdmission> Admit(const TokenClaims& c, uint64_t amount,
                                                     TokenRefusal* refusal, uint8_t channel = 1,
                                                     uint8_t peer = 2) {
    auto r = registry_->AdmitTip(c, ChannelId(channel), PeerHex(peer), amount, refusal);
    return r.ok() ? std::move(*r) : nullptr;
  }

  testing::TempDir dir_;
  ManualClock clock_{1'700'000'000'000};
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<SpendLimiter> spend_;
  std::unique_ptr<TokenRegistry> registry_;
};

TEST_F(TokenRegistryTest, RecordsSurviveReopenAndRevocationIsDurableAtOnce) {
  v1::CreateTokenRequest req;
  req.set_label("shop backend");
  req.set_max_per_tip(500);
  req.add_channels(ChannelHex(1));
  TokenClaims c = Mint(req, 1000);
  Reopen();
  auto rec = registry_->Get(c.id);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->label(), "shop backend");
  EXPECT_EQ(rec->max_per_tip(), 500u);
  EXPECT_EQ(rec->daily_spend_cap(), 1000u);
  EXPECT_EQ(rec->created_by(), "admin.token");
  EXPECT_EQ(rec->created_at_ms(), 1'700'000'000'000u);
  ASSERT_EQ(rec->scopes_size(), 1);
  EXPECT_EQ(rec->scopes(0), "tip");
  EXPECT_FALSE(registry_->Authenticate(c).has_value());

  auto revoked = registry_->Revoke(c.id, false);
  ASSERT_TRUE(revoked.ok());
  EXPECT_EQ(revoked->revoked_at_ms(), 1'700'000'000'000u);
  auto refused = registry_->Authenticate(c);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->http_status, 401);
  EXPECT_EQ(refused->code, "TOKEN_REVOKED");
  // No flush: the revocation was written before Revoke returned.
  Reopen();
  EXPECT_TRUE(registry_->IsRevoked(c.id));
  ASSERT_TRUE(registry_->Authenticate(c).has_value());
  // Revoking again answers the same record.
  EXPECT_EQ(registry_->Revoke(c.id, false)->revoked_at_ms(), 1'700'000'000'000u);
}

TEST_F(TokenRegistryTest, LastUseIsFlushedLazily) {
  TokenClaims c = Mint({});
  clock_.AdvanceMs(5000);
  EXPECT_FALSE(registry_->Authenticate(c).has_value());
  EXPECT_EQ(registry_->Get(c.id)->last_used_ms(), 1'700'000'005'000u);
  EXPECT_EQ(registry_->dirty_count(), 1u);
  // Not on disk until a flush: a crash here loses the last use only.
  {
    auto other = TokenRegistry::Open(db_.get(), clock_, nullptr);
    ASSERT_TRUE(other.ok());
    EXPECT_EQ((*other)->Get(c.id)->last_used_ms(), 0u);
  }
  ASSERT_TRUE(registry_->Flush().ok());
  EXPECT_EQ(registry_->dirty_count(), 0u);
  Reopen();
  EXPECT_EQ(registry_->Get(c.id)->last_used_ms(), 1'700'000'005'000u);
}

TEST_F(TokenRegistryTest, LegacyTokensAreRecordedOnFirstUseAndCanBeRevokedUnseen) {
  // Minted before records existed: no record.
  TokenClaims legacy = TokenAuthority::NewClaims(kTipScope, 0, 7, crypto::SystemRng());
  EXPECT_FALSE(registry_->Get(legacy.id).has_value());
  EXPECT_FALSE(registry_->Authenticate(legacy).has_value());  // accepted
  ASSERT_TRUE(registry_->Flush().ok());
  Reopen();
  auto rec = registry_->Get(legacy.id);
  ASSERT_TRUE(rec.has_value());
  EXPECT_TRUE(rec->legacy());
  EXPECT_EQ(rec->created_by(), "legacy");
  EXPECT_EQ(rec->daily_spend_cap(), 7u);

  TokenClaims unseen = TokenAuthority::NewClaims(kTipScope, 0, 0, crypto::SystemRng());
  auto nf = registry_->Revoke(unseen.id, false);
  EXPECT_EQ(nf.status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(registry_->Revoke(unseen.id, true).ok());
  Reopen();
  auto refused = registry_->Authenticate(unseen);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code, "TOKEN_REVOKED");
}

TEST_F(TokenRegistryTest, NewRecordValidatesItsFields) {
  TokenClaims c = TokenAuthority::NewClaims(kTipScope, 0, 0, crypto::SystemRng());
  v1::CreateTokenRequest req;
  req.add_channels("abcd");
  EXPECT_EQ(NewTokenRecord(c, req, "x", 0).status().code(), StatusCode::kInvalidArgument);
  req.clear_channels();
  req.add_peers(std::string(66, 'z'));
  EXPECT_EQ(NewTokenRecord(c, req, "x", 0).status().code(), StatusCode::kInvalidArgument);
  req.clear_peers();
  req.set_rate_per_minute(kMaxRatePerMinute + 1);
  EXPECT_EQ(NewTokenRecord(c, req, "x", 0).status().code(), StatusCode::kInvalidArgument);
  req.set_rate_per_minute(10);
  req.set_label(std::string(kMaxTokenLabelBytes + 1, 'a'));
  EXPECT_EQ(NewTokenRecord(c, req, "x", 0).status().code(), StatusCode::kInvalidArgument);
  req.clear_label();
  // Upper-case hex is kept in canonical lower case, duplicates dropped.
  std::string upper = ChannelHex(0xab);
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  req.add_channels(upper);
  req.add_channels(ChannelHex(0xab));
  auto rec = NewTokenRecord(c, req, "x", 0);
  ASSERT_TRUE(rec.ok());
  ASSERT_EQ(rec->channels_size(), 1);
  EXPECT_EQ(rec->channels(0), ChannelHex(0xab));
}

TEST_F(TokenRegistryTest, MaxPerTipAndAllowedChannelsOrPeers) {
  v1::CreateTokenRequest req;
  req.set_max_per_tip(100);
  req.add_channels(ChannelHex(1));
  req.add_peers(PeerHex(9));
  TokenClaims c = Mint(req);
  TokenRefusal refusal;
  EXPECT_NE(Admit(c, 100, &refusal, 1, 2), nullptr);  // allowed channel
  EXPECT_NE(Admit(c, 1, &refusal, 5, 9), nullptr);    // other channel, allowed peer
  EXPECT_EQ(Admit(c, 101, &refusal, 1, 2), nullptr);
  EXPECT_EQ(refusal.http_status, 403);
  EXPECT_EQ(refusal.code, "TIP_ABOVE_TOKEN_MAX");
  EXPECT_EQ(Admit(c, 5, &refusal, 5, 2), nullptr);  // neither listed
  EXPECT_EQ(refusal.http_status, 403);
  EXPECT_EQ(refusal.code, "CHANNEL_NOT_ALLOWED");
  // No lists: anything goes.
  TokenClaims open = Mint({});
  EXPECT_NE(Admit(open, 1'000'000, &refusal, 7, 7), nullptr);
}

TEST_F(TokenRegistryTest, RateIsASlidingMinuteAndRefusedTipsGiveTheirSlotBack) {
  v1::CreateTokenRequest req;
  req.set_rate_per_minute(3);
  TokenClaims c = Mint(req);
  TokenRefusal refusal;
  std::vector<std::unique_ptr<TokenRegistry::TipAdmission>> held;
  for (int i = 0; i < 3; ++i) {
    auto a = Admit(c, 1, &refusal);
    ASSERT_NE(a, nullptr) << i;
    storage::WriteBatch batch;
    a->CommitToBatch(&batch);
    held.push_back(std::move(a));
    clock_.AdvanceMs(10'000);  // admitted at t0, t0+10s, t0+20s
  }
  // At t0+30s the window holds 3: refused, retry when t0's slot leaves.
  EXPECT_EQ(Admit(c, 1, &refusal), nullptr);
  EXPECT_EQ(refusal.http_status, 429);
  EXPECT_EQ(refusal.code, "TOKEN_RATE_LIMITED");
  EXPECT_EQ(refusal.retry_after_ms, 30'000);
  clock_.AdvanceMs(29'999);
  EXPECT_EQ(Admit(c, 1, &refusal), nullptr);
  EXPECT_EQ(refusal.retry_after_ms, 1);
  clock_.AdvanceMs(1);  // t0+60s: t0's slot is out of the window
  auto a = Admit(c, 1, &refusal);
  ASSERT_NE(a, nullptr);
  // Dropped without commit (refused later by the channel): the slot is free.
  a.reset();
  auto b = Admit(c, 1, &refusal);
  ASSERT_NE(b, nullptr);
  storage::WriteBatch batch;
  b->CommitToBatch(&batch);
  b.reset();  // committed: keeps its slot
  EXPECT_EQ(Admit(c, 1, &refusal), nullptr);
  EXPECT_EQ(refusal.code, "TOKEN_RATE_LIMITED");
}

TEST_F(TokenRegistryTest, DailyCapIsChargedAfterTheRestrictions) {
  v1::CreateTokenRequest req;
  req.set_rate_per_minute(10);
  TokenClaims c = Mint(req, 100);
  TokenRefusal refusal;
  auto a = Admit(c, 60, &refusal);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(spend_->ReservedToday(c.id), 60u);
  EXPECT_EQ(Admit(c, 41, &refusal), nullptr);
  EXPECT_EQ(refusal.http_status, 429);
  EXPECT_EQ(refusal.code, "SPEND_CAP_EXCEEDED");
  storage::WriteBatch batch;
  a->CommitToBatch(&batch);
  ASSERT_TRUE(db_->Write(batch).ok());
  EXPECT_EQ(spend_->SpentToday(c.id).value(), 60u);
  // The refused 41 took no rate slot: 9 more tips fit in the minute.
  for (int i = 0; i < 9; ++i) {
    auto t = Admit(c, 1, &refusal);
    ASSERT_NE(t, nullptr) << i;
    storage::WriteBatch b;
    t->CommitToBatch(&b);
  }
  EXPECT_EQ(Admit(c, 1, &refusal), nullptr);
  EXPECT_EQ(refusal.code, "TOKEN_RATE_LIMITED");
}

}  // namespace
}  // namespace tipd::api
