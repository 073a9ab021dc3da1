"""The audit log checked by code we did not write against it: RFC 9162
inclusion and consistency verification, RFC 6962 tree hashing, C2SP signed
note verification with the `cryptography` package's Ed25519, and the event's
content hash recomputed from the JSON the API serves (and the JSON the
NDJSON export writes). Nothing here imports mayfly code; it follows the RFCs
and the DESIGN shapes only.
"""

import base64
import hashlib
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from test_mcp_sdk import Stack, request


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def leaf_hash(content_hash):
    return sha256(b"\x00", content_hash)


def node(left, right):
    return sha256(b"\x01", left, right)


def mth(leaves):
    """RFC 6962 section 2.1: the Merkle tree hash of a list of leaf hashes."""
    n = len(leaves)
    if n == 0:
        return sha256()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(leaf, index, size, path, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, path, first_root, second_root):
    """RFC 9162 section 2.1.4.2."""
    if first == second:
        return not path and first_root == second_root
    if first == 0 or first > second or not path:
        return False
    if first & (first - 1) == 0:
        path = [first_root] + path
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


def content_hash(event):
    """SHA-256 of the event's canonical JSON: its fields in the order served,
    no whitespace, UTF-8 (DESIGN: "hash (hex SHA-256 of the event's canonical content)")."""
    body = {k: v for k, v in event.items() if k not in ("prev_hash", "hash", "log_index")}
    return hashlib.sha256(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()).digest()


def parse_vkey(vkey):
    """A C2SP note verifier key: name+hash+base64(0x01 || Ed25519 key)."""
    name, key_hash, data = vkey.strip().split("+", 2)
    data = base64.b64decode(data)
    assert data[0] == 0x01 and len(data) == 33, vkey
    assert sha256(name.encode(), b"\n", data)[:4].hex() == key_hash, "the key hash is the C2SP one"
    return name, bytes.fromhex(key_hash), Ed25519PublicKey.from_public_bytes(data[1:])


def open_note(note, vkey):
    """The checkpoint (origin, size, root) if a signature line by `vkey` verifies."""
    name, key_hash, public = vkey
    text, sigs = note.split("\n\n", 1)
    text += "\n"
    for line in sigs.splitlines():
        assert line.startswith("\u2014 "), line
        signer, sig = line[2:].split(" ", 1)
        sig = base64.b64decode(sig)
        if signer == name and sig[:4] == key_hash:
            public.verify(sig[4:], text.encode())  # raises if forged
            origin, size, root = text.splitlines()[:3]
            return origin, int(size), base64.b64decode(root)
    raise AssertionError("no signature by the log's key")


def until(what, fn, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(params=["sqlite", "postgres"])
def exporting_stack(request, tmp_path, monkeypatch):
    monkeypatch.setenv("MAYFLY_AUDIT_EXPORT_FILE", str(tmp_path / "audit.ndjson"))
    s = Stack(request.param, tmp_path)
    yield s
    s.close()


def test_events_checkpoints_and_proofs_verify_with_independent_code(exporting_stack):
    stack = exporting_stack
    for _ in range(5):
        stack.mint(stack.reader, stack.mcp_url, scope="issues:read")

    def logged():
        events = stack.api("GET", "/v1/tenants/acme/audit?limit=1000")["items"]
        return events if all(isinstance(e["log_index"], int) for e in events) else None
    events = until("every event integrated", logged)
    assert sum(e["action"] == "token.issued" for e in events) == 5

    status, _, vkey_text = request("GET", f"{stack.issuer}/v1/audit/checkpoint/key", bearer=stack.admin)
    assert status == 200, vkey_text
    vkey = parse_vkey(vkey_text)
    last = max(e["log_index"] for e in events)

    def checkpoint(at_least):
        status, _, note = request("GET", f"{stack.issuer}/v1/audit/checkpoint", bearer=stack.admin)
        assert status == 200, note
        origin, size, root = open_note(note, vkey)
        assert origin == stack.issuer.split("://", 1)[1] + "/audit"
        return (note, size, root) if size >= at_least else None
    note, size, root = until("a checkpoint covering every event", lambda: checkpoint(last + 1))

    for e in events:
        digest = content_hash(e)
        assert e["hash"] == digest.hex(), e
        status, _, p = request("GET", f"{stack.issuer}/v1/audit/proofs/inclusion?index={e['log_index']}&tree_size={size}",
                               bearer=stack.admin)
        assert status == 200, p
        assert base64.b64decode(p["leaf_hash"]) == leaf_hash(digest)
        path = [base64.b64decode(h) for h in p["proof"]]
        assert verify_inclusion(leaf_hash(digest), e["log_index"], size, path, root), e
        assert not verify_inclusion(leaf_hash(sha256(b"forged")), e["log_index"], size, path, root)

    # A forged checkpoint is refused by the signature, not by trust in the server.
    forged = note.replace(f"\n{size}\n", f"\n{size + 1}\n", 1)
    with pytest.raises(Exception):
        open_note(forged, vkey)

    for _ in range(3):
        stack.mint(stack.reader, stack.mcp_url, scope="issues:read")
    _, later, later_root = until("a later checkpoint", lambda: checkpoint(size + 3))
    status, _, c = request("GET", f"{stack.issuer}/v1/audit/proofs/consistency?from={size}&to={later}", bearer=stack.admin)
    assert status == 200, c
    path = [base64.b64decode(h) for h in c["proof"]]
    assert verify_consistency(size, later, path, root, later_root)
    assert not verify_consistency(size, later, path, sha256(b"another history"), later_root)

    # The copy outside the database: every event line's hash is its content's,
    # and the leaves up to each checkpoint line hash to that checkpoint's root.
    export = stack.tmp / "audit.ndjson"

    def exported():
        lines = [json.loads(line) for line in export.read_text().splitlines()] if export.exists() else []
        heads = [l for l in lines if l["type"] == "checkpoint"]
        return lines if heads and heads[-1]["tree_size"] >= later else None
    lines = until("the export to reach the later checkpoint", exported)
    leaves = {}
    for line in lines:
        if line["type"] == "event":
            digest = hashlib.sha256(json.dumps(line["event"], separators=(",", ":"), ensure_ascii=False).encode()).digest()
            assert line["hash"] == digest.hex(), line
            leaves[line["log_index"]] = leaf_hash(digest)
        else:
            n = line["tree_size"]
            assert sorted(leaves)[:n] == list(range(n)), "every event before its checkpoint"
            _, signed_size, signed_root = open_note(line["note"], vkey)
            assert signed_size == n
            assert mth([leaves[i] for i in range(n)]) == signed_root
