#!/usr/bin/env python3
"""Independent test vectors for tipd's consensus and channel encodings.

Written from the documentation alone (docs/ledger.md, docs/protocol.md,
docs/crypto.md), not from the C++ code, with nothing but the Python standard
library: SHA-256 from hashlib, and a small secp256k1 / BIP-340 signer written
from the text of BIP-340. The C++ tests (tests/unit/ledger/vectors_test.cc,
tests/unit/channel/vectors_test.cc) check that the code produces exactly the
bytes, ids, hashes and signatures written here.

    python3 tests/vectors/gen_vectors.py          # (re)write the JSON files
    python3 tests/vectors/gen_vectors.py --check  # fail if they differ

See tests/vectors/README.md.
"""

import argparse
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# secp256k1 and BIP-340 (from the BIP text: "Default Signing" / "Verification")
# ---------------------------------------------------------------------------

P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)


def point_add(p1, p2):
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    x1, y1 = p1
    x2, y2 = p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        lam = 3 * x1 * x1 * pow(2 * y1, P - 2, P) % P
    else:
        lam = (y2 - y1) * pow(x2 - x1, P - 2, P) % P
    x3 = (lam * lam - x1 - x2) % P
    return (x3, (lam * (x1 - x3) - y1) % P)


def point_mul(pt, k):
    result = None
    addend = pt
    while k:
        if k & 1:
            result = point_add(result, addend)
        addend = point_add(addend, addend)
        k >>= 1
    return result


def int_from(b):
    return int.from_bytes(b, "big")


def bytes32(x):
    return x.to_bytes(32, "big")


def sha256(b):
    return hashlib.sha256(b).digest()


def tagged_hash(tag, msg):
    t = sha256(tag.encode())
    return sha256(t + t + msg)


def lift_x(x):
    if x >= P:
        return None
    c = (pow(x, 3, P) + 7) % P
    y = pow(c, (P + 1) // 4, P)
    if y * y % P != c:
        return None
    return (x, y if y % 2 == 0 else P - y)


def xonly(secret):
    d = int_from(secret)
    assert 0 < d < N
    return bytes32(point_mul(G, d)[0])


def bip340_sign(secret, msg, aux):
    d0 = int_from(secret)
    assert 0 < d0 < N and len(aux) == 32
    pt = point_mul(G, d0)
    d = d0 if pt[1] % 2 == 0 else N - d0
    t = bytes32(d ^ int_from(tagged_hash("BIP0340/aux", aux)))
    k0 = int_from(tagged_hash("BIP0340/nonce", t + bytes32(pt[0]) + msg)) % N
    assert k0 != 0
    r = point_mul(G, k0)
    k = k0 if r[1] % 2 == 0 else N - k0
    e = int_from(tagged_hash("BIP0340/challenge", bytes32(r[0]) + bytes32(pt[0]) + msg)) % N
    sig = bytes32(r[0]) + bytes32((k + e * d) % N)
    assert bip340_verify(bytes32(pt[0]), msg, sig)
    return sig


def bip340_verify(pub, msg, sig):
    pt = lift_x(int_from(pub))
    r, s = int_from(sig[:32]), int_from(sig[32:])
    if pt is None or r >= P or s >= N:
        return False
    e = int_from(tagged_hash("BIP0340/challenge", sig[:32] + pub + msg)) % N
    big_r = point_add(point_mul(G, s), point_mul(pt, N - e))
    return big_r is not None and big_r[1] % 2 == 0 and big_r[0] == r


AUX = bytes(32)  # every signature here uses 32 zero aux bytes: deterministic


def sign_tagged(secret, tag, data):
    """tipd signature (docs/crypto.md): BIP340Sign(key, TaggedHash(tag, bytes), aux)."""
    return bip340_sign(secret, tagged_hash(tag, data), AUX)


# ---------------------------------------------------------------------------
# Canonical encoding primitives (docs/protocol.md, "Conventions")
# ---------------------------------------------------------------------------


def u8(v):
    return struct.pack(">B", v)


def u16(v):
    return struct.pack(">H", v)


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def str8(s):
    b = s.encode() if isinstance(s, str) else s
    assert len(b) < 256
    return u8(len(b)) + b


def str16(s):
    b = s.encode() if isinstance(s, str) else s
    assert len(b) < 65536
    return u16(len(b)) + b


def hx(b):
    return b.hex()


ZERO32 = bytes(32)

# ---------------------------------------------------------------------------
# Channel objects (docs/protocol.md)
# ---------------------------------------------------------------------------

TAG_PROOF = "tipd/balance-proof/v1"
TAG_ACK = "tipd/ack/v1"
TAG_COOP = "tipd/cooperative-close/v1"


def tip_bytes(tip):
    out = u64(tip["index"]) + u64(tip["amount"]) + u64(tip["created_at_ms"])
    out += str16(tip["message"])
    out += u8(len(tip["metadata"]))
    for key, value in tip["metadata"]:
        out += str8(key) + str16(value)
    return out


def chain_root(prev, tip_hash):
    return sha256(prev + tip_hash)


def proof_bytes(p):
    assert p["locked"] == 0 and p["locks_root"] == ZERO32
    return (
        str8(p["chain_id"])
        + p["channel_id"]
        + u64(p["nonce"])
        + u64(p["transferred"])
        + u64(p["locked"])
        + p["locks_root"]
        + p["tips_root"]
    )


def ack_bytes(chain_id, channel_id, nonce, tips_root):
    return str8(chain_id) + channel_id + u64(nonce) + tips_root


def coop_bytes(chain_id, channel_id, balance_a, balance_b):
    return str8(chain_id) + channel_id + u64(balance_a) + u64(balance_b)


def final_balances(da, db, t_ab, t_ba):
    total = da + db
    assert total < 2**64
    fa = min(max(da - t_ab + t_ba, 0), total)
    return fa, total - fa


def make_proof(secret, chain_id, channel_id, nonce, transferred, tips_root):
    p = {
        "chain_id": chain_id,
        "channel_id": channel_id,
        "nonce": nonce,
        "transferred": transferred,
        "locked": 0,
        "locks_root": ZERO32,
        "tips_root": tips_root,
    }
    p["bytes"] = proof_bytes(p)
    p["signature"] = sign_tagged(secret, TAG_PROOF, p["bytes"])
    p["signer"] = xonly(secret)
    return p


def proof_json(p):
    return {
        "chain_id": p["chain_id"],
        "channel_id": hx(p["channel_id"]),
        "nonce": str(p["nonce"]),
        "transferred": str(p["transferred"]),
        "locked": str(p["locked"]),
        "locks_root": hx(p["locks_root"]),
        "tips_root": hx(p["tips_root"]),
        "bytes": hx(p["bytes"]),
        "signature": hx(p["signature"]),
        "signer": hx(p["signer"]),
    }


SK_A = bytes([1]) * 32
SK_B = bytes([2]) * 32
SK_C = bytes([3]) * 32
SK_SEQ = bytes([4]) * 32
SK_D = bytes([5]) * 32


def channel_vectors():
    chain_id = "tipd-test"
    channel_id = bytes(range(32))
    pk_a, pk_b = xonly(SK_A), xonly(SK_B)
    tips = [
        {
            "index": 1,
            "amount": 1000,
            "created_at_ms": 1700000000000,
            "message": "Great episode! \u26a1",
            "metadata": [("app_name", "podverse"), ("sender_name", "alice")],
        },
        {"index": 2, "amount": 21, "created_at_ms": 1700000000500, "message": "gm", "metadata": []},
    ]
    root = ZERO32
    tips_out = []
    for tip in tips:
        enc = tip_bytes(tip)
        th = sha256(enc)
        root = chain_root(root, th)
        tips_out.append(
            {
                "index": str(tip["index"]),
                "amount": str(tip["amount"]),
                "created_at_ms": str(tip["created_at_ms"]),
                "message": tip["message"],
                "metadata": [{"key": k, "value": v} for k, v in tip["metadata"]],
                "bytes": hx(enc),
                "tip_hash": hx(th),
                "root_after": hx(root),
            }
        )
    transferred = sum(t["amount"] for t in tips)
    proof = make_proof(SK_A, chain_id, channel_id, 1, transferred, root)
    ack = ack_bytes(chain_id, channel_id, 1, root)
    ack_sig = sign_tagged(SK_B, TAG_ACK, ack)
    da, db = 100000, 50000
    bal_a, bal_b = final_balances(da, db, transferred, 0)
    close = coop_bytes(chain_id, channel_id, bal_a, bal_b)
    return {
        "comment": "Generated by tests/vectors/gen_vectors.py from docs/protocol.md; do not edit.",
        "aux": hx(AUX),
        "chain_id": chain_id,
        "channel_id": hx(channel_id),
        "keys": {
            "a": {"secret": hx(SK_A), "xonly": hx(pk_a)},
            "b": {"secret": hx(SK_B), "xonly": hx(pk_b)},
        },
        "tips": tips_out,
        "balance_proof": proof_json(proof),
        "ack": {
            "channel_id": hx(channel_id),
            "nonce": "1",
            "tips_root": hx(root),
            "bytes": hx(ack),
            "signature": hx(ack_sig),
            "signer": hx(pk_b),
        },
        "cooperative_close": {
            "deposit_a": str(da),
            "deposit_b": str(db),
            "transferred_a_to_b": str(transferred),
            "transferred_b_to_a": "0",
            "balance_a": str(bal_a),
            "balance_b": str(bal_b),
            "bytes": hx(close),
            "signature_a": hx(sign_tagged(SK_A, TAG_COOP, close)),
            "signature_b": hx(sign_tagged(SK_B, TAG_COOP, close)),
        },
    }


# ---------------------------------------------------------------------------
# Ledger (docs/ledger.md)
# ---------------------------------------------------------------------------

TAG_TX = "tipd/tx/v1"
TAG_OPEN = "tipd/channel-open/v1"
TAG_CHANNEL_ID = "tipd/channel-id/v1"
TAG_BLOCK = "tipd/block/v1"
TAG_GENESIS = "tipd/genesis/v1"
TAG_MERKLE = "tipd/merkle/v1"
TAG_STATE = "tipd/state/v1"

TRANSFER, OPEN, DEPOSIT, COOP_CLOSE, UNI_CLOSE, UPDATE_PROOF, SETTLE = range(1, 8)
KIND_NAMES = {
    TRANSFER: "transfer",
    OPEN: "channel_open",
    DEPOSIT: "deposit",
    COOP_CLOSE: "cooperative_close",
    UNI_CLOSE: "unilateral_close",
    UPDATE_PROOF: "update_proof",
    SETTLE: "settle",
}
OPEN_PHASE, CLOSING, SETTLED = 1, 2, 3


def genesis_bytes(g):
    out = str8(g["chain_id"]) + g["sequencer_key"] + u32(len(g["allocations"]))
    for account, amount in g["allocations"]:
        out += account + u64(amount)
    for f in ("fee_per_tx", "min_settle_timeout", "max_settle_timeout", "block_interval_ms",
              "genesis_time_ms"):
        out += u64(g[f])
    return out


def channel_id_of(chain_id, party_a, party_b, nonce_a):
    return tagged_hash(TAG_CHANNEL_ID, str8(chain_id) + party_a + party_b + u64(nonce_a))


def open_agreement_bytes(chain_id, body, nonce_a):
    return (
        str8(chain_id)
        + body["party_a"]
        + body["party_b"]
        + u64(body["deposit_a"])
        + u64(body["deposit_b"])
        + u64(body["settle_timeout"])
        + u64(nonce_a)
        + u64(body["nonce_b"])
    )


def embedded_proof(p):
    return u16(len(p["bytes"])) + p["bytes"] + p["signature"]


def body_bytes(kind, b):
    if kind == TRANSFER:
        return b["to"] + u64(b["amount"])
    if kind == OPEN:
        return (
            b["party_a"]
            + b["party_b"]
            + u64(b["deposit_a"])
            + u64(b["deposit_b"])
            + u64(b["settle_timeout"])
            + u64(b["nonce_b"])
            + b["sig_b"]
        )
    if kind == DEPOSIT:
        return b["channel_id"] + u64(b["amount"])
    if kind == COOP_CLOSE:
        return b["channel_id"] + u64(b["balance_a"]) + u64(b["balance_b"]) + b["sig_a"] + b["sig_b"]
    if kind == UNI_CLOSE:
        if b["proof"] is None:
            return b["channel_id"] + u8(0)
        return b["channel_id"] + u8(1) + embedded_proof(b["proof"])
    if kind == UPDATE_PROOF:
        return b["channel_id"] + u8(1) + embedded_proof(b["proof"])
    if kind == SETTLE:
        return b["channel_id"]
    raise ValueError(kind)


def tx_bytes(tx):
    return (
        str8(tx["chain_id"])
        + tx["signer"]
        + u64(tx["nonce"])
        + u64(tx["fee"])
        + u8(tx["kind"])
        + body_bytes(tx["kind"], tx["body"])
    )


def merkle_root(leaves):
    if not leaves:
        return ZERO32
    level = list(leaves)
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            nxt.append(tagged_hash(TAG_MERKLE, level[i] + level[i + 1]))
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def header_bytes(h):
    return (
        str8(h["chain_id"])
        + u64(h["height"])
        + h["prev_hash"]
        + u64(h["time_ms"])
        + h["tx_root"]
        + h["state_hash"]
        + u32(h["tx_count"])
    )


class Ledger:
    """The ledger state as docs/ledger.md describes it: only what the vector
    sequence exercises, every rule it relies on asserted."""

    def __init__(self, genesis):
        self.g = genesis
        self.accounts = {}  # id -> [balance, nonce]
        for account, amount in genesis["allocations"]:
            self.accounts[account] = [amount, 0]
        self.channels = {}
        self.fees = 0
        self.dirty_accounts = set()
        self.dirty_channels = set()

    def account(self, key):
        return self.accounts.get(key)

    def charge(self, key, amount):
        acct = self.accounts[key]
        assert acct[0] >= amount, "insufficient funds"
        acct[0] -= amount
        self.dirty_accounts.add(key)

    def credit(self, key, amount):
        acct = self.accounts.setdefault(key, [0, 0])
        acct[0] += amount
        self.dirty_accounts.add(key)

    def final_balances(self, ch):
        return final_balances(
            ch["deposit_a"], ch["deposit_b"], ch["proof_ab"][1], ch["proof_ba"][1]
        )

    def escrow(self, ch):
        if ch["phase"] == SETTLED:
            return 0
        return ch["deposit_a"] + ch["deposit_b"] - ch["fee_debt_a"] - ch["fee_debt_b"]

    def apply(self, tx, height):
        g = self.g
        assert tx["chain_id"] == g["chain_id"]
        assert tx["fee"] >= g["fee_per_tx"]
        signer = tx["signer"]
        acct = self.accounts.get(signer)
        assert tx["nonce"] == (acct[1] if acct else 0), "bad nonce"
        kind, b = tx["kind"], tx["body"]
        fee = tx["fee"]
        if kind == TRANSFER:
            assert b["amount"] >= 1 and b["to"] != signer
            self.charge(signer, b["amount"] + fee)
            self.credit(b["to"], b["amount"])
        elif kind == OPEN:
            assert signer == b["party_a"] and b["party_a"] != b["party_b"]
            assert g["min_settle_timeout"] <= b["settle_timeout"] <= g["max_settle_timeout"]
            assert b["nonce_b"] == 0
            agreement = open_agreement_bytes(g["chain_id"], b, tx["nonce"])
            assert bip340_verify(b["party_b"], tagged_hash(TAG_OPEN, agreement), b["sig_b"])
            cid = channel_id_of(g["chain_id"], b["party_a"], b["party_b"], tx["nonce"])
            assert cid not in self.channels
            self.charge(signer, b["deposit_a"] + fee)
            # B's account is written (created, balance 0 and nonce 0, if B had
            # none); its nonce is neither needed nor consumed.
            self.accounts.setdefault(b["party_b"], [0, 0])
            self.charge(b["party_b"], b["deposit_b"])
            self.channels[cid] = {
                "id": cid,
                "party_a": b["party_a"],
                "party_b": b["party_b"],
                "deposit_a": b["deposit_a"],
                "deposit_b": b["deposit_b"],
                "settle_timeout": b["settle_timeout"],
                "phase": OPEN_PHASE,
                "opened_height": height,
                "close_height": 0,
                "closer": ZERO32,
                "proof_ab": (0, 0, ZERO32),
                "proof_ba": (0, 0, ZERO32),
                "payout_a": 0,
                "payout_b": 0,
                "fee_debt_a": 0,
                "fee_debt_b": 0,
            }
            self.dirty_channels.add(cid)
        elif kind == DEPOSIT:
            ch = self.channels[b["channel_id"]]
            assert ch["phase"] == OPEN_PHASE and b["amount"] >= 1
            self.charge(signer, b["amount"] + fee)
            if signer == ch["party_a"]:
                ch["deposit_a"] += b["amount"]
            else:
                assert signer == ch["party_b"]
                ch["deposit_b"] += b["amount"]
            self.dirty_channels.add(ch["id"])
        elif kind == COOP_CLOSE:
            ch = self.channels[b["channel_id"]]
            assert ch["phase"] != SETTLED and signer in (ch["party_a"], ch["party_b"])
            assert b["balance_a"] + b["balance_b"] == self.escrow(ch)
            msg = coop_bytes(g["chain_id"], ch["id"], b["balance_a"], b["balance_b"])
            assert bip340_verify(ch["party_a"], tagged_hash(TAG_COOP, msg), b["sig_a"])
            assert bip340_verify(ch["party_b"], tagged_hash(TAG_COOP, msg), b["sig_b"])
            # "pays out at once"; the signer pays the fee from its balance
            # after its payout.
            self.credit(ch["party_a"], b["balance_a"])
            self.credit(ch["party_b"], b["balance_b"])
            self.charge(signer, fee)
            if ch["phase"] == OPEN_PHASE:  # a CLOSING channel keeps its closer
                ch["close_height"] = height
                ch["closer"] = signer
            ch["phase"] = SETTLED
            ch["payout_a"], ch["payout_b"] = b["balance_a"], b["balance_b"]
            self.dirty_channels.add(ch["id"])
        elif kind == UNI_CLOSE:
            ch = self.channels[b["channel_id"]]
            assert ch["phase"] == OPEN_PHASE and signer in (ch["party_a"], ch["party_b"])
            self.charge(signer, fee)
            if b["proof"] is not None:
                self.take_proof(ch, b["proof"], partner_of(ch, signer))
            ch["phase"] = CLOSING
            ch["close_height"] = height
            ch["closer"] = signer
            self.dirty_channels.add(ch["id"])
        elif kind == UPDATE_PROOF:
            ch = self.channels[b["channel_id"]]
            assert ch["phase"] == CLOSING and height <= ch["close_height"] + ch["settle_timeout"]
            # A proof X->Y signed by X is accepted only from Y.
            payer = partner_of(ch, signer)
            self.take_proof(ch, b["proof"], payer)
            self.pay_fee(ch, signer, fee, acct)
            self.dirty_channels.add(ch["id"])
        elif kind == SETTLE:
            ch = self.channels[b["channel_id"]]
            assert ch["phase"] == CLOSING and height > ch["close_height"] + ch["settle_timeout"]
            self.pay_fee(ch, signer, fee, acct)
            fa, _ = self.final_balances(ch)
            escrow = self.escrow(ch)
            pay_a = min(max(fa - ch["fee_debt_a"], 0), escrow)
            pay_b = escrow - pay_a
            self.credit(ch["party_a"], pay_a)
            self.credit(ch["party_b"], pay_b)
            ch["phase"] = SETTLED
            ch["payout_a"], ch["payout_b"] = pay_a, pay_b
            self.dirty_channels.add(ch["id"])
        else:
            raise ValueError(kind)
        self.fees += fee
        acct = self.accounts.setdefault(signer, [0, 0])
        acct[1] += 1
        self.dirty_accounts.add(signer)
        self.check_supply()

    def take_proof(self, ch, p, payer):
        assert p["chain_id"] == self.g["chain_id"] and p["channel_id"] == ch["id"]
        assert bip340_verify(payer, tagged_hash(TAG_PROOF, proof_bytes(p)), p["signature"])
        key = "proof_ab" if payer == ch["party_a"] else "proof_ba"
        assert p["nonce"] > ch[key][0], "stale proof"
        ch[key] = (p["nonce"], p["transferred"], p["tips_root"])

    def pay_fee(self, ch, signer, fee, acct):
        """UpdateProof and Settle: the account pays if it can, else a party's
        escrow share (docs/ledger.md, "Fees paid from the escrow")."""
        if acct is not None and acct[0] >= fee:
            self.charge(signer, fee)
            return
        assert signer in (ch["party_a"], ch["party_b"]) and fee == self.g["fee_per_tx"]
        debt_key = "fee_debt_a" if signer == ch["party_a"] else "fee_debt_b"
        fa, fb = self.final_balances(ch)
        share = fa if signer == ch["party_a"] else fb
        assert share >= ch[debt_key] + fee and self.escrow(ch) >= fee
        ch[debt_key] += fee

    def check_supply(self):
        total = sum(a[0] for a in self.accounts.values()) + self.fees
        total += sum(self.escrow(ch) for ch in self.channels.values())
        assert total == sum(a for _, a in self.g["allocations"]), "supply"

    def genesis_state_hash(self, genesis_hash):
        out = genesis_hash
        for key in sorted(self.accounts):
            out += b"A" + key + u64(self.accounts[key][0]) + u64(self.accounts[key][1])
        out += b"F" + u64(0)
        return tagged_hash(TAG_STATE, out)

    def commit_state_hash(self, previous):
        out = previous
        for key in sorted(self.dirty_accounts):
            out += b"A" + key + u64(self.accounts[key][0]) + u64(self.accounts[key][1])
        for cid in sorted(self.dirty_channels):
            out += b"H" + channel_entry(self.channels[cid])
        out += b"F" + u64(self.fees)
        self.dirty_accounts.clear()
        self.dirty_channels.clear()
        return tagged_hash(TAG_STATE, out), out


def partner_of(ch, key):
    if key == ch["party_a"]:
        return ch["party_b"]
    assert key == ch["party_b"], "not a party"
    return ch["party_a"]


def channel_entry(ch):
    out = ch["id"] + ch["party_a"] + ch["party_b"]
    out += u64(ch["deposit_a"]) + u64(ch["deposit_b"]) + u64(ch["settle_timeout"])
    out += u8(ch["phase"]) + u64(ch["opened_height"]) + u64(ch["close_height"]) + ch["closer"]
    for key in ("proof_ab", "proof_ba"):
        nonce, transferred, root = ch[key]
        out += u64(nonce) + u64(transferred) + root
    out += u64(ch["payout_a"]) + u64(ch["payout_b"])
    out += u64(ch["fee_debt_a"]) + u64(ch["fee_debt_b"])
    return out


def channel_json(ch):
    def proof(t):
        return {"nonce": str(t[0]), "transferred": str(t[1]), "tips_root": hx(t[2])}

    return {
        "channel_id": hx(ch["id"]),
        "party_a": hx(ch["party_a"]),
        "party_b": hx(ch["party_b"]),
        "deposit_a": str(ch["deposit_a"]),
        "deposit_b": str(ch["deposit_b"]),
        "settle_timeout": str(ch["settle_timeout"]),
        "phase": ch["phase"],
        "opened_height": str(ch["opened_height"]),
        "close_height": str(ch["close_height"]),
        "closer": hx(ch["closer"]),
        "proof_a_to_b": proof(ch["proof_ab"]),
        "proof_b_to_a": proof(ch["proof_ba"]),
        "payout_a": str(ch["payout_a"]),
        "payout_b": str(ch["payout_b"]),
        "fee_debt_a": str(ch["fee_debt_a"]),
        "fee_debt_b": str(ch["fee_debt_b"]),
    }


def body_json(kind, b):
    out = {}
    for k, v in b.items():
        if k == "proof":
            out[k] = None if v is None else proof_json(v)
        elif isinstance(v, bytes):
            out[k] = hx(v)
        elif isinstance(v, int):
            out[k] = str(v)
        else:
            out[k] = v
    return out


def ledger_vectors():
    chain_id = "tipd-test"
    secrets = {"a": SK_A, "b": SK_B, "c": SK_C, "d": SK_D, "seq": SK_SEQ}
    pk = {name: xonly(sk) for name, sk in secrets.items()}
    genesis = {
        "chain_id": chain_id,
        "sequencer_key": pk["seq"],
        # Deliberately not in key order: the genesis hash keeps the file's
        # order, the genesis state hash sorts by account.
        "allocations": [(pk["c"], 1000), (pk["a"], 1000000), (pk["b"], 50000)],
        "fee_per_tx": 1,
        "min_settle_timeout": 1,
        "max_settle_timeout": 1000,
        "block_interval_ms": 1000,
        "genesis_time_ms": 1700000000000,
    }
    g_bytes = genesis_bytes(genesis)
    g_hash = tagged_hash(TAG_GENESIS, g_bytes)

    ledger = Ledger(genesis)
    g_state = ledger.genesis_state_hash(g_hash)

    def tx(signer, kind, body, nonce, fee=1):
        t = {"chain_id": chain_id, "signer": pk[signer], "nonce": nonce, "fee": fee,
             "kind": kind, "body": body}
        t["bytes"] = tx_bytes(t)
        t["id"] = tagged_hash(TAG_TX, t["bytes"])
        t["signature"] = bip340_sign(secrets[signer], t["id"], AUX)
        return t

    def open_tx(a, b, nonce_a, deposit_a, deposit_b, timeout):
        body = {
            "party_a": pk[a],
            "party_b": pk[b],
            "deposit_a": deposit_a,
            "deposit_b": deposit_b,
            "settle_timeout": timeout,
            "nonce_b": 0,
        }
        agreement = open_agreement_bytes(chain_id, body, nonce_a)
        body["sig_b"] = sign_tagged(secrets[b], TAG_OPEN, agreement)
        cid = channel_id_of(chain_id, pk[a], pk[b], nonce_a)
        t = tx(a, OPEN, body, nonce_a)
        t["extra"] = {
            "agreement_bytes": hx(agreement),
            "agreement_digest": hx(tagged_hash(TAG_OPEN, agreement)),
            "channel_id": hx(cid),
        }
        return t, cid

    blocks = []
    state = g_state
    prev = g_hash
    time_ms = genesis["genesis_time_ms"]
    all_txs = []

    def seal(height, txs):
        nonlocal state, prev, time_ms
        for t in txs:
            ledger.apply(t, height)
        new_state, diff = ledger.commit_state_hash(state)
        time_ms += genesis["block_interval_ms"]
        ids = [t["id"] for t in txs]
        h = {
            "chain_id": chain_id,
            "height": height,
            "prev_hash": prev,
            "time_ms": time_ms,
            "tx_root": merkle_root(ids),
            "state_hash": new_state,
            "tx_count": len(txs),
        }
        hb = header_bytes(h)
        block_hash = tagged_hash(TAG_BLOCK, hb)
        blocks.append(
            {
                "height": str(height),
                "transactions": [t["name"] for t in txs],
                "prev_state_hash": hx(state),
                "state_diff": hx(diff),
                "state_hash": hx(new_state),
                "header": {
                    "chain_id": chain_id,
                    "height": str(height),
                    "prev_hash": hx(prev),
                    "time_ms": str(time_ms),
                    "tx_root": hx(h["tx_root"]),
                    "state_hash": hx(new_state),
                    "tx_count": str(len(txs)),
                },
                "header_bytes": hx(hb),
                "block_hash": hx(block_hash),
                "sequencer_signature": hx(bip340_sign(SK_SEQ, block_hash, AUX)),
                "accounts_after": {
                    hx(k): {"balance": str(v[0]), "nonce": str(v[1])}
                    for k, v in sorted(ledger.accounts.items())
                },
                "channels_after": [channel_json(c) for _, c in sorted(ledger.channels.items())],
                "fees_after": str(ledger.fees),
            }
        )
        state, prev = new_state, block_hash

    def named(name, t):
        t["name"] = name
        all_txs.append(t)
        return t

    # Block 1: a transfer and two opens: A-B (B commits its whole balance; the
    # rest closes it unilaterally) and A-C (closed cooperatively).
    t_open_ab, cid_ab = open_tx("a", "b", 1, 100000, 50000, 2)
    t_open_ac, cid_ac = open_tx("a", "c", 2, 2000, 1000, 5)
    seal(1, [
        named("transfer_a_to_c", tx("a", TRANSFER, {"to": pk["c"], "amount": 5000}, 0)),
        named("open_a_b", t_open_ab),
        named("open_a_c", t_open_ac),
    ])

    # Block 2: a top-up by A, the cooperative close of A-C (submitted by C)
    # and the unilateral close of A-B by A, carrying B's proof B->A.
    close = coop_bytes(chain_id, cid_ac, 1800, 1200)
    t_coop = tx("c", COOP_CLOSE, {
        "channel_id": cid_ac,
        "balance_a": 1800,
        "balance_b": 1200,
        "sig_a": sign_tagged(SK_A, TAG_COOP, close),
        "sig_b": sign_tagged(SK_C, TAG_COOP, close),
    }, 0)
    t_coop["extra"] = {"close_bytes": hx(close), "party_a": hx(pk["a"]), "party_b": hx(pk["c"])}
    proof_ba = make_proof(SK_B, chain_id, cid_ab, 1, 300, bytes([0x11]) * 32)
    seal(2, [
        named("deposit_a", tx("a", DEPOSIT, {"channel_id": cid_ab, "amount": 500}, 3)),
        named("cooperative_close_a_c", t_coop),
        named("unilateral_close_a_b", tx("a", UNI_CLOSE, {"channel_id": cid_ab,
                                                          "proof": proof_ba}, 4)),
    ])

    # Block 3: B (balance 0, so its fee comes from its escrow share) submits
    # A's proof A->B, which pays B; A opens a channel to D, who has no account
    # and deposits nothing (the open creates D's account).
    proof_ab = make_proof(SK_A, chain_id, cid_ab, 2, 7000, bytes([0x22]) * 32)
    t_open_ad, _ = open_tx("a", "d", 5, 700, 0, 1000)
    seal(3, [
        named("update_proof_b", tx("b", UPDATE_PROOF, {"channel_id": cid_ab, "proof": proof_ab},
                                   0)),
        named("open_a_d", t_open_ad),
    ])
    # Block 4: empty; the settle window (close height 2 + timeout 2) ends here.
    seal(4, [])
    # Block 5: B settles, its fee again from its escrow share.
    seal(5, [named("settle_b", tx("b", SETTLE, {"channel_id": cid_ab}, 1))])

    # Encoding-only: a unilateral close without a proof (not applied).
    extra_txs = [
        named("unilateral_close_no_proof",
              tx("b", UNI_CLOSE, {"channel_id": cid_ab, "proof": None}, 9, fee=7)),
    ]

    def tx_json(t):
        out = {
            "name": t["name"],
            "kind": KIND_NAMES[t["kind"]],
            "chain_id": t["chain_id"],
            "signer": hx(t["signer"]),
            "nonce": str(t["nonce"]),
            "fee": str(t["fee"]),
            "body": body_json(t["kind"], t["body"]),
            "bytes": hx(t["bytes"]),
            "id": hx(t["id"]),
            "signature": hx(t["signature"]),
        }
        out.update(t.get("extra", {}))
        return out

    merkle_cases = []
    ids = [t["id"] for t in all_txs]
    for count in range(0, 6):
        merkle_cases.append({"leaves": [hx(i) for i in ids[:count]],
                             "root": hx(merkle_root(ids[:count]))})

    return {
        "comment": "Generated by tests/vectors/gen_vectors.py from docs/ledger.md; do not edit.",
        "aux": hx(AUX),
        "keys": {name: {"secret": hx(secrets[name]), "xonly": hx(pk[name])} for name in pk},
        "genesis": {
            "chain_id": chain_id,
            "sequencer_key": hx(genesis["sequencer_key"]),
            "allocations": [{"account": hx(a), "amount": str(v)} for a, v in genesis["allocations"]],
            "fee_per_tx": str(genesis["fee_per_tx"]),
            "min_settle_timeout": str(genesis["min_settle_timeout"]),
            "max_settle_timeout": str(genesis["max_settle_timeout"]),
            "block_interval_ms": str(genesis["block_interval_ms"]),
            "genesis_time_ms": str(genesis["genesis_time_ms"]),
            "bytes": hx(g_bytes),
            "hash": hx(g_hash),
            "state_hash": hx(g_state),
        },
        "transactions": [tx_json(t) for t in all_txs],
        "merkle": merkle_cases,
        "blocks": blocks,
    }


def render(obj):
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with the checked-in files instead of writing them")
    args = ap.parse_args()
    outputs = {
        "ledger_vectors.json": render(ledger_vectors()),
        "channel_vectors.json": render(channel_vectors()),
    }
    failed = False
    for name, text in outputs.items():
        path = os.path.join(HERE, name)
        if args.check:
            try:
                with open(path, encoding="utf-8") as f:
                    current = f.read()
            except FileNotFoundError:
                current = None
            if current != text:
                print(f"{name}: differs from what gen_vectors.py generates; "
                      f"run python3 tests/vectors/gen_vectors.py and review the diff",
                      file=sys.stderr)
                failed = True
            else:
                print(f"{name}: up to date")
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
