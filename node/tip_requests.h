// Tip requests: every POST /v1/tips call between its arrival and its answer
// (LDK's outbound_payment.rs plays this part).
//
// A request is answered exactly once per caller:
//   - refused (TipRefusal, nothing paid) before it is queued;
//   - 200 with the tip and the peer's signed receipt once an ack covers it;
//   - 202 "pending" with the tip (and its nonce, once signed) when the ack
//     wait runs out, or when the channel closes before an ack: the tip may be
//     paid, so it is never reported as refused once it is in a signed update.
// Idempotency keys belong to their owner (the token that used them): a key
// is bound to a hash of the request, stored in the same synced batch as the
// update that pays the tip, and found again after a crash. A retry attaches
// to the request in progress or gets the first answer (replayed = true);
// another request under the same key is refused (kIdempotencyKeyReused).
// Keys in progress are indexed by (owner, key): no scan of the waiting tips.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "crypto/crypto.h"
#include "node/seams.h"
#include "storage/storage.h"
#include "tipd/api.pb.h"
#include "util/clock.h"

namespace tipd::node {

// Why a tip was refused. The API maps each to an HTTP status and code in one
// switch (api/channel_api.cc).
enum class TipError {
  kNotFound,              // no such channel, or no open channel with the peer
  kInvalidArgument,       // the request itself is malformed
  kIdempotencyKeyReused,  // the key was used for another request
  kChannelNotOpen,        // the channel is opening, closing or closed
  kPeerOffline,           // the peer is not connected; nothing was signed
  kSpendCapExceeded,      // the requester's budget cannot cover it
  kChannelRule,           // the channel refused it (amount, message, spendable...)
  kQueueFull,             // too many tips wait for a window slot
  kNodeReadOnly,          // a write failed: the node refuses new work
  kInternal,              // a storage error while checking the request
  kNotAllowed,            // the requester's token may not send this tip
  kRateLimited,           // the requester's token sent too many tips too fast
  kAnomalyHold,           // an anomaly rule holds the requester's token (node/anomaly.h)
  kRefundRefused,         // a refund the original tip does not allow (409)
};
const char* TipErrorCode(TipError error);

struct TipRefusal {
  TipError error;
  std::string message;
  // For kChannelRule: the channel rule's code (e.g. INSUFFICIENT_SPENDABLE).
  std::string rule_code;
  // For kRateLimited: when a retry may pass (the API's Retry-After).
  int64_t retry_after_ms = 0;
  // The machine code the API answers with.
  std::string code() const { return rule_code.empty() ? TipErrorCode(error) : rule_code; }
};

// The answer to one request.
struct TipOutcome {
  std::optional<TipRefusal> refusal;  // set: refused, nothing paid
  v1::TipResponse response;           // the tip (and receipt once acked, see below)
  bool acked = false;
  // An acked tip's receipt, shared by every tip the same ack answers (a
  // batch of 1,000 tips carries one receipt, not 1,000 copies); then
  // response.receipt() is empty. Replayed answers carry it in
  // response.receipt() instead. Receipt() reads either.
  std::shared_ptr<const v1::TipReceiptApi> receipt;
  const v1::TipReceiptApi* Receipt() const {
    if (receipt) return receipt.get();
    return response.has_receipt() ? &response.receipt() : nullptr;
  }
  // The response as the API answers it: the receipt filled in.
  v1::TipResponse TakeResponse() {
    if (receipt && !response.has_receipt()) *response.mutable_receipt() = *receipt;
    return std::move(response);
  }
  static TipOutcome Refused(TipError error, std::string message, std::string rule_code = "");
};
using TipCallback = std::function<void(TipOutcome)>;

struct TipRequestIn {
  std::string channel_id;  // 32 bytes, or empty with peer set
  std::optional<crypto::PublicKey> peer;
  channel::TipDraft draft;
  std::string idempotency_key;        // may be empty
  std::string key_owner;              // namespace of the key: the token id (hex)
  std::shared_ptr<TipCharge> charge;  // null: not charged
};

// The hash a key is bound to: channel or peer, amount, message, metadata.
Hash32 TipRequestHash(const TipRequestIn& request);

class TipRequests {
 public:
  // `ack_wait`: how long a caller waits for the ack before the 202 answer.
  TipRequests(storage::Database& db, Timers& timers, std::chrono::milliseconds ack_wait);
  ~TipRequests();
  TipRequests(const TipRequests&) = delete;
  TipRequests& operator=(const TipRequests&) = delete;

  // The receipt for the tip at (channel, nonce), if an ack covers it.
  using ReceiptOf = std::function<std::optional<v1::TipReceiptApi>(const std::string& channel_id,
                                                                   uint64_t nonce)>;
  // Resolves a request that carries a key against earlier ones. Returns true
  // if it was handled (`done` attached to the request in progress, answered
  // from the stored record, or refused as a reuse); false if it is new.
  bool Replay(const TipRequestIn& request, const Hash32& request_hash, TipCallback& done,
              const ReceiptOf& receipt_of);

  // A tip the channel queued under `index`: waits for its update and ack.
  void Add(const std::string& channel_id, uint64_t index, const TipRequestIn& request,
           const Hash32& request_hash, TipCallback done);
  // The idempotency key of a waiting tip (empty if none).
  std::string KeyOf(const std::string& channel_id, uint64_t index) const;
  // The tip was folded into a signed update: remembers its API view and adds
  // the key's record and the spend to `batch` (the batch that pays it).
  void StageFolded(const std::string& channel_id, const v1::TipApi& tip,
                   storage::WriteBatch* batch);
  // The batch holding these tips is durable.
  void MarkDurable(const std::string& channel_id, uint64_t first_index, uint64_t last_index);
  // An ack covers every tip up to `last_index`: answers them with `receipt`.
  void AnswerAcked(const std::string& channel_id, uint64_t last_index,
                   const v1::TipReceiptApi& receipt);
  // Refuses (and forgets) the waiting tips of a channel that were never
  // signed into an update (`only_unsigned`), or the listed indexes.
  void RefuseUnsigned(const std::string& channel_id, TipError error, const std::string& why);
  void RefuseIndexes(const std::string& channel_id, const std::vector<uint64_t>& indexes,
                     TipError error, const std::string& why, const std::string& rule_code = "");
  // Answers every waiting tip of the channel as it stands (signed tips as
  // pending with their nonce, unsigned ones refused) and forgets them.
  void Release(const std::string& channel_id, const std::string& why);
  // The node can write nothing more (read-only), so no waiting tip of the
  // channel can be acknowledged in this run: answers those whose update is
  // durable as pending (202 with their nonce; a keyed retry after the
  // restart gets the final answer), refuses those never signed with
  // kNodeReadOnly and `why`, and forgets both. Tips whose write is still in
  // flight are left to its completion.
  void AnswerReadOnly(const std::string& channel_id, const std::string& why);

  size_t waiting() const;
  size_t keys_in_progress() const { return by_key_.size(); }

 private:
  struct Pending {
    std::vector<TipCallback> done;
    std::string owner;
    std::string key;
    Hash32 request_hash{};
    std::shared_ptr<TipCharge> charge;
    v1::TipResponse response;  // the tip, filled once folded
    bool folded = false;
    bool durable = false;
  };
  // Tips queued in one turn of the event loop share one ack-wait deadline.
  struct AckWaitRange {
    std::string channel_id;
    uint64_t first = 0, last = 0;  // tip indexes
  };
  struct AckWaitGroup {
    std::vector<AckWaitRange> ranges;
    Timers::Id close_timer = 0, fire_timer = 0;
  };
  using Key = std::pair<std::string, std::string>;  // (owner, key)
  Pending* Find(const std::string& channel_id, uint64_t index);
  void Forget(const std::string& channel_id, uint64_t index);
  void OnAckWaitOver(const std::string& channel_id, uint64_t index);
  void StartAckWait(const std::string& channel_id, uint64_t index);
  void OnAckWaitOver(const AckWaitGroup& group);

  storage::Database& db_;
  Timers& timers_;
  std::chrono::milliseconds ack_wait_;
  // channel id -> tip index -> request.
  std::map<std::string, std::map<uint64_t, Pending>> waiting_;
  std::map<Key, std::pair<std::string, uint64_t>> by_key_;  // -> (channel, index)
  std::shared_ptr<AckWaitGroup> open_group_;                // taking tips until the turn ends
  std::set<Timers::Id> armed_;                              // for the destructor
  std::shared_ptr<bool> alive_;
};

}  // namespace tipd::node
