"""`mayfly gateway` in front of MCP servers we did not write, driven by SDK clients we did not write.

Upstreams: `@modelcontextprotocol/server-everything` (npm, Streamable HTTP) and
`mcp-server-time` (PyPI, stdio, bridged by the gateway's `command`). Clients:
the official Python SDK's ClientCredentialsOAuthProvider and the TypeScript
SDK's ClientCredentialsProvider, which find mayfly through the gateway's
RFC 9728 metadata. The per-tool policy lives on the resources in mayfly.
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mcp import ClientSession
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client

import httpkit
import httpx2
from test_mcp_sdk import ADMIN_SECRET, AdminApi, MASTER_KEY, NODE, ROOT, MemoryStorage, free_port, request, secrets_in, wait_for

EVERYTHING = NODE / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
# An argument value that must never reach the audit log or any log.
MARKER = "gateway-interop-argument-7f3a9c"


STATIC_PAT = "static-upstream-pat-do-not-leak"


class StaticTokenUpstream:
    """The smallest MCP server that takes one shared static token (ours): it
    records the headers of every request, to show what the gateway sends on."""

    def __init__(self):
        self.seen = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                msg = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.headers.get("Authorization") != f"Bearer {STATIC_PAT}":
                    return self.answer(401, {"error": "unauthorized"})
                if "id" not in msg:
                    return self.answer(202, None)
                result = {
                    "initialize": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                                   "serverInfo": {"name": "static-token-upstream", "version": "1"}},
                    "tools/list": {"tools": [{"name": "whoami", "inputSchema": {"type": "object"}}]},
                    "tools/call": {"content": [{"type": "text", "text": "ok"}]},
                }.get(msg["method"])
                body = {"jsonrpc": "2.0", "id": msg["id"]}
                body.update({"result": result} if result is not None else {"error": {"code": -32601, "message": "no such method"}})
                self.answer(200, body)

            def answer(self, status, body):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class GatewayStack(AdminApi):
    """mayfly, server-everything, and one gateway with two routes (HTTP and stdio)."""

    def __init__(self, backend, tmp_path):
        self.tmp, self.procs, self.logs = tmp_path, [], []
        port = free_port()
        self.issuer = f"http://127.0.0.1:{port}"
        db = httpkit.store_url(backend, tmp_path, "interop_gw")
        self.binary = os.environ.get("MAYFLY_BIN", str(ROOT / "target" / "debug" / "mayfly"))
        self.mayfly_env = dict(os.environ, MAYFLY_LISTEN=f"127.0.0.1:{port}", MAYFLY_DATABASE_URL=db,
                               MAYFLY_MASTER_KEY=MASTER_KEY, MAYFLY_BOOTSTRAP_ADMIN_SECRET=ADMIN_SECRET, RUST_LOG="info",
                               # people's sign-in (test_people.py) goes through an IdP on loopback
                               MAYFLY_FEDERATION_ALLOW_LOOPBACK="true")
        self.start_mayfly()
        self.static = StaticTokenUpstream()

        everything_port = free_port()
        self.spawn(["node", str(EVERYTHING), "streamableHttp"], dict(os.environ, PORT=str(everything_port)), "everything.log")
        self.wait_port(everything_port, "server-everything")

        gw_port = free_port()
        self.gateway = f"http://127.0.0.1:{gw_port}"
        self.mcp_url, self.time_url = f"{self.gateway}/everything", f"{self.gateway}/time"
        self.static_url = f"{self.gateway}/static"
        self.admin = self.mint(("mayfly-admin", ADMIN_SECRET), self.issuer, "mayfly:admin")
        self.api("POST", "/v1/tenants", {"id": "acme", "name": "Acme"})
        self.api("POST", "/v1/tenants/acme/resources", {
            "uri": self.mcp_url, "scopes": ["tools:read", "tools:write"],
            "tools": {"echo": {"scopes": ["tools:read"]}, "trigger-long-running-operation": {"scopes": ["tools:read"]},
                      "get-sum": {"scopes": ["tools:write"]}}})
        self.api("POST", "/v1/tenants/acme/resources", {"uri": self.time_url, "scopes": ["time:read"]})
        self.api("POST", "/v1/tenants/acme/resources", {
            "uri": self.static_url, "scopes": ["tools:read"],
            "tools": {"whoami": {"scopes": ["tools:read"], "calls_per_minute": 3}, "*": {"scopes": ["tools:read"]}}})
        self.reader = self.client("reader", "agent", ["triage"], {
            self.mcp_url: ["tools:read"], self.time_url: ["time:read"], self.static_url: ["tools:read"]})
        self.writer = self.client("writer", "agent", ["deploy"], {
            self.mcp_url: ["tools:read", "tools:write"], self.static_url: ["tools:read"]})
        self.gw_client = self.client("gateway", "resource_server", ["*"], {})

        credential = tmp_path / "upstream-pat"
        credential.write_text(f"{STATIC_PAT}\n")
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(f"""
issuer = "{self.issuer}"

[[route]]
path = "/everything"
resource = "{self.mcp_url}"
upstream = "http://127.0.0.1:{everything_port}/mcp"
upstream_credential_file = "{credential}"

[[route]]
path = "/time"
resource = "{self.time_url}"
command = {json.dumps([sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"])}

[[route]]
path = "/static"
resource = "{self.static_url}"
upstream = "{self.static.url}"
upstream_credential_file = "{credential}"
forward_identity = true
""")
        self.start_gateway(gw_port)

    def start_mayfly(self):
        self.spawn([self.binary], self.mayfly_env, "mayfly.log", append=True)
        self.mayfly = self.procs[-1]
        wait_for(f"{self.issuer}/readyz", self.mayfly, "mayfly")

    def stop_mayfly(self):
        self.mayfly.terminate()
        self.mayfly.wait(timeout=10)

    def start_gateway(self, port=None, *flags):
        """A gateway process on `port` (another replica of the same routes when the first runs); its URL."""
        port = port or free_port()
        genv = dict(os.environ, MAYFLY_CLIENT_ID=self.gw_client[0], MAYFLY_CLIENT_SECRET=self.gw_client[1], RUST_LOG="info")
        self.spawn([self.binary, "gateway", "--config", str(self.config), "--listen", f"127.0.0.1:{port}", *flags],
                   genv, f"gateway-{port}.log")
        wait_for(f"http://127.0.0.1:{port}/readyz", self.procs[-1], "gateway")
        return f"http://127.0.0.1:{port}"

    def spawn(self, argv, env, log_name, append=False):
        log = open(self.tmp / log_name, "a" if append else "w")
        self.logs.append(log)
        self.procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))

    def wait_port(self, port, what):
        import socket
        import time
        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.procs[-1].poll() is None, f"{what} exited"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not listen on {port}")

    def mcp_events(self, until):
        """The tenant's mcp.request events, once `until(items)` holds (delivery is asynchronous)."""
        import time
        deadline = time.time() + 15
        while True:
            items = self.api("GET", "/v1/tenants/acme/audit?action=mcp.request&limit=1000")["items"]
            if until(items) or time.time() > deadline:
                return items
            time.sleep(0.2)

    def close(self):
        httpkit.stop_all(list(reversed(self.procs)))
        for log in self.logs:
            log.close()
        self.static.close()
        for path in [self.tmp / "mayfly.log", *self.tmp.glob("gateway-*.log")]:
            text = path.read_text()
            leaked = secrets_in(text) + [s for s in ("static-upstream-pat", MARKER) if s in text]
            assert not leaked, f"{path.name} logged secrets, tokens or arguments: {leaked[:3]}"


gw = httpkit.per_store(GatewayStack, "gw")


async def session(url, creds, issuer, work):
    provider = ClientCredentialsOAuthProvider(server_url=url, storage=MemoryStorage(), client_id=creds[0],
                                              client_secret=creds[1], issuer=issuer)
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                return await work(s)


def test_the_python_sdk_sees_only_the_tools_its_token_may_call_and_gets_step_up_on_the_others(gw):
    async def work(s):
        tools = sorted(t.name for t in (await s.list_tools()).tools)
        echoed = await s.call_tool("echo", {"message": MARKER})
        try:
            refused = await s.call_tool("get-sum", {"a": 1, "b": 2})
            refused = "error" if refused.is_error else "ok"
        except Exception as e:  # the SDK tries to step up on the 403, and mayfly will not grant the scope
            refused = f"refused: {e}"
        return tools, echoed, refused

    tools, echoed, refused = asyncio.run(session(gw.mcp_url, gw.reader, gw.issuer, work))
    assert tools == ["echo", "trigger-long-running-operation"], tools
    assert not echoed.is_error and MARKER in echoed.content[0].text
    assert refused.startswith("refused"), refused  # the audit events below show the gateway denied it

    token = gw.mint(gw.reader, gw.mcp_url)
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "get-sum", "arguments": {"a": 1, "b": 2}}}
    status, headers, _ = request("POST", gw.mcp_url, json_body=body, bearer=token,
                                 headers={"Accept": "application/json, text/event-stream"})
    assert status == 403
    challenge = headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="tools:write"' in challenge, challenge
    assert f'resource_metadata="{gw.gateway}/.well-known/oauth-protected-resource/everything"' in challenge, challenge

    def tool_calls(items):
        return [(e["mcp"]["name"], e["outcome"]) for e in items if e["mcp"]["method"] == "tools/call"]

    events = gw.mcp_events(lambda items: len(tool_calls(items)) >= 3)
    calls = tool_calls(events)
    assert ("echo", "success") in calls and ("get-sum", "denied") in calls, calls
    for e in events:
        if e["lease_id"]:
            assert (e["workload"], e["client_id"], e["workflow"]) == ("reader", "reader", "triage"), e
    assert MARKER not in json.dumps(events), "arguments never reach the audit log"
    echo = next(e for e in events if e["mcp"]["name"] == "echo")
    assert len(echo["mcp"]["arguments_sha256"]) == 64


def test_progress_notifications_stream_through_the_gateway_before_the_result(gw):
    seen = []

    async def on_progress(progress, total, message):
        seen.append(progress)

    async def work(s):
        return await s.call_tool("trigger-long-running-operation", {"duration": 1.5, "steps": 3},
                                 progress_callback=on_progress)

    result = asyncio.run(session(gw.mcp_url, gw.reader, gw.issuer, work))
    assert not result.is_error, result
    assert seen == [1, 2, 3], seen


def test_the_typescript_sdk_calls_a_tool_through_the_gateway(gw):
    env = dict(os.environ, MCP_EXPECTED_ISSUER=gw.issuer)
    run = subprocess.run(["node", str(NODE / "client.mjs"), gw.mcp_url, *gw.reader, "", "echo", json.dumps({"message": "hi"})],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    out = json.loads(run.stdout)
    assert sorted(t["name"] for t in out["tools"]) == ["echo", "trigger-long-running-operation"]
    assert not out["toolResult"].get("isError") and "hi" in out["toolResult"]["content"][0]["text"]

    # A tool its token may not call: the gateway's 403 insufficient_scope reaches the SDK,
    # which tries to step up; mayfly will not grant the scope, so the call fails.
    refused = subprocess.run(["node", str(NODE / "client.mjs"), gw.mcp_url, *gw.reader, "", "get-sum", json.dumps({"a": 1, "b": 2})],
                             capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    events = gw.mcp_events(lambda items: any(e["mcp"]["name"] == "get-sum" for e in items))
    assert any(e["mcp"]["name"] == "get-sum" and e["outcome"] == "denied" and e["reason"] == "insufficient_scope"
               for e in events), events


def test_a_stdio_server_from_pypi_is_bridged_by_the_gateway(gw):
    async def work(s):
        tools = sorted(t.name for t in (await s.list_tools()).tools)
        return tools, await s.call_tool("get_current_time", {"timezone": "UTC"})

    tools, result = asyncio.run(session(gw.time_url, gw.reader, gw.issuer, work))
    assert "get_current_time" in tools, tools
    assert not result.is_error and "UTC" in result.content[0].text, result


async def with_token(url, token, work):
    """A session on a fixed token, as an agent holds one: the SDK cannot quietly mint another."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                return await work(s)


def test_revoking_a_workflow_stops_its_next_call_at_both_gateways_within_a_second_and_no_other_workflow(gw):
    second = gw.start_gateway()
    token, other = gw.mint(gw.reader, gw.mcp_url), gw.mint(gw.writer, gw.mcp_url)

    async def around_revocation(s1, s2, s3):
        first = [await s.call_tool("echo", {"message": "before"}) for s in (s1, s2, s3)]
        gw.api("POST", "/v1/tenants/acme/revocations", {"workflow": "triage", "reason": "interop: gateway"})
        await asyncio.sleep(1.0)  # the contract: the rule bites at every gateway within one second
        after = []
        for s in (s1, s2):
            try:
                r = await s.call_tool("echo", {"message": "after"})
                after.append("error" if r.is_error else "ok")
            except Exception as e:
                after.append(f"refused: {e}")
        untouched = await s3.call_tool("echo", {"message": "another workflow"})
        return first, after, untouched

    async def three_sessions():
        async with with_token_session(gw.mcp_url, token) as s1, \
                with_token_session(f"{second}/everything", token) as s2, \
                with_token_session(f"{second}/everything", other) as s3:
            return await around_revocation(s1, s2, s3)

    first, after, untouched = asyncio.run(three_sessions())
    assert not any(r.is_error for r in first), first
    assert all(a.startswith("refused") for a in after), after
    assert not untouched.is_error, "the deploy workflow's calls go on"

    fresh = gw.mint(gw.reader, gw.mcp_url)  # minted after the rule: untouched by it

    async def echo(s):
        return await s.call_tool("echo", {"message": "fresh"})

    assert not asyncio.run(with_token(gw.mcp_url, fresh, echo)).is_error


def with_token_session(url, token):
    """An initialized session on a fixed token, as an async context manager."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def open_session():
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            async with streamable_http_client(url, http_client=http) as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    yield s

    return open_session()


def mcp_post(url, token, body, session=None):
    headers = {"Accept": "application/json, text/event-stream"}
    if session:
        headers["Mcp-Session-Id"] = session
    return request("POST", url, json_body=body, bearer=token, headers=headers)


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def test_a_session_opened_by_one_workload_is_refused_to_another_workloads_token(gw):
    reader, writer = gw.mint(gw.reader, gw.mcp_url), gw.mint(gw.writer, gw.mcp_url)
    status, headers, _ = mcp_post(gw.mcp_url, reader, INIT)
    assert status == 200, status
    session = headers["Mcp-Session-Id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert mcp_post(gw.mcp_url, reader, ping, session)[0] == 200
    status, _, body = mcp_post(gw.mcp_url, writer, ping, session)
    assert (status, body["error"]) == (403, "session_not_yours"), (status, body)
    denied = gw.mcp_events(lambda items: any(e["reason"] == "session_of_another_workload" for e in items))
    assert any(e["reason"] == "session_of_another_workload" and e["workload"] == "writer" for e in denied), denied


def test_the_upstream_sees_only_the_gateways_credential_and_the_callers_identity_never_a_mayfly_token(gw):
    token = gw.mint(gw.reader, gw.static_url)
    jti = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
    status, headers, _ = mcp_post(gw.static_url, token, INIT)
    assert status == 200
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami", "arguments": {"x": MARKER}}}
    status, _, body = mcp_post(gw.static_url, token, call)
    assert status == 200 and body["result"]["content"][0]["text"] == "ok", body
    assert mcp_post(gw.static_url, "not-a-token", call)[0] == 401
    assert len(gw.static.seen) == 2, "a refused request never reaches the upstream"
    for seen in gw.static.seen:
        assert seen["authorization"] == f"Bearer {STATIC_PAT}"
        assert not any(token in v or token.split(".")[2] in v for v in seen.values()), "the caller's token went upstream"
        assert (seen["mcp-caller-workload"], seen["mcp-caller-workflow"], seen["mcp-caller-lease"]) == ("reader", "triage", jti)


def test_with_mayfly_down_the_gateway_serves_from_its_queue_then_refuses_and_delivers_every_event_once_back(gw):
    gateway = gw.start_gateway(None, "--audit-buffer-events", "6")
    url = f"{gateway}/everything"
    token = gw.mint(gw.reader, gw.mcp_url)
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    status, headers, _ = mcp_post(url, token, INIT)
    session = headers["Mcp-Session-Id"]
    gw.mcp_events(lambda items: any(e["mcp"]["session"] is None and e["outcome"] == "success" for e in items))
    time.sleep(1.0)  # the initialize event is delivered before mayfly goes
    gw.stop_mayfly()
    served = [mcp_post(url, token, dict(ping, id=i), session)[0] for i in range(10, 20)]
    assert served[:6] == [200] * 6, served
    assert served[6:] == [503] * 4, f"the queue's bound is 6 events: then the gateway refuses ({served})"
    gw.start_mayfly()
    events = gw.mcp_events(lambda items: len([e for e in items if e["mcp"]["method"] == "ping"]) >= 6)
    time.sleep(1.0)  # room for a duplicate delivery to show
    pings = [e for e in gw.api("GET", "/v1/tenants/acme/audit?action=mcp.request&limit=1000")["items"] if e["mcp"]["method"] == "ping"]
    assert sorted(int(e["request_id"]) for e in pings) == list(range(10, 16)), "every queued event, none twice"
    assert all(e["workload"] == "reader" and e["lease_id"] for e in pings), events
    deadline = time.time() + 10
    while mcp_post(url, token, dict(ping, id=99), session)[0] != 200:
        assert time.time() < deadline, "the gateway serves again once its queue drained"
        time.sleep(0.2)


def test_a_delegated_token_is_introspected_so_revoking_the_persons_lease_stops_the_agent_at_the_gateway(gw):
    helper = gw.client("helper", "agent", ["*"], {gw.static_url: ["tools:read"]})
    gw.api("PATCH", "/v1/tenants/acme/clients/reader", {"delegates": ["helper"]})
    plain = gw.mint(gw.reader, gw.static_url)
    status, _, out = request("POST", f"{gw.issuer}/oauth2/token", basic=helper, form={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": plain,
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "resource": gw.static_url})
    assert status == 200, out
    delegated = out["access_token"]
    assert mcp_post(gw.static_url, delegated, INIT)[0] == 200
    assert "helper" in gw.static.seen[-1]["mcp-caller-act"], gw.static.seen[-1]

    # The person's lease, revoked: the agent's token names neither it nor the agent's
    # workload in a way an offline check could see, so only introspection catches it.
    plain_jti = json.loads(__import__("base64").urlsafe_b64decode(plain.split(".")[1] + "=="))["jti"]
    gw.api("POST", "/v1/tenants/acme/revocations", {"lease_id": plain_jti, "reason": "interop: chain"})
    time.sleep(1.1)  # past the gateway's one-second introspection cache
    status, headers, _ = mcp_post(gw.static_url, delegated, INIT)
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"], status


def test_calls_per_minute_limit_each_workload_and_tool_with_a_429_and_retry_after(gw):
    reader, writer = gw.mint(gw.reader, gw.static_url), gw.mint(gw.writer, gw.static_url)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
    statuses = [mcp_post(gw.static_url, reader, dict(call, id=i))[0] for i in range(3)]
    assert statuses == [200, 200, 200], statuses
    status, headers, body = mcp_post(gw.static_url, reader, dict(call, id=9))
    assert (status, body["error"]) == (429, "rate_limited"), (status, body)
    assert 1 <= int(headers["Retry-After"]) <= 60, headers
    assert mcp_post(gw.static_url, writer, call)[0] == 200, "another workload has its own budget"
    other_tool = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "anything", "arguments": {}}}
    assert mcp_post(gw.static_url, reader, other_tool)[0] == 200, "and another tool too"
    limited = gw.mcp_events(lambda items: any(e["reason"] == "rate_limited" for e in items))
    assert any(e["reason"] == "rate_limited" and e["workload"] == "reader" for e in limited), limited
