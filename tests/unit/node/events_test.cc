#include "api/events.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <future>
#include <optional>
#include <set>
#include <thread>

#include "api/rpc_server.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "tipd/storage.pb.h"

namespace tipd::api {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using tipd::v1::Event;

constexpr int64_t kNow = 1'700'000'000'000;

Event MakeEvent(std::string_view type, const std::string& note = "") {
  Event e;
  e.set_type(std::string(type));
  if (type == kEventTipReceived || type == kEventTipSent) {
    e.mutable_tip()->set_channel_id("ab01");
    e.mutable_tip()->set_direction(type == kEventTipSent ? "sent" : "received");
    e.mutable_tip()->set_nonce(7);
    e.mutable_tip()->set_idempotency_key(note);
  } else if (type == kEventAck) {
    e.mutable_ack()->set_channel_id("ab01");
    e.mutable_ack()->set_nonce(7);
  } else if (type == kEventChannel) {
    e.mutable_channel()->mutable_channel()->set_state("open");
    e.mutable_channel()->set_previous_state(note);
  } else {
    e.mutable_peer()->mutable_peer()->set_node_id("02cd");
    e.mutable_peer()->set_connected(true);
  }
  return e;
}

std::vector<uint64_t> Ids(const std::vector<Event>& events) {
  std::vector<uint64_t> ids;
  for (const Event& e : events) ids.push_back(e.id());
  return ids;
}

std::vector<uint64_t> Range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> ids;
  for (uint64_t i = first; i <= last; ++i) ids.push_back(i);
  return ids;
}

// A database, committer and event log in a temp dir. The log is driven from
// the test thread (no io thread runs) unless a test starts one.
class EventLogTest : public ::testing::Test {
 protected:
  void SetUp() override { OpenAll(); }
  void TearDown() override { CloseAll(); }

  void OpenAll(EventLogOptions options = {}) {
    auto db = storage::Database::Open(dir_.path() / "db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(*db);
    committer_ = std::make_unique<storage::GroupCommitter>(db_.get());
    auto log = EventLog::Open(io_, db_.get(), committer_.get(), clock_, options);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    log_ = std::move(*log);
  }
  void CloseAll() {
    if (committer_) committer_->Stop();
    io_.restart();
    io_.poll();  // run completions the committer handed back
    log_.reset();
    committer_.reset();
    db_.reset();
  }
  void Reopen(EventLogOptions options = {}) {
    CloseAll();
    OpenAll(options);
  }

  // Stage + synced write + Publish: the channel manager's path.
  uint64_t Commit(Event e) {
    storage::WriteBatch batch;
    const uint64_t id = log_->Stage(&batch, &e);
    EXPECT_TRUE(db_->Write(batch).ok());
    log_->Publish(e);
    return id;
  }

  // `n` events staged into one batch, one synced write, then published.
  void CommitMany(int n, std::string_view type, const std::string& note = "") {
    storage::WriteBatch batch;
    std::vector<Event> events;
    for (int i = 0; i < n; ++i) {
      events.push_back(MakeEvent(type, note));
      log_->Stage(&batch, &events.back());
    }
    ASSERT_TRUE(db_->Write(batch).ok());
    for (const Event& e : events) log_->Publish(e);
  }

  // Runs the io_context on this thread until `pred` or 10 s.
  template <class Pred>
  bool RunUntil(Pred pred) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      io_.restart();
      io_.run_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  size_t StoredCount() {
    size_t n = 0;
    EXPECT_TRUE(db_->ScanPrefix("E", 1'000'000,
                                [&](std::string_view, std::string_view) {
                                  ++n;
                                  return Status::Ok();
                                })
                    .ok());
    return n;
  }

  tipd::testing::TempDir dir_{"tipd-events"};
  net::io_context io_;
  ManualClock clock_{kNow};
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<storage::GroupCommitter> committer_;
  std::unique_ptr<EventLog> log_;
};

TEST_F(EventLogTest, IdsIncreaseFromOneAndSurviveReopen) {
  EXPECT_EQ(log_->last_id(), 0u);
  EXPECT_EQ(log_->first_id(), 1u);
  EXPECT_EQ(Commit(MakeEvent(kEventTipReceived)), 1u);
  clock_.AdvanceMs(5);
  EXPECT_EQ(Commit(MakeEvent(kEventAck)), 2u);
  int done = 0;
  EXPECT_EQ(log_->Append(MakeEvent(kEventPeer),
                         [&](Status s) {
                           EXPECT_TRUE(s.ok()) << s.ToString();
                           ++done;
                         }),
            3u);
  ASSERT_TRUE(RunUntil([&] { return done == 1; }));
  EXPECT_EQ(log_->last_id(), 3u);
  EXPECT_EQ(log_->published_id(), 3u);

  Reopen();
  EXPECT_EQ(log_->first_id(), 1u);
  EXPECT_EQ(log_->last_id(), 3u);
  EXPECT_EQ(log_->published_id(), 3u);
  EXPECT_EQ(Commit(MakeEvent(kEventChannel)), 4u);
  auto all = log_->ReadAfter(0, 100);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(Ids(*all), Range(1, 4));
  EXPECT_EQ((*all)[0].type(), "tip_received");
  EXPECT_EQ((*all)[0].time_ms(), static_cast<uint64_t>(kNow));
  EXPECT_EQ((*all)[1].time_ms(), static_cast<uint64_t>(kNow + 5));
  EXPECT_EQ((*all)[1].ack().nonce(), 7u);
  EXPECT_EQ((*all)[2].type(), "peer");
  EXPECT_TRUE((*all)[2].peer().connected());
  // The stored record is a versioned StoredEvent.
  auto raw = db_->Get(EventKey(4));
  ASSERT_TRUE(raw.ok() && raw->has_value());
  tipd::v1::StoredEvent rec;
  ASSERT_TRUE(rec.ParseFromString(**raw));
  EXPECT_EQ(rec.version(), 1u);
  EXPECT_EQ(rec.event().type(), "channel");
}

TEST_F(EventLogTest, ReopenFindsNewestIdPastGapsAndLargeIds) {
  // Ids 1..3 staged; 2's batch never commits (abandoned).
  storage::WriteBatch b1, b2, b3;
  Event e1 = MakeEvent(kEventAck), e2 = MakeEvent(kEventAck), e3 = MakeEvent(kEventAck);
  log_->Stage(&b1, &e1);
  log_->Stage(&b2, &e2);
  log_->Stage(&b3, &e3);
  ASSERT_TRUE(db_->Write(b1).ok());
  ASSERT_TRUE(db_->Write(b3).ok());
  Reopen();
  EXPECT_EQ(log_->last_id(), 3u);
  // A newest id far from the oldest (the search must not walk id by id).
  tipd::v1::StoredEvent rec;
  rec.set_version(1);
  rec.mutable_event()->set_id(1'000'000'007);
  rec.mutable_event()->set_type("ack");
  storage::WriteBatch big;
  big.Put(EventKey(1'000'000'007), rec.SerializeAsString());
  ASSERT_TRUE(db_->Write(big).ok());
  Reopen();
  EXPECT_EQ(log_->first_id(), 1u);
  EXPECT_EQ(log_->last_id(), 1'000'000'007u);
  EXPECT_EQ(Commit(MakeEvent(kEventAck)), 1'000'000'008u);
}

TEST_F(EventLogTest, CorruptRecordIsAnErrorNamingTheKey) {
  Commit(MakeEvent(kEventAck));
  storage::WriteBatch bad;
  bad.Put(EventKey(2), "\xff\xff not a record");
  ASSERT_TRUE(db_->Write(bad).ok());
  auto read = log_->ReadAfter(0, 10);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), StatusCode::kCorruption);
  EXPECT_NE(read.status().message().find("E\\x00"), std::string::npos) << read.status().ToString();
}

TEST_F(EventLogTest, PublicationIsInIdOrderAndAbandonedIdsDoNotBlock) {
  std::vector<uint64_t> seen;
  log_->Subscribe({}, [&](const Event& e) { seen.push_back(e.id()); });

  storage::WriteBatch b1, b2, b3;
  Event e1 = MakeEvent(kEventTipSent), e2 = MakeEvent(kEventTipSent), e3 = MakeEvent(kEventTipSent);
  ASSERT_EQ(log_->Stage(&b1, &e1), 1u);
  ASSERT_EQ(log_->Stage(&b2, &e2), 2u);
  ASSERT_EQ(log_->Stage(&b3, &e3), 3u);
  ASSERT_TRUE(db_->Write(b3).ok());
  log_->Publish(e3);  // held: 1 and 2 are unsettled
  EXPECT_TRUE(seen.empty());
  EXPECT_EQ(log_->published_id(), 0u);
  ASSERT_TRUE(db_->Write(b1).ok());
  log_->Publish(e1);
  EXPECT_EQ(seen, std::vector<uint64_t>({1}));
  log_->Abandon(2);  // its batch failed: 3 goes out
  EXPECT_EQ(seen, std::vector<uint64_t>({1, 3}));
  EXPECT_EQ(log_->published_id(), 3u);
  // Settled or unknown ids are ignored.
  log_->Publish(e3);
  log_->Publish(e2);
  log_->Abandon(3);
  log_->Abandon(99);
  EXPECT_EQ(seen, std::vector<uint64_t>({1, 3}));

  // Stage'd and Append'ed interleave: Append's 5 waits for the staged 4.
  storage::WriteBatch b4;
  Event e4 = MakeEvent(kEventTipReceived);
  ASSERT_EQ(log_->Stage(&b4, &e4), 4u);
  bool appended = false;
  ASSERT_EQ(log_->Append(MakeEvent(kEventPeer), [&](Status s) { appended = s.ok(); }), 5u);
  ASSERT_TRUE(RunUntil([&] { return appended; }));
  EXPECT_EQ(seen, std::vector<uint64_t>({1, 3}));  // 5 is durable but held
  ASSERT_TRUE(committer_->SubmitAndWait(std::move(b4)).ok());
  log_->Publish(e4);
  EXPECT_EQ(seen, std::vector<uint64_t>({1, 3, 4, 5}));
  // The abandoned id is not stored; the rest are.
  auto all = log_->ReadAfter(0, 10);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(Ids(*all), std::vector<uint64_t>({1, 3, 4, 5}));
}

TEST_F(EventLogTest, AppendWhoseCommitFailsIsAbandoned) {
  std::vector<uint64_t> seen;
  log_->Subscribe({}, [&](const Event& e) { seen.push_back(e.id()); });
  committer_->Stop();  // later submissions fail
  std::optional<Status> outcome;
  ASSERT_EQ(log_->Append(MakeEvent(kEventPeer), [&](Status s) { outcome = s; }), 1u);
  ASSERT_TRUE(RunUntil([&] { return outcome.has_value(); }));
  EXPECT_FALSE(outcome->ok());
  EXPECT_EQ(log_->published_id(), 1u);  // settled, not blocking
  EXPECT_EQ(Commit(MakeEvent(kEventAck)), 2u);
  EXPECT_EQ(seen, std::vector<uint64_t>({2}));
}

TEST_F(EventLogTest, SubscribersFilterByTypeAndMayUnsubscribeWhileCalled) {
  std::vector<std::string> acks, all;
  log_->Subscribe({"ack", "peer"}, [&](const Event& e) { acks.push_back(e.type()); });
  EventLog::SubscriptionId once = 0;
  once = log_->Subscribe({}, [&](const Event& e) {
    all.push_back(e.type());
    log_->Unsubscribe(once);
  });
  EXPECT_EQ(log_->subscriber_count(), 2u);
  Commit(MakeEvent(kEventTipReceived));
  Commit(MakeEvent(kEventAck));
  Commit(MakeEvent(kEventChannel));
  Commit(MakeEvent(kEventPeer));
  EXPECT_EQ(acks, std::vector<std::string>({"ack", "peer"}));
  EXPECT_EQ(all, std::vector<std::string>({"tip_received"}));
  EXPECT_EQ(log_->subscriber_count(), 1u);
}

TEST_F(EventLogTest, SubscriberThatPublishesKeepsIdOrder) {
  std::vector<uint64_t> seen;
  log_->Subscribe({}, [&](const Event& e) {
    seen.push_back(e.id());
    if (e.type() == "tip_received") Commit(MakeEvent(kEventAck));  // reentrant
  });
  log_->Subscribe({}, [&](const Event& e) { seen.push_back(e.id() * 100); });
  Commit(MakeEvent(kEventTipReceived));
  // Every subscriber sees 1 before anyone sees 2.
  EXPECT_EQ(seen, std::vector<uint64_t>({1, 100, 2, 200}));
}

TEST_F(EventLogTest, RetentionPrunesOldEventsAndReadAfterCrossesTheBoundary) {
  EventLogOptions options;
  options.retain = 10;
  options.prune_every = 4;
  Reopen(options);
  for (int i = 0; i < 50; ++i) Commit(MakeEvent(kEventAck));
  EXPECT_EQ(log_->last_id(), 50u);
  // Newest 10 retained, plus at most prune_every - 1 awaiting the next prune.
  EXPECT_GT(log_->first_id(), 50u - 10 - 4);
  EXPECT_LE(log_->first_id(), 41u);
  EXPECT_EQ(StoredCount(), 50u - log_->first_id() + 1);

  const uint64_t first = log_->first_id();
  auto from_start = log_->ReadAfter(0, 100);
  ASSERT_TRUE(from_start.ok());
  EXPECT_EQ(Ids(*from_start), Range(first, 50));
  auto across = log_->ReadAfter(first - 3, 4);  // starts below the window
  ASSERT_TRUE(across.ok());
  EXPECT_EQ(Ids(*across), Range(first, first + 3));
  auto inside = log_->ReadAfter(45, 2);
  ASSERT_TRUE(inside.ok());
  EXPECT_EQ(Ids(*inside), Range(46, 47));
  auto past = log_->ReadAfter(50, 10);
  ASSERT_TRUE(past.ok());
  EXPECT_TRUE(past->empty());

  // A smaller window after reopen is pruned down gradually, a bounded number
  // of deletes per batch.
  options.retain = 3;
  options.prune_every = 1;
  options.max_prune_per_batch = 2;
  Reopen(options);
  EXPECT_EQ(log_->first_id(), first);
  EXPECT_EQ(log_->last_id(), 50u);
  Commit(MakeEvent(kEventAck));  // 51
  EXPECT_EQ(log_->first_id(), first + 2);
  for (int i = 0; i < 20; ++i) Commit(MakeEvent(kEventAck));
  EXPECT_EQ(log_->first_id(), 71u - 3 + 1);
  EXPECT_EQ(StoredCount(), 3u);
  auto tail = log_->ReadAfter(0, 10);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(Ids(*tail), Range(69, 71));
}

TEST_F(EventLogTest, RetainZeroIsRefused) {
  EventLogOptions options;
  options.retain = 0;
  auto log = EventLog::Open(io_, db_.get(), committer_.get(), clock_, options);
  EXPECT_FALSE(log.ok());
}

// tip_sent / tip_received events are stored by reference (their tip body is
// the tip history record of the same batch) and read back whole: a replay
// renders byte-identical JSON to the live event. Old records with the whole
// tip are served as stored; a missing tip body is said, never silent.
TEST_F(EventLogTest, TipEventsAreStoredByReferenceAndReadBackWhole) {
  const std::string channel(32, '\x11');
  const std::string channel_hex(64, '1');
  auto tip_event = [&](std::string_view type, uint64_t index) {
    Event e;
    e.set_type(std::string(type));
    tipd::v1::TipApi& api = *e.mutable_tip();
    api.set_channel_id(channel_hex);
    api.set_direction(type == kEventTipSent ? "sent" : "received");
    api.set_peer_node_id("02cd");
    api.set_nonce(7);
    if (type == kEventTipSent) api.set_idempotency_key("key-" + std::to_string(index));
    tipd::v1::Tip& tip = *api.mutable_tip();
    tip.set_index(index);
    tip.set_amount(1000 + index);
    tip.set_message("Great episode \xe2\x9c\x93 #" + std::to_string(index));
    tipd::v1::MetadataEntry* m = tip.add_metadata();
    m->set_key("app_name");
    m->set_value("podverse");
    tip.set_created_at_ms(1'700'000'000'050 + index);
    return e;
  };
  storage::TipHistoryStore history(db_.get());
  std::vector<std::string> live_json;
  log_->Subscribe({}, [&](const Event& e) { live_json.push_back(ToJson(e)); });
  storage::WriteBatch batch;
  std::vector<Event> staged;
  for (uint64_t index : {3, 4}) {
    for (std::string_view type : {kEventTipSent, kEventTipReceived}) {
      Event e = tip_event(type, index);
      tipd::v1::StoredTip stored;
      *stored.mutable_tip() = e.tip().tip();
      stored.set_nonce(7);
      ASSERT_TRUE(history
                      .Append(&batch, channel,
                              type == kEventTipSent ? storage::Direction::kLocalToRemote
                                                    : storage::Direction::kRemoteToLocal,
                              {stored})
                      .ok());
      log_->Stage(&batch, &e);
      EXPECT_EQ(e.tip().tip().message(), "Great episode \xe2\x9c\x93 #" + std::to_string(index))
          << "Stage keeps the caller's event whole";
      staged.push_back(std::move(e));
    }
  }
  ASSERT_TRUE(db_->Write(batch).ok());
  for (const Event& e : staged) log_->Publish(e);
  ASSERT_EQ(live_json.size(), 4u);
  EXPECT_NE(live_json[0].find("Great episode"), std::string::npos);
  EXPECT_EQ(live_json[0].find("tip_unavailable"), std::string::npos);
  // The record holds the index, not the body.
  {
    auto raw = db_->Get(EventKey(1));
    ASSERT_TRUE(raw.ok() && raw->has_value());
    tipd::v1::StoredEvent rec;
    ASSERT_TRUE(rec.ParseFromString(**raw));
    EXPECT_TRUE(rec.tip_elided());
    EXPECT_EQ(rec.event().tip().tip().index(), 3u);
    EXPECT_EQ(rec.event().tip().tip().amount(), 0u);
    EXPECT_TRUE(rec.event().tip().tip().message().empty());
    EXPECT_EQ(rec.event().tip().tip().metadata_size(), 0);
    EXPECT_EQ(rec.event().tip().idempotency_key(), "key-3");
  }
  // Old format: the whole tip in the record, no tip history behind it.
  Event old = tip_event(kEventTipReceived, 9);
  old.set_id(5);
  old.set_time_ms(kNow);
  {
    tipd::v1::StoredEvent rec;
    rec.set_version(1);
    *rec.mutable_event() = old;
    storage::WriteBatch b;
    b.Put(EventKey(5), rec.SerializeAsString());
    ASSERT_TRUE(db_->Write(b).ok());
  }
  // By reference, but the tip history has no such tip.
  {
    Event lost = tip_event(kEventTipSent, 77);
    storage::WriteBatch b;
    Reopen();
    log_->Stage(&b, &lost);  // id 6
    ASSERT_TRUE(db_->Write(b).ok());
  }
  Reopen();
  auto read = log_->ReadAfter(0, 100);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ASSERT_EQ(Ids(*read), Range(1, 6));
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(ToJson((*read)[i]), live_json[i]) << i;
  EXPECT_EQ(ToJson((*read)[4]), ToJson(old));
  const Event& missing = (*read)[5];
  EXPECT_EQ(missing.tip().tip().index(), 77u);
  EXPECT_EQ(missing.tip().tip().amount(), 0u);
  EXPECT_EQ(missing.tip().tip_unavailable(), "the stored tip is missing");
  EXPECT_NE(ToJson(missing).find("\"tip_unavailable\":\"the stored tip is missing\""),
            std::string::npos);
}

// ---------------------------------------------------------------------------
// GET /v1/events over a real loopback socket.

struct SseEvent {
  std::string id, event, data;
  bool has_id = false;
};

// A blocking SSE client; reads give up after 10 s so a bug fails the test.
class SseClient {
 public:
  explicit SseClient(uint16_t port) : sock_(io_) {
    boost::system::error_code ec;
    sock_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
    EXPECT_FALSE(ec) << ec.message();
    timeval tv{10, 0};
    ::setsockopt(sock_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  // Sends the request and reads the status line and headers; returns the
  // status code.
  int Get(const std::string& target, const std::string& token,
          const std::string& extra_headers = "") {
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: x\r\n";
    if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
    req += extra_headers + "\r\n";
    boost::system::error_code ec;
    net::write(sock_, net::buffer(req), ec);
    EXPECT_FALSE(ec) << ec.message();
    const std::string status = ReadLine();
    if (status.size() < 12) return 0;
    headers_.clear();
    for (std::string line = ReadLine(); !line.empty() && line != "\r\n"; line = ReadLine()) {
      headers_ += line;
    }
    return std::stoi(status.substr(9, 3));
  }
  // The next event; comments are collected in `comments`. nullopt on EOF or
  // timeout.
  std::optional<SseEvent> Next() {
    SseEvent ev;
    bool any = false;
    while (true) {
      std::string line = ReadLine();
      if (line.empty()) return std::nullopt;  // closed or timed out
      line.pop_back();                        // '\n'
      if (line.empty()) {
        if (any) return ev;
        continue;
      }
      if (line[0] == ':') {
        comments.push_back(line);
        continue;
      }
      any = true;
      const size_t colon = line.find(": ");
      const std::string field = line.substr(0, colon);
      const std::string value = colon == line.npos ? "" : line.substr(colon + 2);
      if (field == "id") {
        ev.id = value;
        ev.has_id = true;
      } else if (field == "event") {
        ev.event = value;
      } else if (field == "data") {
        ev.data += value;
      }
    }
  }
  std::string ReadLine() {
    boost::system::error_code ec;
    size_t n = net::read_until(sock_, buf_, "\n", ec);
    if (ec) return "";
    std::string line(net::buffers_begin(buf_.data()), net::buffers_begin(buf_.data()) + n);
    buf_.consume(n);
    return line;
  }
  std::string ReadRest() {
    std::string out(net::buffers_begin(buf_.data()), net::buffers_end(buf_.data()));
    buf_.consume(buf_.size());
    char tmp[4096];
    while (true) {
      boost::system::error_code ec;
      size_t n = sock_.read_some(net::buffer(tmp), ec);
      out.append(tmp, n);
      if (ec) return out;
    }
  }
  const std::string& headers() const { return headers_; }
  std::vector<std::string> comments;

 private:
  net::io_context io_;
  tcp::socket sock_;
  net::streambuf buf_;
  std::string headers_;
};

Event ParseData(const SseEvent& ev) {
  Event e;
  EXPECT_TRUE(ParseJson(ev.data, &e).ok()) << ev.data;
  return e;
}

// Reads events until one with id `last` (inclusive); returns their ids.
std::vector<uint64_t> ReadIdsThrough(SseClient& c, uint64_t last) {
  std::vector<uint64_t> ids;
  while (true) {
    auto ev = c.Next();
    EXPECT_TRUE(ev.has_value()) << "stream ended after " << ids.size() << " events";
    if (!ev) return ids;
    const uint64_t id = std::stoull(ev->id);
    ids.push_back(id);
    if (id >= last) return ids;
  }
}

class EventRoutesTest : public EventLogTest {
 protected:
  EventRoutesTest() : authority_(MakeKey()) {}
  static crypto::Key32 MakeKey() {
    crypto::Key32 k;
    k.fill(0x17);
    return k;
  }
  void Start(EventRouteOptions options = {}, RpcLimits limits = {},
             EventLogOptions log_options = {}) {
    if (log_options.retain != EventLogOptions{}.retain) Reopen(log_options);
    server_ = std::make_unique<RpcServer>(io_, authority_, clock_, limits);
    RegisterEventRoutes(*server_, *log_, options);
    auto port = server_->Listen("127.0.0.1", 0);
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    port_ = *port;
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    if (thread_.joinable()) {
      stop_publisher_ = true;
      net::post(io_, [this] { server_->Stop(); });
      guard_.reset();
      thread_.join();
    }
    server_.reset();
    EventLogTest::TearDown();
  }
  // Runs `f` on the io thread and waits for it.
  template <class F>
  auto OnIo(F f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    net::post(io_, [&] { task(); });
    EXPECT_EQ(result.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    return result.get();
  }
  template <class Pred>
  bool WaitFor(Pred pred) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!OnIo(pred)) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::yield();
    }
    return true;
  }
  void PublishOnIo(std::vector<std::string_view> types) {
    OnIo([&] {
      for (auto t : types) Commit(MakeEvent(t));
    });
  }
  std::string Token(uint32_t scopes) {
    return authority_.Issue(TokenAuthority::NewClaims(scopes, 0, 0, crypto::SystemRng()));
  }
  std::string ReadToken() { return Token(static_cast<uint32_t>(Scope::kRead)); }

  net::executor_work_guard<net::io_context::executor_type> guard_{io_.get_executor()};
  TokenAuthority authority_;
  std::unique_ptr<RpcServer> server_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_publisher_{false};
};

TEST_F(EventRoutesTest, LiveOnlyWithoutLastEventId) {
  Start();
  PublishOnIo({kEventAck, kEventAck});  // before the client: not sent
  SseClient c(port_);
  ASSERT_EQ(c.Get("/v1/events", ReadToken()), 200);
  EXPECT_NE(c.headers().find("Content-Type: text/event-stream"), std::string::npos);
  ASSERT_TRUE(WaitFor([&] { return log_->subscriber_count() == 1; }));
  PublishOnIo({kEventTipReceived, kEventPeer});
  auto ev = c.Next();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, "3");
  EXPECT_EQ(ev->event, "tip_received");
  Event e = ParseData(*ev);
  EXPECT_EQ(e.id(), 3u);
  EXPECT_EQ(e.type(), "tip_received");
  EXPECT_EQ(e.tip().channel_id(), "ab01");
  EXPECT_EQ(e.time_ms(), static_cast<uint64_t>(kNow));
  EXPECT_NE(ev->data.find("\"id\":\"3\""), std::string::npos) << ev->data;  // JSON mapping
  ev = c.Next();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, "4");
  EXPECT_EQ(ev->event, "peer");
  // Append (peer connect) goes out once its own commit is durable.
  OnIo([&] { log_->Append(MakeEvent(kEventChannel, "opening")); });
  ev = c.Next();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, "5");
  EXPECT_EQ(ParseData(*ev).channel().previous_state(), "opening");
}

TEST_F(EventRoutesTest, ClientDisconnectUnsubscribes) {
  Start();
  {
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events", ReadToken()), 200);
    ASSERT_TRUE(WaitFor([&] { return log_->subscriber_count() == 1; }));
  }
  ASSERT_TRUE(WaitFor([&] { return log_->subscriber_count() == 0; }));
}

TEST_F(EventRoutesTest, ResumeGetsExactlyTheMissedEventsThenLiveWhilePublishing) {
  EventRouteOptions options;
  options.replay_page = 8;  // many pages, each an io task
  Start(options);
  OnIo([&] { CommitMany(1000, kEventTipReceived); });

  // A publisher on the io thread, one step per io task, so it interleaves
  // with the replay pages. Once the client is subscribed it stages an event
  // (written at once but published a step later, so replay pages meet
  // durable-but-unpublished events) and publishes the previous one; every
  // 7th staged id is abandoned instead.
  // Shared with the io thread's steps, so an early test failure cannot
  // leave them pointing at dead locals; TearDown stops the chain.
  struct Publisher {
    std::set<uint64_t> abandoned;
    std::optional<Event> held;
    int steps = 0;
    std::promise<uint64_t> last_id;
  };
  auto pub = std::make_shared<Publisher>();
  auto step = std::make_shared<std::function<void()>>();
  *step = [this, pub, weak = std::weak_ptr<std::function<void()>>(step)] {
    auto again = [&] { net::post(io_, [s = weak.lock()] { (*s)(); }); };
    if (stop_publisher_) return;
    if (log_->subscriber_count() == 0 && pub->steps == 0) return again();
    if (pub->held) {
      if (pub->held->id() % 7 == 0) {
        log_->Abandon(pub->held->id());
        pub->abandoned.insert(pub->held->id());
      } else {
        log_->Publish(*pub->held);
      }
      pub->held.reset();
    }
    if (++pub->steps > 300) return pub->last_id.set_value(log_->last_id());
    storage::WriteBatch batch;
    Event e = MakeEvent(kEventAck);
    const uint64_t id = log_->Stage(&batch, &e);
    if (id % 7 != 0) {
      EXPECT_TRUE(db_->Write(batch).ok());
    }
    pub->held = e;
    again();
  };
  net::post(io_, [step] { (*step)(); });

  SseClient c(port_);
  ASSERT_EQ(c.Get("/v1/events", ReadToken(), "Last-Event-ID: 10\r\n"), 200);
  auto last = pub->last_id.get_future();
  ASSERT_EQ(last.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  const uint64_t final_id = last.get();
  ASSERT_EQ(final_id, 1300u);
  uint64_t final_published = 0;
  for (uint64_t id = final_id; id > 0; --id) {
    if (!pub->abandoned.count(id)) {
      final_published = id;
      break;
    }
  }
  std::vector<uint64_t> got = ReadIdsThrough(c, final_published);
  std::vector<uint64_t> want;
  for (uint64_t id = 11; id <= final_published; ++id) {
    if (!pub->abandoned.count(id)) want.push_back(id);
  }
  EXPECT_FALSE(pub->abandoned.empty());
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(got, want);  // in order, no gap, no duplicate
  // And the stream is live now.
  PublishOnIo({kEventPeer});
  auto ev = c.Next();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, std::to_string(final_id + 1));
}

TEST_F(EventRoutesTest, QueryLastEventIdAndFromZero) {
  Start();
  PublishOnIo({kEventAck, kEventPeer, kEventAck});
  {
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events?last_event_id=2", ReadToken()), 200);
    EXPECT_EQ(ReadIdsThrough(c, 3), std::vector<uint64_t>({3}));
  }
  {
    SseClient c(port_);
    // The header wins over the query.
    ASSERT_EQ(c.Get("/v1/events?last_event_id=0", ReadToken(), "Last-Event-ID: 1\r\n"), 200);
    EXPECT_EQ(ReadIdsThrough(c, 3), std::vector<uint64_t>({2, 3}));
  }
  {
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events?from=0", ReadToken()), 200);
    auto ev = c.Next();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->id, "1");  // everything retained, no reset
    EXPECT_EQ(ev->event, "ack");
  }
  {
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events?from=3", ReadToken()), 200);
    EXPECT_EQ(ReadIdsThrough(c, 3), std::vector<uint64_t>({3}));
  }
  {
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events", ReadToken(), "Last-Event-ID: abc\r\nConnection: close\r\n"), 400);
    EXPECT_NE(c.ReadRest().find("Last-Event-ID must be a decimal event id"), std::string::npos);
  }
}

TEST_F(EventRoutesTest, TypeFilterAppliesToReplayAndLive) {
  Start();
  PublishOnIo({kEventTipReceived, kEventAck, kEventChannel, kEventPeer});
  SseClient c(port_);
  ASSERT_EQ(c.Get("/v1/events?types=peer,%20ack&from=0", ReadToken()), 200);
  auto ev = c.Next();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id + ev->event, "2ack");
  ev = c.Next();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id + ev->event, "4peer");
  PublishOnIo({kEventTipSent, kEventChannel, kEventAck});
  ev = c.Next();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id + ev->event, "7ack");

  SseClient bad(port_);
  ASSERT_EQ(bad.Get("/v1/events?types=ack,tips", ReadToken(), "Connection: close\r\n"), 400);
  EXPECT_NE(bad.ReadRest().find("unknown event type 'tips'"), std::string::npos);
}

TEST_F(EventRoutesTest, ResetWhenTheResumePointWasPruned) {
  EventLogOptions log_options;
  log_options.retain = 5;
  log_options.prune_every = 1;
  Start({}, {}, log_options);
  OnIo([&] {
    for (int i = 0; i < 20; ++i) Commit(MakeEvent(kEventAck));
  });
  ASSERT_EQ(OnIo([&] { return log_->first_id(); }), 16u);
  {
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events", ReadToken(), "Last-Event-ID: 3\r\n"), 200);
    auto ev = c.Next();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->event, "reset");
    EXPECT_EQ(ev->id, "15");  // the stream continues after 15
    EXPECT_EQ(ParseData(*ev).type(), "reset");
    EXPECT_EQ(ParseData(*ev).time_ms(), static_cast<uint64_t>(kNow));
    EXPECT_EQ(ReadIdsThrough(c, 20), Range(16, 20));
  }
  {
    // Just inside the window: no reset.
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events", ReadToken(), "Last-Event-ID: 15\r\n"), 200);
    auto ev = c.Next();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->id + ev->event, "16ack");
  }
  {
    // from= below the window resets too; from=0 never does.
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events?from=2", ReadToken()), 200);
    auto ev = c.Next();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->id + ev->event, "15reset");
    SseClient all(port_);
    ASSERT_EQ(all.Get("/v1/events?from=0", ReadToken()), 200);
    ev = all.Next();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->id + ev->event, "16ack");
  }
  {
    // An id this log never published (its database was replaced).
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events", ReadToken(), "Last-Event-ID: 999\r\n"), 200);
    auto ev = c.Next();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->event, "reset");
    EXPECT_EQ(ReadIdsThrough(c, 20), Range(16, 20));
  }
}

// The edge of the retained window for ?from=: from exactly the oldest
// retained id is served from that id (no reset, no gap) and then live; from
// the id just below it sends the documented reset first.
TEST_F(EventRoutesTest, FromExactlyTheFirstRetainedIdIsServedWithoutReset) {
  EventLogOptions log_options;
  log_options.retain = 5;
  log_options.prune_every = 1;
  Start({}, {}, log_options);
  OnIo([&] {
    for (int i = 0; i < 20; ++i) Commit(MakeEvent(kEventAck));
  });
  const uint64_t first = OnIo([&] { return log_->first_id(); });
  ASSERT_EQ(first, 16u);
  {
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events?from=" + std::to_string(first - 1), ReadToken()), 200);
    auto ev = c.Next();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->id + ev->event, "15reset");  // events up to 15 are gone
    EXPECT_EQ(ParseData(*ev).type(), "reset");
    EXPECT_EQ(ReadIdsThrough(c, 20), Range(16, 20));
  }
  ASSERT_TRUE(WaitFor([&] { return log_->subscriber_count() == 0; }));
  {
    SseClient c(port_);
    ASSERT_EQ(c.Get("/v1/events?from=" + std::to_string(first), ReadToken()), 200);
    // 16..20 exactly: a reset (id 15) or a missing id would show here.
    EXPECT_EQ(ReadIdsThrough(c, 20), Range(16, 20));
    ASSERT_TRUE(WaitFor([&] { return log_->subscriber_count() == 1; }));
    PublishOnIo({kEventPeer});
    auto ev = c.Next();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->id + ev->event, "21peer");
  }
}

TEST_F(EventRoutesTest, NeedsATokenWithReadScope) {
  Start();
  {
    SseClient c(port_);
    EXPECT_EQ(c.Get("/v1/events", "", "Connection: close\r\n"), 401);
  }
  {
    SseClient c(port_);
    EXPECT_EQ(
        c.Get("/v1/events", Token(static_cast<uint32_t>(Scope::kTip)), "Connection: close\r\n"),
        403);
    EXPECT_NE(c.ReadRest().find("permission_denied"), std::string::npos);
  }
  {
    SseClient c(port_);
    EXPECT_EQ(c.Get("/v1/events", Token(static_cast<uint32_t>(Scope::kAdmin))), 200);
    EXPECT_TRUE(WaitFor([&] { return log_->subscriber_count() == 1; }));
  }
}

TEST_F(EventRoutesTest, HeartbeatCommentsKeepIdleStreamsAlive) {
  EventRouteOptions options;
  options.heartbeat = std::chrono::milliseconds(20);
  Start(options);
  SseClient c(port_);
  ASSERT_EQ(c.Get("/v1/events", ReadToken()), 200);
  EXPECT_EQ(c.ReadLine(), ": heartbeat\n");
  EXPECT_EQ(c.ReadLine(), "\n");
  EXPECT_EQ(c.ReadLine(), ": heartbeat\n");
}

TEST_F(EventRoutesTest, LongReplayWaitsForTheClientInsteadOfOverflowing) {
  EventRouteOptions options;
  options.replay_page = 64;
  options.replay_high_water_bytes = 8 * 1024;
  options.replay_poll = std::chrono::milliseconds(1);
  RpcLimits limits;
  limits.max_stream_buffer_bytes = 32 * 1024;  // far less than the replay
  Start(options, limits);
  OnIo([&] { CommitMany(3000, kEventTipReceived, std::string(200, 'x')); });
  SseClient c(port_);
  ASSERT_EQ(c.Get("/v1/events?from=0", ReadToken()), 200);
  EXPECT_EQ(ReadIdsThrough(c, 3000), Range(1, 3000));
}

}  // namespace
}  // namespace tipd::api
