// The channel error model: every rule a peer message or a local request can
// break, its stable machine-readable code, and what the node must do about it.
//
// A rule violation is a value (ChannelError), never an exception or an
// assert. The consequence is decided once per rule in ConsequenceOf(), so the
// node does not have to guess whether to ignore a message, drop the
// connection or close the channel (compare LDK's ChannelError).
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "util/status.h"

namespace tipd::channel {

// One value per rule. docs/protocol.md lists each with its code and
// consequence; the codes are part of the wire protocol (UpdateRejected.code,
// Error.code) and never change once published.
enum class ChannelRule {
  // Structure and addressing.
  kMalformed,       // a field has the wrong size, a required field is missing
  kWrongChainId,    // chain id differs from the channel's
  kWrongChannelId,  // channel id differs from the channel's
  // Update sequencing.
  kNonceNotIncreasing,   // nonce <= the latest one held for that direction
  kEmptyUpdate,          // an update without tips
  kTooManyTips,          // more tips than max_tips_per_update
  kTipIndexGap,          // tip indices not consecutive with the last one held
  kTransferredMismatch,  // transferred did not grow by exactly the sum of amounts
  kTipsRootMismatch,     // tips_root is not the chain over the tips
  kLockedNotSupported,   // locked != 0 or locks_root != 32 zero bytes
  // Tip content.
  kAmountZero,
  kMessageTooLong,
  kMessageNotUtf8,
  kMetadataTooMany,
  kMetadataKeyInvalid,
  kMetadataValueInvalid,
  kMetadataNotSorted,  // keys not unique and strictly ascending
  // Money.
  kOverflow,               // a sum or difference left the u64 range
  kInsufficientSpendable,  // the sender would spend more than it has
  // Signatures and receipts.
  kBadSignature,
  kUnknownAckNonce,  // an ack for a nonce that is not in flight
  kAckRootMismatch,  // an ack whose tips_root differs from the proof it acks
  // Close.
  kCloseBalanceMismatch,  // proposed final balances differ from ours
  // Reestablish.
  kForgedProof,           // peer shows a proof of our direction we never signed
  kConflictingState,      // both sides hold the same nonce with different content
  kPeerLostAckedUpdates,  // peer is behind updates it already acknowledged
  // Local requests (never caused by the peer).
  kQueueFull,        // too many tips waiting for a window slot
  kUpdatesInFlight,  // a close needs every update acknowledged first
};

// What the node does when a PEER message breaks a rule. Local requests that
// are refused always carry kRefuseRequest.
enum class Consequence {
  // Ignore the message and answer it (UpdateRejected / Error) naming the
  // rule; the connection and the channel stay up. For benign cases
  // (replays) and for updates the sender can retry after reestablish.
  kRejectMessage,
  // Answer naming the rule, then drop the connection. On reconnect the
  // reestablish exchange resynchronises both sides. For desynchronised
  // streams and protocol bugs.
  kDisconnect,
  // The peer has shown state that cannot be reconciled (a forged or
  // conflicting proof): close the channel on the ledger with the latest
  // valid proof we hold.
  kCloseChannel,
  // A local request (queue a tip, close) was refused; nothing was sent and
  // nothing changed.
  kRefuseRequest,
};

// Stable code, e.g. "NONCE_NOT_INCREASING".
const char* RuleCode(ChannelRule rule);
const char* ConsequenceName(Consequence c);
// The consequence of a peer message breaking `rule`.
Consequence ConsequenceOf(ChannelRule rule);

struct ChannelError {
  ChannelRule rule;
  Consequence consequence;
  std::string reason;  // names the offending values

  const char* code() const { return RuleCode(rule); }
  // "CODE: reason", mapped onto a util StatusCode for callers that only
  // speak Status (kResourceExhausted for kQueueFull, kFailedPrecondition for
  // kUpdatesInFlight, kInvalidArgument otherwise).
  Status ToStatus() const;
  std::string ToString() const;
};

// An error caused by peer input: its consequence comes from ConsequenceOf.
ChannelError PeerError(ChannelRule rule, std::string reason);
// A refused local request.
ChannelError LocalError(ChannelRule rule, std::string reason);

// A value or the ChannelError that refused it: the project's Result type
// (util/status.h) with the channel's error.
template <typename T>
using ChannelResult = Result<T, ChannelError>;

// Success or a ChannelError, for operations without a value.
class [[nodiscard]] ChannelStatus {
 public:
  ChannelStatus() = default;
  ChannelStatus(ChannelError error)
      : error_(std::move(error)) {}  // NOLINT(google-explicit-constructor)
  static ChannelStatus Ok() { return {}; }

  bool ok() const { return !error_.has_value(); }
  // REQUIRES: !ok()
  const ChannelError& error() const {
    assert(!ok());
    return *error_;
  }
  ChannelRule rule() const { return error().rule; }

 private:
  std::optional<ChannelError> error_;
};

}  // namespace tipd::channel

// Returns the error of a ChannelStatus expression from the enclosing function.
#define TIPD_CHANNEL_RETURN_IF_ERROR(expr)                               \
  do {                                                                   \
    ::tipd::channel::ChannelStatus tipd_channel_status_ = (expr);        \
    if (!tipd_channel_status_.ok()) return tipd_channel_status_.error(); \
  } while (0)
