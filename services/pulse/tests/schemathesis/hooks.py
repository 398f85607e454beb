"""Schemathesis hooks of the OpenAPI contract test (services/pulse/tests/openapi_contract.rs).

Loaded through SCHEMATHESIS_HOOKS. They make the generated traffic behave like a real client
where the contract says how a client behaves, and nothing else.
"""

import hashlib
import hmac
import json
import os
import re
import time
import uuid

import schemathesis

# The documented format of Idempotency-Key (pulse_kit::openapi::IDEMPOTENCY_KEY_PATTERN).
KEY = re.compile(r"^[!-~]{1,255}$")

# The header the payment provider signs its webhooks with (ordering's payments::signature).
SIGNATURE_HEADER = "stripe-signature"
# The webhook secret of the server under test, given by the test; unset: nothing is signed.
WEBHOOK_SECRET = os.environ.get("PULSE_SCHEMATHESIS_WEBHOOK_SECRET", "")

# How long a Server-Sent Events answer is read: a stream does not end by itself.
STREAM_READ_SECONDS = 1.0


@schemathesis.hook
def before_call(context, case, kwargs):
    """Gives each operation what a real client would send it."""
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == "idempotency-key" and isinstance(value, str) and KEY.match(value):
            # A client sends a new key per operation, while generated keys repeat ("0", "00", …)
            # and a key reused for another request is rightly refused (422
            # idempotency-key-reused). Malformed keys stay, to be refused (400).
            headers[name] = str(uuid.uuid4())
    _sign_webhook(case, kwargs)
    if _answers_event_stream(case.operation):
        # Schemathesis reads a stream until the request timeout has passed: a short one here,
        # not the run's.
        kwargs["timeout"] = STREAM_READ_SECONDS


def _sign_webhook(case, kwargs):
    """A well-formed `Stripe-Signature` (one its documented schema accepts) becomes the provider's
    true signature of the body about to be sent, made now with the server's secret, as the
    provider sends it: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. The body is
    serialized here and sent as these exact bytes, so the signature covers what the server reads.
    A malformed or missing header stays as generated, to be refused (400)."""
    if not WEBHOOK_SECRET or not case.headers:
        return
    names = [name for name in case.headers if name.lower() == SIGNATURE_HEADER]
    parameter = _header_parameter(case.operation, SIGNATURE_HEADER)
    if not names or parameter is None:
        return
    value = case.headers[names[0]]
    if not isinstance(value, str) or not parameter.is_valid(value):
        return
    body = _raw_body(case.as_transport_kwargs())
    if body is None:
        return
    timestamp = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    signed = f"t={timestamp},v1={mac.hexdigest()}"
    if not parameter.is_valid(signed):
        # The document's format is not the provider's: leave the case as generated.
        return
    for name in names[1:]:
        del case.headers[name]
    case.headers[names[0]] = signed
    if body:
        kwargs["data"] = body


def _header_parameter(operation, name):
    """The operation's header parameter `name` (lower case) as the document defines it."""
    for parameter in getattr(operation, "headers", None) or []:
        if parameter.name.lower() == name:
            return parameter
    return None


def _raw_body(serialized):
    """The bytes of the body of a case that schemathesis would send with `serialized` (the keyword
    arguments for `requests`): a `json` value serialized as `requests` does (`json.dumps`
    defaults, no NaN), `data` as UTF-8; `b""` when it sends no body; `None` for a body that is
    no JSON text (left as it is)."""
    if "json" in serialized:
        try:
            return json.dumps(serialized["json"], allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            return None
    if "data" in serialized:
        data = serialized["data"]
        if isinstance(data, bytes):
            return data
        if isinstance(data, str):
            return data.encode("utf-8")
        return None
    if "files" in serialized:
        return None
    return b""


def _answers_event_stream(operation):
    """Whether the document lists a `text/event-stream` answer of the operation."""
    responses = operation.definition.raw.get("responses") or {}
    return any(
        isinstance(response, dict) and "text/event-stream" in (response.get("content") or {})
        for response in responses.values()
    )


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
