"""A small OIDC IdP of our own on loopback and a headless browser, for people's
sign-in tests (interop and console): the IdP signs PERSON in without a form;
the browser follows every redirect, keeps mayfly's cookie, clicks Allow on the
consent page and catches the code at the redirect URI."""

import asyncio
import base64
import hashlib
import json
import re
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from mcp.shared.auth import AuthorizationCodeResult

IDP_CLIENT, IDP_SECRET = "mayfly-at-acme", "idp-secret-python-interop"
PERSON = {"sub": "00u1alice", "email": "alice@acme.test", "email_verified": True, "name": "Alice"}


class LoopbackIdp:
    """Discovery, a JWKS, /authorize (signs PERSON in at once) and /token (checks the secret and PKCE)."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.codes = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    return self.answer(200, {"issuer": outer.url, "jwks_uri": f"{outer.url}/jwks",
                                             "authorization_endpoint": f"{outer.url}/authorize",
                                             "token_endpoint": f"{outer.url}/token"})
                if url.path == "/jwks":
                    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(outer.key.public_key()))
                    return self.answer(200, {"keys": [dict(jwk, kid="k1", use="sig", alg="ES256")]})
                if url.path == "/authorize":
                    assert q["client_id"] == IDP_CLIENT and q["code_challenge_method"] == "S256", q
                    code = secrets.token_urlsafe(16)
                    outer.codes[code] = q
                    back = q["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": q["state"]})
                    self.send_response(302)
                    self.send_header("Location", back)
                    self.end_headers()
                    return None
                return self.answer(404, {})

            def do_POST(self):
                form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
                basic = "Basic " + base64.b64encode(f"{IDP_CLIENT}:{IDP_SECRET}".encode()).decode()
                pending = outer.codes.pop(form.get("code"), None)
                if self.headers.get("Authorization") != basic or pending is None:
                    return self.answer(400, {"error": "invalid_grant"})
                challenge = base64.urlsafe_b64encode(hashlib.sha256(form["code_verifier"].encode()).digest()).rstrip(b"=")
                if challenge.decode() != pending["code_challenge"]:
                    return self.answer(400, {"error": "invalid_grant"})
                now = int(time.time())
                claims = dict(PERSON, iss=outer.url, aud=IDP_CLIENT, nonce=pending["nonce"], iat=now, exp=now + 300)
                id_token = jwt.encode(claims, outer.key, algorithm="ES256", headers={"kid": "k1"})
                return self.answer(200, {"access_token": "idp", "token_type": "Bearer", "id_token": id_token})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class HeadlessBrowser:
    """The SDK's redirect and callback handlers: follows every redirect, clicks Allow, catches the code."""

    def __init__(self, redirect_uri):
        self.redirect_uri, self.result, self.pages = redirect_uri, None, []

    def sign_in(self, url):
        cookies = {}
        with httpx2.Client(follow_redirects=False, timeout=30) as http:
            for _ in range(10):
                if url.startswith(self.redirect_uri):
                    q = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(url).query))
                    self.result = AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))
                    return
                res = http.get(url, headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())})
                for c in res.headers.get_list("set-cookie"):
                    k, v = c.split(";")[0].split("=", 1)
                    cookies[k] = v
                if res.status_code == 200:  # the consent page
                    self.pages.append(res.text)
                    request = re.search(r'name="request" value="([^"]+)"', res.text).group(1)
                    consent = urllib.parse.urljoin(url, "consent")
                    res = http.post(consent, data={"request": request, "decision": "allow"},
                                    headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())})
                assert res.status_code in (302, 303), (res.status_code, res.text[:300])
                url = res.headers["location"]
        raise AssertionError("too many redirects")

    async def redirect_handler(self, url):
        await asyncio.to_thread(self.sign_in, url)

    async def callback_handler(self):
        return self.result
