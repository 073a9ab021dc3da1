"""The example MCP server in its default mode (no MAYFLY_STRICT): tokens are
verified offline against the JWKS, except delegated ones (with an `act`
claim), which it always introspects. Revoking an agent's workload ends every
token in which the agent acts, but such a token's own claims name the person
as `sub`, so an offline check cannot see the rule: only introspection does.
"""

import asyncio
import base64
import json

import pytest

from test_mcp_sdk import Stack, free_port, payload, request, with_session

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


@pytest.fixture(params=["sqlite", "postgres"])
def offline_stack(request, tmp_path):
    s = Stack(request.param, tmp_path, strict=False)
    yield s
    s.close()


def jti(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["jti"]


def status_at(url, token):
    """The HTTP status an MCP server answers an `initialize` with this bearer token."""
    return request("POST", url, json_body=INITIALIZE, bearer=token,
                   headers={"Accept": "application/json, text/event-stream"})[0]


def list_issues(stack, token):
    async def work(s):
        return await s.call_tool("list_issues", {})
    return asyncio.run(with_session(stack.mcp_url, work, token=token))


def introspected(stack, token, path=None):
    return [e for e in stack.server_log(path) if e.get("event") == "token_introspected" and e["jti"] == jti(token)]


def test_a_delegated_token_is_introspected_and_refused_once_its_agent_is_revoked(offline_stack):
    stack = offline_stack
    helper = stack.client("helper", "agent", ["*"], {stack.mcp_url: ["issues:read"]})
    stack.api("PATCH", "/v1/tenants/acme/clients/reader", {"delegates": ["helper"]})
    plain = stack.mint(stack.reader, stack.mcp_url, scope="issues:read")
    status, _, out = request("POST", f"{stack.issuer}/oauth2/token", basic=helper, form={
        "grant_type": EXCHANGE, "subject_token": plain, "subject_token_type": ACCESS_TOKEN,
        "resource": stack.mcp_url})
    assert status == 200, out
    delegated = out["access_token"]

    # Both work; only the delegated one was asked about.
    result = list_issues(stack, delegated)
    assert not result.is_error, result
    assert payload(result)["caller"]["agents"] == ["helper"]
    assert introspected(stack, delegated) and all(e["active"] for e in introspected(stack, delegated))
    assert not list_issues(stack, plain).is_error
    assert introspected(stack, plain) == [], "a token without `act` is verified offline"

    # Revoke the agent: its workload is an actor in `delegated`, not its `sub`.
    stack.api("POST", "/v1/tenants/acme/revocations", {"workload": "helper", "reason": "agent compromised"})
    assert status_at(stack.mcp_url, delegated) == 401
    refused = [e for e in stack.server_log() if e.get("event") == "token_refused" and e["jti"] == jti(delegated)]
    assert refused and refused[-1]["delegated"] is True and refused[-1]["reason"] == "inactive at mayfly"
    # The person's own token is untouched and still verified offline only.
    assert not list_issues(stack, plain).is_error
    assert introspected(stack, plain) == []

    # Without credentials to introspect with, a server refuses delegated tokens outright.
    port = free_port()
    blind = stack.example_server(port, "mcp-blind.log", strict=False, creds=None)
    url = f"http://127.0.0.1:{port}/mcp"
    assert status_at(url, plain) == 200
    fresh = request("POST", f"{stack.issuer}/oauth2/token", basic=helper, form={
        "grant_type": EXCHANGE, "subject_token": plain, "subject_token_type": ACCESS_TOKEN,
        "resource": stack.mcp_url})
    assert fresh[0] == 200, fresh[2]
    assert status_at(url, fresh[2]["access_token"]) == 401
    refused = {(e["jti"], e["reason"], e["delegated"]) for e in stack.server_log(blind)
               if e.get("event") == "token_refused"}
    assert refused == {(jti(fresh[2]["access_token"]), "cannot introspect (no credentials)", True)}, refused
