// Refunds (node/refunds.h): sending one, checking the link of one received,
// and showing the links in the history.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "node/channel_manager_internal.h"

namespace tipd::node {

using namespace internal;
using storage::Direction;

namespace {

// The tip `index` of one direction, if this node holds it.
Result<std::optional<v1::Tip>> HistoryTip(const ChannelDb& chdb, const std::string& channel_id,
                                          Direction dir, uint64_t index) {
  TIPD_ASSIGN_OR_RETURN(std::vector<v1::StoredTip> page, chdb.History(channel_id, dir, index, 1));
  if (page.empty() || page.front().tip().index() != index) return std::optional<v1::Tip>();
  return std::optional<v1::Tip>(page.front().tip());
}

}  // namespace

void ChannelManager::Refund(TipRequestIn req, uint64_t index, TipCallback done) {
  LiveChannel* live = Find(req.channel_id);
  if (live == nullptr) {
    return done(TipOutcome::Refused(TipError::kNotFound, "no channel " + Hex(req.channel_id)));
  }
  // The key is bound to the request as asked (0 = "the rest"), so a retry
  // replays even once nothing is left.
  const std::string canon = "refund|" + Hex(live->id) + "|" + std::to_string(index) + "|" +
                            std::to_string(req.draft.amount) + "|" + req.draft.message;
  const Hash32 request_hash = crypto::Sha256(AsSpan(canon));
  if (requests_.Replay(req, request_hash, done, [this](const std::string& id, uint64_t nonce) {
        return ReceiptOf(id, nonce);
      })) {
    return;
  }
  auto original = HistoryTip(chdb_, live->id, Direction::kRemoteToLocal, index);
  if (!original.ok()) {
    return done(TipOutcome::Refused(TipError::kInternal, original.status().ToString()));
  }
  if (!original->has_value()) {
    return done(TipOutcome::Refused(TipError::kNotFound,
                                    "this node received no tip " + std::to_string(index) +
                                        " on channel " + Hex(live->id) +
                                        " (only tips this node received can be refunded)",
                                    "TIP_NOT_FOUND"));
  }
  const v1::Tip& tip = **original;
  if (RefundOfMetadata(tip) != nullptr) {
    return done(TipOutcome::Refused(
        TipError::kRefundRefused,
        "tip " + std::to_string(index) + " is itself a refund; a refund cannot be refunded",
        "REFUND_OF_REFUND"));
  }
  auto book = refunds_->Get(live->id, Direction::kRemoteToLocal, index);
  if (!book.ok()) return done(TipOutcome::Refused(TipError::kInternal, book.status().ToString()));
  const uint64_t reserved = refunds_->Reserved(live->id, Direction::kRemoteToLocal, index);
  const uint64_t used = book->total() + reserved;  // both <= tip.amount()
  const uint64_t left = tip.amount() - std::min(tip.amount(), used);
  const uint64_t amount = req.draft.amount == 0 ? left : req.draft.amount;
  if (amount == 0 || amount > left) {
    return done(TipOutcome::Refused(
        TipError::kRefundRefused,
        "tip " + std::to_string(index) + " was " + std::to_string(tip.amount()) + "; " +
            std::to_string(book->total()) + " is refunded and " + std::to_string(reserved) +
            " is being refunded, so at most " + std::to_string(left) + " can be refunded now" +
            (req.draft.amount == 0 ? "" : ", not " + std::to_string(req.draft.amount)),
        "REFUND_EXCEEDS_ORIGINAL"));
  }
  if (book->count() >= kMaxRefundsPerTip) {
    return done(TipOutcome::Refused(TipError::kRefundRefused,
                                    "tip " + std::to_string(index) + " was refunded " +
                                        std::to_string(book->count()) + " times, the most allowed",
                                    "TOO_MANY_REFUNDS"));
  }
  req.draft.amount = amount;
  req.draft.metadata.clear();
  req.draft.metadata[kRefundOfKey] = Hex(live->id) + ":" + std::to_string(index);
  req.charge = std::make_shared<RefundCharge>(refunds_, live->id, index, std::move(req.charge));
  req.peer.reset();
  SendTipHashed(std::move(req), request_hash, std::move(done));
}

std::string ChannelManager::AcceptRefundLink(LiveChannel& live, const v1::Tip& tip,
                                             storage::WriteBatch* batch,
                                             std::vector<v1::Event>* staged) {
  const std::string& value = *RefundOfMetadata(tip);
  auto reject = [&](std::string why) {
    log_->warn("channel {}: tip {} of {} names refund_of '{}' which is not accepted: {}",
               Short(live.id), tip.index(), tip.amount(), value.substr(0, 100), why);
    return why;
  };
  auto link = ParseRefundOf(value);
  if (!link) return reject("refund_of is not \"<channel_id hex>:<index>\"");
  if (link->first != Hex(live.id)) return reject("refund_of names another channel");
  auto original = HistoryTip(chdb_, live.id, Direction::kLocalToRemote, link->second);
  if (!original.ok())
    return reject("the original could not be read: " + original.status().message());
  if (!original->has_value()) {
    return reject("this node sent no tip " + std::to_string(link->second) + " on the channel");
  }
  if (RefundOfMetadata(**original) != nullptr) return reject("the original is itself a refund");
  auto book = refunds_->Get(live.id, Direction::kLocalToRemote, link->second);
  if (!book.ok()) return reject("the refunds could not be read: " + book.status().message());
  const uint64_t amount_sent = (*original)->amount();
  if (book->count() >= kMaxRefundsPerTip) return reject("the original was refunded too often");
  if (tip.amount() > amount_sent || book->total() > amount_sent - tip.amount()) {
    return reject("refunds of tip " + std::to_string(link->second) + " would exceed its amount " +
                  std::to_string(amount_sent) + " (" + std::to_string(book->total()) +
                  " refunded before)");
  }
  auto total = refunds_->Stage(live.id, Direction::kLocalToRemote, link->second, tip.amount(),
                               tip.index(), /*reserved=*/false, batch);
  if (!total.ok()) return reject("the refund could not be recorded: " + total.status().message());
  if (events_) {
    v1::Event e;
    e.set_type("tip_refunded");
    v1::RefundEvent& r = *e.mutable_refund();
    r.set_channel_id(Hex(live.id));
    r.set_original_index(link->second);
    r.set_refund_index(tip.index());
    r.set_amount(tip.amount());
    r.set_refunded_total(*total);
    Emit(batch, std::move(e), staged);
  }
  return "";
}

Status ChannelManager::AnnotateRefunds(const LiveChannel& live, Direction dir,
                                       std::vector<v1::TipApi*>& tips) const {
  if (tips.empty()) return Status::Ok();
  const uint64_t from = tips.front()->tip().index();
  const uint64_t to = tips.back()->tip().index() + 1;
  TIPD_ASSIGN_OR_RETURN(auto totals, refunds_->Range(live.id, dir, from, to));
  for (v1::TipApi* t : tips) {
    if (auto it = totals.find(t->tip().index()); it != totals.end()) {
      t->set_refunded_total(it->second.total());
    }
    const std::string* value = RefundOfMetadata(t->tip());
    if (value == nullptr) continue;
    if (dir == Direction::kLocalToRemote) {  // ours: made by Refund()
      t->set_refund_of(*value);
      continue;
    }
    bool valid = false;
    if (auto link = ParseRefundOf(*value); link && link->first == Hex(live.id)) {
      TIPD_ASSIGN_OR_RETURN(v1::StoredRefund rec,
                            refunds_->Get(live.id, Direction::kLocalToRemote, link->second));
      const auto& idx = rec.refund_indexes();
      valid = std::find(idx.begin(), idx.end(), t->tip().index()) != idx.end();
    }
    if (valid) {
      t->set_refund_of(*value);
    } else {
      t->set_refund_link_error(
          "not accepted as a refund: it names no tip this node sent on this channel with that "
          "much left to refund");
    }
  }
  return Status::Ok();
}

}  // namespace tipd::node
