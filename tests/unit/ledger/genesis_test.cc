#include "ledger/genesis.h"

#include <gtest/gtest.h>

#include "tests/support/test_support.h"

namespace tipd::ledger {
namespace {

crypto::KeyPair Key(uint8_t fill) {
  return crypto::KeyPair::FromSecret(crypto::SecretKey::FromBytes(Bytes(32, fill)).value());
}

TEST(Genesis, WriteThenLoadRoundTripsAndKeepsTheHash) {
  testing::TempDir dir;
  auto g = MakeDevnetGenesis("tipd-devnet", Key(9).XOnly(),
                             {{Key(1).XOnly(), 5000}, {Key(2).XOnly(), 7000}}, 123);
  ASSERT_TRUE(WriteGenesisFile(dir.path() / "genesis.json", g, {"node-1", "node-2"}).ok());
  auto back = LoadGenesisFile(dir.path() / "genesis.json");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->SerializeAsString(), g.SerializeAsString());
  EXPECT_EQ(*GenesisHash(*back), *GenesisHash(g));
  EXPECT_NE(GenesisToJson(g, {"node-1"}).find("\"label\": \"node-1\""), std::string::npos);
}

TEST(Genesis, RejectsUnknownFieldsBadHexAndInvalidParams) {
  std::string seq = HexEncode(Key(9).XOnly());
  std::string ok = R"({"chain_id":"c1","sequencer_key":")" + seq +
                   R"(","min_settle_timeout":1,"max_settle_timeout":5})";
  EXPECT_TRUE(ParseGenesisJson(ok).ok());
  auto unknown = ParseGenesisJson(R"({"chain_id":"c1","sequencerkey":"00"})");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("sequencerkey"), std::string::npos);
  auto bad_hex = ParseGenesisJson(R"({"chain_id":"c1","sequencer_key":"xyz"})");
  EXPECT_NE(bad_hex.status().message().find("sequencer_key must be 64 hex"), std::string::npos);
  auto bounds = ParseGenesisJson(R"({"chain_id":"c1","sequencer_key":")" + seq +
                                 R"(","min_settle_timeout":9,"max_settle_timeout":5})");
  EXPECT_FALSE(bounds.ok());
  EXPECT_FALSE(ParseGenesisJson("not json").ok());
  testing::TempDir dir;
  auto missing = LoadGenesisFile(dir.path() / "none.json");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tipd::ledger
