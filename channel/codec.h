// The one canonical codec for every signed channel object.
//
// Signatures are never computed over protobuf bytes. Each signed object has a
// fixed layout written with util's ByteWriter (big-endian fixed-width
// integers, Str8 = u8 length + bytes, Str16 = u16 length + bytes), a tag, and
// a BIP-340 signature over TaggedHash(tag, bytes). docs/protocol.md has the
// byte tables and golden vectors; tests/unit/channel/codec_test.cc checks them.
//
// The codec works on the proto types (tipd::v1::Tip, BalanceProof, Ack) so the
// ledger verifies proofs with exactly the code the channel signs them with.
// Every function validates the sizes it needs and returns a ChannelError
// (kMalformed, or the tip rule broken) rather than encoding something that
// has no canonical form.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "channel/rules.h"
#include "crypto/crypto.h"
#include "tipd/channel.pb.h"
#include "util/bytes.h"

namespace tipd::channel {

using ChannelId = Hash32;

inline constexpr std::string_view kBalanceProofTag = "tipd/balance-proof/v1";
inline constexpr std::string_view kAckTag = "tipd/ack/v1";
inline constexpr std::string_view kCooperativeCloseTag = "tipd/cooperative-close/v1";

inline constexpr size_t kMaxChainIdBytes = 64;
inline constexpr size_t kMaxMessageBytes = 1000;
inline constexpr size_t kMaxMetadataEntries = 8;
inline constexpr size_t kMaxMetadataKeyBytes = 32;
inline constexpr size_t kMaxMetadataValueBytes = 256;

// Suggested metadata keys (bLIP-10 boostagram fields).
inline constexpr std::string_view kMetaAppName = "app_name";
inline constexpr std::string_view kMetaSenderName = "sender_name";
inline constexpr std::string_view kMetaFeed = "feed";
inline constexpr std::string_view kMetaItem = "item";
inline constexpr std::string_view kMetaAction = "action";
inline constexpr std::string_view kMetaTs = "ts";

// 1..64 bytes of [a-z0-9._-].
bool IsValidChainId(std::string_view chain_id);
// 1..32 bytes of [a-z0-9_].
bool IsValidMetadataKey(std::string_view key);

// ---- Tips ----
// Checks the content rules of one tip (amount >= 1, message, metadata; not
// the index, which depends on the channel). Returns the first rule broken.
ChannelStatus CheckTipContent(const v1::Tip& tip);
// U64 index || U64 amount || U64 created_at_ms || Str16(message) ||
// U8 metadata_count || per entry Str8(key) || Str16(value).
// Fails with the tip rule broken if the tip has no canonical form.
ChannelResult<Bytes> EncodeTip(const v1::Tip& tip);
// Inverse of EncodeTip; rejects trailing bytes and any tip-content rule.
ChannelResult<v1::Tip> DecodeTip(ByteSpan bytes);
// SHA256(EncodeTip(tip)), plain (untagged).
ChannelResult<Hash32> TipHash(const v1::Tip& tip);
// root_n = SHA256(root_{n-1} || tip_hash_n); root_0 is 32 zero bytes.
Hash32 ChainTipsRoot(const Hash32& previous_root, const Hash32& tip_hash);

// ---- Balance proofs ----
// Str8(chain_id) || channel_id[32] || U64 nonce || U64 transferred ||
// U64 locked || locks_root[32] || tips_root[32]. The signature field is not
// part of the bytes. Fails with kMalformed on a bad chain id or field size.
ChannelResult<Bytes> EncodeBalanceProof(const v1::BalanceProof& proof);
// Inverse of EncodeBalanceProof (signature left empty).
ChannelResult<v1::BalanceProof> DecodeBalanceProof(ByteSpan bytes);
// Sets proof->signature to the signer's BIP-340 signature.
ChannelStatus SignBalanceProof(v1::BalanceProof* proof, const crypto::KeyPair& signer,
                               crypto::RandomSource& rng);
// kBadSignature unless `signer` signed exactly these fields.
ChannelStatus VerifyBalanceProof(const v1::BalanceProof& proof, const crypto::XOnlyPubKey& signer);

// ---- Acks (receipts) ----
// Str8(chain_id) || channel_id[32] || U64 nonce || tips_root[32]. The chain id
// is not carried by the Ack message; it is the channel's.
ChannelResult<Bytes> EncodeAck(std::string_view chain_id, const v1::Ack& ack);
ChannelStatus SignAck(std::string_view chain_id, v1::Ack* ack, const crypto::KeyPair& signer,
                      crypto::RandomSource& rng);
ChannelStatus VerifyAck(std::string_view chain_id, const v1::Ack& ack,
                        const crypto::XOnlyPubKey& signer);

// ---- Cooperative close ----
// Str8(chain_id) || channel_id[32] || U64 balance_a || U64 balance_b.
ChannelResult<Bytes> EncodeCooperativeClose(std::string_view chain_id, ByteSpan channel_id,
                                            uint64_t balance_a, uint64_t balance_b);
ChannelResult<crypto::Signature> SignCooperativeClose(std::string_view chain_id,
                                                      ByteSpan channel_id, uint64_t balance_a,
                                                      uint64_t balance_b,
                                                      const crypto::KeyPair& signer,
                                                      crypto::RandomSource& rng);
ChannelStatus VerifyCooperativeClose(std::string_view chain_id, ByteSpan channel_id,
                                     uint64_t balance_a, uint64_t balance_b, ByteSpan signature,
                                     const crypto::XOnlyPubKey& signer);

// ---- Final balances ----
struct FinalBalances {
  uint64_t balance_a = 0;
  uint64_t balance_b = 0;
  bool operator==(const FinalBalances&) const = default;
};
// A gets dA - T(A->B) + T(B->A) clamped to [0, dA + dB]; B gets the rest.
// kOverflow if dA + dB does not fit in u64 (deposits include top-ups).
ChannelResult<FinalBalances> ComputeFinalBalances(uint64_t deposit_a, uint64_t deposit_b,
                                                  uint64_t transferred_a_to_b,
                                                  uint64_t transferred_b_to_a);

}  // namespace tipd::channel
