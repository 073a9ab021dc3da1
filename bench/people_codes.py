"""Authorization codes (or refresh tokens) for bench/people.sh: signs the
bench person in N times through a loopback IdP (tests/interop/people_kit.py)
with a registered client whose https redirect keeps the consent, and writes
one token-request body per line. Codes live 60 s: the caller spends them at
once. Usage: people_codes.py BASE ADMIN_TOKEN RESOURCE N codes|refresh OUT"""

import base64
import concurrent.futures
import hashlib
import json
import pathlib
import secrets
import sys
import urllib.parse
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "interop"))
from people_kit import IDP_CLIENT, IDP_SECRET, HeadlessBrowser, LoopbackIdp  # noqa: E402

base, admin, resource, n, mode, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
REDIRECT = "https://ide.bench.example/cb"


def call(method, path, body=None, form=None, bearer=None):
    data, headers = None, {}
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    if form is not None:
        data, headers["Content-Type"] = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


idp = LoopbackIdp()
# Sign-in uses the tenant's first provider (by name) granting the resource:
# the one of an earlier run points at an IdP that is gone.
for p in call("GET", "/v1/tenants/demo/login-providers", bearer=admin)[1]["items"]:
    call("DELETE", f"/v1/tenants/demo/login-providers/{p['id']}", bearer=admin)
status, body = call("POST", "/v1/tenants/demo/login-providers", bearer=admin, body={
    "name": f"bench-{secrets.token_hex(4)}", "issuer": idp.url, "client_id": IDP_CLIENT, "client_secret": IDP_SECRET,
    "grants": [{"resource": resource, "scopes": ["issues:read"]}], "allow_registration": True,
    "max_ttl_seconds": 900, "refresh_ttl_seconds": 86400})
assert status == 201, body
status, client = call("POST", "/oauth2/register", body={"redirect_uris": [REDIRECT], "client_name": "bench IDE"})
assert status == 201, client
client_id = client["client_id"]
verifier = secrets.token_urlsafe(48)
challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
url = f"{base}/oauth2/authorize?" + urllib.parse.urlencode({
    "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "resource": resource,
    "code_challenge": challenge, "code_challenge_method": "S256"})


def code(_):
    browser = HeadlessBrowser(REDIRECT)
    browser.sign_in(url)
    return browser.result.code


def redeem(c):
    status, t = call("POST", "/oauth2/token", form=redemption(c))
    assert status == 200, t
    return t["refresh_token"]


def redemption(c):
    return {"grant_type": "authorization_code", "code": c, "client_id": client_id, "redirect_uri": REDIRECT,
            "code_verifier": verifier}


code(0)  # the first sign-in answers the consent page; later ones go straight back
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    codes = list(pool.map(code, range(n)))
    if mode == "refresh":
        tokens = list(pool.map(redeem, codes))
        lines = [urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": t, "client_id": client_id})
                 for t in tokens]
    else:
        lines = [urllib.parse.urlencode(redemption(c)) for c in codes]
pathlib.Path(out).write_text("".join(f"{line}\n" for line in lines))
idp.close()
