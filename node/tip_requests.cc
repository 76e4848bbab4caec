#include "node/tip_requests.h"

#include <memory>

#include "tipd/storage.pb.h"
#include "util/bytes.h"

namespace tipd::node {
namespace {

using IdempotencyRecords = storage::RecordStore<v1::StoredIdempotentResult>;

std::string Hex(std::string_view bytes) { return HexEncode(AsSpan(bytes)); }

// 'I' tip/<owner>/<key>: the key's request hash and first answer.
std::string RecordKey(const std::string& owner, const std::string& key) {
  std::string k(1, static_cast<char>(storage::KeyFamily::kIdempotency));
  k.append("tip/").append(owner).append("/").append(key);
  return k;
}

TipCallback AsReplay(TipCallback done) {
  return [done = std::move(done)](TipOutcome r) {
    r.response.set_replayed(true);
    done(std::move(r));
  };
}

}  // namespace

const char* TipErrorCode(TipError error) {
  switch (error) {
    case TipError::kNotFound:
      return "NOT_FOUND";
    case TipError::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case TipError::kIdempotencyKeyReused:
      return "IDEMPOTENCY_KEY_REUSED";
    case TipError::kChannelNotOpen:
      return "CHANNEL_NOT_OPEN";
    case TipError::kPeerOffline:
      return "PEER_OFFLINE";
    case TipError::kSpendCapExceeded:
      return "SPEND_CAP_EXCEEDED";
    case TipError::kChannelRule:
      return "CHANNEL_RULE";
    case TipError::kQueueFull:
      return "QUEUE_FULL";
    case TipError::kNodeReadOnly:
      return "NODE_READ_ONLY";
    case TipError::kInternal:
      return "INTERNAL";
    case TipError::kNotAllowed:
      return "NOT_ALLOWED";
    case TipError::kRateLimited:
      return "RATE_LIMITED";
    case TipError::kAnomalyHold:
      return "ANOMALY_HOLD";
    case TipError::kRefundRefused:
      return "REFUND_REFUSED";
  }
  return "INTERNAL";
}

TipOutcome TipOutcome::Refused(TipError error, std::string message, std::string rule_code) {
  TipOutcome out;
  out.refusal = TipRefusal{error, std::move(message), std::move(rule_code)};
  return out;
}

Hash32 TipRequestHash(const TipRequestIn& r) {
  std::string canon = Hex(r.channel_id) + "|" + (r.peer ? r.peer->Hex() : "") + "|" +
                      std::to_string(r.draft.amount) + "|" + r.draft.message;
  for (const auto& [k, v] : r.draft.metadata) {
    canon += "|" + std::to_string(k.size()) + ":" + k + "=" + std::to_string(v.size()) + ":" + v;
  }
  return crypto::Sha256(AsSpan(canon));
}

TipRequests::TipRequests(storage::Database& db, Timers& timers, std::chrono::milliseconds ack_wait)
    : db_(db), timers_(timers), ack_wait_(ack_wait), alive_(std::make_shared<bool>(true)) {}

TipRequests::~TipRequests() {
  *alive_ = false;
  for (Timers::Id id : armed_) timers_.Cancel(id);
}

size_t TipRequests::waiting() const {
  size_t n = 0;
  for (const auto& [id, tips] : waiting_) n += tips.size();
  return n;
}

TipRequests::Pending* TipRequests::Find(const std::string& channel_id, uint64_t index) {
  auto c = waiting_.find(channel_id);
  if (c == waiting_.end()) return nullptr;
  auto t = c->second.find(index);
  return t == c->second.end() ? nullptr : &t->second;
}

void TipRequests::Forget(const std::string& channel_id, uint64_t index) {
  auto c = waiting_.find(channel_id);
  if (c == waiting_.end()) return;
  auto t = c->second.find(index);
  if (t == c->second.end()) return;
  if (!t->second.key.empty()) by_key_.erase({t->second.owner, t->second.key});
  c->second.erase(t);
  if (c->second.empty()) waiting_.erase(c);
}

bool TipRequests::Replay(const TipRequestIn& req, const Hash32& request_hash, TipCallback& done,
                         const ReceiptOf& receipt_of) {
  if (req.idempotency_key.empty()) return false;
  if (req.idempotency_key.size() > 200) {
    done(TipOutcome::Refused(TipError::kInvalidArgument,
                             "idempotency_key is longer than 200 bytes"));
    return true;
  }
  auto reused = [&] {
    done(TipOutcome::Refused(TipError::kIdempotencyKeyReused,
                             "idempotency_key was used for a different tip; use a new key"));
    return true;
  };
  // In progress: attach.
  if (auto it = by_key_.find({req.key_owner, req.idempotency_key}); it != by_key_.end()) {
    Pending* p = Find(it->second.first, it->second.second);
    if (p != nullptr) {
      if (p->request_hash != request_hash) return reused();
      p->done.push_back(AsReplay(std::move(done)));
      return true;
    }
  }
  // Answered before (durable with the payment).
  IdempotencyRecords records(&db_);
  auto prior = records.Get(RecordKey(req.key_owner, req.idempotency_key));
  if (!prior.ok()) {
    done(TipOutcome::Refused(TipError::kInternal, prior.status().ToString()));
    return true;
  }
  if (!prior->has_value()) return false;
  if ((*prior)->request_hash() != AsStringView(request_hash)) return reused();
  TipOutcome r;
  if (!r.response.ParseFromString((*prior)->response())) {
    done(TipOutcome::Refused(TipError::kInternal, "stored answer of the key does not parse"));
    return true;
  }
  r.response.set_replayed(true);
  const v1::TipApi& tip = r.response.tip();
  auto channel = HexDecode(tip.channel_id());
  const std::string channel_id = channel.ok() ? std::string(AsStringView(*channel)) : "";
  if ((*prior)->tip_elided()) {
    // The answer was stored without the tip body: the sent tip's history
    // record (written in the same batch) holds it.
    const uint64_t index = tip.tip().index();
    auto stored = channel.ok() ? storage::TipHistoryStore(&db_).Get(
                                     channel_id, storage::Direction::kLocalToRemote, index)
                               : Result<std::optional<v1::StoredTip>>(Status::Corruption(
                                     "stored answer of the key names no valid channel"));
    if (!stored.ok() || !stored->has_value() || (*stored)->tip().index() != index) {
      const std::string why = !stored.ok()          ? stored.status().ToString()
                              : stored->has_value() ? "the stored tip holds another index"
                                                    : "the stored tip is missing";
      done(TipOutcome::Refused(TipError::kInternal, "the tip of the key's first answer (index " +
                                                        std::to_string(index) +
                                                        ") cannot be read: " + why));
      return true;
    }
    *r.response.mutable_tip()->mutable_tip() = std::move(*(*stored)->mutable_tip());
  }
  if (auto receipt = receipt_of(channel_id, tip.nonce())) {
    *r.response.mutable_receipt() = *receipt;
    r.acked = true;
  } else if (Pending* p = Find(channel_id, tip.tip().index())) {
    p->done.push_back(AsReplay(std::move(done)));
    return true;
  }
  done(std::move(r));
  return true;
}

void TipRequests::Add(const std::string& channel_id, uint64_t index, const TipRequestIn& req,
                      const Hash32& request_hash, TipCallback done) {
  Pending& p = waiting_[channel_id][index];
  p.done.push_back(std::move(done));
  p.owner = req.key_owner;
  p.key = req.idempotency_key;
  p.request_hash = request_hash;
  p.charge = req.charge;
  if (!p.key.empty()) by_key_[{p.owner, p.key}] = {channel_id, index};
  StartAckWait(channel_id, index);
}

// The ack wait runs per group of tips queued in the same turn of the event
// loop (a batch of 1,000 is one group), not per tip: one timer closes the
// group at the end of the turn, one answers what is still waiting when the
// wait is over. Answered tips are simply not found then (no per-tip timer
// to cancel: a timer per tip cost an allocation, a map entry and a
// cancellation handler on the io thread, for every tip).
void TipRequests::StartAckWait(const std::string& channel_id, uint64_t index) {
  if (!open_group_) {
    auto group = std::make_shared<AckWaitGroup>();
    open_group_ = group;
    const Timers::Id close =
        timers_.After(std::chrono::milliseconds(0), [this, alive = alive_, group] {
          if (!*alive) return;
          armed_.erase(group->close_timer);
          if (open_group_ == group) open_group_.reset();
        });
    group->close_timer = close;
    armed_.insert(close);
    const Timers::Id fire = timers_.After(ack_wait_, [this, alive = alive_, group] {
      if (!*alive) return;
      armed_.erase(group->fire_timer);
      if (open_group_ == group) open_group_.reset();
      OnAckWaitOver(*group);
    });
    group->fire_timer = fire;
    armed_.insert(fire);
  }
  auto& ranges = open_group_->ranges;
  if (!ranges.empty() && ranges.back().channel_id == channel_id && ranges.back().last < index) {
    ranges.back().last = index;
  } else {
    ranges.push_back({channel_id, index, index});
  }
}

void TipRequests::OnAckWaitOver(const AckWaitGroup& group) {
  for (const auto& range : group.ranges) {
    std::vector<uint64_t> due;
    auto c = waiting_.find(range.channel_id);
    if (c == waiting_.end()) continue;
    for (auto it = c->second.lower_bound(range.first);
         it != c->second.end() && it->first <= range.last; ++it) {
      if (!it->second.done.empty()) due.push_back(it->first);
    }
    for (uint64_t index : due) OnAckWaitOver(range.channel_id, index);
  }
}

void TipRequests::OnAckWaitOver(const std::string& channel_id, uint64_t index) {
  Pending* p = Find(channel_id, index);
  if (p == nullptr) return;
  // Still in flight: answer 202 with what is known; a retry with the key
  // gets the final answer.
  auto callbacks = std::move(p->done);
  p->done.clear();
  TipOutcome r;
  r.response = p->response;
  for (auto& d : callbacks) d(r);
}

std::string TipRequests::KeyOf(const std::string& channel_id, uint64_t index) const {
  auto c = waiting_.find(channel_id);
  if (c == waiting_.end()) return "";
  auto t = c->second.find(index);
  return t == c->second.end() ? "" : t->second.key;
}

void TipRequests::StageFolded(const std::string& channel_id, const v1::TipApi& tip,
                              storage::WriteBatch* batch) {
  Pending* p = Find(channel_id, tip.tip().index());
  if (p == nullptr) return;
  p->folded = true;
  *p->response.mutable_tip() = tip;
  if (!p->key.empty()) {
    // Stored without the tip body (the tip history record in the same batch
    // holds it; Replay loads it): take the body out to serialize, then put
    // it back.
    v1::TipApi& api = *p->response.mutable_tip();
    std::unique_ptr<v1::Tip> body(api.release_tip());
    if (body) api.mutable_tip()->set_index(body->index());
    v1::StoredIdempotentResult rec;
    rec.set_request_hash(std::string(AsStringView(p->request_hash)));
    rec.set_response(p->response.SerializeAsString());
    rec.set_tip_elided(body != nullptr);
    if (body) {
      api.set_allocated_tip(body.release());
    } else {
      api.clear_tip();
    }
    IdempotencyRecords(&db_).Put(batch, RecordKey(p->owner, p->key), rec);
  }
  if (p->charge) p->charge->CommitToBatch(batch);
}

void TipRequests::MarkDurable(const std::string& channel_id, uint64_t first_index,
                              uint64_t last_index) {
  auto c = waiting_.find(channel_id);
  if (c == waiting_.end()) return;
  for (auto it = c->second.lower_bound(first_index);
       it != c->second.end() && it->first <= last_index; ++it) {
    it->second.durable = true;
  }
}

void TipRequests::AnswerAcked(const std::string& channel_id, uint64_t last_index,
                              const v1::TipReceiptApi& receipt) {
  auto c = waiting_.find(channel_id);
  if (c == waiting_.end()) return;
  std::vector<std::pair<std::vector<TipCallback>, TipOutcome>> answers;
  // One receipt for every tip this ack answers.
  auto shared = std::make_shared<const v1::TipReceiptApi>(receipt);
  while (!c->second.empty() && c->second.begin()->first <= last_index) {
    Pending& p = c->second.begin()->second;
    TipOutcome r;
    r.acked = true;
    r.response = std::move(p.response);
    r.receipt = shared;
    answers.emplace_back(std::move(p.done), std::move(r));
    Forget(channel_id, c->second.begin()->first);
    c = waiting_.find(channel_id);
    if (c == waiting_.end()) break;
  }
  for (auto& [callbacks, r] : answers) {
    // The last (usually only) caller takes the answer; others get a copy.
    for (size_t i = 0; i < callbacks.size(); ++i) {
      if (i + 1 == callbacks.size()) {
        callbacks[i](std::move(r));
      } else {
        callbacks[i](r);
      }
    }
  }
}

void TipRequests::RefuseIndexes(const std::string& channel_id, const std::vector<uint64_t>& indexes,
                                TipError error, const std::string& why,
                                const std::string& rule_code) {
  for (uint64_t index : indexes) {
    Pending* p = Find(channel_id, index);
    if (p == nullptr) continue;
    auto callbacks = std::move(p->done);
    Forget(channel_id, index);
    for (auto& d : callbacks) d(TipOutcome::Refused(error, why, rule_code));
  }
}

void TipRequests::RefuseUnsigned(const std::string& channel_id, TipError error,
                                 const std::string& why) {
  std::vector<uint64_t> unsigned_tips;
  if (auto c = waiting_.find(channel_id); c != waiting_.end()) {
    for (const auto& [index, p] : c->second) {
      if (!p.folded) unsigned_tips.push_back(index);
    }
  }
  RefuseIndexes(channel_id, unsigned_tips, error, why);
}

void TipRequests::AnswerReadOnly(const std::string& channel_id, const std::string& why) {
  std::vector<uint64_t> unsigned_tips;
  std::vector<uint64_t> durable;
  std::vector<std::pair<std::vector<TipCallback>, TipOutcome>> answers;
  if (auto c = waiting_.find(channel_id); c != waiting_.end()) {
    for (auto& [index, p] : c->second) {
      if (!p.folded) {
        unsigned_tips.push_back(index);
      } else if (p.durable) {
        TipOutcome r;
        r.response = p.response;
        answers.emplace_back(std::move(p.done), std::move(r));
        durable.push_back(index);
      }
    }
  }
  RefuseIndexes(channel_id, unsigned_tips, TipError::kNodeReadOnly, why);
  for (uint64_t index : durable) Forget(channel_id, index);
  for (auto& [callbacks, r] : answers) {
    for (auto& d : callbacks) d(r);
  }
}

void TipRequests::Release(const std::string& channel_id, const std::string& why) {
  RefuseUnsigned(channel_id, TipError::kChannelNotOpen, why);
  auto c = waiting_.find(channel_id);
  if (c == waiting_.end()) return;
  // Signed tips may well be paid (the peer holds the update): answer them as
  // pending with their tip and nonce, never as refused.
  std::vector<std::pair<std::vector<TipCallback>, TipOutcome>> answers;
  std::vector<uint64_t> indexes;
  for (auto& [index, p] : c->second) {
    TipOutcome r;
    r.response = p.response;
    answers.emplace_back(std::move(p.done), std::move(r));
    indexes.push_back(index);
  }
  for (uint64_t index : indexes) Forget(channel_id, index);
  for (auto& [callbacks, r] : answers) {
    for (auto& d : callbacks) d(r);
  }
}

}  // namespace tipd::node
