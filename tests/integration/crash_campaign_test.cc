// The crash campaign (issue 10): two real `tipd node` processes stream tips
// both ways over three channels, from several API clients (threads, each with
// its own keep-alive HTTP connection, every tip keyed), while the test
// SIGKILLs the sender, the receiver or the sequencer (`tipd ledger`) at
// random moments and restarts it. After EVERY round it checks:
//
//  1. every tip the API answered 200 for is at the receiver (its tip history
//     through the API), message, metadata, amount and index byte-identical,
//     exactly once, and in the sender's history exactly once; a request whose
//     answer was lost is retried with its idempotency key until answered, and
//     every request ends 200 (nothing a client keeps retrying is ever lost or
//     paid twice);
//  2. no node ever signed two different proofs with the same nonce in a
//     direction: each node runs with `--debug-proof-log` (every proof it
//     sends, written before the TipUpdate leaves), and the logs, every 200's
//     receipt and the killed node's own store (a copy of its database taken
//     while it is dead) must agree: its stored latest proof is at or past
//     everything it sent (persist before send) and equal to what it sent; the
//     peer's proof it holds is one the peer sent, at or past every receipt
//     the peer's API reported (persist before ack).
//
// At the end every channel is closed: one cooperatively, one unilaterally by
// each node (the partner's watcher answers with the closer's latest proof;
// one node is SIGKILLed and restarted inside the window), and the ledger's
// supply is conserved and each party's payout equals what the latest
// acknowledged proofs entitle it to: dX - T(X->Y) + T(Y->X), where T is the
// sum of the tips answered 200 in that direction. Then both stores are
// compared with both proof logs once more, signatures included.
//
// CI mode: 20 kills. Long mode: TIPD_CRASH_KILLS=200 (or any number).
// Replay a run's choices (victims, moments, tips) with TIPD_TEST_SEED=<seed>.
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "api/http_client.h"
#include "node/channel_db.h"
#include "tests/integration/channel_fixture.h"
#include "tipd/api.pb.h"

namespace tipd::testing {
namespace {

using google::protobuf::util::MessageDifferencer;

// ---- what the test sent and what the API answered ----

struct TipRecord {
  std::string key;      // idempotency key; the message starts with it
  std::string sender;   // node name
  std::string channel;  // hex
  v1::TipRequest request;
  int status = 0;  // the last answer: 0 = none yet (transport error)
  std::string body;
  std::vector<std::string> history;  // every answer but the last, "<status> <code>"
  bool replayed = false;
  int no_answer = 0;  // attempts that got no answer (the node was down)
  v1::TipApi tip;     // from a 200 (or a 202 that carried it)
  v1::TipReceiptApi receipt;
  int round = 0;
};

bool Retryable(int status, const std::string& body) {
  // 0: no answer (the node died or restarts); 202: accepted, not yet acked;
  // 503 PEER_OFFLINE: the peer restarts; 429 QUEUE_FULL: back off.
  return status == 0 || status == 202 || (status == 503 && Contains(body, "PEER_OFFLINE")) ||
         (status == 429 && Contains(body, "QUEUE_FULL"));
}

std::string ErrorCode(const std::string& body) {
  for (const char* c : {"PEER_OFFLINE", "QUEUE_FULL", "CHANNEL_NOT_OPEN", "NODE_READ_ONLY",
                        "IDEMPOTENCY_KEY_REUSED", "INSUFFICIENT_SPENDABLE"}) {
    if (Contains(body, c)) return c;
  }
  return body.substr(0, 80);
}

// ---- the proof logs (--debug-proof-log) ----

struct LoggedProof {
  uint64_t transferred = 0;
  uint64_t locked = 0;
  std::string locks_root, tips_root, signature;  // hex
  bool SameContent(const LoggedProof& o) const {
    return transferred == o.transferred && locked == o.locked && locks_root == o.locks_root &&
           tips_root == o.tips_root;
  }
};

struct ProofLog {
  // channel hex -> nonce -> the first line sent with that nonce.
  std::map<std::string, std::map<uint64_t, LoggedProof>> proofs;
  std::vector<std::string> conflicts;  // two different contents for one nonce
  size_t lines = 0;
  size_t resent = 0;    // the same proof sent again (reestablish)
  size_t resigned = 0;  // same content, another signature (harmless; counted)

  const LoggedProof* Find(const std::string& ch, uint64_t nonce) const {
    auto c = proofs.find(ch);
    if (c == proofs.end()) return nullptr;
    auto p = c->second.find(nonce);
    return p == c->second.end() ? nullptr : &p->second;
  }
  uint64_t MaxNonce(const std::string& ch) const {
    auto c = proofs.find(ch);
    return c == proofs.end() || c->second.empty() ? 0 : c->second.rbegin()->first;
  }
};

ProofLog ReadProofLog(const std::filesystem::path& path) {
  ProofLog log;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::string tag, ch;
    uint64_t nonce = 0, tips = 0;
    LoggedProof p;
    s >> tag >> ch >> nonce >> p.transferred >> p.locked >> p.locks_root >> p.tips_root >>
        p.signature >> tips;
    if (tag != "proof" || !s) {
      // A line cut by SIGKILL cannot happen (one write(2) per line), so a bad
      // line is a failure of the log itself.
      log.conflicts.push_back("unparsable line in " + path.string() + ": " + line);
      continue;
    }
    ++log.lines;
    auto [it, fresh] = log.proofs[ch].emplace(nonce, p);
    if (fresh) continue;
    if (!it->second.SameContent(p)) {
      log.conflicts.push_back("channel " + ch.substr(0, 16) + " nonce " + std::to_string(nonce) +
                              ": transferred " + std::to_string(it->second.transferred) + " root " +
                              it->second.tips_root.substr(0, 16) + " and transferred " +
                              std::to_string(p.transferred) + " root " + p.tips_root.substr(0, 16));
    } else if (it->second.signature != p.signature) {
      ++log.resigned;
    } else {
      ++log.resent;
    }
  }
  // Within a direction, transferred never decreases with the nonce.
  for (const auto& [ch, by_nonce] : log.proofs) {
    uint64_t prev = 0, prev_nonce = 0;
    for (const auto& [nonce, p] : by_nonce) {
      if (p.transferred < prev) {
        log.conflicts.push_back("channel " + ch.substr(0, 16) + ": transferred went down from " +
                                std::to_string(prev) + " (nonce " + std::to_string(prev_nonce) +
                                ") to " + std::to_string(p.transferred) + " (nonce " +
                                std::to_string(nonce) + ")");
      }
      prev = p.transferred;
      prev_nonce = nonce;
    }
  }
  return log;
}

LoggedProof FromProof(const v1::BalanceProof& p) {
  LoggedProof l;
  l.transferred = p.transferred();
  l.locked = p.locked();
  l.locks_root = HexEncode(AsSpan(p.locks_root()));
  l.tips_root = HexEncode(AsSpan(p.tips_root()));
  l.signature = HexEncode(AsSpan(p.signature()));
  return l;
}

// ---- the campaign ----

constexpr int kClientsPerNode = 3;
constexpr uint64_t kDeposit = 150'000;      // each side of each channel
constexpr uint64_t kSettleTimeout = 150;    // blocks (100 ms each: 15 s)
constexpr uint64_t kBlockIntervalMs = 100;  // the sequencer's

std::string TestEnv(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

class CrashCampaign : public ChannelFixture {
 protected:
  // Node `name` (account `account`) with its proof log.
  std::vector<std::string> Extra(const std::string& name) {
    return {"--debug-proof-log", ProofLogPath(name).string()};
  }
  std::filesystem::path ProofLogPath(const std::string& name) {
    return dir_.path() / (name + ".proofs");
  }
  Node& Peer(const Node& n) { return n.name == "a" ? b_ : a_; }

  void StartAll() {
    InitLedger(kBlockIntervalMs);
    StartLedger();
    a_ = Up("a", 0, Extra("a"));
    b_ = Up("b", 1, Extra("b"));
    Connect(a_, b_);
    // One channel to close cooperatively, one each node closes unilaterally.
    // Both sides deposit, so tips flow both ways from the first one.
    channels_ = {Open(a_, b_, kDeposit, kDeposit, kSettleTimeout),
                 Open(a_, b_, kDeposit, kDeposit, kSettleTimeout),
                 Open(b_, a_, kDeposit, kDeposit, kSettleTimeout)};
    opener_ = {"a", "a", "b"};
    for (const std::string& ch : channels_) ASSERT_FALSE(ch.empty());
  }

  // A new keyed tip from `sender` on a random channel, with a message and
  // bLIP-10 metadata that must come back byte-identical (multi-byte UTF-8,
  // JSON escapes, control characters).
  TipRecord NewTip(const std::string& sender, int round, int client, uint64_t serial,
                   std::mt19937_64& rng) {
    static const std::vector<std::string> kPieces = {"great",
                                                     "episode",
                                                     "\xc3\xa9t\xc3\xa9",
                                                     "\xe2\x9c\x93",
                                                     "\xf0\x9f\x8e\x89",
                                                     "\"q\"",
                                                     "back\\sl",
                                                     "tab\t",
                                                     "line\nbreak",
                                                     "<b>&amp;",
                                                     "\xe4\xb8\xad\xe6\x96\x87",
                                                     " ",
                                                     "0",
                                                     "\xd0\xbf\xd1\x80\xd0\xb8"};
    TipRecord r;
    r.sender = sender;
    r.round = round;
    r.channel = channels_[rng() % channels_.size()];
    r.key = sender + "-r" + std::to_string(round) + "-c" + std::to_string(client) + "-" +
            std::to_string(serial);
    std::string msg = r.key + " ";
    const size_t pieces = rng() % 12;
    for (size_t i = 0; i < pieces; ++i) msg += kPieces[rng() % kPieces.size()];
    r.request.set_channel_id(r.channel);
    r.request.set_amount(1 + rng() % 9);
    r.request.set_message(msg);
    r.request.set_idempotency_key(r.key);
    auto& meta = *r.request.mutable_metadata();
    meta["app_name"] = "crash-campaign";
    meta["sender_name"] = sender == "a" ? "alice \xf0\x9f\x91\xa9" : "bob \"b\"";
    if (rng() % 2) meta["feed"] = "feed-" + std::to_string(rng() % 100);
    if (rng() % 2) meta["item"] = "item \xe2\x80\x94 " + std::to_string(serial);
    if (rng() % 3 == 0) meta["action"] = rng() % 2 ? "boost" : "stream";
    if (rng() % 3 == 0) meta["ts"] = std::to_string(rng() % 100000);
    return r;
  }

  static std::string Body(const TipRecord& r) {
    std::string json;
    google::protobuf::util::JsonPrintOptions opt;
    opt.preserve_proto_field_names = true;
    EXPECT_TRUE(google::protobuf::util::MessageToJsonString(r.request, &json, opt).ok());
    return json;
  }

  // One attempt; records the answer.
  static void Attempt(api::HttpClient& http, TipRecord& r) {
    if (r.status != 0 || !r.body.empty()) {
      r.history.push_back(r.status >= 300 ? std::to_string(r.status) + " " + ErrorCode(r.body)
                                          : std::to_string(r.status));
    }
    auto res = http.Request("POST", "/v1/tips", Body(r));
    if (!res.ok()) {
      ++r.no_answer;
      r.status = 0;
      r.body.clear();
      return;
    }
    r.status = res->status;
    r.body = res->body;
    if (r.status == 200 || r.status == 202) {
      v1::TipResponse resp;
      if (!google::protobuf::util::JsonStringToMessage(r.body, &resp).ok()) {
        ADD_FAILURE() << "unparsable tip answer: " << r.body;
        return;
      }
      if (resp.has_tip() && resp.tip().tip().index() != 0) {
        // An earlier attempt signed it: a retry must answer the same tip.
        if (r.tip.tip().index() != 0) {
          EXPECT_TRUE(MessageDifferencer::Equals(r.tip.tip(), resp.tip().tip()))
              << r.key << " answered two different tips: " << r.tip.ShortDebugString() << " vs "
              << resp.tip().ShortDebugString();
        }
        r.tip = resp.tip();
      }
      r.replayed = resp.replayed();
      if (resp.has_receipt()) r.receipt = resp.receipt();
    }
  }

  // A client of `from`: new keyed tips until `stop`; a request without a
  // final answer (no answer, peer offline, queue full) is retried with the
  // same key, as a real client would, until it has one or the round stops.
  void ClientLoop(const Node& from, int client, int round, uint64_t seed,
                  const std::atomic<bool>& stop, std::vector<TipRecord>* out) {
    std::mt19937_64 rng(seed);
    api::HttpClient http(*api::ParseHttpUrl("http://127.0.0.1:" + std::to_string(from.rpc)),
                         from.token, 60s);
    for (uint64_t serial = 0; !stop.load(); ++serial) {
      TipRecord r = NewTip(from.name, round, client, serial, rng);
      for (;;) {
        Attempt(http, r);
        if (stop.load() || r.status == 200 || r.status == 202 || !Retryable(r.status, r.body)) {
          break;
        }
        std::this_thread::sleep_for(50ms);  // back off while the node or its peer restarts
      }
      out->push_back(std::move(r));
      // A little think time keeps a long campaign's history small.
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 8));
    }
  }

  // Every record not answered 200 is retried with its key until it is (a
  // connected pair with open channels must accept every tip).
  void Resolve(std::vector<TipRecord*>& open) {
    std::map<std::string, std::unique_ptr<api::HttpClient>> http;
    for (const Node* n : {&a_, &b_}) {
      http[n->name] = std::make_unique<api::HttpClient>(
          *api::ParseHttpUrl("http://127.0.0.1:" + std::to_string(n->rpc)), n->token, 60s);
    }
    const auto deadline = std::chrono::steady_clock::now() + 180s;
    for (TipRecord* r : open) {
      while (r->status != 200) {
        ASSERT_TRUE(Retryable(r->status, r->body))
            << r->key << ": answered " << r->status << " " << r->body;
        ASSERT_LT(std::chrono::steady_clock::now(), deadline)
            << r->key << " still unanswered: " << r->status << " " << r->body;
        if (r->status != 202 && r->status != 0) std::this_thread::sleep_for(50ms);
        if (r->status == 0) std::this_thread::sleep_for(20ms);
        Attempt(*http[r->sender], *r);
        ++retries_;
      }
    }
  }

  // Both nodes are up and connected to each other.
  void WaitConnected() {
    ASSERT_TRUE(WaitFor(
        [&] {
          auto pa = Call(a_, "GET", "/v1/peers");
          auto pb = Call(b_, "GET", "/v1/peers");
          return pa.status == 200 && pb.status == 200 && Contains(pa.body, b_.id.Hex()) &&
                 Contains(pb.body, a_.id.Hex());
        },
        120s))
        << "the nodes did not reconnect";
  }

  void Revive(const std::string& victim) {
    if (victim == "ledger") {
      ASSERT_NO_FATAL_FAILURE(StartLedger());
      return;
    }
    Node& n = victim == "a" ? a_ : b_;
    ASSERT_NE(StartNode(n.name, n.key, n.rpc, 0, Extra(n.name)), nullptr);
  }

  void KillNow(const std::string& victim) {
    ++kills_;
    ++kills_by_[victim];
    if (victim == "ledger") {
      ASSERT_NO_FATAL_FAILURE(StopLedger(SIGKILL));
      return;
    }
    Process* p = nodes_.at(victim).get();
    p->Signal(SIGKILL);
    ASSERT_TRUE(p->Wait(30s).has_value());
  }

  // Reads the history of one direction of `ch` on `n` from the index after
  // the last one read (the cursor format of GET /v1/tips:
  // <channel>.<direction 0|1>.<next index>).
  std::vector<v1::TipApi> NewHistory(const Node& n, const std::string& ch, bool received) {
    uint64_t& last = read_up_to_[n.name + ch + (received ? "r" : "s")];
    std::vector<v1::TipApi> out;
    std::string cursor = ch + (received ? ".1." : ".0.") + std::to_string(last + 1);
    while (!cursor.empty()) {
      auto r = Call(n, "GET",
                    "/v1/tips?channel_id=" + ch + "&direction=" + (received ? "received" : "sent") +
                        "&limit=999&cursor=" + cursor);
      EXPECT_EQ(r.status, 200) << r.body;
      if (r.status != 200) break;
      auto page = FromJson<v1::ListTipsResponse>(r.body);
      for (const auto& t : page.tips()) {
        EXPECT_EQ(t.tip().index(), last + 1) << n.name << " history has a gap on " << ch;
        last = t.tip().index();
        out.push_back(t);
      }
      cursor = page.next_cursor();
    }
    return out;
  }

  // Check 1: every 200 is at the receiver and in the sender's history,
  // byte-identical, exactly once; nothing else is.
  void CheckTips() {
    for (const std::string& ch : channels_) {
      for (const Node* sender : {&a_, &b_}) {
        const Node& receiver = Peer(*sender);
        for (bool received : {false, true}) {
          const Node& holder = received ? receiver : *sender;
          auto& seen = seen_[holder.name + ch + (received ? "r" : "s")];
          for (const v1::TipApi& t : NewHistory(holder, ch, received)) {
            const std::string& msg = t.tip().message();
            const std::string key = msg.substr(0, msg.find(' '));
            auto it = records_.find(key);
            ASSERT_NE(it, records_.end())
                << holder.name << " holds a tip no client sent: " << t.ShortDebugString();
            const TipRecord& r = it->second;
            EXPECT_EQ(r.sender, sender->name) << key;
            EXPECT_EQ(r.channel, ch) << key;
            EXPECT_TRUE(seen.insert(key).second)
                << key << " is twice in " << holder.name << "'s "
                << (received ? "received" : "sent") << " history: paid twice";
            ASSERT_EQ(r.status, 200) << key << " is held but was answered " << r.status;
            // Byte-identical: the tip the API answered, and what was asked.
            EXPECT_TRUE(MessageDifferencer::Equals(t.tip(), r.tip.tip()))
                << key << ": held " << t.tip().ShortDebugString() << ", answered "
                << r.tip.tip().ShortDebugString();
            EXPECT_EQ(t.tip().message(), r.request.message()) << key;
            EXPECT_EQ(t.tip().amount(), r.request.amount()) << key;
            std::map<std::string, std::string> meta;
            for (const auto& e : t.tip().metadata()) meta[e.key()] = e.value();
            const std::map<std::string, std::string> asked(r.request.metadata().begin(),
                                                           r.request.metadata().end());
            EXPECT_EQ(meta, asked) << key;
            EXPECT_EQ(t.nonce(), r.tip.nonce()) << key;
          }
        }
      }
    }
    // Every record answered 200 is held by both sides.
    for (const auto& [key, r] : records_) {
      EXPECT_EQ(r.status, 200) << key;
      const Node& sender = r.sender == "a" ? a_ : b_;
      EXPECT_TRUE(seen_[sender.name + r.channel + "s"].count(key))
          << key << " answered 200 is not in the sender's history";
      EXPECT_TRUE(seen_[Peer(sender).name + r.channel + "r"].count(key))
          << key << " answered 200 is not at the receiver (round " << r.round << ")";
    }
  }

  // Check 2a: the proof logs never sign one nonce twice, and every receipt
  // a 200 carried matches the proof its sender sent with that nonce.
  void CheckProofLogs() {
    for (const Node* n : {&a_, &b_}) {
      ProofLog log = ReadProofLog(ProofLogPath(n->name));
      for (const std::string& c : log.conflicts) {
        ADD_FAILURE() << n->name << " signed two different proofs: " << c;
      }
      logs_[n->name] = std::move(log);
    }
    for (const auto& [key, r] : records_) {
      if (r.status == 200) CheckReceipt(r);
    }
  }
  void CheckReceipt(const TipRecord& r) {
    const LoggedProof* p = logs_[r.sender].Find(r.channel, r.receipt.nonce());
    ASSERT_NE(p, nullptr) << r.key << ": receipt for nonce " << r.receipt.nonce() << " but "
                          << r.sender << " never sent that proof";
    EXPECT_EQ(p->tips_root, r.receipt.tips_root()) << r.key;
    EXPECT_EQ(p->transferred, r.receipt.transferred()) << r.key;
    EXPECT_GE(r.receipt.nonce(), r.tip.nonce()) << r.key;
  }

  // Check 2b: the store of `name` (a copy of its database, the node being
  // dead or stopped) against both proof logs. `quiescent`: nothing in flight
  // any more, so both directions are complete.
  void CheckStore(const std::string& name, bool quiescent) {
    const Node& self = name == "a" ? a_ : b_;
    const Node& peer = Peer(self);
    const ProofLog own_log = ReadProofLog(ProofLogPath(self.name));
    const ProofLog peer_log = ReadProofLog(ProofLogPath(peer.name));
    // Highest receipt the peer's API reported for its direction, by channel.
    std::map<std::string, uint64_t> peer_acked;
    for (const auto& [key, r] : records_) {
      if (r.sender == peer.name && r.status == 200) {
        peer_acked[r.channel] = std::max(peer_acked[r.channel], r.receipt.nonce());
      }
    }
    const auto copy = dir_.path() / ("store-" + name);
    std::filesystem::remove_all(copy);
    std::filesystem::copy(NodeDir(name) / "db", copy, std::filesystem::copy_options::recursive);
    {
      auto db = storage::Database::Open(copy);
      ASSERT_TRUE(db.ok()) << db.status().ToString();
      node::ChannelDb chdb(db->get());
      for (const std::string& ch : channels_) {
        const std::string id = Str(*HexDecode(ch));
        auto st = chdb.Load(id);
        ASSERT_TRUE(st.ok()) << st.status().ToString();
        const v1::BalanceProof& own = st->own_latest;
        EXPECT_GE(own.nonce(), own_log.MaxNonce(ch))
            << name << " sent a proof of " << ch.substr(0, 16) << " its store does not hold";
        if (const LoggedProof* p = own_log.Find(ch, own.nonce()); p && own.nonce() > 0) {
          EXPECT_TRUE(p->SameContent(FromProof(own)))
              << name << "'s stored proof at nonce " << own.nonce() << " is not the one it sent";
          EXPECT_EQ(p->signature, FromProof(own).signature) << name;
        }
        const v1::BalanceProof& got = st->received_latest;
        EXPECT_GE(got.nonce(), peer_acked[ch])
            << name << " lost an update of " << ch.substr(0, 16) << " it acknowledged";
        if (got.nonce() > 0) {
          const LoggedProof* p = peer_log.Find(ch, got.nonce());
          ASSERT_NE(p, nullptr) << name << " holds a proof at nonce " << got.nonce() << " that "
                                << peer.name << " never sent";
          EXPECT_TRUE(p->SameContent(FromProof(got))) << name << " nonce " << got.nonce();
          EXPECT_EQ(p->signature, FromProof(got).signature) << name << " nonce " << got.nonce();
        }
        if (quiescent) {
          EXPECT_EQ(own.nonce(), own_log.MaxNonce(ch)) << name << " " << ch.substr(0, 16);
          EXPECT_EQ(got.nonce(), peer_log.MaxNonce(ch)) << name << " " << ch.substr(0, 16);
          EXPECT_TRUE(st->in_flight.empty()) << name << " " << ch.substr(0, 16);
        }
      }
    }
    std::filesystem::remove_all(copy);
    ++store_checks_;
  }

  void Round(int round, std::mt19937_64& rng) {
    std::atomic<bool> stop{false};
    std::vector<std::vector<TipRecord>> out(2 * kClientsPerNode);
    std::vector<std::thread> clients;
    // The clients stop and are joined however this scope is left (a failed
    // assertion returns early).
    struct Joiner {
      std::atomic<bool>& stop;
      std::vector<std::thread>& threads;
      ~Joiner() {
        stop = true;
        for (auto& t : threads) {
          if (t.joinable()) t.join();
        }
      }
    } joiner{stop, clients};
    for (int c = 0; c < 2 * kClientsPerNode; ++c) {
      const Node* from = c < kClientsPerNode ? &a_ : &b_;
      const uint64_t seed = rng();
      clients.emplace_back([this, from, c, round, seed, &stop, &out] {
        ClientLoop(*from, c, round, seed, stop, &out[static_cast<size_t>(c)]);
      });
    }
    // The random moment, then the victim; one round in five kills a second
    // process right after the first (a node and the sequencer, or both
    // nodes), and one in four kills the first victim again soon after its
    // restart, while it recovers (reestablish, resends).
    static const std::vector<std::string> kVictims = {"a", "b", "ledger"};
    std::vector<std::string> victims = {kVictims[rng() % 3]};
    if (rng() % 5 == 0) {
      std::vector<std::string> others;
      for (const std::string& v : kVictims) {
        if (v != victims[0]) others.push_back(v);
      }
      victims.push_back(others[rng() % 2]);
    }
    const bool again = rng() % 4 == 0;
    const auto before = std::chrono::milliseconds(100 + rng() % 1200);
    const auto down = std::chrono::milliseconds(rng() % 400);
    const auto recovering = std::chrono::milliseconds(rng() % 300);
    const auto after = std::chrono::milliseconds(200 + rng() % 600);
    std::this_thread::sleep_for(before);
    for (const std::string& v : victims) ASSERT_NO_FATAL_FAILURE(KillNow(v));
    // While they are dead: their stores agree with what they sent and
    // acknowledged.
    for (const std::string& v : victims) {
      if (v != "ledger") {
        ASSERT_NO_FATAL_FAILURE(CheckStore(v, /*quiescent=*/false));
      }
    }
    std::this_thread::sleep_for(down);
    for (const std::string& v : victims) ASSERT_NO_FATAL_FAILURE(Revive(v));
    if (again) {
      std::this_thread::sleep_for(recovering);
      ASSERT_NO_FATAL_FAILURE(KillNow(victims[0]));
      if (victims[0] != "ledger") {
        ASSERT_NO_FATAL_FAILURE(CheckStore(victims[0], /*quiescent=*/false));
      }
      ASSERT_NO_FATAL_FAILURE(Revive(victims[0]));
    }
    std::string what;
    for (const std::string& v : victims) what += (what.empty() ? "" : "+") + v;
    if (again)
      what += ", " + victims[0] + " again after " + std::to_string(recovering.count()) + " ms";
    std::this_thread::sleep_for(after);
    stop = true;
    for (auto& t : clients) t.join();

    std::vector<TipRecord*> open, fresh_this_round;
    for (auto& v : out) {
      for (TipRecord& r : v) {
        const std::string key = r.key;
        auto [it, fresh] = records_.emplace(key, std::move(r));
        EXPECT_TRUE(fresh) << key;
        fresh_this_round.push_back(&it->second);
        if (it->second.status != 200) open.push_back(&it->second);
      }
    }
    ASSERT_NO_FATAL_FAILURE(WaitConnected());
    ASSERT_NO_FATAL_FAILURE(Resolve(open));
    for (TipRecord* r : open) replayed_ += r->replayed;
    // Every answer any attempt got, by status (and route code).
    for (const TipRecord* r : fresh_this_round) {
      ++answers_[std::to_string(r->status)];  // 200 once resolved
      for (const std::string& h : r->history) ++answers_[h];
      answers_["no answer"] += r->no_answer;
    }
    ASSERT_NO_FATAL_FAILURE(CheckTips());
    ASSERT_NO_FATAL_FAILURE(CheckProofLogs());
    std::cout << "[ round " << round << " ] killed " << what << " after " << before.count()
              << " ms, down " << down.count() << " ms; " << records_.size() << " tips so far, "
              << open.size() << " retried" << std::endl;
  }

  std::optional<ledger::Channel> Onchain(TestClient& c, const std::string& ch) {
    const ledger::Channel* p = c.chain().state().FindChannel(HexDecodeFixed<32>(ch).value());
    if (p == nullptr) return std::nullopt;
    return *p;
  }

  // T(sender -> its peer) on `ch`: the sum of the tips answered 200.
  uint64_t Transferred(const std::string& ch, const std::string& sender) {
    uint64_t sum = 0;
    for (const auto& [key, r] : records_) {
      if (r.channel == ch && r.sender == sender && r.status == 200) sum += r.request.amount();
    }
    return sum;
  }

  void CloseEverythingAndCheckPayouts(std::mt19937_64& rng) {
    auto client = Client();
    ASSERT_TRUE(client->WaitConnected());
    // What each direction was paid, and the latest proofs agree.
    for (const std::string& ch : channels_) {
      for (const Node* n : {&a_, &b_}) {
        const v1::ChannelApi api = Channel(*n, ch);
        const uint64_t sent = Transferred(ch, n->name), got = Transferred(ch, Peer(*n).name);
        EXPECT_EQ(api.balance_local(), kDeposit - sent + got) << n->name << " " << ch;
        EXPECT_EQ(api.balance_remote(), kDeposit + sent - got) << n->name << " " << ch;
      }
    }
    // Both nodes follow the ledger again (a sequencer killed in the last
    // round may still be being redialled).
    ASSERT_TRUE(client->WaitHeight(client->chain().height() + 1, 60s));
    const uint64_t height = client->chain().height();
    ASSERT_TRUE(WaitFor(
        [&] {
          for (const Node* n : {&a_, &b_}) {
            auto r = Call(*n, "GET", "/v1/info");
            if (r.status != 200 || FromJson<v1::InfoResponse>(r.body).ledger_height() < height) {
              return false;
            }
          }
          return true;
        },
        60s));
    // Cooperative (asked by B, the acceptor: A proposes), unilateral by A,
    // unilateral by B. The calls wait up to 30 s for their block.
    auto close = [&](const Node& n, const std::string& ch, const std::string& body) {
      return HttpRequest(n.rpc, "POST", "/v1/channels/" + ch + "/close", n.token, body, 90s);
    };
    auto coop = close(b_, channels_[0], "{}");
    EXPECT_TRUE(coop.status == 200 || coop.status == 202) << coop.body;
    auto force_a = close(a_, channels_[1], R"({"force":true})");
    EXPECT_EQ(force_a.status, 202) << force_a.body;
    auto force_b = close(b_, channels_[2], R"({"force":true})");
    EXPECT_EQ(force_b.status, 202) << force_b.body;
    // Right after the closes were submitted, a node (a watcher, inside the
    // window; maybe the cooperative close's proposer or signer mid-way) or
    // the sequencer (with the closes it accepted but had not sealed yet)
    // dies and comes back; sometimes both.
    static const std::vector<std::string> kVictims = {"a", "b", "ledger"};
    const std::string force = close_victim_;
    std::vector<std::string> victims = {force.empty() ? kVictims[rng() % 3] : force};
    if (force.empty() && rng() % 3 == 0) {
      const std::string second = kVictims[rng() % 3];
      if (second != victims[0]) victims.push_back(second);
    }
    for (const std::string& v : victims) ASSERT_NO_FATAL_FAILURE(KillNow(v));
    for (const std::string& v : victims) ASSERT_NO_FATAL_FAILURE(Revive(v));
    std::string what;
    for (const std::string& v : victims) what += (what.empty() ? "" : "+") + v;
    std::cout << "[ closes ] killed " << what << " right after the close requests" << std::endl;

    for (size_t i = 0; i < channels_.size(); ++i) {
      const std::string& ch = channels_[i];
      ASSERT_TRUE(RunUntil(
          client->io(),
          [&] {
            auto oc = Onchain(*client, ch);
            return oc && oc->phase == ledger::ChannelPhase::kSettled;
          },
          180s))
          << "channel " << i << " never settled";
      auto oc = Onchain(*client, ch);
      // Party A is the opener.
      const std::string pa = opener_[i], pb = pa == "a" ? "b" : "a";
      const uint64_t t_ab = Transferred(ch, pa), t_ba = Transferred(ch, pb);
      EXPECT_EQ(oc->deposit_a, kDeposit);
      EXPECT_EQ(oc->deposit_b, kDeposit);
      EXPECT_EQ(oc->payout_a, kDeposit - t_ab + t_ba - oc->fee_debt_a) << "channel " << i;
      EXPECT_EQ(oc->payout_b, kDeposit + t_ab - t_ba - oc->fee_debt_b) << "channel " << i;
      if (i > 0) {
        // Unilateral: the ledger settled on each direction's latest proof,
        // the very one its signer sent last.
        for (const auto& [held, signer] :
             {std::pair{oc->proof_a_to_b, pa}, std::pair{oc->proof_b_to_a, pb}}) {
          const ProofLog log = ReadProofLog(ProofLogPath(signer));
          EXPECT_EQ(held.nonce, log.MaxNonce(ch)) << "channel " << i << " " << signer;
          if (held.nonce == 0) continue;
          const LoggedProof* p = log.Find(ch, held.nonce);
          ASSERT_NE(p, nullptr);
          EXPECT_EQ(p->transferred, held.transferred);
          EXPECT_EQ(p->tips_root, HexEncode(held.tips_root));
        }
      }
      std::cout << "[ close " << i << " ] " << (i == 0 ? "cooperative" : "unilateral")
                << ": T(A->B) " << t_ab << ", T(B->A) " << t_ba << "; payout A " << oc->payout_a
                << ", B " << oc->payout_b << std::endl;
      EXPECT_TRUE(WaitState(a_, ch, "closed", 60s)) << i;
      EXPECT_TRUE(WaitState(b_, ch, "closed", 60s)) << i;
    }
    EXPECT_TRUE(client->chain().state().CheckSupply().ok());
    // Both stores against both logs, after a clean stop.
    for (Node* n : {&a_, &b_}) ASSERT_NO_FATAL_FAILURE(Kill(*n, SIGTERM));
    ASSERT_NO_FATAL_FAILURE(CheckStore("a", /*quiescent=*/true));
    ASSERT_NO_FATAL_FAILURE(CheckStore("b", /*quiescent=*/true));
    ASSERT_NO_FATAL_FAILURE(CheckProofLogs());
  }

  void Run(uint64_t seed, int kills);

  Node a_, b_;
  std::string close_victim_;  // forced victim right after the closes; empty: random
  std::vector<std::string> channels_, opener_;
  std::map<std::string, TipRecord> records_;           // by key
  std::map<std::string, std::set<std::string>> seen_;  // node+channel+s|r -> keys
  std::map<std::string, uint64_t> read_up_to_;
  std::map<std::string, ProofLog> logs_;
  std::map<std::string, int> answers_;  // status -> count, every attempt
  std::map<std::string, int> kills_by_;
  int kills_ = 0;
  int retries_ = 0;
  int replayed_ = 0;
  int store_checks_ = 0;
};

// The campaign: `kills` kills in rounds, then the closes. Figures on stdout.
void CrashCampaign::Run(uint64_t seed, int kills) {
  SCOPED_TRACE("replay with TIPD_TEST_SEED=" + std::to_string(seed) +
               " TIPD_CRASH_KILLS=" + std::to_string(kills) +
               (close_victim_.empty() ? "" : " TIPD_CRASH_CLOSE_VICTIM=" + close_victim_));
  std::cout << "[ seed ] TIPD_TEST_SEED=" << seed << " TIPD_CRASH_KILLS=" << kills << std::endl;
  std::mt19937_64 rng(seed);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(StartAll());
  int round = 0;
  while (kills_ < kills) {
    ASSERT_NO_FATAL_FAILURE(Round(round++, rng));
  }
  ASSERT_NO_FATAL_FAILURE(CloseEverythingAndCheckPayouts(rng));
  const auto secs =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start);
  size_t proofs = 0, resent = 0, resigned = 0;
  for (const auto& [name, log] : logs_) {
    for (const auto& [ch, by_nonce] : log.proofs) proofs += by_nonce.size();
    resent += log.resent;
    resigned += log.resigned;
  }
  std::cout << "[ figures ] seed " << seed << ": " << kills_ << " kills (a " << kills_by_["a"]
            << ", b " << kills_by_["b"] << ", ledger " << kills_by_["ledger"] << ") in " << round
            << " rounds, " << records_.size() << " tips answered 200, " << retries_ << " retries ("
            << replayed_ << " replayed), " << proofs << " proofs signed (" << resent << " resent, "
            << resigned << " re-signed), " << store_checks_ << " store checks, " << secs.count()
            << " s" << std::endl;
  // How often a node had to submit a close again (the sequencer lost it).
  size_t resubmitted = 0;
  for (const char* name : {"a.log", "b.log"}) {
    std::ifstream in(dir_.path() / name);
    for (std::string line; std::getline(in, line);) resubmitted += Contains(line, "close again");
  }
  std::cout << "[ figures ] closes submitted again (the ledger did not show them a block later, or "
               "after a restart): "
            << resubmitted << std::endl;
  std::cout << "[ figures ] answers by status:";
  for (const auto& [status, n] : answers_) std::cout << " " << status << "=" << n;
  std::cout << std::endl;
}

TEST_F(CrashCampaign, KillsAtRandomMomentsLoseNothingAndNeverSignANonceTwice) {
  // TIPD_CRASH_CLOSE_VICTIM=a|b|ledger picks who dies right after the closes.
  close_victim_ = TestEnv("TIPD_CRASH_CLOSE_VICTIM");
  Run(TestSeed(), EnvInt("TIPD_CRASH_KILLS", 20));
}

// Regression (the seed and victim that found it): the sequencer SIGKILLed
// right after it accepted the unilateral closes, before it sealed them. The
// nodes stayed `closing`, the ledger showed the channels open, nothing was
// ever submitted again, and the test timed out waiting for the settle.
TEST_F(CrashCampaign, RegressionSequencerKilledRightAfterItAcceptedTheCloses) {
  close_victim_ = "ledger";
  Run(13263946107012396326u, 1);
}

}  // namespace
}  // namespace tipd::testing
