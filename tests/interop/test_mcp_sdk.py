"""mayfly with MCP clients and servers we did not write.

Starts the real mayfly binary (SQLite and Postgres), registers the example MCP
server (examples/mcp-server-python, official Python SDK) as a resource with two
scopes, and drives it with the Python SDK's ClientCredentialsOAuthProvider, the
TypeScript SDK's ClientCredentialsProvider, pre-obtained tokens, and node jose.
"""

import asyncio
import base64
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client

import httpkit
from httpkit import free_port, jti, request  # noqa: F401 (other test modules import them from here)

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE = ROOT / "tests" / "interop" / "node"
MASTER_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
ADMIN_SECRET = "mfy_cs_interop-admin-secret-0123456789abcdef0123"


# What must never appear in mayfly's log: a client secret (its prefix), a
# JWS (ours or anyone's), the master key, or an HTTP credential header.
SECRET_PATTERNS = [
    re.compile(r"mfy_cs_[A-Za-z0-9_-]{8,}"),
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    re.compile(re.escape(MASTER_KEY)),
    re.compile(r"(?i)authorization:\s*(basic|bearer|dpop)\s+\S+"),
]


def secrets_in(text):
    """Every match of a secret pattern in `text`."""
    return [m.group(0) for p in SECRET_PATTERNS for m in p.finditer(text)]


def wait_for(url, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if request("GET", url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up at {url}")


class AdminApi(httpkit.AdminApi):
    """The admin calls, plus a client of tenant `acme` from a {resource: scopes} map."""

    def client(self, name, kind, workflows, grants):
        out = self.api("POST", "/v1/tenants/acme/clients", {
            "client_id": name, "kind": kind, "workflows": workflows,
            "grants": [{"resource": r, "scopes": s} for r, s in grants.items()]})
        return name, out["client_secret"]


class Stack(AdminApi):
    """mayfly + the example MCP server (strict mode unless told) + a tenant with clients."""

    def __init__(self, backend, tmp_path, strict=True):
        self.tmp = tmp_path
        self.procs, self.logs = [], []
        port = free_port()
        self.issuer = f"http://127.0.0.1:{port}"
        db = httpkit.store_url(backend, tmp_path, "interop")
        binary = os.environ.get("MAYFLY_BIN", str(ROOT / "target" / "debug" / "mayfly"))
        env = dict(os.environ, MAYFLY_LISTEN=f"127.0.0.1:{port}", MAYFLY_DATABASE_URL=db, MAYFLY_MASTER_KEY=MASTER_KEY,
                   MAYFLY_BOOTSTRAP_ADMIN_SECRET=ADMIN_SECRET, RUST_LOG="info",
                   # The stand-in OIDC issuers of the federation tests listen on loopback.
                   MAYFLY_FEDERATION_ALLOW_LOOPBACK="1")
        self.mayfly_log = open(tmp_path / "mayfly.log", "w")
        self.procs.append(subprocess.Popen([binary], env=env, stdout=self.mayfly_log, stderr=subprocess.STDOUT))
        wait_for(f"{self.issuer}/readyz", self.procs[-1], "mayfly")

        mcp_port = free_port()
        self.mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
        self.admin = self.mint(("mayfly-admin", ADMIN_SECRET), resource=self.issuer, scope="mayfly:admin")
        self.api("POST", "/v1/tenants", {"id": "acme", "name": "Acme"})
        self.api("POST", "/v1/tenants/acme/resources",
                 {"uri": self.mcp_url, "name": "example MCP server", "scopes": ["issues:read", "issues:write"]})
        self.api("POST", "/v1/tenants/acme/resources", {"uri": "https://mcp.acme.test/other", "scopes": ["issues:read"]})
        self.reader = self.client("reader", "agent", ["release"], {self.mcp_url: ["issues:read"],
                                                                   "https://mcp.acme.test/other": ["issues:read"]})
        self.nightly = self.client("nightly", "ci", ["nightly"], {self.mcp_url: ["issues:read"]})
        self.rs = self.client("example-rs", "resource_server", ["*"], {})

        self.mcp_log_path = self.example_server(mcp_port, "mcp.log", strict=strict, creds=self.rs)

    def example_server(self, port, log_name, *, strict, creds):
        """Starts examples/mcp-server-python as the resource `self.mcp_url` on `port`; returns its log's path."""
        env = dict(os.environ, MAYFLY_ISSUER=self.issuer, MCP_PORT=str(port), MCP_RESOURCE=self.mcp_url,
                   MAYFLY_TENANT="acme")
        for name in ("MAYFLY_STRICT", "MAYFLY_CLIENT_ID", "MAYFLY_CLIENT_SECRET"):
            env.pop(name, None)
        if strict:
            env["MAYFLY_STRICT"] = "1"
        if creds:
            env["MAYFLY_CLIENT_ID"], env["MAYFLY_CLIENT_SECRET"] = creds
        log_path = self.tmp / log_name
        log = open(log_path, "w")
        self.logs.append(log)
        server = ROOT / "examples" / "mcp-server-python" / "server.py"
        self.procs.append(subprocess.Popen([sys.executable, str(server)], env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_for(f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp", self.procs[-1], "MCP server")
        return log_path

    def cli_token(self, creds, resource, *extra):
        """A token fetched the way CI jobs do: `mayfly token`."""
        binary = os.environ.get("MAYFLY_BIN", str(ROOT / "target" / "debug" / "mayfly"))
        run = subprocess.run([binary, "token", "--from", self.issuer, "--resource", resource, "--client-id", creds[0], *extra],
                             env=dict(os.environ, MAYFLY_CLIENT_SECRET=creds[1]), capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    def server_log(self, path=None):
        text = (path or self.mcp_log_path).read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def close(self):
        httpkit.stop_all(self.procs)
        for log in [self.mayfly_log, *self.logs]:
            log.close()
        leaked = secrets_in((self.tmp / "mayfly.log").read_text())
        assert not leaked, f"mayfly logged secrets or tokens: {leaked[:3]}"


stack = httpkit.per_store(Stack, "stack")


class MemoryStorage:
    """mcp.client.auth.TokenStorage in memory."""

    def __init__(self):
        self.tokens, self.client_info = None, None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, info):
        self.client_info = info


async def with_session(url, work, *, creds=None, issuer=None, token=None):
    """Opens an MCP session authenticated by the SDK's client-credentials provider or a fixed token."""
    if token:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    else:
        provider = ClientCredentialsOAuthProvider(server_url=url, storage=MemoryStorage(), client_id=creds[0],
                                                  client_secret=creds[1], issuer=issuer)
        http = httpx2.AsyncClient(auth=provider, timeout=30)
    async with http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)


def payload(result):
    """A tool result's JSON, structured or as text."""
    if result.structured_content:
        return result.structured_content
    return json.loads(result.content[0].text)


def call(stack, work, **auth):
    return asyncio.run(with_session(stack.mcp_url, work, **auth))


def test_sdk_client_discovers_mayfly_and_calls_are_attributed(stack):
    async def work(s):
        tools = sorted(t.name for t in (await s.list_tools()).tools)
        return tools, await s.call_tool("list_issues", {})

    tools, result = call(stack, work, creds=stack.reader, issuer=stack.issuer)
    assert tools == ["create_issue", "list_issues"]
    assert not result.is_error, result
    caller = payload(result)["caller"]
    assert caller["tenant"] == "acme" and caller["workflow"] == "release" and caller["sub"] == "reader"
    logged = [e for e in stack.server_log() if e.get("event") == "tool_call"]
    assert logged and logged[-1] | {"tool": "list_issues"} == logged[-1]
    assert (logged[-1]["tenant"], logged[-1]["workflow"], logged[-1]["sub"]) == ("acme", "release", "reader")


def test_a_tool_needing_a_scope_the_token_lacks_gets_insufficient_scope(stack):
    token = stack.mint(stack.reader, stack.mcp_url)
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "create_issue", "arguments": {"title": "x"}}}
    status, headers, out = request("POST", stack.mcp_url, json_body=body, bearer=token,
                                   headers={"Accept": "application/json, text/event-stream"})
    assert status == 403, out
    challenge = headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="issues:read issues:write"' in challenge
    assert "resource_metadata=" in challenge

    async def work(s):
        try:
            res = await s.call_tool("create_issue", {"title": "x"})
            return "error" if res.is_error else "ok"
        except Exception as e:  # the SDK surfaces the 403's JSON-RPC error
            return str(e)

    outcome = call(stack, work, creds=stack.reader, issuer=stack.issuer)
    assert "insufficient_scope" in outcome, outcome


def test_a_token_for_another_resource_is_refused_with_401(stack):
    token = stack.mint(stack.reader, "https://mcp.acme.test/other")
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    status, headers, _ = request("POST", stack.mcp_url, json_body=body, bearer=token,
                                 headers={"Accept": "application/json, text/event-stream"})
    assert status == 401
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]


def test_revoking_a_workflow_stops_its_tokens_at_once_and_no_others(stack):
    release = stack.cli_token(stack.reader, stack.mcp_url)  # pre-obtained, as a CI job would
    # The control is minted before the revocation too: a token minted after a
    # rule is untouched by construction, so only an older one shows "no others".
    nightly = stack.cli_token(stack.nightly, stack.mcp_url)

    async def two_calls_around_revocation(s):
        first = await s.call_tool("list_issues", {})
        stack.api("POST", "/v1/tenants/acme/revocations", {"workflow": "release", "reason": "interop test"})
        try:
            second = await s.call_tool("list_issues", {})
            return first, "ok" if not second.is_error else "error"
        except Exception as e:
            return first, f"refused: {e}"

    first, second = call(stack, two_calls_around_revocation, token=release)
    assert not first.is_error
    assert second.startswith("refused"), second

    async def still_works(s):
        return await s.call_tool("list_issues", {})

    other = call(stack, still_works, token=nightly)
    assert not other.is_error and payload(other)["caller"]["workflow"] == "nightly"
    # The resource server refused the revoked token, and only that one.
    refused = {e["jti"] for e in stack.server_log() if e.get("event") == "token_refused"}
    assert refused == {jti(release)}, (refused, jti(release), jti(nightly))


def test_tokens_signed_before_and_after_a_key_rotation_both_work(stack):
    old = stack.mint(stack.reader, stack.mcp_url)
    keys_before = stack.api("GET", "/v1/keys")["items"]
    kid = lambda t: json.loads(base64.urlsafe_b64decode(t.split(".")[0] + "=="))["kid"]
    activated = stack.api("POST", "/v1/keys/rotate", {})
    # Replicas (here: this one) sign with the new key within seconds: wait for that, not a fixed time.
    assert activated["active"] != kid(old), (keys_before, activated)
    deadline, new = time.time() + 10, old
    while kid(new) != activated["active"]:
        assert time.time() < deadline, (keys_before, activated, stack.api("GET", "/v1/keys"))
        time.sleep(0.1)
        new = stack.mint(stack.reader, stack.mcp_url)

    async def work(s):
        return await s.call_tool("list_issues", {})

    for token in (old, new):
        assert not call(stack, work, token=token).is_error


def test_typescript_sdk_and_jose_accept_mayfly_tokens(stack):
    env = dict(os.environ, MCP_EXPECTED_ISSUER=stack.issuer)
    run = subprocess.run(["node", str(NODE / "client.mjs"), stack.mcp_url, *stack.nightly, "", "list_issues"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    out = json.loads(run.stdout)
    assert sorted(t["name"] for t in out["tools"]) == ["create_issue", "list_issues"]
    assert not out["toolResult"].get("isError")

    token = stack.mint(stack.nightly, stack.mcp_url)
    jwks = f"{stack.issuer}/.well-known/jwks.json"
    ok = subprocess.run(["node", str(NODE / "verify.mjs"), jwks, stack.issuer, stack.mcp_url, token],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["workflow"] == "nightly"
    bad = subprocess.run(["node", str(NODE / "verify.mjs"), jwks, stack.issuer, "https://mcp.acme.test/other", token],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "ERR_JWT_CLAIM_VALIDATION_FAILED" in bad.stdout


def test_the_log_scan_finds_each_kind_of_secret_it_looks_for():
    jws = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lnbmF0dXJlLWJ5dGVz"
    for leak in [ADMIN_SECRET, jws, MASTER_KEY, "Authorization: Bearer abc.def"]:
        assert secrets_in(f'level=INFO msg="x" value={leak}'), leak
    assert not secrets_in('level=INFO msg="token issued" client_id=ci-release lease=01a2')
