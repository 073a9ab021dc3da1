"""No stored secret, with the official Python SDK's PrivateKeyJWTOAuthProvider
(mcp.client.auth.extensions.client_credentials), unmodified:

- SignedJWTParameters: the client signs its own assertion with a key whose
  public half it registered at mayfly (`jwks`);
- static_assertion_provider: the assertion is a workload's OIDC token (here
  from a loopback stand-in for a Kubernetes service-account issuer), which a
  trust policy binds to the client.

Each calls a tool on the example MCP server through mayfly.
"""

import asyncio
import base64
import http.server
import json
import threading
import time
import uuid

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import ClientSession
from mcp.client.auth.extensions.client_credentials import (
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
    static_assertion_provider,
)
from mcp.client.streamable_http import streamable_http_client

from test_mcp_sdk import MemoryStorage, payload, stack  # noqa: F401  (the fixture)


def b64(n: int, size: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


def ec_key():
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64(numbers.x, 32), "y": b64(numbers.y, 32)}
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, jwk


async def call_tool(url, provider):
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await session.call_tool("list_issues", {})


def test_signed_jwt_parameters_authenticate_a_client_that_registered_only_its_public_key(stack):
    pem, jwk = ec_key()
    out = stack.api("POST", "/v1/tenants/acme/clients", {
        "client_id": "keyed-agent", "kind": "agent", "workflows": ["triage"],
        "grants": [{"resource": stack.mcp_url, "scopes": ["issues:read"]}], "jwks": {"keys": [jwk]}})
    assert "client_secret" not in out, "a client with keys has no secret"
    params = SignedJWTParameters(issuer="keyed-agent", subject="keyed-agent", signing_key=pem,
                                 signing_algorithm="ES256", lifetime_seconds=60)
    provider = PrivateKeyJWTOAuthProvider(server_url=stack.mcp_url, storage=MemoryStorage(), client_id="keyed-agent",
                                          assertion_provider=params.create_assertion_provider(), issuer=stack.issuer)
    result = asyncio.run(call_tool(stack.mcp_url, provider))
    assert not result.is_error, result
    caller = payload(result)["caller"]
    assert (caller["client_id"], caller["workflow"], caller["sub"]) == ("keyed-agent", "triage", "keyed-agent")


class FakeIssuer:
    """Discovery and a JWKS on loopback, like a cluster's service-account issuer."""

    def __init__(self):
        self.pem, jwk = ec_key()
        self.kid = "sa-key-1"
        jwks = json.dumps({"keys": [jwk | {"kid": self.kid, "use": "sig", "alg": "ES256"}]}).encode()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path == "/.well-known/openid-configuration":
                    body = json.dumps({"issuer": outer.url, "jwks_uri": f"{outer.url}/jwks"}).encode()
                elif self.path == "/jwks":
                    body = jwks
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def service_account_token(self, audience, namespace, account):
        now = int(time.time())
        claims = {"iss": self.url, "aud": [audience], "sub": f"system:serviceaccount:{namespace}:{account}",
                  "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account, "uid": "5f1c"}},
                  "iat": now, "nbf": now, "exp": now + 600, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self.pem, algorithm="ES256", headers={"kid": self.kid})

    def close(self):
        self.server.shutdown()


def test_a_workload_oidc_token_bound_by_a_trust_policy_is_a_static_client_assertion(stack):
    issuer = FakeIssuer()
    try:
        stack.api("POST", "/v1/tenants/acme/clients", {
            "client_id": "pod-agent", "kind": "agent", "workflows": ["triage"],
            "grants": [{"resource": stack.mcp_url, "scopes": ["issues:read"]}]})
        stack.api("POST", "/v1/tenants/acme/trust-policies", {
            "name": "triage-pods", "issuer": issuer.url, "audience": stack.issuer,
            "subject": "system:serviceaccount:agents:triage", "client_id": "pod-agent",
            "workflow_template": "triage",
            "workload_template": "k8s:{kubernetes.io.namespace}/{kubernetes.io.serviceaccount.name}",
            "grants": [{"resource": stack.mcp_url, "scopes": ["issues:read"]}]})
        token = issuer.service_account_token(stack.issuer, "agents", "triage")
        provider = PrivateKeyJWTOAuthProvider(server_url=stack.mcp_url, storage=MemoryStorage(), client_id="pod-agent",
                                              assertion_provider=static_assertion_provider(token), issuer=stack.issuer)
        result = asyncio.run(call_tool(stack.mcp_url, provider))
        assert not result.is_error, result
        caller = payload(result)["caller"]
        assert (caller["client_id"], caller["sub"]) == ("pod-agent", "k8s:agents/triage")
        # The lease names the external identity and the policy.
        leases = stack.api("GET", "/v1/tenants/acme/leases?client_id=pod-agent")["items"]
        assert leases[0]["federated"]["subject"] == "system:serviceaccount:agents:triage"
    finally:
        issuer.close()
