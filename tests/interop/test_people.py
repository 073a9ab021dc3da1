"""People at the keyboard, with clients we did not write.

The official Python SDK's OAuthClientProvider (unmodified) finds mayfly through
the gateway's RFC 9728 metadata, registers itself (RFC 7591), and sends a
person through /oauth2/authorize. A small OIDC IdP of ours on loopback signs
the person in without a form; a headless "browser" (a redirect and callback
handler) follows the redirects and clicks Allow on the consent page. The
person's tool calls through `mayfly gateway` are attributed to them, and
revoking the person stops the next call.
"""

import asyncio
import json
import time

import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

from people_kit import IDP_CLIENT, IDP_SECRET, HeadlessBrowser, LoopbackIdp
from test_gateway import GatewayStack, gw  # noqa: F401 (the fixture)
from test_mcp_sdk import MemoryStorage

def company_idp(gw):
    """Our loopback IdP, registered as acme's login provider for the gateway's /static route."""
    idp = LoopbackIdp()
    gw.api("POST", "/v1/tenants/acme/login-providers", {
        "name": "company-idp", "issuer": idp.url, "client_id": IDP_CLIENT, "client_secret": IDP_SECRET,
        "scopes": ["email"], "grants": [{"resource": gw.static_url, "scopes": ["tools:read"]}],
        "allow_registration": True})
    return idp


async def as_person(url, browser, storage, work):
    metadata = OAuthClientMetadata(redirect_uris=[browser.redirect_uri], client_name="pytest IDE",
                                   grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                                   token_endpoint_auth_method="none")
    provider = OAuthClientProvider(server_url=url, client_metadata=metadata, storage=storage,
                                   redirect_handler=browser.redirect_handler, callback_handler=browser.callback_handler)
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                return await work(s)


def test_the_python_sdk_signs_a_person_in_and_their_tool_calls_through_the_gateway_are_theirs(gw):  # noqa: F811
    idp = company_idp(gw)
    try:
        browser = HeadlessBrowser("http://127.0.0.1:33418/callback")

        async def work(s):
            tools = [t.name for t in (await s.list_tools()).tools]
            return tools, await s.call_tool("whoami", {})

        storage = MemoryStorage()
        tools, result = asyncio.run(as_person(gw.static_url, browser, storage, work))
        assert tools == ["whoami"] and not result.is_error, (tools, result)
        assert browser.pages and "person:alice@acme.test" in browser.pages[0], "the consent page named the person"
        # The upstream saw the person, never a mayfly token.
        seen = gw.static.seen[-1]
        assert seen["mcp-caller-sub"] == "person:alice@acme.test", seen
        client_id = seen["mcp-caller-client"]
        assert client_id.startswith("mfy_dcr_"), seen
        assert seen["authorization"] == "Bearer static-upstream-pat-do-not-leak"
        events = gw.mcp_events(lambda items: any(e["workload"] == "person:alice@acme.test" and e["mcp"]["name"] == "whoami"
                                                 for e in items))
        mine = [e for e in events if e["workload"] == "person:alice@acme.test"]
        assert any(e["mcp"]["name"] == "whoami" and e["client_id"] == client_id and e["lease_id"] for e in mine), \
            [(e["mcp"], e["client_id"], e["lease_id"]) for e in mine]
        sessions = gw.api("GET", "/v1/tenants/acme/sessions?workload=person:alice@acme.test")["items"]
        assert sessions and sessions[0]["client_name"] == "pytest IDE", sessions

        assert storage.tokens.refresh_token.startswith("mfy_rt_")

        # Revoking the person stops their next call at the gateway within a second.
        token = storage.tokens.access_token

        def status():
            res = httpx2.post(gw.static_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                              headers={"Authorization": f"Bearer {token}",
                                       "Accept": "application/json, text/event-stream"}, timeout=10)
            return res.status_code

        assert status() == 200
        gw.api("POST", "/v1/tenants/acme/revocations", {"workload": "person:alice@acme.test", "reason": "offboarded"})
        deadline = time.time() + 1.0
        while status() != 401:
            assert time.time() < deadline, "still served a second after the revocation"
            time.sleep(0.05)
        assert gw.api("GET", "/v1/tenants/acme/sessions?workload=person:alice@acme.test")["items"][0]["revoked_at"]
    finally:
        idp.close()


def test_the_typescript_sdk_signs_a_person_in_with_a_dpop_bound_session_and_calls_through_the_gateway(gw):  # noqa: F811
    import os
    import subprocess

    from test_mcp_sdk import NODE

    idp = company_idp(gw)
    try:
        run = subprocess.run(["node", str(NODE / "person_client.mjs"), gw.static_url, "whoami"],
                             capture_output=True, text=True, env=dict(os.environ), timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        out = json.loads(run.stdout)
        assert out["tools"] == ["whoami"] and not out["toolResult"].get("isError"), out
        assert out["claims"]["sub"] == "person:alice@acme.test", out
        assert out["claims"]["client_id"].startswith("mfy_dcr_"), out
        # The SDK's DpopSession bound the person's token (and session) to its key.
        assert out["token_type"].lower() == "dpop" and out["claims"]["cnf"]["jkt"] == out["jkt"], out
        assert out["refresh"], out
        seen = gw.static.seen[-1]
        assert seen["mcp-caller-sub"] == "person:alice@acme.test", seen
        sessions = gw.api("GET", "/v1/tenants/acme/sessions?workload=person:alice@acme.test")["items"]
        assert sessions[0]["dpop_bound"] and sessions[0]["client_name"] == "node IDE", sessions
    finally:
        idp.close()
