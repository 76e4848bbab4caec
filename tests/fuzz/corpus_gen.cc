// Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/):
// real traffic made with the project's own code (Noise acts, Envelopes of
// every kind carrying a real TipUpdate, Ack, Reestablish and signed ledger
// transactions and blocks, issued API tokens), the golden vectors
// (tests/vectors/*.json: canonical tip and proof bytes, the genesis), the
// examples of docs/api.md and docs/configuration.md, and, for the targets
// whose input is a program of choices (channel, reestablish, ledger),
// pseudo-random programs from a fixed seed. Deterministic: rerunning it
// rewrites the same files.
//
//   build/tests/fuzz/fuzz_corpus_gen tests/fuzz/corpus tests/vectors
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "api/auth.h"
#include "channel/channel.h"
#include "crypto/noise.h"
#include "ledger/chain.h"
#include "ledger/codec.h"
#include "ledger/genesis.h"
#include "storage/storage.h"
#include "tests/fuzz/channel_pair.h"
#include "tests/fuzz/fuzz_util.h"
#include "tipd/wire.pb.h"

namespace tipd::fuzz {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Struct;

fs::path g_root;

void Put(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(g_root / target);
  std::ofstream(g_root / target / name, std::ios::binary | std::ios::trunc) << bytes;
}

std::string S(ByteSpan b) { return std::string(AsStringView(b)); }
std::string Sel(uint8_t selector, const std::string& rest) {
  return std::string(1, static_cast<char>(selector)) + rest;
}

Struct LoadJson(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  Struct out;
  Require(google::protobuf::util::JsonStringToMessage(text.str(), &out).ok(), "vectors parse");
  return out;
}

std::string FieldText(const Struct& s, const std::string& key) {
  return s.fields().at(key).string_value();
}

// ---- noise: the genuine acts (noise_fuzz.cc's keys) and some messages ----
void Noise() {
  const crypto::KeyPair is = KeyFromByte(0x11), ie = KeyFromByte(0x12);
  const crypto::KeyPair rs = KeyFromByte(0x21), re = KeyFromByte(0x22);
  auto init = crypto::NoiseHandshake::Initiator(is, rs.public_key(), ie);
  auto resp = crypto::NoiseHandshake::Responder(rs, re);
  Bytes act1 = *init.WriteAct1();
  Require(resp.ReadAct1(act1).ok(), "act 1");
  Bytes act2 = *resp.WriteAct2();
  Require(init.ReadAct2(act2).ok(), "act 2");
  Bytes act3 = *init.WriteAct3();
  Put("noise", "act1", Sel(0, S(act1)));
  Put("noise", "act2", Sel(1, S(act2)));
  Put("noise", "act3", Sel(2, S(act3)));
  Put("noise", "act1-truncated", Sel(0, S(act1).substr(0, 33)));
  Put("noise", "act3-bad-version", Sel(2, std::string(1, '\x01') + S(act3).substr(1)));
  Put("noise", "transport-empty", Sel(3, ""));
  Put("noise", "transport-hello", Sel(3, "hello, tipd"));
  Put("noise", "transport-1k", Sel(3, std::string(1024, 'x')));
}

// ---- a channel with real traffic ----
struct Traffic {
  FuzzPair pair{1000, 500, 8, 16};
  v1::TipUpdate update;
  v1::Ack ack;
  v1::Reestablish reestablish;

  Traffic() {
    channel::TipDraft d;
    d.amount = 21;
    d.message = "gm \xf0\x9f\x91\x8b";
    d.metadata = {{"app_name", "podcaster"}, {"sender_name", "alice"}, {"ts", "1234"}};
    d.created_at_ms = 1'700'000'000'000;
    Require(pair.a.QueueTip(d).ok(), "tip queued");
    d.amount = 1;
    d.metadata.clear();
    Require(pair.a.QueueTip(d).ok(), "tip queued");
    auto out = pair.a.TakeNextUpdate(Keys().a, pair.rng);
    Require(out.has_value(), "update");
    update = out->update;
    auto checked = pair.b.CheckUpdate(update);
    Require(checked.ok() && pair.b.ApplyUpdate(*checked).ok(), "applied");
    ack = *pair.b.MakeAck(Keys().b, pair.rng);
    reestablish = pair.b.MakeReestablish();
  }
};

struct LedgerTraffic {
  std::vector<v1::Transaction> txs;
  v1::Block block;
  v1::GenesisParams genesis;
};

LedgerTraffic MakeLedger() {
  LedgerTraffic t;
  ZeroRandom rng;
  const crypto::KeyPair a = KeyFromByte(1), b = KeyFromByte(2), seq = KeyFromByte(9);
  t.genesis = ledger::MakeDevnetGenesis("tipd-fuzz", seq.XOnly(),
                                        {{a.XOnly(), 1'000'000}, {b.XOnly(), 1'000'000}},
                                        1'700'000'000'000);
  auto params = ledger::ValidateGenesis(t.genesis);
  Require(params.ok(), "devnet genesis");
  auto base = [&](const crypto::KeyPair& k, uint64_t nonce) {
    v1::Transaction tx;
    tx.set_chain_id("tipd-fuzz");
    tx.set_signer(S(k.XOnly()));
    tx.set_nonce(nonce);
    tx.set_fee(params->fee_per_tx);
    return tx;
  };
  auto sign = [&](v1::Transaction tx, const crypto::KeyPair& k) {
    Require(ledger::SignTransaction(&tx, k, rng).ok(), "signed");
    t.txs.push_back(tx);
  };
  v1::Transaction transfer = base(a, 0);
  transfer.mutable_transfer()->set_to(S(b.XOnly()));
  transfer.mutable_transfer()->set_amount(5000);
  sign(transfer, a);
  v1::Transaction open = base(a, 1);
  auto* o = open.mutable_channel_open();
  o->set_party_a(S(a.XOnly()));
  o->set_party_b(S(b.XOnly()));
  o->set_deposit_a(1000);
  o->set_deposit_b(500);
  o->set_settle_timeout(5);
  auto agreement = ledger::EncodeChannelOpenAgreement("tipd-fuzz", *o, 1);
  o->set_signature_b(S(crypto::SignTagged(b, ledger::kChannelOpenTag, *agreement, rng)));
  sign(open, a);
  const ledger::ChannelId id = ledger::DeriveChannelId("tipd-fuzz", a.XOnly(), b.XOnly(), 1);
  v1::Transaction deposit = base(b, 0);
  deposit.mutable_deposit()->set_channel_id(S(id));
  deposit.mutable_deposit()->set_amount(100);
  sign(deposit, b);
  v1::BalanceProof proof;
  proof.set_chain_id("tipd-fuzz");
  proof.set_channel_id(S(id));
  proof.set_nonce(1);
  proof.set_transferred(10);
  proof.set_locks_root(std::string(32, '\0'));
  proof.set_tips_root(std::string(32, '\x07'));
  Require(channel::SignBalanceProof(&proof, a, rng).ok(), "proof");
  v1::Transaction close = base(b, 1);
  close.mutable_unilateral_close()->set_channel_id(S(id));
  *close.mutable_unilateral_close()->mutable_partner_proof() = proof;
  sign(close, b);
  v1::Transaction update = base(b, 2);
  update.mutable_update_proof()->set_channel_id(S(id));
  *update.mutable_update_proof()->mutable_proof() = proof;
  sign(update, b);
  v1::Transaction settle = base(a, 2);
  settle.mutable_settle()->set_channel_id(S(id));
  sign(settle, a);
  v1::Transaction coop = base(a, 3);
  auto* c = coop.mutable_cooperative_close()->mutable_close();
  c->set_chain_id("tipd-fuzz");
  c->set_channel_id(S(id));
  c->set_balance_a(990);
  c->set_balance_b(610);
  c->set_signature_a(S(*channel::SignCooperativeClose("tipd-fuzz", id, 990, 610, a, rng)));
  c->set_signature_b(S(*channel::SignCooperativeClose("tipd-fuzz", id, 990, 610, b, rng)));
  sign(coop, a);

  std::unique_ptr<leveldb::Env> env(leveldb::NewMemEnv(leveldb::Env::Default()));
  storage::Options opts;
  opts.env = env.get();
  auto db = storage::Database::Open("/corpus", opts);
  Require(db.ok(), "db");
  auto chain = ledger::Chain::Open(db->get(), *params);
  Require(chain.ok(), "chain");
  for (const auto& tx : t.txs) (void)(*chain)->AddToPending(tx);
  auto block = (*chain)->SealBlock(1'700'000'001'000, seq, rng);
  Require(block.ok(), "block");
  t.block = *block;
  return t;
}

// ---- envelope: mode byte (0: before Init) + one Envelope ----
void Envelope(const Traffic& tr, const LedgerTraffic& lt) {
  auto put = [](const std::string& name, const v1::Envelope& env, bool before_init = false) {
    Put("envelope", name, Sel(before_init ? 0 : 1, env.SerializeAsString()));
  };
  v1::Envelope e;
  e.mutable_init()->set_chain_id("tipd-fuzz");
  e.mutable_init()->set_protocol_version(1);
  e.mutable_init()->set_software_version("tipd/0.1.0");
  put("init", e, true);
  put("init-second", e);
  e.mutable_init()->set_chain_id("tipd-other");
  put("init-wrong-chain", e, true);
  e.mutable_init()->set_chain_id("tipd-fuzz");
  e.mutable_init()->set_protocol_version(0);
  put("init-version-0", e, true);
  e.Clear();
  e.mutable_ping()->set_nonce(7);
  e.mutable_ping()->set_pong_bytes(16);
  put("ping", e);
  put("ping-before-init", e, true);
  e.mutable_ping()->set_pong_bytes(4000);
  put("ping-pong-over-frame-limit", e);
  e.mutable_ping()->set_pong_bytes(65001);
  put("ping-too-big", e);
  e.Clear();
  e.mutable_pong()->set_nonce(7);
  put("pong-unsolicited", e);
  e.Clear();
  e.mutable_error()->set_code("NONCE_NOT_INCREASING");
  e.mutable_error()->set_message("nonce 3 does not exceed current 3");
  put("error-connection", e);
  e.mutable_error()->set_channel_id(S(FuzzChannelId()));
  put("error-channel", e);
  e.Clear();
  *e.mutable_tip_update() = tr.update;
  put("tip-update", e);
  e.Clear();
  *e.mutable_ack() = tr.ack;
  put("ack", e);
  e.Clear();
  *e.mutable_reestablish() = tr.reestablish;
  put("reestablish", e);
  e.Clear();
  auto* oc = e.mutable_open_channel();
  oc->set_temporary_id(std::string(32, '\x05'));
  oc->set_chain_id("tipd-fuzz");
  oc->set_funder_key(S(Keys().a.XOnly()));
  oc->set_deposit_a(1000);
  oc->set_settle_timeout(20);
  oc->set_max_updates_in_flight(8);
  oc->set_max_tips_per_update(16);
  put("open-channel", e);
  e.Clear();
  e.mutable_update_rejected()->set_channel_id(S(FuzzChannelId()));
  e.mutable_update_rejected()->set_nonce(2);
  e.mutable_update_rejected()->set_code("TIPS_ROOT_MISMATCH");
  put("update-rejected", e);
  e.Clear();
  e.mutable_submit_tx()->set_request_id(1);
  *e.mutable_submit_tx()->mutable_tx() = lt.txs[1];
  put("submit-tx", e);
  e.Clear();
  e.mutable_get_blocks()->set_from_height(1);
  e.mutable_get_blocks()->set_max_blocks(16);
  put("get-blocks", e);
  e.Clear();
  *e.mutable_new_block()->mutable_block() = lt.block;
  put("new-block", e);
  Put("envelope", "empty", Sel(1, ""));
  Put("envelope", "garbage", Sel(1, "\xff\xff\xff\xff garbage"));
  Put("envelope", "unknown-field", Sel(1, std::string("\xf8\x07\x01", 3)));  // field 127
  Put("envelope", "too-large", Sel(1, std::string(3000, 'z')));
}

// ---- codec: selector + canonical bytes or protobuf ----
void Codec(const Traffic& tr, const LedgerTraffic& lt, const Struct& cv) {
  int n = 0;
  for (const auto& tip : cv.fields().at("tips").list_value().values()) {
    Put("codec", "vector-tip-" + std::to_string(n++),
        Sel(0, S(*HexDecode(FieldText(tip.struct_value(), "bytes")))));
  }
  Put("codec", "vector-proof",
      Sel(1, S(*HexDecode(FieldText(cv.fields().at("balance_proof").struct_value(), "bytes")))));
  for (int i = 0; i < tr.update.tips_size(); ++i) {
    Put("codec", "tip-bytes-" + std::to_string(i),
        Sel(0, S(*channel::EncodeTip(tr.update.tips(i)))));
    Put("codec", "tip-proto-" + std::to_string(i), Sel(2, tr.update.tips(i).SerializeAsString()));
  }
  Put("codec", "proof-bytes", Sel(1, S(*channel::EncodeBalanceProof(tr.update.proof()))));
  Put("codec", "proof-proto", Sel(3, tr.update.proof().SerializeAsString()));
  Put("codec", "ack-proto", Sel(4, tr.ack.SerializeAsString()));
  for (size_t i = 0; i < lt.txs.size(); ++i) {
    Put("codec", "tx-" + std::to_string(i), Sel(5, lt.txs[i].SerializeAsString()));
  }
  Put("codec", "header", Sel(6, lt.block.header().SerializeAsString()));
  Put("codec", "genesis", Sel(7, lt.genesis.SerializeAsString()));
  Put("codec", "merkle-3", Sel(8, std::string(1, '\x03') + std::string(96, '\x11')));
}

// ---- api_json: selector (NewRequest order) + body; 9 + now + token ----
void ApiJson() {
  const std::string node = Keys().b.public_key().Hex();
  const std::string chan = HexEncode(FuzzChannelId());
  const std::pair<uint8_t, std::string> bodies[] = {
      {0,
       R"({"channel_id":")" + chan +
           R"(","amount":"21","message":"gm","metadata":{"app_name":"podcaster","sender_name":"alice"},"idempotency_key":"k-1"})"},
      {0, R"({"peer_node_id":")" + node + R"(","amount":5,"message":"\u00e9\ud83d\ude00"})"},
      {0, R"({"peer_node_id":")" + node + R"(","amount":"18446744073709551615"})"},
      {0, R"({"amount":1,"message":"\ud800"})"},
      {0, R"({"amount":-1})"},
      {0, R"({"metadata":{"":"x"},"unknown":1})"},
      {1, R"({"tips":[{"channel_id":")" + chan + R"(","amount":"1"},{"channel_id":")" + chan +
              R"(","amount":"2","message":"two"}]})"},
      {1, R"({"tips":[]})"},
      {2, R"({"peer_node_id":")" + node +
              R"(","deposit":"100000","push_deposit":"0","settle_timeout":"40"})"},
      {3, R"({"amount":"5000"})"},
      {4, R"({"force":true})"},
      {4, ""},
      {5, R"({"to":")" + HexEncode(Keys().b.XOnly()) +
              R"(","amount":"5000","idempotency_key":"t-1"})"},
      {6, R"({"node_id":")" + node + R"(","address":"127.0.0.1:9745","persistent":true})"},
      {6, R"({"node_id":")" + node + R"(","address":"[::1]:9745"})"},
      {7, R"({"scopes":["read","tip"],"ttl_ms":"3600000","daily_spend_cap":"1000"})"},
      {7, R"({"scopes":["admin"],"expires_at_ms":"1700000000000"})"},
      {8, R"({"direction":"received","channel_id":")" + chan + R"(","limit":50,"cursor":"abc"})"},
  };
  int n = 0;
  for (const auto& [sel, body] : bodies)
    Put("api_json", "body-" + std::to_string(n++), Sel(sel, body));
  const api::TokenAuthority authority(crypto::Key32{7, 7, 7});
  ZeroRandom rng;
  auto token = [&](const std::string& name, uint32_t scopes, uint64_t expires, uint64_t cap,
                   uint64_t now) {
    std::string now_bytes(8, '\0');
    for (int i = 0; i < 8; ++i) now_bytes[i] = static_cast<char>(now >> (56 - 8 * i));
    Put("api_json", name,
        Sel(9, now_bytes +
                   authority.Issue(api::TokenAuthority::NewClaims(scopes, expires, cap, rng))));
  };
  token("token-admin", api::kAllScopes, 0, 0, 2 * 1'700'000'000'000);
  token("token-tip-capped", 5, 1'800'000'000'000, 1000, 2 * 1'700'000'000'000);
  token("token-expired", 1, 1'600'000'000'000, 0, 2 * 1'700'000'000'000);
  Put("api_json", "token-garbage", Sel(9, std::string(8, '\0') + "tipd1_zz"));
}

// ---- config: 0 node file, 1 ledger file, 2 value (sub-selector), 3 genesis ----
void Config(const Struct& lv, const LedgerTraffic& lt) {
  const std::string node_conf =
      "# /srv/tipd/alice/tipd.conf\n"
      "listen = 127.0.0.1:9735\n"
      "ledger = 127.0.0.1:9736@0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798\n"
      "connect = "
      "127.0.0.1:9745@02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5\n"
      "connect = "
      "127.0.0.1:9755@02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9\n"
      "rpc-listen = 127.0.0.1:8080\n"
      "log-level = debug\n"
      "ping-interval = 30s\n"
      "peer-timeout = 90s\n"
      "max-updates-in-flight = 16\n"
      "max-tips-per-update = 256\n";
  Put("config", "node-conf", std::string("\0\0", 2) + node_conf);
  Put("config", "node-conf-typo", std::string("\0\0", 2) + "lsiten = 127.0.0.1:9735\n");
  Put("config", "node-conf-no-eq", std::string("\0\0", 2) + "listen 127.0.0.1:9735\n");
  Put("config", "node-conf-bad-limit",
      std::string("\0\0", 2) + node_conf + "max-queued-tips = 0\n");
  Put("config", "ledger-conf",
      std::string("\1\0", 2) +
          "listen = 0.0.0.0:9736\ngenesis = /srv/tipd/genesis.json\nblock-interval = 500ms\n"
          "log-file = /var/log/tipd/ledger.log\nseal-on-submit = yes\n");
  const std::pair<uint8_t, std::string> values[] = {
      {0, "127.0.0.1:9735"},
      {0, "[::1]:0"},
      {0, "localhost:65535"},
      {0, "host:99999"},
      {1, "127.0.0.1:9745@02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"},
      {2, "127.0.0.1:9736@0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"},
      {2, "127.0.0.1:9736@79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"},
      {3, "500ms"},
      {3, "18446744073709551615h"},
      {3, "2m"},
      {4, "Yes"},
      {4, "off"},
  };
  int n = 0;
  for (const auto& [sel, text] : values) {
    Put("config", "value-" + std::to_string(n++),
        std::string(1, '\2') + static_cast<char>(sel) + text);
  }
  // The genesis of the vectors, as a genesis file.
  Struct g = lv.fields().at("genesis").struct_value();
  g.mutable_fields()->erase("bytes");
  g.mutable_fields()->erase("hash");
  g.mutable_fields()->erase("state_hash");
  std::string json;
  Require(google::protobuf::util::MessageToJsonString(g, &json).ok(), "vector genesis json");
  Put("config", "genesis-vectors", std::string("\3\0", 2) + json);
  Put("config", "genesis-devnet",
      std::string("\3\0", 2) + ledger::GenesisToJson(lt.genesis, {"a", "b"}));
}

// ---- programs: pseudo-random inputs for the targets that read choices ----
void Programs(const std::string& target, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 32; ++i) {
    std::string s(16 + rng() % 240, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    Put(target, "program-" + std::to_string(i), s);
  }
}

}  // namespace
}  // namespace tipd::fuzz

int main(int argc, char** argv) {
  using namespace tipd::fuzz;
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR VECTORS_DIR\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  const auto cv = LoadJson(std::filesystem::path(argv[2]) / "channel_vectors.json");
  const auto lv = LoadJson(std::filesystem::path(argv[2]) / "ledger_vectors.json");
  const Traffic traffic;
  const LedgerTraffic ledger = MakeLedger();
  Noise();
  Envelope(traffic, ledger);
  Codec(traffic, ledger, cv);
  ApiJson();
  Config(lv, ledger);
  Programs("channel_update", 1);
  Programs("reestablish", 2);
  Programs("ledger", 3);
  std::printf("corpus written to %s\n", argv[1]);
  return 0;
}
