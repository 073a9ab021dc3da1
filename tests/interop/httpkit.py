"""Plain-HTTP helpers the interop and console suites share (no test in here)."""

import atexit
import base64
import json
import os
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
    stop_all([proc], timeout)


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


def store_url(backend, tmp_path, prefix):
    """A fresh store for one stack: a SQLite file under `tmp_path`, or a new
    schema (named `prefix_…`) in the Postgres of MAYFLY_TEST_DATABASE_URL."""
    if backend == "sqlite":
        return f"sqlite://{tmp_path}/mayfly.db"
    base = os.environ.get("MAYFLY_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    schema = f"{prefix}_{os.urandom(8).hex()}"
    subprocess.run(["psql", base, "-q", "-c", f"CREATE SCHEMA {schema}"], check=True)
    # Dropped when the test run ends (the stack's processes are gone by then).
    atexit.register(subprocess.run, ["psql", base, "-q", "-c", f"SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE"], check=False)
    return f"{base}{'&' if '?' in base else '?'}options[search_path]={schema}"


def per_store(cls, name):
    """A pytest fixture `name`: `cls(backend, tmp_path)` on SQLite, then on Postgres; closed after."""
    import pytest

    @pytest.fixture(params=["sqlite", "postgres"], name=name)
    def fixture(request, tmp_path):
        s = cls(request.param, tmp_path)
        yield s
        s.close()
    return fixture


def stop_all(procs, timeout=10):
    """Terminates every process first (so they wind down together), then waits
    for each, killing any still running after `timeout` seconds."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
