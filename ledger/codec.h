// Canonical signed layouts of the ledger: transactions, block headers, the
// genesis commitment, the transaction Merkle root and the state-diff hash.
//
// Like channel/codec.h, these bytes are what gets hashed and signed; protobuf
// only carries the values. Balance proofs inside transactions are encoded with
// channel/codec.h, so a proof means the same bytes on the ledger as on the wire.
// Byte tables: docs/ledger.md.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "crypto/crypto.h"
#include "tipd/ledger.pb.h"
#include "util/bytes.h"
#include "util/status.h"

namespace tipd::ledger {

using AccountId = crypto::XOnlyPubKey;
using ChannelId = Hash32;

inline constexpr std::string_view kTxTag = "tipd/tx/v1";
inline constexpr std::string_view kChannelOpenTag = "tipd/channel-open/v1";
inline constexpr std::string_view kChannelIdTag = "tipd/channel-id/v1";
inline constexpr std::string_view kBlockTag = "tipd/block/v1";
inline constexpr std::string_view kGenesisTag = "tipd/genesis/v1";
inline constexpr std::string_view kMerkleTag = "tipd/merkle/v1";
inline constexpr std::string_view kStateTag = "tipd/state/v1";

// Transaction kinds, as the one-byte discriminator of the canonical layout.
enum class TxKind : uint8_t {
  kTransfer = 1,
  kChannelOpen = 2,
  kDeposit = 3,
  kCooperativeClose = 4,
  kUnilateralClose = 5,
  kUpdateProof = 6,
  kSettle = 7,
};

// Str8(chain_id) || signer[32] || U64 nonce || U64 fee || U8 kind || body.
// kInvalidArgument if a field has the wrong size or the body is unset.
Result<Bytes> EncodeTransaction(const v1::Transaction& tx);
// The transaction id is the digest its signer signs: TaggedHash(kTxTag, bytes).
Result<Hash32> TransactionId(const v1::Transaction& tx);
// Signs `tx` in place with `signer` (which must be tx.signer()).
Status SignTransaction(v1::Transaction* tx, const crypto::KeyPair& signer,
                       crypto::RandomSource& rng);

// What party B signs to agree to an open (party A signs the whole transaction):
// Str8(chain_id) || party_a || party_b || U64 deposit_a || U64 deposit_b ||
// U64 settle_timeout || U64 nonce_a || U64 nonce_b.
Result<Bytes> EncodeChannelOpenAgreement(std::string_view chain_id, const v1::ChannelOpenTx& open,
                                         uint64_t nonce_a);
// channel_id = TaggedHash(kChannelIdTag, Str8(chain_id) || party_a || party_b || U64 nonce_a):
// unique because party A's account nonce is consumed by the open.
ChannelId DeriveChannelId(std::string_view chain_id, ByteSpan party_a, ByteSpan party_b,
                          uint64_t nonce_a);

// Str8(chain_id) || U64 height || prev_hash[32] || U64 time_ms || tx_root[32] ||
// state_hash[32] || U32 tx_count.
Result<Bytes> EncodeBlockHeader(const v1::BlockHeader& header);
// Block hash = TaggedHash(kBlockTag, header bytes): also the digest the
// sequencer signs.
Result<Hash32> BlockHash(const v1::BlockHeader& header);

// Merkle root over transaction ids: leaves are the ids, each inner node is
// TaggedHash(kMerkleTag, left || right), an odd node is carried up unchanged
// (no duplication, so no two transaction lists share a root). Empty = zeros.
Hash32 MerkleRoot(const std::vector<Hash32>& leaves);

// The hash of the genesis parameters, used as block 0's hash.
Result<Hash32> GenesisHash(const v1::GenesisParams& genesis);

}  // namespace tipd::ledger
