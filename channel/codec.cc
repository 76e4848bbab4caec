#include "channel/codec.h"

#include <algorithm>

namespace tipd::channel {
namespace {

ChannelStatus CheckSize(const std::string& field, size_t want, const char* name) {
  if (field.size() != want) {
    return PeerError(ChannelRule::kMalformed, std::string(name) + " has " +
                                                  std::to_string(field.size()) +
                                                  " bytes, expected " + std::to_string(want));
  }
  return {};
}

ChannelStatus CheckChainId(std::string_view chain_id) {
  if (!IsValidChainId(chain_id)) {
    return PeerError(ChannelRule::kMalformed, "chain id must be 1..64 bytes of [a-z0-9._-], got " +
                                                  std::to_string(chain_id.size()) + " bytes");
  }
  return {};
}

}  // namespace

bool IsValidChainId(std::string_view chain_id) {
  if (chain_id.empty() || chain_id.size() > kMaxChainIdBytes) return false;
  return std::all_of(chain_id.begin(), chain_id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
}

bool IsValidMetadataKey(std::string_view key) {
  if (key.empty() || key.size() > kMaxMetadataKeyBytes) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

ChannelStatus CheckTipContent(const v1::Tip& tip) {
  const std::string where = "tip " + std::to_string(tip.index()) + ": ";
  if (tip.amount() == 0) return PeerError(ChannelRule::kAmountZero, where + "amount is 0");
  if (tip.message().size() > kMaxMessageBytes) {
    return PeerError(ChannelRule::kMessageTooLong,
                     where + "message has " + std::to_string(tip.message().size()) +
                         " bytes, limit " + std::to_string(kMaxMessageBytes));
  }
  if (!IsValidUtf8(tip.message())) {
    return PeerError(ChannelRule::kMessageNotUtf8, where + "message is not valid UTF-8");
  }
  if (static_cast<size_t>(tip.metadata_size()) > kMaxMetadataEntries) {
    return PeerError(ChannelRule::kMetadataTooMany, where + std::to_string(tip.metadata_size()) +
                                                        " metadata entries, limit " +
                                                        std::to_string(kMaxMetadataEntries));
  }
  for (int i = 0; i < tip.metadata_size(); ++i) {
    const v1::MetadataEntry& e = tip.metadata(i);
    if (!IsValidMetadataKey(e.key())) {
      return PeerError(ChannelRule::kMetadataKeyInvalid,
                       where + "metadata key #" + std::to_string(i) +
                           " must be 1..32 bytes of [a-z0-9_], got " +
                           std::to_string(e.key().size()) + " bytes");
    }
    if (e.value().size() > kMaxMetadataValueBytes || !IsValidUtf8(e.value())) {
      return PeerError(ChannelRule::kMetadataValueInvalid,
                       where + "metadata value of \"" + e.key() +
                           "\" must be valid UTF-8 of at most 256 bytes, got " +
                           std::to_string(e.value().size()) + " bytes");
    }
    if (i > 0 && !(tip.metadata(i - 1).key() < e.key())) {
      return PeerError(ChannelRule::kMetadataNotSorted,
                       where + "metadata key \"" + e.key() + "\" does not follow \"" +
                           tip.metadata(i - 1).key() + "\" in strictly ascending order");
    }
  }
  return {};
}

ChannelResult<Bytes> EncodeTip(const v1::Tip& tip) {
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckTipContent(tip));
  ByteWriter w;
  w.U64(tip.index());
  w.U64(tip.amount());
  w.U64(tip.created_at_ms());
  w.Str16(tip.message());
  w.U8(static_cast<uint8_t>(tip.metadata_size()));
  for (const v1::MetadataEntry& e : tip.metadata()) {
    w.Str8(e.key());
    w.Str16(e.value());
  }
  return w.Take();
}

ChannelResult<v1::Tip> DecodeTip(ByteSpan bytes) {
  ByteReader r(bytes);
  v1::Tip tip;
  uint64_t index, amount, created;
  std::string message;
  uint8_t count;
  if (!r.U64(&index) || !r.U64(&amount) || !r.U64(&created) || !r.Str16(&message) ||
      !r.U8(&count)) {
    return PeerError(ChannelRule::kMalformed, "tip bytes truncated");
  }
  tip.set_index(index);
  tip.set_amount(amount);
  tip.set_created_at_ms(created);
  tip.set_message(std::move(message));
  for (int i = 0; i < count; ++i) {
    std::string key, value;
    if (!r.Str8(&key) || !r.Str16(&value)) {
      return PeerError(ChannelRule::kMalformed, "tip metadata bytes truncated");
    }
    v1::MetadataEntry* e = tip.add_metadata();
    e->set_key(std::move(key));
    e->set_value(std::move(value));
  }
  if (!r.done()) {
    return PeerError(ChannelRule::kMalformed,
                     std::to_string(r.remaining()) + " trailing bytes after tip");
  }
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckTipContent(tip));
  return tip;
}

ChannelResult<Hash32> TipHash(const v1::Tip& tip) {
  auto bytes = EncodeTip(tip);
  if (!bytes.ok()) return bytes.error();
  return crypto::Sha256(*bytes);
}

Hash32 ChainTipsRoot(const Hash32& previous_root, const Hash32& tip_hash) {
  uint8_t buf[64];
  std::copy(previous_root.begin(), previous_root.end(), buf);
  std::copy(tip_hash.begin(), tip_hash.end(), buf + 32);
  return crypto::Sha256(ByteSpan(buf, sizeof(buf)));
}

ChannelResult<Bytes> EncodeBalanceProof(const v1::BalanceProof& proof) {
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckChainId(proof.chain_id()));
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckSize(proof.channel_id(), 32, "proof channel_id"));
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckSize(proof.locks_root(), 32, "proof locks_root"));
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckSize(proof.tips_root(), 32, "proof tips_root"));
  ByteWriter w;
  w.Str8(proof.chain_id());
  w.Raw(proof.channel_id());
  w.U64(proof.nonce());
  w.U64(proof.transferred());
  w.U64(proof.locked());
  w.Raw(proof.locks_root());
  w.Raw(proof.tips_root());
  return w.Take();
}

ChannelResult<v1::BalanceProof> DecodeBalanceProof(ByteSpan bytes) {
  ByteReader r(bytes);
  std::string chain_id;
  ByteSpan channel_id, locks_root, tips_root;
  uint64_t nonce, transferred, locked;
  if (!r.Str8(&chain_id) || !r.Raw(32, &channel_id) || !r.U64(&nonce) || !r.U64(&transferred) ||
      !r.U64(&locked) || !r.Raw(32, &locks_root) || !r.Raw(32, &tips_root)) {
    return PeerError(ChannelRule::kMalformed, "balance proof bytes truncated");
  }
  if (!r.done()) {
    return PeerError(ChannelRule::kMalformed,
                     std::to_string(r.remaining()) + " trailing bytes after balance proof");
  }
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckChainId(chain_id));
  v1::BalanceProof proof;
  proof.set_chain_id(std::move(chain_id));
  proof.set_channel_id(std::string(AsStringView(channel_id)));
  proof.set_nonce(nonce);
  proof.set_transferred(transferred);
  proof.set_locked(locked);
  proof.set_locks_root(std::string(AsStringView(locks_root)));
  proof.set_tips_root(std::string(AsStringView(tips_root)));
  return proof;
}

ChannelStatus SignBalanceProof(v1::BalanceProof* proof, const crypto::KeyPair& signer,
                               crypto::RandomSource& rng) {
  auto bytes = EncodeBalanceProof(*proof);
  if (!bytes.ok()) return bytes.error();
  crypto::Signature sig = crypto::SignTagged(signer, kBalanceProofTag, *bytes, rng);
  proof->set_signature(std::string(AsStringView(sig)));
  return {};
}

namespace {

ChannelStatus VerifySignatureField(const crypto::XOnlyPubKey& signer, std::string_view tag,
                                   const Bytes& bytes, const std::string& signature,
                                   const std::string& what) {
  if (signature.size() != 64) {
    return PeerError(
        ChannelRule::kMalformed,
        what + " signature has " + std::to_string(signature.size()) + " bytes, expected 64");
  }
  crypto::Signature sig;
  std::copy(signature.begin(), signature.end(), sig.begin());
  if (!crypto::VerifyTagged(signer, tag, bytes, sig)) {
    return PeerError(ChannelRule::kBadSignature,
                     what + " signature does not verify under key " + HexEncode(signer));
  }
  return {};
}

}  // namespace

ChannelStatus VerifyBalanceProof(const v1::BalanceProof& proof, const crypto::XOnlyPubKey& signer) {
  auto bytes = EncodeBalanceProof(proof);
  if (!bytes.ok()) return bytes.error();
  return VerifySignatureField(signer, kBalanceProofTag, *bytes, proof.signature(),
                              "balance proof nonce " + std::to_string(proof.nonce()));
}

ChannelResult<Bytes> EncodeAck(std::string_view chain_id, const v1::Ack& ack) {
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckChainId(chain_id));
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckSize(ack.channel_id(), 32, "ack channel_id"));
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckSize(ack.tips_root(), 32, "ack tips_root"));
  ByteWriter w;
  w.Str8(chain_id);
  w.Raw(ack.channel_id());
  w.U64(ack.nonce());
  w.Raw(ack.tips_root());
  return w.Take();
}

ChannelStatus SignAck(std::string_view chain_id, v1::Ack* ack, const crypto::KeyPair& signer,
                      crypto::RandomSource& rng) {
  auto bytes = EncodeAck(chain_id, *ack);
  if (!bytes.ok()) return bytes.error();
  crypto::Signature sig = crypto::SignTagged(signer, kAckTag, *bytes, rng);
  ack->set_signature(std::string(AsStringView(sig)));
  return {};
}

ChannelStatus VerifyAck(std::string_view chain_id, const v1::Ack& ack,
                        const crypto::XOnlyPubKey& signer) {
  auto bytes = EncodeAck(chain_id, ack);
  if (!bytes.ok()) return bytes.error();
  return VerifySignatureField(signer, kAckTag, *bytes, ack.signature(),
                              "ack nonce " + std::to_string(ack.nonce()));
}

ChannelResult<Bytes> EncodeCooperativeClose(std::string_view chain_id, ByteSpan channel_id,
                                            uint64_t balance_a, uint64_t balance_b) {
  TIPD_CHANNEL_RETURN_IF_ERROR(CheckChainId(chain_id));
  if (channel_id.size() != 32) {
    return PeerError(
        ChannelRule::kMalformed,
        "close channel_id has " + std::to_string(channel_id.size()) + " bytes, expected 32");
  }
  ByteWriter w;
  w.Str8(chain_id);
  w.Raw(channel_id);
  w.U64(balance_a);
  w.U64(balance_b);
  return w.Take();
}

ChannelResult<crypto::Signature> SignCooperativeClose(std::string_view chain_id,
                                                      ByteSpan channel_id, uint64_t balance_a,
                                                      uint64_t balance_b,
                                                      const crypto::KeyPair& signer,
                                                      crypto::RandomSource& rng) {
  auto bytes = EncodeCooperativeClose(chain_id, channel_id, balance_a, balance_b);
  if (!bytes.ok()) return bytes.error();
  return crypto::SignTagged(signer, kCooperativeCloseTag, *bytes, rng);
}

ChannelStatus VerifyCooperativeClose(std::string_view chain_id, ByteSpan channel_id,
                                     uint64_t balance_a, uint64_t balance_b, ByteSpan signature,
                                     const crypto::XOnlyPubKey& signer) {
  auto bytes = EncodeCooperativeClose(chain_id, channel_id, balance_a, balance_b);
  if (!bytes.ok()) return bytes.error();
  return VerifySignatureField(signer, kCooperativeCloseTag, *bytes,
                              std::string(AsStringView(signature)), "cooperative close");
}

ChannelResult<FinalBalances> ComputeFinalBalances(uint64_t deposit_a, uint64_t deposit_b,
                                                  uint64_t transferred_a_to_b,
                                                  uint64_t transferred_b_to_a) {
  uint64_t total;
  if (!CheckedAdd(deposit_a, deposit_b, &total)) {
    return PeerError(ChannelRule::kOverflow, "deposits " + std::to_string(deposit_a) + " + " +
                                                 std::to_string(deposit_b) +
                                                 " exceed the u64 range");
  }
  // |each term| < 2^64, so three of them fit comfortably in 128 bits.
  __int128 a = static_cast<__int128>(deposit_a) - transferred_a_to_b + transferred_b_to_a;
  if (a < 0) a = 0;
  if (a > static_cast<__int128>(total)) a = total;
  FinalBalances out;
  out.balance_a = static_cast<uint64_t>(a);
  out.balance_b = total - out.balance_a;
  return out;
}

}  // namespace tipd::channel
