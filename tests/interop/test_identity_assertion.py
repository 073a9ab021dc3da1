"""An agent acting for a person, with the official Python SDK's
IdentityAssertionOAuthProvider (mcp.client.auth.extensions.identity_assertion),
unmodified: the person's IdP (a loopback stand-in) issues an Identity
Assertion JWT Authorization Grant for this agent and this MCP server; the
agent presents it to mayfly (jwt-bearer, client_secret_post) and calls a tool.
The token's `sub` is the person and its `act` the agent; the MCP server logs
both; revoking the agent's workload ends the token.
"""

import asyncio
import time
import uuid

import httpx2
import jwt
from mcp import ClientSession
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client

from test_mcp_sdk import MemoryStorage, jti, payload, request, stack  # noqa: F401  (the fixture)
from test_private_key_jwt import FakeIssuer


def test_an_agent_acts_for_a_person_through_an_identity_assertion_and_revocation_follows(stack):
    idp = FakeIssuer()
    try:
        agent = stack.api("POST", "/v1/tenants/acme/clients", {
            "client_id": "assistant", "kind": "agent", "workflows": ["*"],
            "grants": [{"resource": stack.mcp_url, "scopes": ["issues:read"]}]})
        stack.api("POST", "/v1/tenants/acme/trust-policies", {
            "name": "people", "issuer": idp.url, "audience": stack.issuer,
            "subject_pattern": "^[a-z]+@acme\\.test$", "actors": ["assistant"],
            "workflow_template": "assist", "workload_template": "{sub}",
            "grants": [{"resource": stack.mcp_url, "scopes": ["issues:read"]}]})

        async def fetch_id_jag(audience: str, resource: str) -> str:
            now = int(time.time())
            claims = {"iss": idp.url, "sub": "alice@acme.test", "aud": audience, "client_id": "assistant",
                      "resource": resource, "scope": "issues:read", "iat": now, "exp": now + 300,
                      "jti": str(uuid.uuid4())}
            return jwt.encode(claims, idp.pem, algorithm="ES256", headers={"typ": "oauth-id-jag+jwt", "kid": idp.kid})

        storage = MemoryStorage()
        provider = IdentityAssertionOAuthProvider(server_url=stack.mcp_url, storage=storage, client_id="assistant",
                                                  client_secret=agent["client_secret"], issuer=stack.issuer,
                                                  assertion_provider=fetch_id_jag, scope="issues:read")

        async def call():
            async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
                async with streamable_http_client(stack.mcp_url, http_client=http) as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        return await session.call_tool("list_issues", {})

        result = asyncio.run(call())
        assert not result.is_error, result
        caller = payload(result)["caller"]
        assert (caller["sub"], caller["agents"], caller["client_id"]) == ("alice@acme.test", ["assistant"], "assistant")
        logged = [e for e in stack.server_log() if e.get("event") == "tool_call"][-1]
        assert (logged["on_behalf_of"], logged["agents"]) == ("alice@acme.test", ["assistant"])

        # Revoking the agent's workload ends what it holds on anyone's behalf.
        token = storage.tokens.access_token
        stack.api("POST", "/v1/tenants/acme/revocations", {"workload": "assistant", "reason": "agent compromised"})
        body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}}
        status, _, _ = request("POST", stack.mcp_url, json_body=body, bearer=token,
                               headers={"Accept": "application/json, text/event-stream"})
        assert status == 401
        # Refused as inactive at mayfly: this token, and only this one.
        refused = [(e["jti"], e["reason"], e["delegated"]) for e in stack.server_log()
                   if e.get("event") == "token_refused"]
        assert set(refused) == {(jti(token), "inactive at mayfly", True)}, refused
    finally:
        idp.close()
