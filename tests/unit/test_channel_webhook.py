"""Webhook channel against a real HTTP(S) receiver on 127.0.0.1, no mocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from atm_risk import __version__
from atm_risk.alerts.channels import (
    ChannelConfigError,
    Outcome,
    envelope,
    post_webhook,
    sign,
    verify,
)
from atm_risk.alerts.channels.webhook import SIGNATURE_HEADER, encode
from atm_risk.clock import FrozenClock
from tests.http_receiver import HttpReceiver, Reply
from tests.smtp_server import ThrowawayTls

SECRET = b"whsec_police-nl-west_0123456789abcdef"
KEY = "gang_active:NL-WEST:2026-11-28T03:10:00Z:police-nl-west"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayTls:
    return ThrowawayTls.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def receiver(clock: FrozenClock) -> Iterator[HttpReceiver]:
    with HttpReceiver(clock=clock.now) as server:
        yield server


def payload(clock: FrozenClock) -> dict[str, Any]:
    return envelope(
        kind="gang_active",
        idempotency_key=KEY,
        created_at=clock.now(),
        data={
            "incident": {"id": 4711, "at": clock.now(), "municipality": "Utrecht"},
            "machines_at_risk": [{"atm_id": "ATM-0042", "risk": 0.91, "action": "shut down"}],
            "escape_routes": ["A2 junction 7", "A12 junction 17"],
        },
    )


def post(url: str, clock: FrozenClock, doc: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """``post_webhook`` with the test secret and key, signed at the clock's time."""
    options: dict[str, Any] = {
        "secret": SECRET,
        "idempotency_key": KEY,
        "now": int(clock.now().timestamp()),
        "timeout_s": 1.0,
    }
    options.update(kwargs)
    return post_webhook(url, payload(clock) if doc is None else doc, **options)


# -- delivery and signature ---------------------------------------------------------------


def test_delivery_is_signed_and_verifies_on_the_received_body(
    receiver: HttpReceiver, clock: FrozenClock
) -> None:
    t1 = clock.now()
    clock.advance(timedelta(seconds=1))
    result = post(receiver.url("/alerts"), clock)
    clock.advance(timedelta(seconds=1))
    t2 = clock.now()

    assert result.outcome is Outcome.SENT
    assert result.code == 200
    [request] = receiver.requests
    assert t1 < request.received_at < t2
    assert request.method == "POST"
    assert request.path == "/alerts"
    assert request.header("Content-Type") == "application/json"
    assert request.header("User-Agent") == f"atm-risk/{__version__}"
    assert request.header("Idempotency-Key") == KEY
    signature = request.header(SIGNATURE_HEADER)
    assert signature is not None
    assert signature.startswith(f"t={int(t1.timestamp()) + 1},v1=")
    receiver_now = int(clock.now().timestamp())
    assert verify(SECRET, signature, request.body, receiver_now)

    body = json.loads(request.body)
    assert body["version"] == "1"
    assert body["id"] == KEY == request.header("Idempotency-Key")
    assert body["kind"] == "gang_active"
    assert body["created_at"] == "2026-11-28T12:00:01.000Z"
    assert body["data"]["incident"]["at"] == "2026-11-28T12:00:01.000Z"
    assert body["data"]["machines_at_risk"][0]["atm_id"] == "ATM-0042"


def test_tampered_body_wrong_secret_and_stale_time_fail_verification(
    receiver: HttpReceiver, clock: FrozenClock
) -> None:
    post(receiver.url(), clock)
    [request] = receiver.requests
    header = request.header(SIGNATURE_HEADER)
    assert header is not None
    now = int(clock.now().timestamp())

    tampered = request.body.replace(b"ATM-0042", b"ATM-0043")
    assert tampered != request.body
    assert not verify(SECRET, header, tampered, now)
    assert not verify(b"another-secret", header, request.body, now)
    assert not verify(SECRET, header, request.body, now + 301)  # replayed later
    assert not verify(SECRET, header, request.body, now - 301)
    assert verify(SECRET, header, request.body, now + 300)


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "t=abc,v1=00", "v1=00", "t=1800000000", "t=1,t=2,v1=00", "t=\uff11,v1=00"],
)
def test_malformed_signature_headers_do_not_verify(header: str) -> None:
    assert not verify(SECRET, header, b"{}", 1_800_000_000)


def test_rotated_secrets_any_v1_matches() -> None:
    body = b'{"id":"x"}'
    old = sign(b"old-secret", 1_800_000_000, body)
    new = sign(SECRET, 1_800_000_000, body)
    both = f"{new},v1={old.split('v1=')[1]}"
    assert verify(SECRET, both, body, 1_800_000_010)
    assert verify(b"old-secret", both, body, 1_800_000_010)


def test_retries_send_identical_bytes(receiver: HttpReceiver, clock: FrozenClock) -> None:
    doc = payload(clock)  # the outbox stores the alert once and re-sends it
    receiver.respond(503)
    assert post(receiver.url(), clock, doc).outcome is Outcome.TRANSIENT
    clock.advance(timedelta(seconds=30))
    assert post(receiver.url(), clock, doc).outcome is Outcome.SENT
    first, second = receiver.requests
    assert first.body == second.body
    assert first.header("Idempotency-Key") == second.header("Idempotency-Key") == KEY
    assert first.header(SIGNATURE_HEADER) != second.header(SIGNATURE_HEADER)  # new t=


# -- classification -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_sent(status: int, receiver: HttpReceiver, clock: FrozenClock) -> None:
    receiver.respond(status)
    result = post(receiver.url(), clock)
    assert result.outcome is Outcome.SENT
    assert result.code == status


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 425, 429])
def test_server_errors_and_throttling_are_transient(
    status: int, receiver: HttpReceiver, clock: FrozenClock
) -> None:
    receiver.respond(Reply(status, body=b"busy"))
    result = post(receiver.url(), clock)
    assert result.outcome is Outcome.TRANSIENT
    assert result.code == status
    assert result.retry_after_s is None
    assert "busy" in result.detail


def test_503_passes_retry_after_seconds(receiver: HttpReceiver, clock: FrozenClock) -> None:
    receiver.respond(Reply(503, headers={"Retry-After": "120"}))
    result = post(receiver.url(), clock)
    assert result.outcome is Outcome.TRANSIENT
    assert result.retry_after_s == 120.0


def test_429_passes_retry_after_http_date(receiver: HttpReceiver, clock: FrozenClock) -> None:
    later = clock.now() + timedelta(seconds=90)
    receiver.respond(Reply(429, headers={"Retry-After": format_datetime(later, usegmt=True)}))
    result = post(receiver.url(), clock)
    assert result.outcome is Outcome.TRANSIENT
    assert result.retry_after_s == 90.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
def test_other_4xx_are_permanent(status: int, receiver: HttpReceiver, clock: FrozenClock) -> None:
    receiver.respond(status)
    result = post(receiver.url(), clock)
    assert result.outcome is Outcome.PERMANENT
    assert result.code == status


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(
    status: int, receiver: HttpReceiver, clock: FrozenClock
) -> None:
    receiver.respond(Reply(status, headers={"Location": receiver.url("/elsewhere")}))
    result = post(receiver.url("/hook"), clock)
    assert result.outcome is Outcome.PERMANENT
    assert result.code == status
    assert "not followed" in result.detail
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_timeout_is_transient(receiver: HttpReceiver, clock: FrozenClock) -> None:
    receiver.respond(Reply(200, delay_s=1.0))
    result = post(receiver.url(), clock, timeout_s=0.2)
    assert result.outcome is Outcome.TRANSIENT
    assert "timed out" in result.detail


def test_connection_refused_is_transient(receiver: HttpReceiver, clock: FrozenClock) -> None:
    url = receiver.url()
    receiver.stop()
    result = post(url, clock)
    assert result.outcome is Outcome.TRANSIENT
    assert "ConnectError" in result.detail
    receiver.start()
    assert post(url, clock).outcome is Outcome.SENT


# -- TLS and URLs -------------------------------------------------------------------------


def test_https_verifies_against_the_test_ca(tls: ThrowawayTls, clock: FrozenClock) -> None:
    with HttpReceiver(tls=tls) as server:
        assert server.url().startswith("https://127.0.0.1:")
        result = post(server.url(), clock, ca_file=server.ca_file)
        assert result.outcome is Outcome.SENT, result.detail
        [request] = server.requests
        assert request.tls
        now = int(clock.now().timestamp())
        assert verify(SECRET, request.header(SIGNATURE_HEADER) or "", request.body, now)


def test_https_with_an_untrusted_certificate_is_a_config_error(
    tls: ThrowawayTls, tmp_path_factory: pytest.TempPathFactory, clock: FrozenClock
) -> None:
    other = ThrowawayTls.create(tmp_path_factory.mktemp("other"))
    with HttpReceiver(tls=tls) as server:
        with pytest.raises(ChannelConfigError, match="does not verify"):
            post(server.url(), clock, ca_file=other.ca_file)
        with pytest.raises(ChannelConfigError, match="does not verify"):
            post(server.url(), clock)  # system store: the throw-away CA is unknown
        assert server.requests == []


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/hook", "file:///etc/passwd", "127.0.0.1:8080/hook", "http:///hook"],
)
def test_only_http_urls(url: str, clock: FrozenClock) -> None:
    with pytest.raises(ChannelConfigError):
        post(url, clock)


def test_plain_http_to_a_remote_host_is_refused(clock: FrozenClock) -> None:
    with pytest.raises(ChannelConfigError, match="unencrypted"):
        post("http://police.example.org/hook", clock)


def test_idempotency_key_must_match_the_envelope(
    receiver: HttpReceiver, clock: FrozenClock
) -> None:
    with pytest.raises(ValueError, match="differ"):
        post(receiver.url(), clock, idempotency_key="another-key")
    assert receiver.requests == []


# -- envelope -----------------------------------------------------------------------------


def test_envelope_is_versioned_and_utc(clock: FrozenClock) -> None:
    amsterdam = datetime(2026, 11, 28, 4, 10, 5, 123456).astimezone(UTC)
    doc = envelope(kind="risk_change", idempotency_key="k", created_at=amsterdam, data={"a": 1})
    assert doc == {
        "version": "1",
        "id": "k",
        "kind": "risk_change",
        "created_at": amsterdam.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": {"a": 1},
    }
    with pytest.raises(ValueError, match="timezone"):
        envelope(kind="x", idempotency_key="k", created_at=datetime(2026, 1, 1), data={})
    with pytest.raises(ValueError, match=r"Out of range float"):
        encode({"risk": float("nan")})
    assert encode({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
