#include "ledger/codec.h"

#include "channel/codec.h"

namespace tipd::ledger {
namespace {

bool Is32(const std::string& s) { return s.size() == 32; }

Status WriteProof(ByteWriter& w, const v1::BalanceProof& proof, bool present) {
  w.U8(present ? 1 : 0);
  if (!present) return Status::Ok();
  auto bytes = channel::EncodeBalanceProof(proof);
  if (!bytes.ok()) return Status::InvalidArgument("balance proof: " + bytes.error().ToString());
  if (proof.signature().size() != 64) {
    return Status::InvalidArgument("balance proof signature must be 64 bytes");
  }
  w.U16(static_cast<uint16_t>(bytes->size()));
  w.Raw(*bytes);
  w.Raw(proof.signature());
  return Status::Ok();
}

}  // namespace

Result<Bytes> EncodeTransaction(const v1::Transaction& tx) {
  if (tx.chain_id().empty() || tx.chain_id().size() > 64) {
    return Status::InvalidArgument("chain_id must be 1..64 bytes");
  }
  if (!Is32(tx.signer())) return Status::InvalidArgument("signer must be 32 bytes");
  ByteWriter w;
  w.Str8(tx.chain_id());
  w.Raw(tx.signer());
  w.U64(tx.nonce());
  w.U64(tx.fee());
  switch (tx.body_case()) {
    case v1::Transaction::kTransfer: {
      const auto& t = tx.transfer();
      if (!Is32(t.to())) return Status::InvalidArgument("transfer.to must be 32 bytes");
      w.U8(static_cast<uint8_t>(TxKind::kTransfer));
      w.Raw(t.to());
      w.U64(t.amount());
      break;
    }
    case v1::Transaction::kChannelOpen: {
      const auto& o = tx.channel_open();
      if (!Is32(o.party_a()) || !Is32(o.party_b())) {
        return Status::InvalidArgument("channel_open parties must be 32 bytes");
      }
      if (o.signature_b().size() != 64) {
        return Status::InvalidArgument("channel_open.signature_b must be 64 bytes");
      }
      w.U8(static_cast<uint8_t>(TxKind::kChannelOpen));
      w.Raw(o.party_a());
      w.Raw(o.party_b());
      w.U64(o.deposit_a());
      w.U64(o.deposit_b());
      w.U64(o.settle_timeout());
      w.U64(o.nonce_b());
      w.Raw(o.signature_b());
      break;
    }
    case v1::Transaction::kDeposit: {
      const auto& d = tx.deposit();
      if (!Is32(d.channel_id())) return Status::InvalidArgument("channel_id must be 32 bytes");
      w.U8(static_cast<uint8_t>(TxKind::kDeposit));
      w.Raw(d.channel_id());
      w.U64(d.amount());
      break;
    }
    case v1::Transaction::kCooperativeClose: {
      const auto& c = tx.cooperative_close().close();
      if (!Is32(c.channel_id())) return Status::InvalidArgument("channel_id must be 32 bytes");
      if (c.signature_a().size() != 64 || c.signature_b().size() != 64) {
        return Status::InvalidArgument("cooperative close signatures must be 64 bytes");
      }
      if (c.chain_id() != tx.chain_id()) {
        return Status::InvalidArgument("cooperative close chain_id differs from the tx chain_id");
      }
      w.U8(static_cast<uint8_t>(TxKind::kCooperativeClose));
      w.Raw(c.channel_id());
      w.U64(c.balance_a());
      w.U64(c.balance_b());
      w.Raw(c.signature_a());
      w.Raw(c.signature_b());
      break;
    }
    case v1::Transaction::kUnilateralClose: {
      const auto& u = tx.unilateral_close();
      if (!Is32(u.channel_id())) return Status::InvalidArgument("channel_id must be 32 bytes");
      w.U8(static_cast<uint8_t>(TxKind::kUnilateralClose));
      w.Raw(u.channel_id());
      TIPD_RETURN_IF_ERROR(WriteProof(w, u.partner_proof(), u.has_partner_proof()));
      break;
    }
    case v1::Transaction::kUpdateProof: {
      const auto& u = tx.update_proof();
      if (!Is32(u.channel_id())) return Status::InvalidArgument("channel_id must be 32 bytes");
      if (!u.has_proof()) return Status::InvalidArgument("update_proof carries no proof");
      w.U8(static_cast<uint8_t>(TxKind::kUpdateProof));
      w.Raw(u.channel_id());
      TIPD_RETURN_IF_ERROR(WriteProof(w, u.proof(), true));
      break;
    }
    case v1::Transaction::kSettle: {
      const auto& s = tx.settle();
      if (!Is32(s.channel_id())) return Status::InvalidArgument("channel_id must be 32 bytes");
      w.U8(static_cast<uint8_t>(TxKind::kSettle));
      w.Raw(s.channel_id());
      break;
    }
    case v1::Transaction::BODY_NOT_SET:
      return Status::InvalidArgument("transaction has no body");
  }
  return w.Take();
}

Result<Hash32> TransactionId(const v1::Transaction& tx) {
  TIPD_ASSIGN_OR_RETURN(Bytes bytes, EncodeTransaction(tx));
  return crypto::TaggedHash(kTxTag, bytes);
}

Status SignTransaction(v1::Transaction* tx, const crypto::KeyPair& signer,
                       crypto::RandomSource& rng) {
  auto xonly = signer.XOnly();
  if (tx->signer() != AsStringView(xonly)) {
    return Status::InvalidArgument("transaction signer is not the signing key");
  }
  TIPD_ASSIGN_OR_RETURN(Bytes bytes, EncodeTransaction(*tx));
  crypto::Signature sig = crypto::SignTagged(signer, kTxTag, bytes, rng);
  tx->set_signature(std::string(AsStringView(sig)));
  return Status::Ok();
}

Result<Bytes> EncodeChannelOpenAgreement(std::string_view chain_id, const v1::ChannelOpenTx& open,
                                         uint64_t nonce_a) {
  if (chain_id.empty() || chain_id.size() > 64) {
    return Status::InvalidArgument("chain_id must be 1..64 bytes");
  }
  if (!Is32(open.party_a()) || !Is32(open.party_b())) {
    return Status::InvalidArgument("channel_open parties must be 32 bytes");
  }
  ByteWriter w;
  w.Str8(chain_id);
  w.Raw(open.party_a());
  w.Raw(open.party_b());
  w.U64(open.deposit_a());
  w.U64(open.deposit_b());
  w.U64(open.settle_timeout());
  w.U64(nonce_a);
  w.U64(open.nonce_b());
  return w.Take();
}

ChannelId DeriveChannelId(std::string_view chain_id, ByteSpan party_a, ByteSpan party_b,
                          uint64_t nonce_a) {
  ByteWriter w;
  w.Str8(chain_id);
  w.Raw(party_a);
  w.Raw(party_b);
  w.U64(nonce_a);
  return crypto::TaggedHash(kChannelIdTag, w.bytes());
}

Result<Bytes> EncodeBlockHeader(const v1::BlockHeader& h) {
  if (h.chain_id().empty() || h.chain_id().size() > 64) {
    return Status::InvalidArgument("chain_id must be 1..64 bytes");
  }
  if (!Is32(h.prev_hash()) || !Is32(h.tx_root()) || !Is32(h.state_hash())) {
    return Status::InvalidArgument("block header hashes must be 32 bytes");
  }
  ByteWriter w;
  w.Str8(h.chain_id());
  w.U64(h.height());
  w.Raw(h.prev_hash());
  w.U64(h.time_ms());
  w.Raw(h.tx_root());
  w.Raw(h.state_hash());
  w.U32(h.tx_count());
  return w.Take();
}

Result<Hash32> BlockHash(const v1::BlockHeader& header) {
  TIPD_ASSIGN_OR_RETURN(Bytes bytes, EncodeBlockHeader(header));
  return crypto::TaggedHash(kBlockTag, bytes);
}

Hash32 MerkleRoot(const std::vector<Hash32>& leaves) {
  if (leaves.empty()) return Hash32{};
  std::vector<Hash32> level = leaves;
  while (level.size() > 1) {
    std::vector<Hash32> next;
    next.reserve((level.size() + 1) / 2);
    for (size_t i = 0; i + 1 < level.size(); i += 2) {
      uint8_t buf[64];
      std::copy(level[i].begin(), level[i].end(), buf);
      std::copy(level[i + 1].begin(), level[i + 1].end(), buf + 32);
      next.push_back(crypto::TaggedHash(kMerkleTag, ByteSpan(buf, 64)));
    }
    if (level.size() % 2 == 1) next.push_back(level.back());
    level = std::move(next);
  }
  return level[0];
}

Result<Hash32> GenesisHash(const v1::GenesisParams& g) {
  if (g.chain_id().empty() || g.chain_id().size() > 64) {
    return Status::InvalidArgument("chain_id must be 1..64 bytes");
  }
  if (!Is32(g.sequencer_key())) return Status::InvalidArgument("sequencer_key must be 32 bytes");
  ByteWriter w;
  w.Str8(g.chain_id());
  w.Raw(g.sequencer_key());
  w.U32(static_cast<uint32_t>(g.allocations_size()));
  for (const auto& a : g.allocations()) {
    if (!Is32(a.account())) return Status::InvalidArgument("allocation account must be 32 bytes");
    w.Raw(a.account());
    w.U64(a.amount());
  }
  w.U64(g.fee_per_tx());
  w.U64(g.min_settle_timeout());
  w.U64(g.max_settle_timeout());
  w.U64(g.block_interval_ms());
  w.U64(g.genesis_time_ms());
  return crypto::TaggedHash(kGenesisTag, w.bytes());
}

}  // namespace tipd::ledger
