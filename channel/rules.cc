#include "channel/rules.h"

namespace tipd::channel {

const char* RuleCode(ChannelRule rule) {
  switch (rule) {
    case ChannelRule::kMalformed:
      return "MALFORMED";
    case ChannelRule::kWrongChainId:
      return "WRONG_CHAIN_ID";
    case ChannelRule::kWrongChannelId:
      return "WRONG_CHANNEL_ID";
    case ChannelRule::kNonceNotIncreasing:
      return "NONCE_NOT_INCREASING";
    case ChannelRule::kEmptyUpdate:
      return "EMPTY_UPDATE";
    case ChannelRule::kTooManyTips:
      return "TOO_MANY_TIPS";
    case ChannelRule::kTipIndexGap:
      return "TIP_INDEX_GAP";
    case ChannelRule::kTransferredMismatch:
      return "TRANSFERRED_MISMATCH";
    case ChannelRule::kTipsRootMismatch:
      return "TIPS_ROOT_MISMATCH";
    case ChannelRule::kLockedNotSupported:
      return "LOCKED_NOT_SUPPORTED";
    case ChannelRule::kAmountZero:
      return "AMOUNT_ZERO";
    case ChannelRule::kMessageTooLong:
      return "MESSAGE_TOO_LONG";
    case ChannelRule::kMessageNotUtf8:
      return "MESSAGE_NOT_UTF8";
    case ChannelRule::kMetadataTooMany:
      return "METADATA_TOO_MANY";
    case ChannelRule::kMetadataKeyInvalid:
      return "METADATA_KEY_INVALID";
    case ChannelRule::kMetadataValueInvalid:
      return "METADATA_VALUE_INVALID";
    case ChannelRule::kMetadataNotSorted:
      return "METADATA_NOT_SORTED";
    case ChannelRule::kOverflow:
      return "OVERFLOW";
    case ChannelRule::kInsufficientSpendable:
      return "INSUFFICIENT_SPENDABLE";
    case ChannelRule::kBadSignature:
      return "BAD_SIGNATURE";
    case ChannelRule::kUnknownAckNonce:
      return "UNKNOWN_ACK_NONCE";
    case ChannelRule::kAckRootMismatch:
      return "ACK_ROOT_MISMATCH";
    case ChannelRule::kCloseBalanceMismatch:
      return "CLOSE_BALANCE_MISMATCH";
    case ChannelRule::kForgedProof:
      return "FORGED_PROOF";
    case ChannelRule::kConflictingState:
      return "CONFLICTING_STATE";
    case ChannelRule::kPeerLostAckedUpdates:
      return "PEER_LOST_ACKED_UPDATES";
    case ChannelRule::kQueueFull:
      return "QUEUE_FULL";
    case ChannelRule::kUpdatesInFlight:
      return "UPDATES_IN_FLIGHT";
  }
  return "UNKNOWN";  // unreachable: every enumerator returns above
}

const char* ConsequenceName(Consequence c) {
  switch (c) {
    case Consequence::kRejectMessage:
      return "reject-message";
    case Consequence::kDisconnect:
      return "disconnect";
    case Consequence::kCloseChannel:
      return "close-channel";
    case Consequence::kRefuseRequest:
      return "refuse-request";
  }
  return "unknown";
}

Consequence ConsequenceOf(ChannelRule rule) {
  switch (rule) {
    // Harmless or retryable: a replayed update changes nothing; tip-content,
    // size and money rules concern one update of one channel, so the
    // connection (shared with other channels) stays up and the sender keeps
    // the update in flight until the next reestablish (e.g. after a deposit
    // top-up the receiver had not seen yet).
    case ChannelRule::kNonceNotIncreasing:
    case ChannelRule::kEmptyUpdate:
    case ChannelRule::kTooManyTips:
    case ChannelRule::kLockedNotSupported:
    case ChannelRule::kAmountZero:
    case ChannelRule::kMessageTooLong:
    case ChannelRule::kMessageNotUtf8:
    case ChannelRule::kMetadataTooMany:
    case ChannelRule::kMetadataKeyInvalid:
    case ChannelRule::kMetadataValueInvalid:
    case ChannelRule::kMetadataNotSorted:
    case ChannelRule::kOverflow:
    case ChannelRule::kInsufficientSpendable:
    case ChannelRule::kCloseBalanceMismatch:
    case ChannelRule::kQueueFull:
    case ChannelRule::kUpdatesInFlight:
      return Consequence::kRejectMessage;
    // The two sides' views of the stream differ or the peer speaks the
    // protocol wrongly: reconnecting runs reestablish, which resynchronises.
    case ChannelRule::kMalformed:
    case ChannelRule::kWrongChainId:
    case ChannelRule::kWrongChannelId:
    case ChannelRule::kTipIndexGap:
    case ChannelRule::kTransferredMismatch:
    case ChannelRule::kTipsRootMismatch:
    case ChannelRule::kBadSignature:
    case ChannelRule::kUnknownAckNonce:
    case ChannelRule::kAckRootMismatch:
      return Consequence::kDisconnect;
    // Irreconcilable: the ledger has to settle with the latest valid proofs.
    case ChannelRule::kForgedProof:
    case ChannelRule::kConflictingState:
    case ChannelRule::kPeerLostAckedUpdates:
      return Consequence::kCloseChannel;
  }
  return Consequence::kDisconnect;  // unreachable: every enumerator returns above
}

Status ChannelError::ToStatus() const {
  StatusCode code = StatusCode::kInvalidArgument;
  if (rule == ChannelRule::kQueueFull) code = StatusCode::kResourceExhausted;
  if (rule == ChannelRule::kUpdatesInFlight) code = StatusCode::kFailedPrecondition;
  return Status(code, ToString());
}

std::string ChannelError::ToString() const { return std::string(code()) + ": " + reason; }

ChannelError PeerError(ChannelRule rule, std::string reason) {
  return ChannelError{rule, ConsequenceOf(rule), std::move(reason)};
}

ChannelError LocalError(ChannelRule rule, std::string reason) {
  return ChannelError{rule, Consequence::kRefuseRequest, std::move(reason)};
}

}  // namespace tipd::channel
