// Refunds and metered streams in one process (channel_harness.h): the real
// channel managers over the in-memory transport, time moved by hand.
#include <gtest/gtest.h>

#include <optional>

#include "node/refunds.h"
#include "node/streams.h"
#include "tests/unit/node/channel_harness.h"
#include "tipd/storage.pb.h"
#include "util/bytes.h"

namespace tipd::testing {
namespace {

using namespace std::chrono_literals;

std::vector<v1::TipApi> History(TestNode& n, const std::string& direction, const std::string& id) {
  auto page = n.manager->ListTips(direction, id, 500, "");
  EXPECT_TRUE(page.ok()) << page.status().ToString();
  return page.ok() ? std::vector<v1::TipApi>(page->tips().begin(), page->tips().end())
                   : std::vector<v1::TipApi>{};
}

int CountEvents(const TestNode& n, const std::string& type) {
  int count = 0;
  for (const auto& e : n.events.published) count += e.type() == type;
  return count;
}

std::string MetadataOf(const v1::Tip& tip, const std::string& key) {
  for (const auto& m : tip.metadata()) {
    if (m.key() == key) return m.value();
  }
  return "";
}

class RefundTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = &net_.AddNode("a", 1'000'000);
    b_ = &net_.AddNode("b", 1'000);
    a_->StartManager();
    b_->StartManager();
    net_.Connect(*a_, *b_);
    id_ = net_.OpenChannel(*a_, *b_, 10'000);
    ASSERT_FALSE(id_.empty());
  }

  // `n` refunds its received tip `index`; runs until answered.
  TipAnswer Refund(TestNode& n, uint64_t index, uint64_t amount, const std::string& key = "",
                   const std::string& channel = "") {
    auto slot = RefundAsync(n, index, amount, key, channel);
    EXPECT_TRUE(net_.RunUntil([&] { return slot->answered; }));
    return *slot;
  }
  std::shared_ptr<TipAnswer> RefundAsync(TestNode& n, uint64_t index, uint64_t amount,
                                         const std::string& key = "",
                                         const std::string& channel = "") {
    auto slot = std::make_shared<TipAnswer>();
    node::TipRequestIn req;
    req.channel_id = channel.empty() ? id_ : channel;
    req.draft.amount = amount;
    req.draft.message = "sorry";
    req.idempotency_key = key;
    req.key_owner = "refund/owner";
    n.manager->Refund(std::move(req), index, [slot](node::TipOutcome r) {
      slot->answered = true;
      slot->outcome = std::move(r);
    });
    return slot;
  }
  // A tip from `from` whose metadata says what its sender wants (no checks
  // of the refund path): how a dishonest peer forges a link.
  TipAnswer TipWithLink(TestNode& from, uint64_t amount, const std::string& refund_of) {
    auto slot = std::make_shared<TipAnswer>();
    node::TipRequestIn req;
    req.channel_id = id_;
    req.draft.amount = amount;
    req.draft.metadata[node::kRefundOfKey] = refund_of;
    req.key_owner = "forger";
    from.manager->SendTip(std::move(req), [slot](node::TipOutcome r) {
      slot->answered = true;
      slot->outcome = std::move(r);
    });
    EXPECT_TRUE(net_.RunUntil([&] { return slot->answered; }));
    return *slot;
  }
  std::string Link(uint64_t index) const {
    return HexEncode(AsSpan(id_)) + ":" + std::to_string(index);
  }

  ChannelNet net_;
  TestNode* a_ = nullptr;
  TestNode* b_ = nullptr;
  std::string id_;
};

TEST_F(RefundTest, PartialRefundsAddUpToTheOriginalThenAreRefused) {
  ASSERT_TRUE(net_.Tip(*a_, id_, 100, "oops, too much").ok());
  TipAnswer first = Refund(*b_, 1, 30);
  ASSERT_TRUE(first.ok()) << (first.outcome.refusal ? first.outcome.refusal->message : "pending");
  EXPECT_EQ(first.outcome.response.tip().refund_of(), Link(1));
  EXPECT_EQ(first.outcome.response.tip().tip().amount(), 30u);
  // The link is in the signed tip's metadata.
  EXPECT_EQ(MetadataOf(first.outcome.response.tip().tip(), "refund_of"), Link(1));

  TipAnswer rest = Refund(*b_, 1, 0);  // 0: what is left
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest.outcome.response.tip().tip().amount(), 70u);

  TipAnswer more = Refund(*b_, 1, 1);
  ASSERT_TRUE(more.outcome.refusal);
  EXPECT_EQ(more.outcome.refusal->code(), "REFUND_EXCEEDS_ORIGINAL");
  TipAnswer none_left = Refund(*b_, 1, 0);
  ASSERT_TRUE(none_left.outcome.refusal);
  EXPECT_EQ(none_left.outcome.refusal->code(), "REFUND_EXCEEDS_ORIGINAL");

  // Both histories show the link and the total.
  auto b_received = History(*b_, "received", id_);
  ASSERT_EQ(b_received.size(), 1u);
  EXPECT_EQ(b_received[0].refunded_total(), 100u);
  auto b_sent = History(*b_, "sent", id_);
  ASSERT_EQ(b_sent.size(), 2u);
  EXPECT_EQ(b_sent[0].refund_of(), Link(1));
  EXPECT_EQ(b_sent[1].refund_of(), Link(1));
  auto a_sent = History(*a_, "sent", id_);
  ASSERT_EQ(a_sent.size(), 1u);
  EXPECT_EQ(a_sent[0].refunded_total(), 100u);
  auto a_received = History(*a_, "received", id_);
  ASSERT_EQ(a_received.size(), 2u);
  EXPECT_EQ(a_received[0].refund_of(), Link(1));
  EXPECT_TRUE(a_received[1].refund_link_error().empty());
  EXPECT_EQ(CountEvents(*a_, "tip_refunded"), 2);
  EXPECT_EQ(CountEvents(*b_, "tip_refunded"), 2);
  for (const auto& e : a_->events.published) {
    if (e.type() == "tip_refunded" && e.refund().refund_index() == 2) {
      EXPECT_EQ(e.refund().refunded_total(), 100u);
      EXPECT_EQ(e.refund().original_index(), 1u);
    }
  }
  // The money went back.
  EXPECT_EQ(net_.Channel(*b_, id_).balance_local(), 0u);
  EXPECT_EQ(net_.Channel(*a_, id_).balance_local(), 10'000u);
}

TEST_F(RefundTest, ConcurrentRefundsNeverPassTheOriginal) {
  ASSERT_TRUE(net_.Tip(*a_, id_, 100, "tip").ok());
  auto r1 = RefundAsync(*b_, 1, 60);
  auto r2 = RefundAsync(*b_, 1, 60);  // queued while the first is in flight
  ASSERT_TRUE(net_.RunUntil([&] { return r1->answered && r2->answered; }));
  EXPECT_TRUE(r1->ok());
  ASSERT_TRUE(r2->outcome.refusal);
  EXPECT_EQ(r2->outcome.refusal->code(), "REFUND_EXCEEDS_ORIGINAL");
  // The refused one gave its reservation back: 40 is still refundable.
  EXPECT_TRUE(Refund(*b_, 1, 40).ok());
  EXPECT_EQ(History(*b_, "received", id_)[0].refunded_total(), 100u);
}

TEST_F(RefundTest, AKeyReplaysTheFirstAnswerAndAnotherKeyIsAFurtherRefund) {
  ASSERT_TRUE(net_.Tip(*a_, id_, 100, "tip").ok());
  TipAnswer first = Refund(*b_, 1, 0, "key-1");
  ASSERT_TRUE(first.ok());
  TipAnswer again = Refund(*b_, 1, 0, "key-1");
  ASSERT_TRUE(again.ok()) << (again.outcome.refusal ? again.outcome.refusal->message : "");
  EXPECT_TRUE(again.outcome.response.replayed());
  EXPECT_EQ(again.outcome.response.tip().tip().index(), first.outcome.response.tip().tip().index());
  TipAnswer other = Refund(*b_, 1, 0, "key-2");
  ASSERT_TRUE(other.outcome.refusal);
  EXPECT_EQ(other.outcome.refusal->code(), "REFUND_EXCEEDS_ORIGINAL");
  EXPECT_EQ(History(*b_, "sent", id_).size(), 1u);  // paid once
}

TEST_F(RefundTest, RefusesRefundsOfRefundsOfSentTipsAndOfUnknownTips) {
  ASSERT_TRUE(net_.Tip(*a_, id_, 100, "tip").ok());
  ASSERT_TRUE(Refund(*b_, 1, 10).ok());
  // a received b's refund as its tip 1: a refund cannot be refunded.
  TipAnswer r = Refund(*a_, 1, 5);
  ASSERT_TRUE(r.outcome.refusal);
  EXPECT_EQ(r.outcome.refusal->code(), "REFUND_OF_REFUND");
  // b sent no... b received only tip 1; tip 2 does not exist.
  TipAnswer unknown = Refund(*b_, 2, 5);
  ASSERT_TRUE(unknown.outcome.refusal);
  EXPECT_EQ(unknown.outcome.refusal->code(), "TIP_NOT_FOUND");
  // a SENT tip 1; as a refunder it only has received tips (b's refund).
  ASSERT_TRUE(net_.Tip(*a_, id_, 7, "second").ok());  // a's sent tip 2
  TipAnswer own = Refund(*a_, 2, 1);
  ASSERT_TRUE(own.outcome.refusal);
  EXPECT_EQ(own.outcome.refusal->code(), "TIP_NOT_FOUND");
  EXPECT_EQ(History(*a_, "sent", id_).size(), 2u);
}

TEST_F(RefundTest, TotalsSurviveARestart) {
  ASSERT_TRUE(net_.Tip(*a_, id_, 100, "tip").ok());
  ASSERT_TRUE(Refund(*b_, 1, 40).ok());
  net_.Restart(*b_, *a_);
  TipAnswer over = Refund(*b_, 1, 61);
  ASSERT_TRUE(over.outcome.refusal);
  EXPECT_EQ(over.outcome.refusal->code(), "REFUND_EXCEEDS_ORIGINAL");
  EXPECT_TRUE(Refund(*b_, 1, 60).ok());
  net_.Restart(*a_, *b_);
  EXPECT_EQ(History(*a_, "sent", id_)[0].refunded_total(), 100u);
}

TEST_F(RefundTest, RefusedOnAClosedChannel) {
  ASSERT_TRUE(net_.Tip(*a_, id_, 100, "tip").ok());
  std::optional<Result<v1::ChannelApi>> closed;
  a_->manager->Close(id_, false, 60'000ms,
                     [&](Result<v1::ChannelApi> r, std::string) { closed = std::move(r); });
  net_.Settle();
  net_.Seal();
  ASSERT_TRUE(net_.RunUntil([&] { return closed.has_value(); }));
  ASSERT_TRUE(closed->ok()) << closed->status().ToString();
  TipAnswer r = Refund(*b_, 1, 10);
  ASSERT_TRUE(r.outcome.refusal);
  EXPECT_EQ(r.outcome.refusal->code(), "CHANNEL_NOT_OPEN");
}

// Adversary: b's node signs tips whose refund_of names what it likes. a keeps
// the money (it was paid) but accepts no link that is not a valid refund.
TEST_F(RefundTest, AForgedRefundLinkIsPaidButNotLinked) {
  ASSERT_TRUE(net_.Tip(*a_, id_, 100, "tip").ok());
  ASSERT_TRUE(net_.Tip(*a_, id_, 400, "another").ok());
  ASSERT_TRUE(TipWithLink(*b_, 150, Link(1)).ok());                    // more than the original
  ASSERT_TRUE(TipWithLink(*b_, 5, Link(9)).ok());                      // no such tip
  ASSERT_TRUE(TipWithLink(*b_, 5, "garbage").ok());                    // malformed
  ASSERT_TRUE(TipWithLink(*b_, 5, std::string(64, 'a') + ":1").ok());  // another channel
  ASSERT_TRUE(TipWithLink(*b_, 60, Link(1)).ok());                     // valid
  ASSERT_TRUE(TipWithLink(*b_, 41, Link(1)).ok());                     // 60 + 41 > 100
  auto got = History(*a_, "received", id_);
  ASSERT_EQ(got.size(), 6u);
  for (size_t i : {0u, 1u, 2u, 3u, 5u}) {
    EXPECT_TRUE(got[i].refund_of().empty()) << i;
    EXPECT_FALSE(got[i].refund_link_error().empty()) << i;
  }
  EXPECT_EQ(got[4].refund_of(), Link(1));
  EXPECT_EQ(History(*a_, "sent", id_)[0].refunded_total(), 60u);
  EXPECT_EQ(CountEvents(*a_, "tip_refunded"), 1);
  // Every tip's money was received all the same.
  EXPECT_EQ(net_.Channel(*a_, id_).balance_local(), 10'000u - 500 + 150 + 5 + 5 + 5 + 60 + 41);
  // A refund of a refund is not a link either: a refunds a plain tip of b
  // (a's sent tip 3 is then a refund), and b names that refund as original.
  ASSERT_TRUE(net_.Tip(*b_, id_, 2, "plain").ok());  // a's received tip 7
  TipAnswer a_refund = Refund(*a_, 7, 2);
  ASSERT_TRUE(a_refund.ok());
  ASSERT_EQ(a_refund.outcome.response.tip().tip().index(), 3u);
  ASSERT_TRUE(TipWithLink(*b_, 1, Link(3)).ok());
  got = History(*a_, "received", id_);
  ASSERT_EQ(got.size(), 8u);
  EXPECT_EQ(got.back().refund_of(), "");
  EXPECT_FALSE(got.back().refund_link_error().empty());
  EXPECT_EQ(History(*a_, "sent", id_)[2].refunded_total(), 0u);
  // b's node counts a's refund of its tip 7 (a valid link, seen from b).
  auto b_sent = History(*b_, "sent", id_);
  EXPECT_EQ(b_sent[6].refunded_total(), 2u);
}

// ---------------------------------------------------------------------------
// Streams

class StreamTest : public RefundTest {
 protected:
  void SetUp() override {
    RefundTest::SetUp();
    StartStreams();
  }
  void TearDown() override { streams_.reset(); }
  void StartStreams() {
    streams_ =
        std::make_unique<node::StreamScheduler>(net_.io(), *a_->db, *a_->committer, net_.clock(),
                                                net_.timers(), *a_->manager, net_.rng(), options_);
    streams_->SetEventSink(&a_->events);
    if (charge_for_) streams_->SetChargeFor(charge_for_);
    ASSERT_TRUE(streams_->Start().ok());
  }
  // The payer's process stops and starts again (its sessions end).
  void RestartPayer(int64_t down_ms) {
    streams_.reset();
    a_->StopManager();
    net_.AdvanceMs(down_ms);
    a_->StartManager();
    StartStreams();  // its first tick finds the peer not yet connected
    net_.Connect(*a_, *b_);
    net_.AdvanceMs(static_cast<int64_t>(options_.retry_ms));  // the retry
  }
  struct Answer {
    std::optional<v1::Stream> stream;
    std::optional<node::StreamError> error;
  };
  Answer Create(const v1::CreateStreamRequest& in) {
    Answer out;
    bool done = false;
    streams_->Create(in, owner_, [&](const v1::Stream* s, const node::StreamError* e) {
      done = true;
      if (s) out.stream = *s;
      if (e) out.error = *e;
    });
    EXPECT_TRUE(net_.RunUntil([&] { return done; }));
    net_.Settle();
    return out;
  }
  Answer Control(const std::string& id, const std::string& action) {
    Answer out;
    bool done = false;
    streams_->Control(id, action, owner_, [&](const v1::Stream* s, const node::StreamError* e) {
      done = true;
      if (s) out.stream = *s;
      if (e) out.error = *e;
    });
    EXPECT_TRUE(net_.RunUntil([&] { return done; }));
    net_.Settle();
    return out;
  }
  v1::CreateStreamRequest Request(uint64_t amount, uint64_t interval_ms) {
    v1::CreateStreamRequest in;
    in.set_channel_id(HexEncode(AsSpan(id_)));
    in.set_amount(amount);
    in.set_interval_ms(interval_ms);
    in.set_message("per minute");
    (*in.mutable_metadata())["app_name"] = "podcaster";
    return in;
  }
  v1::Stream Current(const std::string& id) { return streams_->Find(id)->stream(); }
  // Stream tips b received, and their sum.
  std::pair<size_t, uint64_t> Received(const std::string& stream_id) {
    size_t n = 0;
    uint64_t sum = 0;
    for (const auto& t : History(*b_, "received", id_)) {
      if (MetadataOf(t.tip(), "stream_id") != stream_id) continue;
      EXPECT_EQ(MetadataOf(t.tip(), "action"), "stream");
      ++n;
      sum += t.tip().amount();
    }
    return {n, sum};
  }
  // Advances time one interval at a time (each tick runs to its ack).
  void Intervals(int n, int64_t interval_ms) {
    for (int i = 0; i < n; ++i) net_.AdvanceMs(interval_ms);
  }

  node::StreamOptions options_;
  node::StreamScheduler::ChargeFor charge_for_;
  node::StreamOwner owner_{std::string(16, '\x01'), 0, 0, 0, false};
  std::unique_ptr<node::StreamScheduler> streams_;
};

TEST_F(StreamTest, PaysOneTipPerIntervalOnSchedule) {
  Answer c = Create(Request(10, 60'000));
  ASSERT_TRUE(c.stream) << c.error->message;
  const std::string sid = c.stream->id();
  EXPECT_EQ(Received(sid).first, 1u);  // interval 0 at the start
  Intervals(3, 60'000);
  EXPECT_EQ(Received(sid), std::make_pair(size_t{4}, uint64_t{40}));
  const v1::Stream s = Current(sid);
  EXPECT_EQ(s.tips_paid(), 4u);
  EXPECT_EQ(s.paid_total(), 40u);
  EXPECT_EQ(s.intervals_skipped(), 0u);
  EXPECT_EQ(s.state(), "active");
  EXPECT_EQ(CountEvents(*a_, "stream_started"), 1);
  EXPECT_EQ(CountEvents(*a_, "stream_tip"), 4);
  // Half an interval later nothing more is due.
  net_.AdvanceMs(30'000);
  EXPECT_EQ(Received(sid).first, 4u);
  // The user's metadata travels with the stream's.
  auto got = History(*b_, "received", id_);
  EXPECT_EQ(MetadataOf(got[0].tip(), "app_name"), "podcaster");
}

TEST_F(StreamTest, MaxTotalAndEndTimeFinishTheStream) {
  v1::CreateStreamRequest in = Request(10, 1'000);
  in.set_max_total(25);
  Answer c = Create(in);
  ASSERT_TRUE(c.stream);
  Intervals(5, 1'000);
  EXPECT_EQ(Received(c.stream->id()), std::make_pair(size_t{3}, uint64_t{25}));  // 10+10+5
  EXPECT_EQ(Current(c.stream->id()).state(), "finished");
  EXPECT_EQ(CountEvents(*a_, "stream_stopped"), 1);

  v1::CreateStreamRequest timed = Request(1, 1'000);
  timed.set_end_at_ms(static_cast<uint64_t>(net_.clock().NowMs()) + 3'500);
  Answer t = Create(timed);
  ASSERT_TRUE(t.stream);
  Intervals(6, 1'000);
  // Intervals due at +0, +1 s, +2 s, +3 s; +4 s is past the end.
  EXPECT_EQ(Received(t.stream->id()).first, 4u);
  EXPECT_EQ(Current(t.stream->id()).state(), "finished");
}

TEST_F(StreamTest, ZeroAndAbsurdRatesAreRefused) {
  auto code = [&](v1::CreateStreamRequest in) {
    Answer a = Create(in);
    return a.error ? a.error->code : std::string("created");
  };
  EXPECT_EQ(code(Request(0, 60'000)), "BAD_STREAM_RATE");
  EXPECT_EQ(code(Request(10, 999)), "BAD_STREAM_RATE");
  EXPECT_EQ(code(Request(10, 31ull * 86'400'000)), "BAD_STREAM_RATE");
  EXPECT_EQ(code(Request(UINT64_MAX, 1'000)), "BAD_STREAM_RATE");
  EXPECT_EQ(code(Request(100'001, 1'000)), "BAD_STREAM_RATE");  // above max_per_second
  v1::CreateStreamRequest half = Request(60'000, 1'000);
  EXPECT_EQ(code(half), "created");
  EXPECT_EQ(code(half), "BAD_STREAM_RATE");  // both together are above it
  v1::CreateStreamRequest bad_missed = Request(1, 1'000);
  bad_missed.set_missed("sometimes");
  EXPECT_EQ(code(bad_missed), "INVALID_ARGUMENT");
  v1::CreateStreamRequest reserved = Request(1, 1'000);
  (*reserved.mutable_metadata())["stream_id"] = "mine";
  EXPECT_EQ(code(reserved), "INVALID_ARGUMENT");
  v1::CreateStreamRequest past = Request(1, 1'000);
  past.set_end_at_ms(1);
  EXPECT_EQ(code(past), "INVALID_ARGUMENT");
  EXPECT_EQ(streams_->active(), 1u);
}

TEST_F(StreamTest, PauseResumeAndStop) {
  Answer c = Create(Request(10, 1'000));
  ASSERT_TRUE(c.stream);
  const std::string sid = c.stream->id();
  Answer p = Control(sid, "pause");
  ASSERT_TRUE(p.stream);
  EXPECT_EQ(p.stream->state(), "paused");
  Intervals(5, 1'000);
  EXPECT_EQ(Received(sid).first, 1u);  // nothing while paused
  Answer r = Control(sid, "resume");
  ASSERT_TRUE(r.stream);
  EXPECT_EQ(Received(sid).first, 2u);               // a new schedule starts now
  EXPECT_EQ(Current(sid).intervals_skipped(), 0u);  // paused time is not missed
  Intervals(1, 1'000);
  EXPECT_EQ(Received(sid).first, 3u);
  Answer s = Control(sid, "stop");
  ASSERT_TRUE(s.stream);
  EXPECT_EQ(s.stream->state(), "stopped");
  Intervals(3, 1'000);
  EXPECT_EQ(Received(sid).first, 3u);
  Answer again = Control(sid, "resume");
  ASSERT_TRUE(again.error);
  EXPECT_EQ(again.error->code, "STREAM_STOPPED");
  EXPECT_EQ(again.error->http, 409);
  Answer unknown = Control(std::string(32, 'f'), "pause");
  ASSERT_TRUE(unknown.error);
  EXPECT_EQ(unknown.error->code, "STREAM_NOT_FOUND");
  // Another token neither sees nor controls it.
  node::StreamOwner other{std::string(16, '\x02'), 0, 0, 0, false};
  EXPECT_TRUE(streams_->List(other).empty());
  EXPECT_EQ(streams_->List(owner_).size(), 1u);
}

// The interval's mark is on disk before its tip leaves the node: it is
// written in the batch of the update that pays it (the update is sent only
// once that batch is durable).
TEST_F(StreamTest, AnIntervalIsMarkedPaidInTheBatchOfItsTip) {
  std::vector<uint64_t> paid_on_disk_when_sent;
  std::string sid;
  net_.tamper = [&](const TestNode& from, v1::Envelope* env) {
    if (&from != a_ || !env->has_tip_update() || sid.empty()) return;
    std::string key(1, node::kStreamKeyFamily);
    key += std::string(AsStringView(*HexDecode(sid)));
    auto rec = storage::RecordStore<v1::StoredStream>(a_->db.get()).Get(key);
    ASSERT_TRUE(rec.ok());
    ASSERT_TRUE(rec->has_value());
    paid_on_disk_when_sent.push_back((*rec)->stream().tips_paid());
  };
  v1::CreateStreamRequest in = Request(10, 1'000);
  // The id is known only once created: hold the first tip until then.
  net_.hold_messages = true;
  Answer c = Create(in);
  ASSERT_TRUE(c.stream);
  sid = c.stream->id();
  net_.FlushMessages();
  net_.Settle();
  Intervals(2, 1'000);
  EXPECT_EQ(paid_on_disk_when_sent.size(), 2u);  // the first update passed before sid was set
  for (size_t i = 0; i < paid_on_disk_when_sent.size(); ++i) {
    EXPECT_EQ(paid_on_disk_when_sent[i], i + 2);
  }
}

TEST_F(StreamTest, ARestartNeverPaysAnIntervalTwiceAndSkipsNoneSilently) {
  Answer c = Create(Request(10, 60'000));
  ASSERT_TRUE(c.stream);
  const std::string sid = c.stream->id();
  Intervals(1, 60'000);  // intervals 0 and 1 paid
  // Down for 5 minutes: intervals 2..6 fall due meanwhile.
  RestartPayer(300'000);
  EXPECT_EQ(Received(sid).first, 3u);  // "skip": the newest one paid
  v1::Stream s = Current(sid);
  EXPECT_EQ(s.tips_paid(), 3u);
  EXPECT_EQ(s.intervals_skipped(), 4u);
  EXPECT_EQ(s.intervals_paid() + s.intervals_skipped(), 7u);  // intervals 0..6
  // An immediate second restart pays nothing again.
  RestartPayer(0);
  EXPECT_EQ(Received(sid).first, 3u);
  Intervals(1, 60'000);
  EXPECT_EQ(Received(sid).first, 4u);
  EXPECT_EQ(Current(sid).intervals_paid() + Current(sid).intervals_skipped(), 8u);
}

TEST_F(StreamTest, MissedPayCatchesUpInOneTipUpToTheBound) {
  options_.max_catch_up = 3;
  streams_.reset();
  StartStreams();
  v1::CreateStreamRequest in = Request(10, 60'000);
  in.set_missed("pay");
  Answer c = Create(in);
  ASSERT_TRUE(c.stream);
  const std::string sid = c.stream->id();
  RestartPayer(120'000);  // intervals 1 and 2 due
  EXPECT_EQ(Received(sid), std::make_pair(size_t{2}, uint64_t{30}));
  RestartPayer(300'000);  // intervals 3..7 due: 3 paid, 2 skipped
  EXPECT_EQ(Received(sid), std::make_pair(size_t{3}, uint64_t{60}));
  v1::Stream s = Current(sid);
  EXPECT_EQ(s.intervals_paid(), 6u);
  EXPECT_EQ(s.intervals_skipped(), 2u);
  auto got = History(*b_, "received", id_);
  EXPECT_EQ(MetadataOf(got.back().tip(), "intervals"), "3");
}

// A budget that refuses after `allowed` is spent, as a token's cap does.
class CappedCharge final : public node::TipCharge {
 public:
  CappedCharge(uint64_t* spent, uint64_t cap) : spent_(spent), cap_(cap) {}
  Status Reserve(uint64_t amount) override {
    if (*spent_ + amount > cap_) return Status::ResourceExhausted("daily spending cap exceeded");
    *spent_ += amount;
    return Status::Ok();
  }
  void CommitToBatch(storage::WriteBatch*) override {}

 private:
  uint64_t* spent_;
  uint64_t cap_;
};

TEST_F(StreamTest, TheTokensCapPausesTheStreamWithTheReason) {
  uint64_t spent = 0;
  charge_for_ = [&spent](const v1::StoredStream&) {
    return std::make_shared<CappedCharge>(&spent, 25);
  };
  streams_.reset();
  StartStreams();
  Answer c = Create(Request(10, 1'000));
  ASSERT_TRUE(c.stream);
  Intervals(4, 1'000);
  EXPECT_EQ(Received(c.stream->id()).first, 2u);
  const v1::Stream s = Current(c.stream->id());
  EXPECT_EQ(s.state(), "paused");
  EXPECT_NE(s.stopped_reason().find("cap"), std::string::npos) << s.stopped_reason();
  EXPECT_EQ(CountEvents(*a_, "stream_stopped"), 1);
}

TEST_F(StreamTest, AClosedChannelFailsTheStream) {
  Answer c = Create(Request(10, 60'000));
  ASSERT_TRUE(c.stream);
  std::optional<Result<v1::ChannelApi>> closed;
  a_->manager->Close(id_, false, 60'000ms,
                     [&](Result<v1::ChannelApi> r, std::string) { closed = std::move(r); });
  net_.Settle();
  net_.Seal();
  ASSERT_TRUE(net_.RunUntil([&] { return closed.has_value(); }));
  Intervals(1, 60'000);
  EXPECT_EQ(Current(c.stream->id()).state(), "failed");
  EXPECT_NE(Current(c.stream->id()).stopped_reason().find("CHANNEL_NOT_OPEN"), std::string::npos);
}

}  // namespace
}  // namespace tipd::testing
