"""The admin console in a real browser.

Starts the real mayfly binary on SQLite, sets up two tenants through the REST
API, and drives the console at /console with Playwright in Debian's Chromium
(/usr/bin/chromium, or $MAYFLY_CHROMIUM; never a downloaded browser). The
tests share one stack and run in file order: the audit test looks for the
revocation the revocation test made by clicking (and makes it itself when run
alone). A missing browser fails every test; nothing is skipped.

Full-page screenshots of every page visited go to test-output/console/.

    .venv-console/bin/python -m pytest tests/console -q -p no:cacheprovider
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "interop"))
from httpkit import AdminApi, free_port, jti, request, stop  # noqa: E402,F401

SHOTS = ROOT / "test-output" / "console"
MASTER_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
ADMIN_ID = "mayfly-admin"
ADMIN_SECRET = "mfy_cs_console-admin-secret-0123456789abcdef0123"
GITHUB = "https://mcp.acme.test/github"
OTHER_RESOURCE = "https://mcp.other.test/jira"
CHROMIUM = os.environ.get("MAYFLY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LIVE = 6_000  # ms: "within ~5 s" for a table that polls every 2 s
UI = 10_000  # ms: anything else the page has to render

expect.set_options(timeout=UI)


class Stack(AdminApi):
    """mayfly on SQLite with tenants `acme` (a CI client, a tenant admin) and `other`."""

    def __init__(self, tmp_path):
        port = free_port()
        self.issuer = f"http://127.0.0.1:{port}"
        binary = os.environ.get("MAYFLY_BIN", str(ROOT / "target" / "debug" / "mayfly"))
        env = dict(os.environ, MAYFLY_LISTEN=f"127.0.0.1:{port}", MAYFLY_DATABASE_URL=f"sqlite://{tmp_path}/mayfly.db",
                   MAYFLY_MASTER_KEY=MASTER_KEY, MAYFLY_BOOTSTRAP_ADMIN_SECRET=ADMIN_SECRET, RUST_LOG="warn",
                   # people's sign-in (test_console_people.py) goes through an IdP on loopback
                   MAYFLY_FEDERATION_ALLOW_LOOPBACK="true")
        self.log_path = tmp_path / "mayfly.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_ready()

        self.admin = self.mint((ADMIN_ID, ADMIN_SECRET), resource=self.issuer, scope="mayfly:admin")
        self.api("POST", "/v1/tenants", {"id": "acme"})
        self.api("POST", "/v1/tenants/acme/resources", {"uri": GITHUB, "scopes": ["issues:read"]})
        self.ci = self.client("acme", "acme-ci", "ci", ["release", "nightly"],
                              [{"resource": GITHUB, "scopes": ["issues:read"]}])
        self.tenant_admin = self.client("acme", "acme-admin", "service", ["admin"],
                                        [{"resource": self.issuer, "scopes": ["mayfly:tenant:acme:admin"]}])
        self.api("POST", "/v1/tenants", {"id": "other"})
        self.api("POST", "/v1/tenants/other/resources", {"uri": OTHER_RESOURCE, "scopes": ["tickets:read"]})
        self.other_ci = self.client("other", "other-ci", "ci", ["deploy"],
                                    [{"resource": OTHER_RESOURCE, "scopes": ["tickets:read"]}])
        self.other_token = self.mint(self.other_ci, OTHER_RESOURCE, workflow="deploy")
        # Shared between tests (file order): the release/nightly tokens of the revocation test.
        self.revoked = None

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mayfly exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if request("GET", f"{self.issuer}/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"mayfly did not come up at {self.issuer}")

    def client(self, tenant, name, kind, workflows, grants):
        out = self.api("POST", f"/v1/tenants/{tenant}/clients",
                       {"client_id": name, "kind": kind, "workflows": workflows, "grants": grants})
        return name, out["client_secret"]

    def mint_ci(self, workflow):
        return self.mint(self.ci, GITHUB, workflow=workflow)

    def active(self, token):
        """Introspection with the global admin's bearer token."""
        status, _, out = request("POST", f"{self.issuer}/oauth2/introspect", form={"token": token}, bearer=self.admin)
        assert status == 200, out
        return out["active"]

    def close(self):
        stop(self.proc)
        self.log.close()
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "mayfly.log").write_text(self.log_path.read_text())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("mayfly"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def chromium():
    """The machine's Chromium, or why it could not be launched (each test then fails)."""
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        except Exception as e:  # noqa: BLE001 - reported by every test, as a failure
            browser = e
        yield browser
        if not isinstance(browser, Exception):
            browser.close()


@pytest.fixture
def new_page(request, chromium, stack):
    """Opens a page in a fresh browser context (its own cookies) at the console.
    When the test fails, what each page showed is saved as FAILED-<test>-<n>.png."""
    contexts = []

    def open_page():
        if isinstance(chromium, Exception):
            pytest.fail(f"no browser: could not launch {CHROMIUM}: {chromium}", pytrace=False)
        context = chromium.new_context(base_url=stack.issuer, viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        errors = JS_ERRORS.setdefault(page, [])
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        # The browser logs every 4xx as "Failed to load resource"; some are the point of a test.
        page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                and errors.append(f"console: {m.text}"))
        page.goto("/console")
        return context, page

    yield open_page
    call = getattr(request.node, "rep_call", None)
    pages = [p for c in contexts for p in c.pages]
    if call is not None and call.failed:
        for i, page in enumerate(pages):
            try:
                shot(page, f"FAILED-{request.node.name}-{i}")
            except Exception as e:  # noqa: BLE001 - the failure itself is what matters
                print(f"no failure screenshot: {e}")
    for c in contexts:
        c.close()


JS_ERRORS = {}  # page -> uncaught exceptions and console errors (CSP violations among them)


def until(page, condition, timeout_ms):
    """Polls a JavaScript condition until it holds. Not `page.wait_for_function`:
    its in-page polling compiles the string with eval, which the console's CSP
    (no 'unsafe-eval') refuses whenever the condition does not hold at once."""
    deadline = time.time() + timeout_ms / 1000
    while not page.evaluate(condition):
        assert time.time() < deadline, f"timed out waiting for: {condition}"
        time.sleep(0.05)


def no_js_errors(page):
    assert not JS_ERRORS.get(page), JS_ERRORS.get(page)


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, animations="disabled")


def sign_in(page, client_id, secret):
    expect(page.get_by_test_id("signin-form")).to_be_visible()
    page.get_by_test_id("signin-client-id").fill(client_id)
    page.get_by_test_id("signin-secret").fill(secret)
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("session-who")).to_be_visible()
    expect(page.get_by_test_id("session-who")).to_contain_text(client_id)


def choose_tenant(page, tenant):
    select = page.get_by_test_id("tenant-select")
    expect(select.locator(f'option[value="{tenant}"]')).to_have_count(1)
    select.select_option(tenant)
    expect(select).to_have_value(tenant)


def go(page, name):
    """Follows a nav link to its page (`nav-leases` → `page-leases`)."""
    page.get_by_test_id(f"nav-{name}").click()
    expect(page.get_by_test_id(f"page-{name}")).to_be_visible()
    assert page.url.endswith(f"#/{name}"), page.url


def signed_in(new_page, page_name, tenant="acme"):
    """A fresh page, signed in as the global admin, on `tenant`'s `page_name`."""
    _, page = new_page()
    sign_in(page, ADMIN_ID, ADMIN_SECRET)
    choose_tenant(page, tenant)
    go(page, page_name)
    return page


def session_cookie(context):
    cookies = {c["name"]: c for c in context.cookies()}
    assert "mayfly_console" in cookies, f"no session cookie among {sorted(cookies)}"
    return cookies["mayfly_console"]


def lease_row(page, lease_id):
    return page.locator(f'[data-testid="lease-row"][data-lease-id="{lease_id}"]')


def rows_of(page, workflow, state=None):
    sel = f'[data-testid="lease-row"][data-workflow="{workflow}"]'
    return page.locator(sel + (f'[data-state="{state}"]' if state else ""))


def page_fetch(page, path, method="GET", body=None, csrf=False):
    """An API call made by the page itself (its cookies ride along); returns the status.
    `csrf`: True sends the page's own CSRF cookie as X-CSRF-Token, a string sends that."""
    return page.evaluate(
        """async ([path, method, body, csrf]) => {
            const headers = {};
            if (body !== null) headers['Content-Type'] = 'application/json';
            if (typeof csrf === 'string') {
                headers['X-CSRF-Token'] = csrf;
            } else if (csrf) {
                const m = document.cookie.match(/(?:^|;\\s*)mayfly_csrf=([^;]*)/);
                headers['X-CSRF-Token'] = m ? decodeURIComponent(m[1]) : '';
            }
            const r = await fetch(path, {method, headers, credentials: 'same-origin',
                                         body: body === null ? undefined : JSON.stringify(body)});
            return r.status;
        }""",
        [path, method, body, csrf],
    )


def revoke_release_by_click(stack, page):
    """On the leases page of acme: revoke workflow `release` from a release row's button."""
    release = [stack.mint_ci("release"), stack.mint_ci("release")]
    nightly = stack.mint_ci("nightly")
    for token in [*release, nightly]:
        expect(lease_row(page, jti(token))).to_have_count(1, timeout=LIVE)
    expect(lease_row(page, jti(nightly))).to_have_attribute("data-state", "active")
    shot(page, "leases-before-revocation")

    lease_row(page, jti(release[0])).get_by_test_id("revoke-workflow").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_test_id("confirm-reason").fill("release runner compromised")
    dialog.get_by_test_id("confirm-yes").click()
    expect(dialog).to_be_hidden()

    for token in release:
        expect(lease_row(page, jti(token))).to_have_attribute("data-state", "revoked", timeout=LIVE)
    expect(rows_of(page, "release", "active")).to_have_count(0, timeout=LIVE)
    expect(lease_row(page, jti(nightly))).to_have_attribute("data-state", "active")
    stack.revoked = {"release": release, "nightly": nightly}


# 1 ---------------------------------------------------------------------------------------------


def test_global_admin_signs_in_and_the_session_stays_in_an_httponly_cookie(stack, new_page):
    context, page = new_page()
    expect(page.get_by_test_id("signin-form")).to_be_visible()
    shot(page, "signin")

    page.get_by_test_id("signin-client-id").fill(ADMIN_ID)
    page.get_by_test_id("signin-secret").fill(ADMIN_SECRET + "x")
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("signin-error")).to_be_visible()
    expect(page.get_by_test_id("signin-error")).not_to_have_text("")
    expect(page.get_by_test_id("session-who")).to_be_hidden()
    assert "mayfly_console" not in {c["name"] for c in context.cookies()}
    shot(page, "signin-error")

    sign_in(page, ADMIN_ID, ADMIN_SECRET)
    cookie = session_cookie(context)
    assert cookie["httpOnly"] is True, cookie
    assert cookie["sameSite"] == "Strict", cookie
    csrf = {c["name"]: c for c in context.cookies()}.get("mayfly_csrf")
    assert csrf and csrf["httpOnly"] is False and csrf["sameSite"] == "Strict", csrf
    token = cookie["value"]
    assert stack.active(token), "the session cookie should hold an active admin token"

    def nothing_leaks():
        assert page.evaluate("localStorage.length + sessionStorage.length") == 0
        assert token not in page.url
        assert token not in page.evaluate("document.cookie")

    nothing_leaks()
    expect(page.get_by_test_id("nav-tenants")).to_be_visible()
    go(page, "tenants")
    expect(page.get_by_test_id("tenant-row").first).to_be_visible()
    tenants = page.get_by_test_id("tenant-row").evaluate_all("rows => rows.map(r => r.dataset.tenant)")
    assert {"acme", "other"} <= set(tenants), tenants
    shot(page, "tenants")

    choose_tenant(page, "acme")
    go(page, "keys")
    expect(page.get_by_test_id("key-timeline")).to_be_visible()
    expect(page.get_by_test_id("key-item").first).to_be_visible()
    expect(page.get_by_test_id("next-rotation")).to_be_visible()
    expect(page.get_by_test_id("key-rotate")).to_be_visible()
    shot(page, "keys")

    go(page, "clients")
    expect(page.get_by_test_id("client-row").first).to_be_visible()
    expect(page.get_by_test_id("client-row").filter(has_text="acme-ci")).to_have_count(1)
    expect(page.get_by_test_id("client-row").filter(has_text="other-ci")).to_have_count(0)
    shot(page, "clients")
    nothing_leaks()
    no_js_errors(page)


# 2 ---------------------------------------------------------------------------------------------


def test_a_lease_minted_through_the_api_appears_live(stack, new_page):
    page = signed_in(new_page, "leases")
    expect(page.get_by_test_id("lease-table")).to_be_visible()
    page.evaluate("window.__notReloaded = true")

    token = stack.mint_ci("release")
    row = lease_row(page, jti(token))
    expect(row).to_have_count(1, timeout=LIVE)
    expect(row).to_have_attribute("data-workflow", "release")
    expect(row).to_have_attribute("data-state", "active")
    assert page.evaluate("window.__notReloaded === true"), "the page reloaded to show the lease"
    expect(page.get_by_test_id("count-workflow")).to_contain_text("release")
    expect(page.get_by_test_id("count-resource")).to_contain_text(GITHUB)
    expect(page.get_by_test_id("stats-chart")).to_be_visible()
    expect(lease_row(page, jti(stack.other_token))).to_have_count(0)
    expect(row).to_have_attribute("data-binding", "bearer")

    # A DPoP-bound token's lease says so (its proof made here with PyJWT).
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    proof = jwt.encode({"jti": os.urandom(8).hex(), "htm": "POST", "htu": f"{stack.issuer}/oauth2/token",
                        "iat": int(time.time())}, key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": jwk})
    status, _, out = request("POST", f"{stack.issuer}/oauth2/token", basic=stack.ci, headers={"DPoP": proof},
                             form={"grant_type": "client_credentials", "resource": GITHUB, "workflow": "release"})
    assert status == 200 and out["token_type"] == "DPoP", out
    bound = lease_row(page, jti(out["access_token"]))
    expect(bound).to_have_attribute("data-binding", "dpop", timeout=LIVE)
    expect(bound).to_contain_text("DPoP-bound")
    no_js_errors(page)


# 3 ---------------------------------------------------------------------------------------------


def test_revoking_a_workflow_with_a_click_revokes_its_tokens_only(stack, new_page):
    page = signed_in(new_page, "leases")
    revoke_release_by_click(stack, page)
    shot(page, "leases-after-revocation")

    for token in stack.revoked["release"]:
        assert stack.active(token) is False, "a release token is still active after its workflow was revoked"
    assert stack.active(stack.revoked["nightly"]) is True, "the nightly token was revoked too"

    go(page, "rules")
    expect(page.get_by_test_id("rule-row").filter(has_text="release")).to_have_count(1)
    shot(page, "rules")
    no_js_errors(page)


# 4 ---------------------------------------------------------------------------------------------


def test_a_tenant_admin_sees_only_its_own_tenant(stack, new_page):
    mine = stack.mint_ci("nightly")
    _, page = new_page()
    sign_in(page, *stack.tenant_admin)
    expect(page.get_by_test_id("nav-leases")).to_be_visible()
    expect(page.get_by_test_id("nav-tenants")).to_be_hidden()

    select = page.get_by_test_id("tenant-select")
    expect(select.locator('option[value="acme"]')).to_have_count(1)
    options = select.locator("option").evaluate_all("os => os.map(o => [o.value, o.textContent])")
    assert [v for v, _ in options if v] == ["acme"], options
    assert not any("other" in (v + t) for v, t in options), options

    go(page, "leases")
    expect(lease_row(page, jti(mine))).to_have_count(1, timeout=LIVE)
    expect(lease_row(page, jti(stack.other_token))).to_have_count(0)
    shot(page, "tenant-admin-leases")

    go(page, "keys")
    expect(page.get_by_test_id("next-rotation")).to_be_visible()
    expect(page.get_by_test_id("key-rotate")).to_be_hidden()
    shot(page, "tenant-admin-keys")

    assert page.evaluate("fetch('/v1/tenants/other/leases').then(r=>r.status)") == 403
    assert page.evaluate("fetch('/v1/tenants/acme/leases').then(r=>r.status)") == 200
    no_js_errors(page)


# 5 ---------------------------------------------------------------------------------------------


def test_the_audit_page_shows_the_revocation_and_verifies_the_chain(stack, new_page):
    _, page = new_page()
    sign_in(page, ADMIN_ID, ADMIN_SECRET)
    choose_tenant(page, "acme")
    if stack.revoked is None:  # run alone: make the revocation the way the revocation test does
        go(page, "leases")
        revoke_release_by_click(stack, page)
    go(page, "audit")
    expect(page.get_by_test_id("audit-row").first).to_be_visible()

    rows = page.get_by_test_id("audit-row").filter(has_text="revocation.created")
    more = page.get_by_test_id("audit-more")
    for _ in range(20):  # page back until it shows up
        if rows.count():
            break
        button = more.get_by_role("button")  # `audit-more` may be the button or hold it
        button = button if button.count() else more
        if not button.is_visible() or not button.is_enabled():
            break
        before = page.get_by_test_id("audit-row").count()
        button.click()
        # Until the next page has arrived (more rows), not a fixed wait.
        until(page, f"document.querySelectorAll('[data-testid=\"audit-row\"]').length > {before}", LIVE)
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row).to_contain_text(ADMIN_ID)

    row.click()
    json_pre = page.get_by_test_id("audit-json").filter(visible=True)
    expect(json_pre).to_have_count(1)
    expect(json_pre).to_contain_text(re.compile(r'"action":\s*"revocation\.created"'))
    expect(json_pre).to_contain_text(ADMIN_ID)
    expect(json_pre).to_contain_text("release")
    shot(page, "audit")

    verify = page.get_by_test_id("audit-verify")
    expect(verify).to_be_visible()
    if verify.evaluate("e => e.tagName") == "BUTTON":
        verify.click()
    expect(verify).to_contain_text(re.compile(r"\bok\b", re.I))
    shot(page, "audit-verified")
    no_js_errors(page)


# 6 ---------------------------------------------------------------------------------------------


def test_sign_out_revokes_the_session_token(stack, new_page):
    context, page = new_page()
    sign_in(page, ADMIN_ID, ADMIN_SECRET)
    token = session_cookie(context)["value"]
    assert stack.active(token) is True

    page.get_by_test_id("signout").click()
    expect(page.get_by_test_id("signin-form")).to_be_visible()
    expect(page.get_by_test_id("session-who")).to_be_hidden()
    shot(page, "signed-out")
    assert stack.active(token) is False, "the session's token is still active after sign-out"
    assert not [c for c in context.cookies() if c["name"] == "mayfly_console" and c["value"]]
    assert page.evaluate("fetch('/v1/tenants/acme/leases').then(r=>r.status)") == 401
    no_js_errors(page)


# 7 ---------------------------------------------------------------------------------------------


def test_security_headers_and_csrf(stack, new_page):
    status, headers, _ = request("GET", f"{stack.issuer}/console")
    assert status == 200
    csp = headers.get("Content-Security-Policy")
    assert csp, "no Content-Security-Policy on /console"
    assert "'unsafe-inline'" not in csp, csp
    assert headers.get("X-Frame-Options", "").upper() == "DENY", headers.get("X-Frame-Options")

    _, page = new_page()
    sign_in(page, ADMIN_ID, ADMIN_SECRET)
    # The browser enforces the policy: injected markup cannot run inline code.
    page.evaluate("""window.__violations = 0;
        document.addEventListener('securitypolicyviolation', () => { window.__violations += 1; });
        document.body.insertAdjacentHTML('beforeend',
        '<img src="/console/none.png" onerror="window.__injected = 1">')""")
    # Until the browser has refused the handler (and the image has failed), not a fixed wait.
    until(page, "window.__violations > 0 && document.querySelector('img[src=\"/console/none.png\"]').complete", LIVE)
    assert page.evaluate("window.__injected === undefined"), "an inline event handler ran despite the CSP"
    for _ in range(50):  # the console message reaches Python after the page event
        if any("Content Security Policy" in e for e in JS_ERRORS[page]):
            break
        time.sleep(0.1)
    violations = [e for e in JS_ERRORS[page] if "Content Security Policy" in e]
    assert violations, f"no CSP violation reported: {JS_ERRORS[page]}"
    JS_ERRORS[page][:] = [e for e in JS_ERRORS[page] if e not in violations]

    token = stack.mint_ci("nightly")
    body = {"lease_id": jti(token), "reason": "csrf check"}
    assert page_fetch(page, "/v1/tenants/acme/revocations", "POST", body) == 403
    assert stack.active(token) is True, "a POST without X-CSRF-Token took effect"
    # The same call with the header the console sends goes through: the 403 was the CSRF check.
    assert page_fetch(page, "/v1/tenants/acme/revocations", "POST", body, csrf=True) == 201
    assert stack.active(token) is False
    no_js_errors(page)


# 8 ---------------------------------------------------------------------------------------------


def test_a_csrf_token_works_only_with_its_own_session(stack, new_page):
    """The CSRF token is bound to the session: one taken from another signed-in
    browser, or one made up, is refused even when the attacker also plants it
    as the CSRF cookie (as a sibling subdomain or a plain-http answer can)."""
    context_a, page_a = new_page()
    sign_in(page_a, ADMIN_ID, ADMIN_SECRET)
    context_b, page_b = new_page()
    sign_in(page_b, ADMIN_ID, ADMIN_SECRET)
    csrf_a = {c["name"]: c for c in context_a.cookies()}["mayfly_csrf"]["value"]
    csrf_b = {c["name"]: c for c in context_b.cookies()}["mayfly_csrf"]["value"]
    assert csrf_a != csrf_b

    token = stack.mint_ci("nightly")
    body = {"lease_id": jti(token), "reason": "csrf from another session"}
    for planted in [csrf_a, "0123456789abcdef0123456789abcdef0123456789abcdef"]:
        context_b.add_cookies([{"name": "mayfly_csrf", "value": planted, "url": stack.issuer, "sameSite": "Strict"}])
        assert page_fetch(page_b, "/v1/tenants/acme/revocations", "POST", body, csrf=True) == 403, planted
    assert page_fetch(page_b, "/v1/tenants/acme/revocations", "POST", body, csrf="") == 403
    assert stack.active(token) is True, "a POST with a CSRF token not of its session took effect"
    assert page_fetch(page_b, "/v1/tenants/acme/revocations", "POST", body, csrf=csrf_b) == 201
    assert stack.active(token) is False
    no_js_errors(page_a)
    no_js_errors(page_b)
