"""The console during an incident (issue 26, item 12), in a real browser against
the real binary: where and when a lease was issued, whole resource URIs, the
warning before revoking the active signing key, disabling a client along with
a revocation, trust policies, and editing a client's grants."""

import re
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect

from test_console import (GITHUB, LIVE, chromium, go, jti, lease_row, new_page, no_js_errors, request, shot, signed_in, stack)  # noqa: F401 (fixtures)

# Longer than any column it lands in: it must wrap, not be cut.
LONG = "https://mcp.acme.test/incident-response/a-rather-long-path-segment/that-does-not-fit/in-one-column/v1"
TRACKER = "https://mcp.acme.test/tracker"


def not_clipped(locator):
    """The element shows all of its text: nothing overflows behind an ellipsis."""
    return locator.evaluate("e => e.scrollWidth <= e.clientWidth + 1")


def test_a_lease_row_shows_when_and_from_where_it_was_issued(stack, new_page):
    page = signed_in(new_page, "leases")
    token = stack.mint_ci("nightly")
    lease = stack.api("GET", f"/v1/tenants/acme/leases/{jti(token)}")
    assert lease["source"], f"the lease records no source: {lease}"
    row = lease_row(page, jti(token))
    issued = row.get_by_test_id("issued")
    expect(issued).to_have_text(re.compile(r"^issued (\d\d-\d\d \d\d:\d\d|\d\d:\d\d:\d\d)$"), timeout=LIVE)
    # The time shown is the lease's (local time, to the second); the tooltip has the date too.
    local = datetime.fromisoformat(lease["issued_at"].replace("Z", "+00:00")).astimezone()
    assert issued.get_attribute("title") == f"issued {local:%Y-%m-%d %H:%M:%S}", issued.get_attribute("title")
    expect(row.get_by_test_id("source")).to_have_text(f"from {lease['source']}")
    shot(page, "leases-issued-and-source")
    no_js_errors(page)


def test_a_long_resource_uri_is_shown_whole(stack, new_page):
    stack.api("POST", "/v1/tenants/acme/resources", {"uri": LONG, "scopes": ["read"]})
    creds = stack.client("acme", "acme-long", "ci", ["long"], [{"resource": LONG, "scopes": ["read"]}])
    token = stack.mint(creds, LONG, workflow="long")
    page = signed_in(new_page, "leases")
    row = lease_row(page, jti(token))
    expect(row).to_have_count(1, timeout=LIVE)
    cell = row.locator("td").nth(2)  # workflow is the row header; then workload, client, resource
    expect(cell).to_have_text(LONG)
    assert LONG in row.inner_text()
    assert not_clipped(cell), "the resource URI is cut off in the lease row"
    counted = page.get_by_test_id("count-resource").locator("tr", has_text="incident-response").locator("th")
    expect(counted).to_have_text(LONG)
    assert not_clipped(counted), "the resource URI is cut off in the live-by-resource table"
    shot(page, "leases-long-resource")

    go(page, "clients")
    uri = page.locator(f'[data-testid="resource-row"][data-uri="{LONG}"] th')
    expect(uri).to_have_text(LONG)
    assert not_clipped(uri), "the resource URI is cut off in the resources table"
    grants = page.locator('[data-testid="client-row"][data-client-id="acme-long"]')
    expect(grants).to_contain_text(f"{LONG}: read")
    assert not_clipped(grants.locator("td").nth(3)), "the grant is cut off in the clients table"
    shot(page, "clients-long-resource")
    no_js_errors(page)


def test_revoking_the_active_key_warns_that_it_signs_the_admin_out(stack, new_page):
    page = signed_in(new_page, "keys")
    active = page.locator('[data-testid="key-row"][data-state="active"]')
    expect(active).to_have_count(1)
    kid = active.get_attribute("data-kid")
    active.get_by_test_id("key-revoke").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    warning = dialog.get_by_test_id("confirm-warning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("also signs you out")
    shot(page, "keys-revoke-active-warning")
    dialog.get_by_test_id("confirm-no").click()
    expect(dialog).to_be_hidden()
    keys = {k["kid"]: k["state"] for k in stack.api("GET", "/v1/keys")["items"]}
    assert keys[kid] == "active", keys

    # A key that signs nothing yet revokes no session: no warning.
    upcoming = page.locator('[data-testid="key-row"][data-state="next"]')
    if upcoming.count():
        upcoming.first.get_by_test_id("key-revoke").click()
        expect(dialog).to_be_visible()
        expect(dialog.get_by_test_id("confirm-warning")).to_be_hidden()
        dialog.get_by_test_id("confirm-no").click()
        expect(dialog).to_be_hidden()
    no_js_errors(page)


def revoke_client_from_its_lease(page, token, reason, disable):
    row = lease_row(page, jti(token))
    expect(row).to_have_attribute("data-state", "active", timeout=LIVE)
    row.get_by_test_id("revoke-client").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    option = dialog.get_by_test_id("confirm-option")
    expect(option).to_be_visible()
    expect(option).not_to_be_checked()
    expect(dialog.get_by_label(re.compile("Also disable client"))).to_have_count(1)
    if disable:
        option.check()
        shot(page, "revoke-client-and-disable")
    dialog.get_by_test_id("confirm-reason").fill(reason)
    dialog.get_by_test_id("confirm-yes").click()
    expect(dialog).to_be_hidden()
    expect(row).to_have_attribute("data-state", "revoked", timeout=LIVE)


def test_revoking_by_client_can_also_disable_the_client(stack, new_page):
    grants = [{"resource": GITHUB, "scopes": ["issues:read"]}]
    first = stack.client("acme", "acme-bot-1", "agent", ["bots"], grants)
    second = stack.client("acme", "acme-bot-2", "agent", ["bots"], grants)
    page = signed_in(new_page, "leases")

    # A workflow spans clients: no client to offer.
    token = stack.mint(first, GITHUB, workflow="bots")
    expect(lease_row(page, jti(token))).to_have_count(1, timeout=LIVE)
    lease_row(page, jti(token)).get_by_test_id("revoke-workflow").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_test_id("confirm-option")).to_be_hidden()
    dialog.get_by_test_id("confirm-no").click()
    expect(dialog).to_be_hidden()

    revoke_client_from_its_lease(page, token, "bot 1 leaked its secret", disable=True)
    assert stack.api("GET", "/v1/tenants/acme/clients/acme-bot-1")["disabled"] is True
    assert stack.active(token) is False
    status, _, _ = request("POST", f"{stack.issuer}/oauth2/token", basic=first,
                           form={"grant_type": "client_credentials", "resource": GITHUB, "workflow": "bots"})
    assert status >= 400, "a disabled client minted again"

    token = stack.mint(second, GITHUB, workflow="bots")
    revoke_client_from_its_lease(page, token, "bot 2 misbehaved", disable=False)
    assert stack.api("GET", "/v1/tenants/acme/clients/acme-bot-2")["disabled"] is False
    assert stack.active(token) is False
    assert stack.active(stack.mint(second, GITHUB, workflow="bots")) is True
    no_js_errors(page)


def test_a_trust_policy_is_listed_and_deleted_in_the_console(stack, new_page):
    expires = (datetime.now(timezone.utc) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    policy = stack.api("POST", "/v1/tenants/acme/trust-policies", {
        "name": "gha-release", "issuer": "https://token.actions.githubusercontent.com", "audience": "mayfly",
        "subject": "repo:acme/app:ref:refs/heads/main", "workflow_template": "release",
        "workload_template": "github:{repository}", "grants": [{"resource": GITHUB, "scopes": ["issues:read"]}],
        "owner": "platform team", "expires_at": expires})
    page = signed_in(new_page, "trust")
    row = page.locator(f'[data-testid="trust-row"][data-policy-id="{policy["id"]}"]')
    expect(row).to_have_count(1)
    for text in ["gha-release", "https://token.actions.githubusercontent.com", "repo:acme/app:ref:refs/heads/main",
                 "release / github:{repository}", f"{GITHUB}: issues:read", "platform team", expires[:10]]:
        expect(row).to_contain_text(text)
    for cell in row.locator("td.wrap").all():  # issuer, subject, templates, grants: read whole
        assert not_clipped(cell), f"cut off: {cell.inner_text()}"
    shot(page, "trust-policies")

    row.get_by_test_id("trust-delete").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_test_id("confirm-text")).to_contain_text("gha-release")
    dialog.get_by_test_id("confirm-yes").click()
    expect(dialog).to_be_hidden()
    expect(row).to_have_count(0)
    expect(page.locator("#trust-empty")).to_be_visible()
    status, _, _ = request("GET", f"{stack.issuer}/v1/tenants/acme/trust-policies/{policy['id']}", bearer=stack.admin)
    assert status == 404, status
    shot(page, "trust-policies-deleted")
    no_js_errors(page)


def test_an_admin_edits_a_clients_grants_and_a_refused_edit_changes_nothing(stack, new_page):
    stack.api("POST", "/v1/tenants/acme/resources", {"uri": TRACKER, "scopes": ["tickets:read", "tickets:write"]})
    stack.client("acme", "acme-tracker", "service", ["triage"], [{"resource": TRACKER, "scopes": ["tickets:read"]}])

    def grants():
        return stack.api("GET", "/v1/tenants/acme/clients/acme-tracker")["grants"]

    page = signed_in(new_page, "clients")
    row = page.locator('[data-testid="client-row"][data-client-id="acme-tracker"]')
    row.get_by_test_id("client-grants").click()
    form = page.get_by_test_id("grants-form")
    expect(form).to_be_visible()
    line = form.get_by_test_id("grant-line")
    expect(line).to_have_count(1)
    expect(line.get_by_label("Resource")).to_have_value(TRACKER)
    line.get_by_label("Scopes").fill("tickets:read, tickets:write")
    shot(page, "client-grants-edit")
    form.get_by_test_id("grants-form-submit").click()
    expect(form).to_be_hidden()
    expect(row).to_contain_text(f"{TRACKER}: tickets:read tickets:write")
    assert grants() == [{"resource": TRACKER, "scopes": ["tickets:read", "tickets:write"]}], grants()

    # A scope the resource does not define: mayfly refuses (422), the console says why, nothing changes.
    row.get_by_test_id("client-grants").click()
    expect(form).to_be_visible()
    form.get_by_test_id("grant-line").get_by_label("Scopes").fill("tickets:delete")
    form.get_by_test_id("grants-form-submit").click()
    error = form.get_by_test_id("grants-form-error")
    expect(error).to_contain_text("tickets:delete")
    expect(form).to_be_visible()
    shot(page, "client-grants-refused")
    assert grants() == [{"resource": TRACKER, "scopes": ["tickets:read", "tickets:write"]}], grants()
    form.get_by_test_id("grants-form-cancel").click()
    expect(form).to_be_hidden()
    no_js_errors(page)
