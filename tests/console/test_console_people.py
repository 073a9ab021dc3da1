"""People's sessions in the console: a person signs in through the tenant's
IdP (our loopback IdP, a headless browser) with an IDE that registered
itself; the admin sees who, with which client, for which resource, and ends
the session in one click, in a real browser against the real binary."""

import base64
import hashlib
import secrets
import sys
import urllib.parse

from playwright.sync_api import expect

from test_console import (ADMIN_ID, ADMIN_SECRET, GITHUB, LIVE, ROOT, chromium, choose_tenant, go, new_page,  # noqa: F401
                          no_js_errors, request, shot, sign_in, stack)

sys.path.insert(0, str(ROOT / "tests" / "interop"))
from people_kit import IDP_CLIENT, IDP_SECRET, HeadlessBrowser, LoopbackIdp  # noqa: E402

REDIRECT = "http://127.0.0.1:33420/callback"


def person_signs_in(stack, idp):
    """The IDE registers, the person signs in and agrees, the IDE redeems the code: its tokens."""
    status, _, client = request("POST", f"{stack.issuer}/oauth2/register",
                                json_body={"redirect_uris": [REDIRECT], "client_name": "VS Code"})
    assert status == 201, client
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    url = f"{stack.issuer}/oauth2/authorize?" + urllib.parse.urlencode({
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT, "resource": GITHUB,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "s1"})
    browser = HeadlessBrowser(REDIRECT)
    browser.sign_in(url)
    status, _, tokens = request("POST", f"{stack.issuer}/oauth2/token", form={
        "grant_type": "authorization_code", "code": browser.result.code, "client_id": client["client_id"],
        "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert status == 200, tokens
    return tokens


def test_an_admin_sees_a_persons_session_and_ends_it_in_one_click(stack, new_page):
    idp = LoopbackIdp()
    try:
        stack.api("POST", "/v1/tenants/acme/login-providers", {
            "name": "company-idp", "issuer": idp.url, "client_id": IDP_CLIENT, "client_secret": IDP_SECRET,
            "grants": [{"resource": GITHUB, "scopes": ["issues:read"]}], "allow_registration": True})
        tokens = person_signs_in(stack, idp)
        assert stack.active(tokens["access_token"])

        _, page = new_page()
        sign_in(page, ADMIN_ID, ADMIN_SECRET)
        choose_tenant(page, "acme")
        go(page, "people")
        row = page.locator('[data-testid="session-row"][data-workload="person:alice@acme.test"]')
        expect(row).to_have_count(1, timeout=LIVE)
        expect(row).to_contain_text("VS Code")
        expect(row).to_contain_text("Alice")
        expect(row).to_have_attribute("data-state", "active")
        shot(page, "people-sessions")

        row.get_by_test_id("session-end").click()
        dialog = page.get_by_test_id("confirm-dialog")
        expect(dialog).to_be_visible()
        dialog.get_by_test_id("confirm-yes").click()
        expect(dialog).to_be_hidden()
        expect(row).to_have_attribute("data-state", "revoked", timeout=LIVE)
        assert not stack.active(tokens["access_token"]), "ending the session revoked its access token"
        status, _, out = request("POST", f"{stack.issuer}/oauth2/token", form={
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
            "client_id": stack.api("GET", "/v1/tenants/acme/sessions")["items"][0]["client_id"]})
        assert status == 400 and out["error"] == "invalid_grant", out
        shot(page, "people-session-ended")
        no_js_errors(page)
    finally:
        idp.close()
