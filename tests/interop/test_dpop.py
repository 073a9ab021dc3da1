"""Sender-constrained tokens (RFC 9449) with clients and servers we did not write.

- The MCP TypeScript SDK v2 (`@modelcontextprotocol/client`, pinned in
  node/package.json) with its DpopSession, unmodified, gets a DPoP-bound token
  from mayfly and calls a tool through `mayfly gateway`, with and without
  server nonces.
- DPoP proofs made here with PyJWT and `cryptography` (not our code): a bound
  token is refused as Bearer, without its proof, with a proof for another
  request, key or token, and with a replayed proof, at the gateway and at the
  example MCP server; the same token with a good proof works at both.
"""

import base64
import hashlib
import json
import os
import subprocess
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from test_gateway import gw  # noqa: F401  (fixture)
from test_mcp_sdk import NODE, request, stack  # noqa: F401  (fixture)

ACCEPT = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "dpop-interop", "version": "1"}}}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Holder:
    """A client's DPoP key (P-256), its RFC 7638 thumbprint computed here from the RFC."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        members = json.dumps({m: self.jwk[m] for m in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
        self.jkt = b64url(hashlib.sha256(members.encode()).digest())

    def proof(self, htm, htu, token=None, **claims):
        body = {"jti": os.urandom(12).hex(), "htm": htm, "htu": htu, "iat": int(time.time())}
        if token:
            body["ath"] = b64url(hashlib.sha256(token.encode()).digest())
        body.update(claims)
        return jwt.encode(body, self.key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": self.jwk})


def bound_token(stack, creds, resource, holder):
    status, headers, out = request("POST", f"{stack.issuer}/oauth2/token", basic=creds,
                                   form={"grant_type": "client_credentials", "resource": resource},
                                   headers={"DPoP": holder.proof("POST", f"{stack.issuer}/oauth2/token")})
    assert status == 200, out
    assert out["token_type"] == "DPoP", out
    claims = jwt.decode(out["access_token"], options={"verify_signature": False})
    assert claims["cnf"] == {"jkt": holder.jkt}, claims
    return out["access_token"]


def post(url, token, scheme="DPoP", proof=None, body=INITIALIZE):
    headers = dict(ACCEPT, Authorization=f"{scheme} {token}")
    if proof:
        headers["DPoP"] = proof
    return request("POST", url, json_body=body, headers=headers)


def refusals(url, token, holder):
    """Each wrong presentation of a bound token, and its answer."""
    other = Holder()
    base, path = url.rsplit("/", 1)
    proxied = f"{base}/proxy/{path}"
    replayed = holder.proof("POST", url, token)
    first = post(url, token, proof=replayed)
    assert first[0] == 200, first
    cases = {
        "as Bearer": post(url, token, scheme="Bearer"),
        "no proof": post(url, token),
        "wrong htm": post(url, token, proof=holder.proof("GET", url, token)),
        "wrong htu": post(url, token, proof=holder.proof("POST", url + "/other", token)),
        "proxy prefix": post(url, token, proof=holder.proof("POST", proxied, token)),
        "no ath": post(url, token, proof=holder.proof("POST", url)),
        "another token's ath": post(url, token, proof=holder.proof("POST", url, token + "x")),
        "old iat": post(url, token, proof=holder.proof("POST", url, token, iat=int(time.time()) - 120)),
        "another key": post(url, token, proof=other.proof("POST", url, token)),
        "replayed": post(url, token, proof=replayed),
    }
    return {case: status for case, (status, _, _) in cases.items()}


def test_the_typescript_sdk_dpop_session_gets_a_bound_token_and_calls_a_tool_through_the_gateway(gw):  # noqa: F811
    def run():
        done = subprocess.run(["node", str(NODE / "dpop_client.mjs"), gw.mcp_url, *gw.reader, "echo",
                               json.dumps({"message": "bound"})],
                              capture_output=True, text=True, env=dict(os.environ, MCP_EXPECTED_ISSUER=gw.issuer), timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    out = run()
    assert out["token_type"] == "DPoP", out
    assert out["claims"]["cnf"] == {"jkt": out["jkt"]}, out
    assert "bound" in out["toolResult"]["content"][0]["text"], out
    lease = gw.api("GET", f"/v1/tenants/acme/leases/{out['claims']['jti']}")
    assert lease["jkt"] == out["jkt"], lease
    events = gw.mcp_events(lambda items: any(e["lease_id"] == out["claims"]["jti"] and e["mcp"]["name"] == "echo"
                                             for e in items))
    assert any(e["lease_id"] == out["claims"]["jti"] and e["outcome"] == "success" for e in events), events

    # With nonces required, the SDK answers the token endpoint's use_dpop_nonce round trip itself.
    gw.stop_mayfly()
    gw.mayfly_env["MAYFLY_DPOP_NONCE"] = "required"
    gw.start_mayfly()
    status, headers, body = request("POST", f"{gw.issuer}/oauth2/token", basic=gw.reader,
                                    form={"grant_type": "client_credentials", "resource": gw.mcp_url},
                                    headers={"DPoP": Holder().proof("POST", f"{gw.issuer}/oauth2/token")})
    assert (status, body["error"]) == (400, "use_dpop_nonce") and headers["DPoP-Nonce"], (status, body)
    out = run()
    assert out["token_type"] == "DPoP" and out["claims"]["cnf"] == {"jkt": out["jkt"]}, out


def test_a_bound_token_works_at_the_gateway_only_with_a_proof_of_its_key_for_that_request(gw):  # noqa: F811
    holder = Holder()
    token = bound_token(gw, gw.reader, gw.mcp_url, holder)
    refused = refusals(gw.mcp_url, token, holder)
    assert refused == {case: 401 for case in refused}, refused
    status, headers, _ = post(gw.mcp_url, token, scheme="Bearer")
    assert headers["WWW-Authenticate"].startswith("DPoP "), headers["WWW-Authenticate"]
    status, _, prm = request("GET", f"{gw.gateway}/.well-known/oauth-protected-resource/everything")
    assert prm["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "RS256"], prm
    # An unbound token may not pose as a bound one.
    bearer = gw.mint(gw.reader, gw.mcp_url)
    status, _, _ = post(gw.mcp_url, bearer, proof=holder.proof("POST", gw.mcp_url, bearer))
    assert status == 401
    assert post(gw.mcp_url, bearer, scheme="Bearer")[0] == 200
    # The refusals of a valid token are its lease's events: a stolen token's use shows on the lease.
    lease = jwt.decode(token, options={"verify_signature": False})["jti"]
    events = gw.mcp_events(lambda items: sum(e["lease_id"] == lease and e["outcome"] == "denied" for e in items) >= 8)
    reasons = {e["reason"] for e in events if e["lease_id"] == lease and e["outcome"] == "denied"}
    assert reasons == {"invalid_token", "invalid_dpop_proof"}, reasons


def test_the_example_server_verifies_dpop_and_refuses_a_bound_token_sent_as_bearer(stack):  # noqa: F811
    holder = Holder()
    token = bound_token(stack, stack.reader, stack.mcp_url, holder)
    refused = refusals(stack.mcp_url, token, holder)
    assert refused == {case: 401 for case in refused}, refused
    reasons = [e["reason"] for e in stack.server_log() if e.get("event") in ("token_refused", "dpop_refused")]
    assert "a DPoP-bound token without its proof" in reasons, reasons
    bearer = stack.mint(stack.reader, stack.mcp_url)
    assert post(stack.mcp_url, bearer, proof=holder.proof("POST", stack.mcp_url, bearer))[0] == 401
    assert post(stack.mcp_url, bearer, scheme="Bearer")[0] == 200
