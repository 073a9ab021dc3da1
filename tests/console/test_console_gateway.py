"""The console's side of the gateway: an admin sets a resource's tool policy
(what `mayfly gateway` enforces), in a real browser, against the real binary."""

import json

from playwright.sync_api import expect

from test_console import (GITHUB, chromium, jti, new_page, no_js_errors, shot, signed_in, stack)  # noqa: F401 (fixtures)


def resource(stack, uri):
    return next(r for r in stack.api("GET", "/v1/tenants/acme/resources?limit=1000")["items"] if r["uri"] == uri)


def test_an_admin_sets_a_resources_tool_policy_and_bad_json_changes_nothing(stack, new_page):
    page = signed_in(new_page, "clients")
    row = page.locator(f'[data-testid="resource-row"][data-uri="{GITHUB}"]')
    expect(row).to_contain_text("any tool")

    row.get_by_test_id("resource-tools").click()
    form = page.get_by_test_id("tools-form")
    expect(form).to_be_visible()
    page.get_by_test_id("tools-form-json").fill("{not json")
    page.get_by_test_id("tools-form-submit").click()
    expect(page.get_by_test_id("status")).to_contain_text("not JSON")
    assert resource(stack, GITHUB)["tools"] is None, "a refused edit changed the policy"

    policy = {"list_issues": {"scopes": ["issues:read"], "calls_per_minute": 30}, "*": {"scopes": ["issues:read"]}}
    page.get_by_test_id("tools-form-json").fill(json.dumps(policy))
    page.get_by_test_id("tools-form-submit").click()
    expect(form).to_be_hidden()
    expect(row).to_contain_text("list_issues: issues:read (30/min)")
    assert resource(stack, GITHUB)["tools"] == policy
    shot(page, "resource-tool-policy")

    # A scope the resource does not define is refused by mayfly, and shown.
    row.get_by_test_id("resource-tools").click()
    page.get_by_test_id("tools-form-json").fill(json.dumps({"*": {"scopes": ["repo:admin"]}}))
    page.get_by_test_id("tools-form-submit").click()
    expect(page.get_by_test_id("status")).to_contain_text("repo:admin")
    assert resource(stack, GITHUB)["tools"] == policy

    # Emptied: the map is removed, any tool passes again.
    page.get_by_test_id("tools-form-json").fill("")
    page.get_by_test_id("tools-form-submit").click()
    expect(row).to_contain_text("any tool")
    assert resource(stack, GITHUB)["tools"] is None
    no_js_errors(page)


def test_a_lease_id_from_an_mcp_servers_log_opens_its_chain_of_custody(stack, new_page):
    token = stack.mint_ci("release")
    page = signed_in(new_page, "leases")
    page.get_by_test_id("filter-lease").fill("not-a-lease")
    page.get_by_test_id("filter-lease-open").click()
    expect(page.get_by_test_id("status")).to_contain_text("UUID")
    expect(page.get_by_test_id("custody")).to_be_hidden()

    lease = jti(token)
    page.get_by_test_id("filter-lease").fill(lease.upper())
    page.get_by_test_id("filter-lease").press("Enter")
    expect(page.get_by_test_id("custody")).to_be_visible()
    expect(page.get_by_test_id("custody-title")).to_contain_text(lease)
    expect(page.get_by_test_id("custody-person")).to_contain_text("acme-ci")
    shot(page, "lease-by-jti")
    no_js_errors(page)
