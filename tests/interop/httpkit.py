"""Plain-HTTP helpers the interop and console suites share (no test in here)."""

import base64
import json
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, *, json_body=None, form=None, bearer=None, basic=None, headers=None):
    """A plain HTTP call; returns (status, headers, parsed body)."""
    hdrs = dict(headers or {})
    data = None
    if json_body is not None:
        data, hdrs["Content-Type"] = json.dumps(json_body).encode(), "application/json"
    if form is not None:
        data, hdrs["Content-Type"] = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    if bearer:
        hdrs["Authorization"] = f"Bearer {bearer}"
    if basic:
        hdrs["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            status, h, raw = res.status, res.headers, res.read()
    except urllib.error.HTTPError as e:
        status, h, raw = e.code, e.headers, e.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode(errors="replace")
    return status, h, body


def jti(token):
    """The lease id (the `jti` claim) of a JWT, unverified."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["jti"]


def stop(proc, timeout=10):
    """Terminates a process, killing it if it does not exit within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


class AdminApi:
    """The admin API and the token endpoint, for a stack with `issuer` and an `admin` token."""

    def api(self, method, path, body=None):
        status, _, out = request(method, f"{self.issuer}{path}", json_body=body, bearer=self.admin)
        assert status < 300, f"{method} {path}: {status} {out}"
        return out

    def mint(self, creds, resource, scope=None, **extra):
        form = {"grant_type": "client_credentials", "resource": resource, **extra}
        if scope:
            form["scope"] = scope
        status, _, out = request("POST", f"{self.issuer}/oauth2/token", form=form, basic=creds)
        assert status == 200, out
        return out["access_token"]
