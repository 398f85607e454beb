"""Schemathesis hooks of the OpenAPI contract test (services/pulse/tests/openapi_contract.rs).

Loaded through SCHEMATHESIS_HOOKS. They make the generated traffic behave like a real client
where the contract says how a client behaves, and nothing else.
"""

import re
import uuid

import schemathesis

# The documented format of Idempotency-Key (pulse_kit::openapi::IDEMPOTENCY_KEY_PATTERN).
KEY = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def before_call(context, case, kwargs):
    """A well-formed Idempotency-Key becomes a fresh UUID: a client sends a new key per
    operation, while generated keys repeat ("0", "00", …) and a key reused for another request
    is rightly refused (422 idempotency-key-reused). Malformed keys stay, to be refused (400)."""
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == "idempotency-key" and isinstance(value, str) and KEY.match(value):
            headers[name] = str(uuid.uuid4())


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """A schema-valid request refused `invalid-combination` (422 for a body, 400 for query
    parameters) is no failure: that type is kept for fields valid one by one that do not go
    together (a range that ends before it starts, ranges that overlap, a date not bookable
    now), a rule no schema states; every operation with a body or parameters documents it. Any other refusal of a schema-valid request stays a failure. Returns whether to keep
    the failure."""
    if getattr(failure, "code", None) != "ST202" or response is None:
        return True
    if response.status_code not in (400, 422):
        return True
    try:
        problem = response.json()
    except ValueError:
        return True
    return not str(problem.get("type", "")).endswith("/invalid-combination")
