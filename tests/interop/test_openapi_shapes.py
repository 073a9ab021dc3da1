"""The committed openapi.yaml against real answers of the real binary: the
shapes a generated client or a fuzzer (schemathesis) would check. Each
answer is validated with jsonschema against the schema the spec documents
for that operation and status (OpenAPI 3.1 schemas are JSON Schema 2020-12).
"""

import pathlib

import jsonschema
import yaml

from test_mcp_sdk import request, stack  # noqa: F401  (the fixture)

SPEC = yaml.safe_load((pathlib.Path(__file__).resolve().parents[2] / "openapi.yaml").read_text())


def schema_of(path, method, status):
    """The JSON schema documented for (path, method, status), refs resolved by jsonschema."""
    responses = SPEC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}"
    response = responses[str(status)]
    if "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    # Resolve `#/components/...` against the whole document.
    return {**schema, "components": SPEC["components"]}


def check(path, method, status, body):
    jsonschema.validate(body, schema_of(path, method, status), cls=jsonschema.Draft202012Validator)


def test_introspection_answers_match_the_documented_schema_active_or_not(stack):
    token = stack.mint(stack.reader, stack.mcp_url, scope="issues:read", workflow="release")
    for t, active in [(token, True), ("not-a-token", False)]:
        status, _, body = request("POST", f"{stack.issuer}/oauth2/introspect", form={"token": t}, basic=stack.rs)
        assert status == 200, body
        assert body["active"] is active, body
        check("/oauth2/introspect", "post", 200, body)
    # And the schema is no rubber stamp: an answer without `active` fails it.
    try:
        check("/oauth2/introspect", "post", 200, {"scope": "x"})
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a body without `active` passed the Introspection schema")


def test_a_json_route_refuses_other_content_types_with_the_documented_415(stack):
    for path, url in [("/v1/tenants", "/v1/tenants"), ("/v1/tenants/{tenant}/clients", "/v1/tenants/acme/clients")]:
        status, _, body = request("POST", f"{stack.issuer}{url}", bearer=stack.admin,
                                  headers={"Content-Type": "text/plain"})
        assert status == 415, body
        assert body["error"] == "unsupported_media_type", body
        check(path, "post", 415, body)
