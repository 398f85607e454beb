#!/usr/bin/env python3
"""Local stand-ins for the notifier's providers: an SMTP server and a Twilio-compatible SMS API.

Tests (through `pulse_kit::testing::providers::ProviderStandIns`) and `./dev up` run this
script; `./dev` installs its one dependency, aiosmtpd, into a venv and exports the interpreter as
PULSE_STAND_INS_PYTHON and this file as PULSE_STAND_INS_SCRIPT. Python >= 3.11. It never sends
anything anywhere: every e-mail and SMS is kept in memory (the process is the store) and read
back over HTTP.

Usage:
    provider-stand-ins.py [--smtp HOST:PORT] [--http HOST:PORT] [--state FILE]
                          [--sms-auth-token TOKEN] [--deliver-to URL] [--exit-with-parent]

    --smtp HOST:PORT      serve SMTP (aiosmtpd): EHLO with 8BITMIME and SMTPUTF8, any sender and
                          recipient, AUTH PLAIN/LOGIN accepted (any credentials, no TLS needed)
                          but never required. `PORT` alone means 127.0.0.1:PORT.
    --http HOST:PORT      serve the HTTP API below.
    --state FILE          keep the store across restarts: every message is appended to FILE as a
                          JSON line and reloaded at start (`./dev up` uses it).
    --sms-auth-token T    the SMS API's basic-auth password must be T (default: any password).
    --deliver-to URL      SMTP only, without --http: hand each received e-mail to the stand-in
                          whose HTTP API is at URL (POST URL/api/v1/messages) instead of keeping
                          it. The test fixture runs SMTP in such a second process so that a test
                          can kill SMTP (connections refused) while the store and SMS keep
                          working, then start SMTP again on the same port.
    --exit-with-parent    exit when the parent process dies (so a killed test leaves nothing).

Both listeners bind to loopback unless told otherwise. One line per message goes to stderr.
SIGTERM and SIGINT stop the process cleanly (exit status 0).

HTTP API (JSON):
    GET    /healthz                       200 "ok"
    GET    /api/v1/messages               {"messages": [{"id", "messageId", "from", "to": [...],
                                          "subject", "text", "html", "receivedAt", "mailFrom",
                                          "authUser", "headers": {...}}]} in arrival order.
                                          "from" is the decoded From header, "to" the
                                          envelope recipients (RCPT TO, so Bcc included),
                                          "mailFrom" the envelope sender,
                                          "authUser" the SMTP AUTH user (null without AUTH),
                                          "messageId" the Message-ID header without its angle
                                          brackets, "text"/"html" the decoded text/plain and
                                          text/html parts ("" when absent), "headers" the first
                                          value of each header, names in lower case.
    DELETE /api/v1/messages               forget every e-mail.
    POST   /api/v1/messages               {"mailFrom", "rcptTos": [...], "data": base64 of the
                                          RFC 5322 message, "authUser"}: store an e-mail
                                          (what --deliver-to uses). Answers {"reply": "250
                                          ..."} or, while an SMTP failure is armed, {"reply":
                                          "451 ..."} and stores nothing.
    POST   /api/v1/messages/fail          {"code": 451, "count": N}: the next N e-mails are
                                          refused at end of DATA with that SMTP reply code (4xx:
                                          temporary, 5xx: permanent) and not stored.
    POST   /2010-04-01/Accounts/{AccountSid}/Messages.json
                                          Twilio's "create a message": form fields To, From (or
                                          MessagingServiceSid), Body; HTTP basic auth, user =
                                          AccountSid, password = anything or --sms-auth-token.
                                          201 with Twilio's message resource (sid "SM...",
                                          status "queued"). Errors in Twilio's shape {"code",
                                          "message", "more_info", "status"}: 401 code 20003 (no or
                                          wrong credentials), 400 code 21604 (To missing), 21602
                                          (Body missing), 21603 (From missing).
                                          Idempotency-Key: a request whose key (per account) was
                                          already answered with 201 gets that same answer again
                                          (with the header Idempotent-Replayed: true) and no
                                          second message is stored. That is how the notifier
                                          closes its duplicate window: it sends a delivery's key
                                          on every attempt, so a retry after a lost response
                                          does not text the recipient twice. Failed requests
                                          (4xx, injected 5xx) are not remembered.
    GET    /api/v1/sms                    {"messages": [{"sid", "accountSid", "to", "from",
                                          "body", "idempotencyKey", "receivedAt"}], "requests":
                                          create requests seen (all outcomes)} in arrival order.
    DELETE /api/v1/sms                    forget every SMS, idempotency key and armed failure.
    POST   /api/v1/sms/fail               {"status": 503, "count": N, "retryAfter": S (optional)}:
                                          the next N create requests fail with that HTTP status
                                          (Twilio error shape, code 20000 + status, Retry-After
                                          when given) before any other check; nothing is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import email
import email.policy
import json
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

MAX_BODY = 16 * 1024 * 1024
SMS_PATH_PREFIX = "/2010-04-01/Accounts/"


def log(line: str) -> None:
    """One line to stderr."""
    try:
        print(f"stand-ins: {line}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_addr(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `PORT` (loopback)."""
    if value.isdigit():
        return "127.0.0.1", int(value)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


# ---------------------------------------------------------------- e-mail parsing


def _part_content(msg: EmailMessage, subtype: str) -> str:
    """The decoded text/<subtype> body of `msg` ("" when it has none)."""
    try:
        part = msg.get_body(preferencelist=(subtype,))
    except Exception:  # noqa: BLE001 - a malformed message still gets stored
        part = None
    if part is None or part.get_content_type() != f"text/{subtype}":
        return ""
    try:
        content = part.get_content()
    except Exception:  # noqa: BLE001
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    # Lines end in CRLF on the wire; tests compare with "\n".
    return content.replace("\r\n", "\n") if isinstance(content, str) else ""


def parse_email(mail_from: str, rcpt_tos: list[str], data: bytes) -> dict[str, Any]:
    """The stored record of one received e-mail."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    headers: dict[str, str] = {}
    for name, value in msg.items():
        key = name.lower()
        if key not in headers:
            try:
                headers[key] = str(value)
            except Exception:  # noqa: BLE001
                headers[key] = ""
    message_id = headers.get("message-id", "").strip()
    if message_id.startswith("<") and message_id.endswith(">"):
        message_id = message_id[1:-1]
    return {
        "id": uuid.uuid4().hex,
        "messageId": message_id,
        "from": headers.get("from", mail_from),
        "to": list(rcpt_tos),
        "subject": headers.get("subject", ""),
        "text": _part_content(msg, "plain"),
        "html": _part_content(msg, "html"),
        "receivedAt": now_rfc3339(),
        "mailFrom": mail_from,
        "headers": headers,
    }


# ---------------------------------------------------------------- the store


class Store:
    """Every e-mail and SMS received, idempotency keys and armed failures (thread-safe)."""

    def __init__(self, state_file: str | None) -> None:
        self.lock = threading.Lock()
        self.emails: list[dict[str, Any]] = []
        self.sms: list[dict[str, Any]] = []
        # (account, idempotency key) -> the 201 response body first given.
        self.sms_answers: dict[tuple[str, str], dict[str, Any]] = {}
        self.sms_requests = 0
        self.sms_failures: tuple[int, int, int | None] = (0, 0, None)  # status, count, retryAfter
        self.smtp_failures: tuple[int, int] = (0, 0)  # reply code, count
        self.state_file = state_file
        if state_file:
            self._load(state_file)

    def _load(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if entry.get("type") == "email":
                self.emails.append(entry["record"])
            elif entry.get("type") == "sms":
                self._keep_sms(entry["record"], entry.get("response"))
        log(f"loaded {len(self.emails)} e-mail(s) and {len(self.sms)} SMS from {path}")

    def _append(self, entry: dict[str, Any]) -> None:
        if not self.state_file:
            return
        try:
            with open(self.state_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        except OSError as e:
            log(f"cannot write {self.state_file}: {e}")

    def _rewrite(self) -> None:
        """Writes the whole store anew (after a clear)."""
        if not self.state_file:
            return
        tmp = f"{self.state_file}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for record in self.emails:
                    f.write(json.dumps({"type": "email", "record": record}, ensure_ascii=False) + "\n")
                for record in self.sms:
                    response = self.sms_answers.get((record["accountSid"], record["idempotencyKey"] or ""))
                    f.write(
                        json.dumps(
                            {"type": "sms", "record": record, "response": response}, ensure_ascii=False
                        )
                        + "\n"
                    )
            os.replace(tmp, self.state_file)
        except OSError as e:
            log(f"cannot write {self.state_file}: {e}")

    # e-mail

    def add_email(
        self, mail_from: str, rcpt_tos: list[str], data: bytes, auth_user: str | None = None
    ) -> str:
        """Stores one e-mail; the SMTP reply to give at end of DATA."""
        with self.lock:
            code, count = self.smtp_failures
            if count > 0:
                self.smtp_failures = (code, count - 1)
                log(f"smtp: refused a message from {mail_from} with {code} (armed failure)")
                if code >= 500:
                    return f"{code} 5.3.0 Refused by the stand-in (armed failure)"
                return f"{code} 4.3.0 Try again later (armed failure)"
            record = parse_email(mail_from, rcpt_tos, data)
            record["authUser"] = auth_user
            self.emails.append(record)
            self._append({"type": "email", "record": record})
        log(
            f"smtp: e-mail {record['id']} from {record['from']!r} to {', '.join(rcpt_tos)}: "
            f"{record['subject']!r}"
        )
        return "250 OK"

    def list_emails(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.emails)

    def clear_emails(self) -> None:
        with self.lock:
            self.emails.clear()
            self.smtp_failures = (0, 0)
            self._rewrite()

    def arm_smtp_failures(self, code: int, count: int) -> None:
        with self.lock:
            self.smtp_failures = (code, count)

    # SMS

    def _keep_sms(self, record: dict[str, Any], response: dict[str, Any] | None) -> None:
        self.sms.append(record)
        if record.get("idempotencyKey") and response is not None:
            self.sms_answers[(record["accountSid"], record["idempotencyKey"])] = response

    def take_sms_failure(self) -> tuple[int, int | None] | None:
        """Counts one create request; the armed failure it must get, if any."""
        with self.lock:
            self.sms_requests += 1
            status, count, retry_after = self.sms_failures
            if count <= 0:
                return None
            self.sms_failures = (status, count - 1, retry_after)
            return status, retry_after

    def create_sms(
        self, account: str, to: str, sender: str, body: str, key: str | None, extra: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Stores one SMS (unless `key` was seen); the response body and whether it is a replay."""
        with self.lock:
            if key and (account, key) in self.sms_answers:
                return self.sms_answers[(account, key)], True
            sid = "SM" + uuid.uuid4().hex
            created = format_datetime(datetime.now(UTC), usegmt=True)
            response = {
                "sid": sid,
                "account_sid": account,
                "messaging_service_sid": extra.get("MessagingServiceSid"),
                "to": to,
                "from": sender or None,
                "body": body,
                "status": "queued",
                "num_segments": str(max(1, (len(body) + 152) // 153)),
                "num_media": "0",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "date_created": created,
                "date_updated": created,
                "date_sent": None,
                "price": None,
                "price_unit": "USD",
                "error_code": None,
                "error_message": None,
                "uri": f"{SMS_PATH_PREFIX}{account}/Messages/{sid}.json",
                "subresource_uris": {"media": f"{SMS_PATH_PREFIX}{account}/Messages/{sid}/Media.json"},
            }
            record = {
                "sid": sid,
                "accountSid": account,
                "to": to,
                "from": sender,
                "body": body,
                "idempotencyKey": key,
                "receivedAt": now_rfc3339(),
            }
            self._keep_sms(record, response)
            self._append({"type": "sms", "record": record, "response": response})
        log(
            f"sms: {sid} from {sender} to {to}"
            + (f" (Idempotency-Key {key})" if key else "")
            + f": {body[:80]!r}"
        )
        return response, False

    def list_sms(self) -> dict[str, Any]:
        with self.lock:
            return {"messages": list(self.sms), "requests": self.sms_requests}

    def clear_sms(self) -> None:
        with self.lock:
            self.sms.clear()
            self.sms_answers.clear()
            self.sms_requests = 0
            self.sms_failures = (0, 0, None)
            self._rewrite()

    def arm_sms_failures(self, status: int, count: int, retry_after: int | None) -> None:
        with self.lock:
            self.sms_failures = (status, count, retry_after)


# ---------------------------------------------------------------- HTTP


def twilio_error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class StandInServer(ThreadingHTTPServer):
    """The HTTP server, with what its handlers need."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: Store, auth_token: str | None) -> None:
        super().__init__(address, Handler)
        self.store = store
        self.auth_token = auth_token


class Handler(BaseHTTPRequestHandler):
    """The HTTP API."""

    server_version = "pulse-provider-stand-ins/1"
    protocol_version = "HTTP/1.1"

    @property
    def store(self) -> Store:
        return cast(StandInServer, self.server).store

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # one line per message is logged by the store instead

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = (json.dumps(body, ensure_ascii=False) + "\n").encode() if body is not None else b""
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._reply(413, {"error": "body too large or bad Content-Length"})
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> dict[str, Any] | None:
        raw = self._body()
        if raw is None:
            return None
        try:
            value = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            self._reply(400, {"error": f"invalid JSON: {e}"})
            return None
        if not isinstance(value, dict):
            self._reply(400, {"error": "expected a JSON object"})
            return None
        return value

    def _path(self) -> str:
        return urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self._path()
        if path == "/healthz":
            raw = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        elif path == "/api/v1/messages":
            self._reply(200, {"messages": self.store.list_emails()})
        elif path == "/api/v1/sms":
            self._reply(200, self.store.list_sms())
        else:
            self._reply(404, {"error": f"no route GET {path}"})

    def do_DELETE(self) -> None:  # noqa: N802
        path = self._path()
        if path == "/api/v1/messages":
            self.store.clear_emails()
            self._reply(200, {"deleted": True})
        elif path == "/api/v1/sms":
            self.store.clear_sms()
            self._reply(200, {"deleted": True})
        else:
            self._reply(404, {"error": f"no route DELETE {path}"})

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        if path.startswith(SMS_PATH_PREFIX) and path.endswith("/Messages.json"):
            account = path[len(SMS_PATH_PREFIX) : -len("/Messages.json")]
            if account and "/" not in account:
                self._create_sms(urllib.parse.unquote(account))
                return
        if path == "/api/v1/messages":
            self._ingest_email()
        elif path == "/api/v1/messages/fail":
            self._arm("smtp")
        elif path == "/api/v1/sms/fail":
            self._arm("sms")
        else:
            self._body()
            self._reply(404, {"error": f"no route POST {path}"})

    def _arm(self, what: str) -> None:
        value = self._json_body()
        if value is None:
            return
        count = value.get("count", 1)
        if not isinstance(count, int) or count < 0:
            self._reply(400, {"error": "count must be a non-negative integer"})
            return
        if what == "sms":
            status = value.get("status", 503)
            retry_after = value.get("retryAfter")
            if not isinstance(status, int) or not 400 <= status <= 599:
                self._reply(400, {"error": "status must be an HTTP error status (400-599)"})
                return
            if retry_after is not None and (not isinstance(retry_after, int) or retry_after < 0):
                self._reply(400, {"error": "retryAfter must be a non-negative integer of seconds"})
                return
            self.store.arm_sms_failures(status, count, retry_after)
            log(f"sms: the next {count} request(s) fail with {status}")
            self._reply(200, {"status": status, "count": count})
        else:
            code = value.get("code", 451)
            if not isinstance(code, int) or not 400 <= code <= 599:
                self._reply(400, {"error": "code must be an SMTP failure reply code (400-599)"})
                return
            self.store.arm_smtp_failures(code, count)
            log(f"smtp: the next {count} message(s) are refused with {code}")
            self._reply(200, {"code": code, "count": count})

    def _ingest_email(self) -> None:
        value = self._json_body()
        if value is None:
            return
        try:
            data = base64.b64decode(value["data"], validate=True)
            mail_from = str(value.get("mailFrom") or "")
            rcpt_tos = [str(r) for r in value.get("rcptTos") or []]
            auth_user = value.get("authUser")
            auth_user = None if auth_user is None else str(auth_user)
        except (KeyError, TypeError, binascii.Error) as e:
            self._reply(400, {"error": f"expected mailFrom, rcptTos and base64 data: {e}"})
            return
        self._reply(200, {"reply": self.store.add_email(mail_from, rcpt_tos, data, auth_user)})

    def _create_sms(self, account: str) -> None:
        raw = self._body()
        if raw is None:
            return
        failure = self.store.take_sms_failure()
        if failure is not None:
            status, retry_after = failure
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            self._reply(status, twilio_error(20000 + status, f"{phrase} (armed failure)", status), headers)
            return
        if not self._authorized(account):
            self._reply(
                401,
                twilio_error(20003, "Authenticate", 401),
                {"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
            return
        form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace")).items()}
        to = form.get("To", "").strip()
        sender = form.get("From", "").strip()
        body = form.get("Body", "")
        if not to:
            self._reply(400, twilio_error(21604, "A 'To' phone number is required.", 400))
            return
        if not sender and not form.get("MessagingServiceSid"):
            self._reply(400, twilio_error(21603, "A 'From' phone number is required.", 400))
            return
        if not body:
            self._reply(400, twilio_error(21602, "Message body is required.", 400))
            return
        key = self.headers.get("Idempotency-Key") or None
        response, replayed = self.store.create_sms(account, to, sender, body, key, form)
        self._reply(201, response, {"Idempotent-Replayed": "true"} if replayed else None)

    def _authorized(self, account: str) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep or user != account:
            return False
        token = cast(StandInServer, self.server).auth_token
        return token is None or password == token


# ---------------------------------------------------------------- SMTP


class SmtpHandler:
    """aiosmtpd handler: each message goes to the local store or, with --deliver-to, to the
    stand-in that keeps them."""

    def __init__(self, store: Store | None, deliver_to: str | None) -> None:
        self.store = store
        self.deliver_to = deliver_to

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        data: bytes = envelope.original_content or envelope.content or b""
        mail_from = envelope.mail_from or ""
        rcpt_tos = list(envelope.rcpt_tos)
        auth_user = session.auth_data if isinstance(session.auth_data, str) else None
        if self.store is not None:
            return self.store.add_email(mail_from, rcpt_tos, data, auth_user)
        return await asyncio.get_running_loop().run_in_executor(
            None, self._deliver, mail_from, rcpt_tos, data, auth_user
        )

    def _deliver(self, mail_from: str, rcpt_tos: list[str], data: bytes, auth_user: str | None) -> str:
        assert self.deliver_to is not None
        payload = json.dumps(
            {
                "mailFrom": mail_from,
                "rcptTos": rcpt_tos,
                "data": base64.b64encode(data).decode(),
                "authUser": auth_user,
            }
        ).encode()
        request = urllib.request.Request(
            self.deliver_to.rstrip("/") + "/api/v1/messages",
            data=payload,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(json.load(response)["reply"])
        except (OSError, ValueError, KeyError) as e:
            log(f"smtp: cannot hand a message to {self.deliver_to}: {e}")
            return "451 4.3.0 The stand-in store is unreachable; try again later"


async def start_smtp(host: str, port: int, handler: SmtpHandler) -> asyncio.AbstractServer:
    try:
        from aiosmtpd.smtp import SMTP, AuthResult
    except ImportError:
        log(
            "aiosmtpd is not installed for this interpreter: run through `./dev test` / `./dev up`, "
            'or `eval "$(./dev deps)"` and use $PULSE_STAND_INS_PYTHON'
        )
        sys.exit(3)

    def accept_any(_server: Any, _session: Any, _envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        login = getattr(auth_data, "login", None)
        user = login.decode("utf-8", "replace") if isinstance(login, bytes) else str(login or "")
        log(f"smtp: AUTH {mechanism} as {user!r} accepted")
        return AuthResult(success=True, auth_data=user)

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="stand-in.pulse.localhost",
            ident="Pulse provider stand-in",
            enable_SMTPUTF8=True,
            decode_data=False,
            auth_required=False,
            auth_require_tls=False,
            authenticator=accept_any,
            data_size_limit=MAX_BODY,
        )

    return await asyncio.get_running_loop().create_server(factory, host=host, port=port, reuse_address=True)


# ---------------------------------------------------------------- main


async def watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    log("parent process gone; exiting")
    stop.set()


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_with_parent:
        asyncio.create_task(watch_parent(os.getppid(), stop))

    store = Store(args.state) if args.http else None
    httpd: StandInServer | None = None
    if args.http:
        host, port = args.http
        assert store is not None
        httpd = StandInServer((host, port), store, args.sms_auth_token)
        threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
        log(f"HTTP API on http://{host}:{port} (GET /api/v1/messages, GET /api/v1/sms)")

    smtp = None
    if args.smtp:
        host, port = args.smtp
        smtp = await start_smtp(host, port, SmtpHandler(store, args.deliver_to))
        log(f"SMTP on {host}:{port}" + (f", delivering to {args.deliver_to}" if args.deliver_to else ""))

    await stop.wait()
    log("stopping")
    if smtp is not None:
        smtp.close()
    if httpd is not None:
        httpd.shutdown()
        httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description="SMTP and Twilio-compatible SMS stand-ins (see the file's top)."
    )
    parser.add_argument("--smtp", type=parse_addr, metavar="HOST:PORT", help="serve SMTP here")
    parser.add_argument("--http", type=parse_addr, metavar="HOST:PORT", help="serve the HTTP API here")
    parser.add_argument("--state", metavar="FILE", help="persist the store as JSON lines in FILE")
    parser.add_argument(
        "--sms-auth-token", metavar="TOKEN", help="required basic-auth password of the SMS API"
    )
    parser.add_argument("--deliver-to", metavar="URL", help="SMTP only: hand e-mails to the stand-in at URL")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process dies")
    args = parser.parse_args()
    # aiosmtpd logs to "mail.log"; only its errors are worth a line here.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    if not args.smtp and not args.http:
        parser.error("give --smtp, --http or both")
    if args.deliver_to and args.http:
        parser.error("--deliver-to is for an SMTP-only process (without --http)")
    if args.smtp and not args.http and not args.deliver_to:
        parser.error("an SMTP-only process needs --deliver-to URL (where the store is)")
    if args.state and not args.http:
        parser.error("--state needs --http (the process with --http keeps the store)")
    try:
        asyncio.run(run(args))
    except OSError as e:
        log(f"cannot start: {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
