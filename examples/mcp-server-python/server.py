"""An MCP server (official Python SDK, mcp 2.3) that accepts mayfly tokens.

- Verifies each bearer token offline against mayfly's JWKS: signature, `typ`
  at+jwt, `iss`, `aud` (this server's resource URI), `exp`.
- A delegated token (one with an `act` claim: an agent acting for someone)
  is also checked at mayfly's introspection endpoint, always: revoking an
  agent's workload, or a lease earlier in the chain, ends such tokens, and
  only mayfly can see that (the token's own claims do not name them). With
  no `resource_server` credentials configured, delegated tokens are refused.
- Publishes RFC 9728 protected-resource metadata naming mayfly, so SDK
  clients discover where to get tokens.
- Per-tool scopes with a real `403 insufficient_scope` challenge.
- Strict mode (MAYFLY_STRICT=1) asks mayfly's introspection endpoint for
  every token, so any revocation bites on the next call instead of at expiry.
- Logs every tool call with the tenant, workflow and workload of its token.
- Sender-constrained tokens (RFC 9449): a token bound to a DPoP key
  (`cnf.jkt`) is accepted only as `Authorization: DPoP` with a proof of that
  key for this request (`htm`, `htu` = MCP_RESOURCE, `ath`, `iat` within
  60 s, each `jti` once); the same token sent as `Bearer` is refused, as is
  an unbound token sent as `DPoP`.

Environment: MAYFLY_ISSUER and MAYFLY_TENANT (both required: a token is
accepted only if its `tenant` is the one that registered this server),
MCP_HOST/MCP_PORT (127.0.0.1:8001),
MCP_RESOURCE (http://{host}:{port}/mcp), MAYFLY_STRICT, and, for strict mode
and delegated tokens, MAYFLY_CLIENT_ID/MAYFLY_CLIENT_SECRET of a
`resource_server` client.
"""

import base64
import collections
import contextvars
import hashlib
import json
import logging
import os
import sys
import threading
import time
import urllib.parse
import urllib.request

import anyio
import jwt
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl
from starlette.middleware import Middleware

ISSUER = os.environ["MAYFLY_ISSUER"]  # byte-identical to mayfly's `iss` and metadata `issuer`
HOST = os.environ.get("MCP_HOST", "127.0.0.1")
PORT = int(os.environ.get("MCP_PORT", "8001"))
RESOURCE = os.environ.get("MCP_RESOURCE", f"http://{HOST}:{PORT}/mcp")  # == the token's `aud`
STRICT = os.environ.get("MAYFLY_STRICT") == "1"
# A `resource_server` client of TENANT, for introspection (strict mode, delegated tokens).
INTROSPECTION_CREDS = (os.environ.get("MAYFLY_CLIENT_ID"), os.environ.get("MAYFLY_CLIENT_SECRET"))
# The mayfly tenant that owns this server: tokens of other tenants are refused.
# Mandatory: the `aud` check alone trusts whoever holds the URI at mayfly.
TENANT = os.environ["MAYFLY_TENANT"]
BASE_SCOPE = "issues:read"  # needed to connect at all; published in the resource metadata
TOOL_SCOPES = {"list_issues": {"issues:read"}, "create_issue": {"issues:write"}}

log = logging.getLogger("mcp-example")


_log_lock = threading.Lock()


def log_event(**fields) -> None:
    # Verification runs on worker threads: print() writes the line and its
    # newline separately, so two threads could interleave them. One write of
    # the whole line, under a lock, keeps each event on its own line.
    line = json.dumps(fields, sort_keys=True) + "\n"
    with _log_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


# The proof the current request carried, checked (set by DpopGate): (jkt, jti).
PROVEN: contextvars.ContextVar = contextvars.ContextVar("proven_dpop", default=None)
DPOP_ALGS = ("ES256", "EdDSA", "RS256")
PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
MAX_SEEN_PROOFS = 100_000
# Proofs already used, for as long as one could be accepted: spent only once
# the token they came with verified (so junk tokens cannot fill it).
_seen_proofs: set = set()
_seen_order: collections.deque = collections.deque()  # (forget at, (jkt, jti)), in time order
_seen_lock = threading.Lock()


def spend_proof(jkt: str, jti: str) -> bool:
    """True the first time this key's proof jti is used."""
    now = int(time.time())
    with _seen_lock:
        while _seen_order and _seen_order[0][0] < now:
            _seen_proofs.discard(_seen_order.popleft()[1])
        if (jkt, jti) in _seen_proofs or len(_seen_proofs) >= MAX_SEEN_PROOFS:
            return False
        _seen_proofs.add((jkt, jti))
        _seen_order.append((now + 65, (jkt, jti)))
        return True


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: dict) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, no whitespace."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    members = json.dumps({m: jwk[m] for m in required}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(members.encode()).digest())


def check_dpop_proof(proofs: list, token: str, method: str) -> tuple:
    """(thumbprint, jti) of a valid proof for this request; ValueError otherwise."""
    if len(proofs) != 1:
        raise ValueError("exactly one DPoP proof is required")
    proof = proofs[0]
    header = jwt.get_unverified_header(proof)
    jwk = header.get("jwk")
    if header.get("typ", "").lower() != "dpop+jwt" or header.get("alg") not in DPOP_ALGS:
        raise ValueError("not a DPoP proof (typ dpop+jwt, ES256/EdDSA/RS256)")
    if not isinstance(jwk, dict) or any(m in jwk for m in PRIVATE_JWK_MEMBERS):
        raise ValueError("the proof's jwk must be one public key")
    if jwk.get("kty") == "OKP" and jwk.get("crv") != "Ed25519":
        raise ValueError("EdDSA proofs use Ed25519 keys")
    key = jwt.PyJWK(jwk, algorithm=header["alg"])
    if jwk.get("kty") == "RSA" and key.key.key_size < 2048:
        raise ValueError("RSA proof keys have at least 2048 bits")
    claims = jwt.decode(proof, key.key, algorithms=[header["alg"]], options={
        "require": ["jti", "htm", "htu", "iat"], "verify_iat": False})
    now = int(time.time())
    if claims["htm"] != method or claims["htu"].split("?")[0].split("#")[0] != RESOURCE:
        raise ValueError("the proof names another request (htm/htu)")
    if not isinstance(claims["iat"], int) or not now - 60 <= claims["iat"] <= now + 5:
        raise ValueError("the proof's iat is too old or in the future")
    if claims.get("ath") != b64url(hashlib.sha256(token.encode()).digest()):
        raise ValueError("the proof's ath is not this token's hash")
    return jwk_thumbprint(jwk), str(claims["jti"])


class DpopGate:
    """Outermost ASGI middleware: checks `Authorization: DPoP` and its proof,
    then hands the token on as Bearer (all the SDK's auth reads) with the
    proven key and jti in PROVEN for the verifier, which matches the key to `cnf.jkt`
    and spends the jti once the token has verified."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        headers = scope.get("headers", []) if scope["type"] == "http" else []
        auth = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), "")
        if auth[:5].lower() != "dpop ":
            return await self.app(scope, receive, send)
        token = auth[5:].strip()
        try:
            proven = check_dpop_proof([v.decode("latin-1") for k, v in headers if k == b"dpop"], token, scope["method"])
        except Exception as e:  # any failure is a 401 with the DPoP challenge
            log_event(event="dpop_refused", reason=str(e) if isinstance(e, ValueError) else type(e).__name__)
            body = json.dumps({"error": "invalid_dpop_proof", "error_description": "the DPoP proof is not valid"}).encode()
            challenge = f'DPoP error="invalid_dpop_proof", algs="{" ".join(DPOP_ALGS)}"'
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"www-authenticate", challenge.encode())]})
            return await send({"type": "http.response.body", "body": body})
        rest = [(k, v) for k, v in headers if k != b"authorization"]
        scope = dict(scope, headers=rest + [(b"authorization", f"Bearer {token}".encode())])
        reset = PROVEN.set(proven)
        try:
            await self.app(scope, receive, send)
        finally:
            PROVEN.reset(reset)


class MayflyVerifier:
    """mcp.server.auth.provider.TokenVerifier for mayfly access tokens."""

    def __init__(self) -> None:
        self._jwks = jwt.PyJWKClient(f"{ISSUER}/.well-known/jwks.json", cache_jwk_set=True, lifespan=300)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:  # PyJWKClient and urllib block: keep them off the event loop
            return await anyio.to_thread.run_sync(self._verify, token, PROVEN.get())
        except Exception as e:  # any failure is a 401, never a 500
            log.info("token rejected: %s", type(e).__name__)
            return None

    def _verify(self, token: str, proven: tuple | None) -> AccessToken | None:
        if jwt.get_unverified_header(token).get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
            return None  # RFC 9068: only access tokens
        key = self._jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key, algorithms=["ES256", "EdDSA"], audience=RESOURCE, issuer=ISSUER,
                            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]})
        if claims.get("tenant") != TENANT:
            return None
        # A bound token needs the proof of its key (DpopGate), and a bearer
        # token must not pose as a bound one.
        bound = (claims.get("cnf") or {}).get("jkt")
        if bound != (proven[0] if proven else None):
            reason = "a DPoP-bound token without its proof" if bound else "a bearer token sent as DPoP"
            log_event(event="token_refused", reason=reason, jti=claims["jti"])
            return None
        if proven and not spend_proof(*proven):
            log_event(event="token_refused", reason="the DPoP proof was used before", jti=claims["jti"])
            return None
        # Offline checks match revocations against the token's own claims; a
        # delegated token can be ended by a rule on an actor or an ancestor
        # lease that those claims do not show, so ask mayfly about it.
        delegated = "act" in claims
        if (STRICT or delegated) and not self._introspect_active(token, claims["jti"]):
            reason = "inactive at mayfly" if all(INTROSPECTION_CREDS) else "cannot introspect (no credentials)"
            log_event(event="token_refused", reason=reason, jti=claims["jti"], delegated=delegated)
            return None
        return AccessToken(token=token, client_id=claims["client_id"], scopes=claims.get("scope", "").split(),
                           expires_at=claims["exp"], resource=RESOURCE, subject=claims["sub"], claims=claims)

    @staticmethod
    def _introspect_active(token: str, jti: str) -> bool:
        """Whether mayfly says the token is active; False when it cannot be asked."""
        if not all(INTROSPECTION_CREDS):
            return False
        creds = ":".join(INTROSPECTION_CREDS)
        req = urllib.request.Request(
            f"{ISSUER}/oauth2/introspect",
            data=urllib.parse.urlencode({"token": token}).encode(),
            headers={"Authorization": "Basic " + base64.b64encode(creds.encode()).decode(),
                     "Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(req, timeout=5) as res:
            active = json.load(res).get("active") is True
        log_event(event="token_introspected", jti=jti, active=active)
        return active


mcp = MCPServer(
    "mayfly-example",
    token_verifier=MayflyVerifier(),
    auth=AuthSettings(issuer_url=ISSUER, resource_server_url=RESOURCE, required_scopes=[BASE_SCOPE],
                      validate_token_resource=False),  # the verifier checks `aud` itself
)


def actors(act) -> list:
    """The agents in an RFC 8693 `act` chain, outermost (the current actor) first."""
    chain = []
    while isinstance(act, dict):
        chain.append(act.get("sub"))
        act = act.get("act")
    return chain


def attributed(tool: str) -> dict:
    """Who is calling, from the verified token; logged for every call. With
    delegation, `sub` is the person (or workload) the agents act for and
    `agents` the chain of agents, current one first."""
    claims = (get_access_token().claims or {}) if get_access_token() else {}
    who = {k: claims.get(k) for k in ("tenant", "workflow", "sub", "client_id", "jti")}
    who["agents"] = actors(claims.get("act"))
    if who["agents"]:
        who["on_behalf_of"] = claims.get("sub")
    log_event(event="tool_call", tool=tool, **who)
    return who


@mcp.tool()
def list_issues() -> dict:
    """List open issues (scope issues:read)."""
    return {"issues": ["#1 flaky test", "#2 release notes"], "caller": attributed("list_issues")}


@mcp.tool()
def create_issue(title: str) -> dict:
    """Open an issue (scope issues:write)."""
    return {"created": title, "caller": attributed("create_issue")}


class ToolScopeGate:
    """403 insufficient_scope for a tools/call whose tool needs scopes the token lacks.

    The SDK has no per-tool scopes; this pure-ASGI middleware sits inside the
    SDK's auth middleware (so the token is verified) and reads the JSON-RPC body.
    """

    def __init__(self, app):
        self.app = app
        self.metadata_url = str(build_resource_metadata_url(AnyHttpUrl(RESOURCE)))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not isinstance(scope.get("user"), AuthenticatedUser):
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False) and msg["type"] == "http.request"
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            rpc = json.loads(body)
        except ValueError:
            rpc = None
        params = rpc.get("params") if isinstance(rpc, dict) and rpc.get("method") == "tools/call" else None
        name = params.get("name") if isinstance(params, dict) else None
        held = set(scope["auth"].scopes)
        missing = TOOL_SCOPES.get(name, set()) - held if isinstance(name, str) else set()
        if not missing:
            return await self.app(scope, replay, send)
        needed = " ".join(sorted(TOOL_SCOPES[name]))
        ask = " ".join(sorted(held | TOOL_SCOPES[name]))  # the full set: older clients ask only for what is named
        log_event(event="tool_refused", tool=name, missing=sorted(missing), sub=scope["user"].access_token.subject)
        challenge = (f'Bearer error="insufficient_scope", error_description="tool {name} requires scope {needed}", '
                     f'scope="{ask}", resource_metadata="{self.metadata_url}"')
        out = json.dumps({"jsonrpc": "2.0", "id": rpc.get("id"), "error": {
            "code": -32001, "message": f"insufficient_scope: tool {name} requires scope {needed}"}}).encode()
        await send({"type": "http.response.start", "status": 403, "headers": [
            (b"content-type", b"application/json"), (b"www-authenticate", challenge.encode())]})
        await send({"type": "http.response.body", "body": out})


app = mcp.streamable_http_app(host=HOST)  # /mcp and /.well-known/oauth-protected-resource/mcp
app.user_middleware.append(Middleware(ToolScopeGate))  # innermost: after the SDK's auth
app.user_middleware.insert(0, Middleware(DpopGate))  # outermost: before the SDK's auth

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if not all(INTROSPECTION_CREDS):
        if STRICT:
            sys.exit("MAYFLY_STRICT=1 needs MAYFLY_CLIENT_ID and MAYFLY_CLIENT_SECRET (a resource_server client)")
        log.warning("no MAYFLY_CLIENT_ID/MAYFLY_CLIENT_SECRET: delegated tokens (with `act`) will be refused")
    uvicorn.run(app, host=HOST, port=PORT, log_level="warning")
