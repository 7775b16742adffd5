"""E-mail channel against a real SMTP server (aiosmtpd on 127.0.0.1), no mocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from atm_risk.alerts.channels import (
    ChannelConfigError,
    Outcome,
    SmtpConfig,
    build_message,
    compose,
    message_id_for,
    send_email,
)
from atm_risk.clock import FrozenClock
from tests.smtp_server import SmtpTestServer, ThrowawayTls

RECIPIENT = "duty-officer@police-nl-west.test"
USER, PASSWORD = "atm-risk", "correct horse battery staple"
MESSAGE_ID = "<gang_active.NL-WEST.20261128T031000Z.police-nl-west.7f3a9c@alerts.atm-risk.test>"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)
CSV = b"rank,atm_id,risk\r\n1,ATM-0042,0.91\r\n2,ATM-0007,0.88\r\n"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayTls:
    return ThrowawayTls.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_tls(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayTls:
    """A second, unrelated CA: trusting it must not let our client accept the server."""
    return ThrowawayTls.create(tmp_path_factory.mktemp("other-tls"))


@pytest.fixture
def plain(clock: FrozenClock) -> Iterator[SmtpTestServer]:
    with SmtpTestServer(mode="plain", clock=clock.now) as server:
        yield server


@pytest.fixture
def starttls(tls: ThrowawayTls, clock: FrozenClock) -> Iterator[SmtpTestServer]:
    with SmtpTestServer(mode="starttls", tls=tls, auth=(USER, PASSWORD), clock=clock.now) as s:
        yield s


def message(clock: FrozenClock, **overrides: object) -> EmailMessage:
    values: dict[str, object] = {
        "subject": "Gang active near Utrecht: 3 machines at risk",
        "sender": "ATM risk alerts <alerts@atm-risk.test>",
        "to": RECIPIENT,
        "message_id": MESSAGE_ID,
        "text": "ATM-0042 blown up at 03:10.\nNearest escape route: A2 junction 7.\n",
        "date": clock.now(),
    }
    values.update(overrides)
    return build_message(**values)  # type: ignore[arg-type]


# -- delivery -----------------------------------------------------------------------------


def test_plain_loopback_delivery_is_recorded_between_t1_and_t2(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    t1 = clock.now()
    clock.advance(timedelta(seconds=1))
    result = send_email(message(clock), RECIPIENT, plain.smtp_config())
    clock.advance(timedelta(seconds=1))
    t2 = clock.now()

    assert result.outcome is Outcome.SENT
    assert result.code == 250
    assert "250 2.0.0 OK queued as test-1" in result.detail
    [received] = plain.messages_for(RECIPIENT)
    assert t1 < received.received_at < t2
    assert received.rcpt_tos == (RECIPIENT,)
    assert received.mail_from == "alerts@atm-risk.test"
    assert not received.tls
    assert received.subject == "Gang active near Utrecht: 3 machines at risk"
    assert "A2 junction 7" in received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_starttls_verifies_against_the_test_ca_and_authenticates(
    starttls: SmtpTestServer, clock: FrozenClock
) -> None:
    config = starttls.smtp_config()
    assert config.security == "starttls"
    assert config.ca_file == starttls.ca_file

    result = send_email(message(clock), RECIPIENT, config)

    assert result.outcome is Outcome.SENT, result.detail
    assert "(TLS)" in result.detail
    [received] = starttls.wait_for(1)
    assert received.tls
    assert received.auth_login == USER


def test_implicit_tls(tls: ThrowawayTls, clock: FrozenClock) -> None:
    with SmtpTestServer(mode="implicit", tls=tls, auth=(USER, PASSWORD)) as server:
        config = server.smtp_config()
        assert config.security == "tls"
        result = send_email(message(clock), RECIPIENT, config)
        assert result.outcome is Outcome.SENT, result.detail
        [received] = server.messages
        assert received.tls
        assert received.auth_login == USER


def test_auth_on_a_loopback_relay_without_tls(clock: FrozenClock) -> None:
    with SmtpTestServer(mode="plain", auth=(USER, PASSWORD), auth_require_tls=False) as server:
        result = send_email(message(clock), RECIPIENT, server.smtp_config())
        assert result.outcome is Outcome.SENT, result.detail
        assert server.messages[0].auth_login == USER


def test_wrong_password_is_permanent_and_never_echoed(
    starttls: SmtpTestServer, clock: FrozenClock
) -> None:
    config = starttls.smtp_config(password="not-the-password")
    result = send_email(message(clock), RECIPIENT, config)
    assert result.outcome is Outcome.PERMANENT
    assert result.code == 535
    assert "not-the-password" not in result.detail
    assert starttls.messages == []


def test_auth_required_but_no_credentials_is_permanent(
    starttls: SmtpTestServer, clock: FrozenClock
) -> None:
    config = starttls.smtp_config(username=None, password=None)
    result = send_email(message(clock), RECIPIENT, config)
    assert result.outcome is Outcome.PERMANENT
    assert result.code == 530


# -- misconfiguration ---------------------------------------------------------------------


def test_starttls_required_but_not_offered_is_a_config_error(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    config = SmtpConfig(
        host=plain.host, port=plain.port, from_address="alerts@atm-risk.test", timeout_s=2
    )
    assert config.security == "starttls"
    with pytest.raises(ChannelConfigError, match="does not offer STARTTLS"):
        send_email(message(clock), RECIPIENT, config)
    assert plain.messages == []


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_certificate_from_an_unknown_ca_is_a_config_error(
    mode: str, tls: ThrowawayTls, other_tls: ThrowawayTls, clock: FrozenClock
) -> None:
    with SmtpTestServer(mode=mode, tls=tls) as server:  # type: ignore[arg-type]
        config = server.smtp_config(ca_file=other_tls.ca_file)
        with pytest.raises(ChannelConfigError, match="does not verify"):
            send_email(message(clock), RECIPIENT, config)
        assert server.messages == []


def test_certificate_for_another_host_name_is_a_config_error(
    tmp_path: Path, clock: FrozenClock
) -> None:
    wrong_name = ThrowawayTls.create(tmp_path, "relay.elsewhere.test")
    with SmtpTestServer(mode="starttls", tls=wrong_name) as server:
        with pytest.raises(ChannelConfigError, match="does not verify"):
            send_email(message(clock), RECIPIENT, server.smtp_config())
        assert server.messages == []


def test_implicit_tls_against_a_plain_port_is_a_config_error(
    plain: SmtpTestServer, tls: ThrowawayTls, clock: FrozenClock
) -> None:
    config = plain.smtp_config(security="tls", ca_file=tls.ca_file)
    with pytest.raises(ChannelConfigError, match="TLS with"):
        send_email(message(clock), RECIPIENT, config)


def test_missing_ca_file_is_a_config_error(
    starttls: SmtpTestServer, tmp_path: Path, clock: FrozenClock
) -> None:
    config = starttls.smtp_config(ca_file=tmp_path / "nope.pem")
    with pytest.raises(ChannelConfigError, match="not readable"):
        send_email(message(clock), RECIPIENT, config)


# -- classification -----------------------------------------------------------------------


def test_recipient_451_is_transient(plain: SmtpTestServer, clock: FrozenClock) -> None:
    plain.rcpt_reply = "451 4.3.0 Mailbox temporarily unavailable"
    result = send_email(message(clock), RECIPIENT, plain.smtp_config())
    assert result.outcome is Outcome.TRANSIENT
    assert result.code == 451
    assert RECIPIENT in result.detail
    assert plain.messages == []
    assert [r.stage for r in plain.rejections] == ["RCPT"]


def test_recipient_550_is_permanent(plain: SmtpTestServer, clock: FrozenClock) -> None:
    plain.rcpt_replies["nobody@police-nl-west.test"] = "550 5.1.1 No such user"
    result = send_email(message(clock), "nobody@police-nl-west.test", plain.smtp_config())
    assert result.outcome is Outcome.PERMANENT
    assert result.code == 550
    # Only that address is refused.
    assert send_email(message(clock), RECIPIENT, plain.smtp_config()).outcome is Outcome.SENT


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        ("451 4.7.1 Greylisted, try again later", Outcome.TRANSIENT),
        ("452 4.3.1 Insufficient system storage", Outcome.TRANSIENT),
        ("554 5.6.0 Message rejected as spam", Outcome.PERMANENT),
        ("552 5.3.4 Message too big", Outcome.PERMANENT),
    ],
)
def test_data_reply_classification(
    reply: str, outcome: Outcome, plain: SmtpTestServer, clock: FrozenClock
) -> None:
    plain.data_reply = reply
    result = send_email(message(clock), RECIPIENT, plain.smtp_config())
    assert result.outcome is outcome
    assert result.code == int(reply[:3])
    assert plain.messages == []


def test_retry_after_451_delivers_once_with_the_same_message_id(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    plain.queue_data_replies("451 4.3.0 Try again later")
    msg = message(clock)
    assert send_email(msg, RECIPIENT, plain.smtp_config()).outcome is Outcome.TRANSIENT
    assert send_email(msg, RECIPIENT, plain.smtp_config()).outcome is Outcome.SENT
    [received] = plain.messages
    assert received.message_id == MESSAGE_ID


def test_server_down_is_transient_then_delivers_on_the_same_port(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    config = plain.smtp_config()
    port = plain.port
    plain.stop()
    result = send_email(message(clock), RECIPIENT, config)
    assert result.outcome is Outcome.TRANSIENT
    assert "ConnectionRefused" in result.detail

    plain.start()
    assert plain.port == port
    assert send_email(message(clock), RECIPIENT, config).outcome is Outcome.SENT
    assert len(plain.messages) == 1


def test_server_dying_mid_transaction_is_transient(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    plain.delay_s = 1.0
    killer = threading.Timer(0.2, plain.stop)
    killer.start()
    try:
        result = send_email(message(clock), RECIPIENT, plain.smtp_config())
    finally:
        killer.join()
    assert result.outcome is Outcome.TRANSIENT
    assert plain.messages == []


def test_slow_server_beyond_the_timeout_is_transient(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    plain.delay_s = 1.0
    result = send_email(message(clock), RECIPIENT, plain.smtp_config(timeout_s=0.3))
    assert result.outcome is Outcome.TRANSIENT
    assert "timed out" in result.detail
    assert plain.messages == []


def test_invalid_recipient_is_permanent_without_connecting(clock: FrozenClock) -> None:
    config = SmtpConfig(host="127.0.0.1", port=1, security="none", from_address="a@b.test")
    result = send_email(message(clock), "not an address\r\nRCPT TO:<x@y>", config)
    assert result.outcome is Outcome.PERMANENT


# -- message content ----------------------------------------------------------------------


def test_message_id_and_date_survive_transport_exactly(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    send_email(message(clock), RECIPIENT, plain.smtp_config())
    [received] = plain.messages
    assert received.message_id == MESSAGE_ID
    assert f"Message-ID: {MESSAGE_ID}\r\n".encode() in received.raw
    assert parsedate_to_datetime(str(received.message["Date"])) == clock.now()
    assert received.message["Auto-Submitted"] == "auto-generated"


def test_text_html_and_attachments_arrive_intact(plain: SmtpTestServer, clock: FrozenClock) -> None:
    html = "<p>Gemeente <b>Utrecht</b>: 3 geldautomaten · risico ↑</p>"
    msg = message(
        clock,
        subject="Dagoverzicht · regio Midden-Nederland",
        text="Dagoverzicht: 3 geldautomaten, risico ↑ (Zeist, Bunnik, Houten)\n",
        html=html,
        attachments=[("ranking.csv", CSV, "text/csv"), ("map.png", PNG, "image/png")],
        headers={"X-ATM-Risk-Alert": "digest:NL-MIDDEN:2026-11-28"},
    )
    assert send_email(msg, RECIPIENT, plain.smtp_config()).outcome is Outcome.SENT
    [received] = plain.messages
    got = received.message

    assert got.get_content_type() == "multipart/mixed"
    assert received.subject == "Dagoverzicht · regio Midden-Nederland"
    assert got["X-ATM-Risk-Alert"] == "digest:NL-MIDDEN:2026-11-28"
    alternative = next(
        p for p in got.iter_parts() if p.get_content_type() == "multipart/alternative"
    )
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    plain_part = got.get_body(("plain",))
    html_part = got.get_body(("html",))
    assert plain_part is not None
    assert html_part is not None
    assert (
        plain_part.get_content()
        == "Dagoverzicht: 3 geldautomaten, risico ↑ (Zeist, Bunnik, Houten)\n"
    )
    assert html_part.get_content().strip() == html
    # Only 7-bit on the wire: no relay needs 8BITMIME.
    assert received.raw.isascii()

    attachments = {part.get_filename(): part for part in got.iter_attachments()}
    assert set(attachments) == {"ranking.csv", "map.png"}
    assert attachments["ranking.csv"].get_content_type() == "text/csv"
    assert attachments["ranking.csv"].get_payload(decode=True) == CSV
    assert attachments["map.png"].get_content_type() == "image/png"
    assert attachments["map.png"].get_payload(decode=True) == PNG


def test_text_only_message_is_single_part(clock: FrozenClock) -> None:
    msg = message(clock)
    assert msg.get_content_type() == "text/plain"
    assert msg["Message-ID"] == MESSAGE_ID


@pytest.mark.parametrize("bad", ["no-brackets@x.test", "<nodomain>", "<a@b>\r\nBcc: x@y", ""])
def test_build_message_rejects_malformed_message_ids(bad: str, clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="message_id"):
        message(clock, message_id=bad)


def test_build_message_refuses_to_override_its_own_headers(clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        message(clock, headers={"Message-ID": "<other@x.test>"})


def test_message_id_for_is_deterministic_and_valid(clock: FrozenClock) -> None:
    key = "gang_active:NL-WEST:2026-11-28T03:10:00Z:police nl west"
    first = message_id_for(key, "alerts.atm-risk.test")
    assert first == message_id_for(key, "alerts.atm-risk.test")
    assert first.startswith("<gang_active.NL-WEST.")
    assert first.endswith("@alerts.atm-risk.test>")
    assert message(clock, message_id=first)["Message-ID"] == first
    # Different keys that sanitise alike still get different ids; clean keys stay as they are.
    assert message_id_for("a:b", "x.test") != message_id_for("a b", "x.test")
    assert message_id_for("alert-42.police", "x.test") == "<alert-42.police@x.test>"


# -- configuration ------------------------------------------------------------------------


def test_plaintext_to_a_remote_host_needs_an_explicit_opt_in() -> None:
    with pytest.raises(ValidationError, match="clear text"):
        SmtpConfig(host="smtp.example.org", port=25, security="none", from_address="a@b.test")
    config = SmtpConfig(
        host="smtp.example.org",
        port=25,
        security="none",
        allow_plaintext=True,
        from_address="a@b.test",
    )
    assert config.allow_plaintext


def test_credentials_never_go_in_clear_text_to_a_remote_host() -> None:
    with pytest.raises(ValidationError, match="only sent over TLS") as info:
        SmtpConfig(
            host="smtp.example.org",
            port=25,
            security="none",
            allow_plaintext=True,
            username="u",
            password="hunter2-secret",
            from_address="a@b.test",
        )
    assert "hunter2-secret" not in str(info.value)


def test_password_never_appears_in_repr_str_or_errors() -> None:
    config = SmtpConfig(
        host="smtp.example.org",
        port=587,
        username="alerts",
        password=SecretStr("hunter2-secret"),
        from_address="alerts@atm-risk.test",
    )
    assert "hunter2-secret" not in repr(config)
    assert "hunter2-secret" not in str(config)
    assert "hunter2-secret" not in str(config.model_dump())
    with pytest.raises(ValidationError) as info:
        SmtpConfig(host="smtp.example.org", port=0, password="hunter2-secret", from_address="x")
    assert "hunter2-secret" not in str(info.value)


def test_loopback_plaintext_is_allowed_without_opt_in() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert SmtpConfig(host=host, port=25, security="none", from_address="a@b.test")


def test_date_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        build_message(
            subject="s",
            sender="a@b.test",
            to="c@d.test",
            message_id="<x@y>",
            text="t",
            date=datetime(2026, 11, 28, 3, 10),
        )
    assert (
        build_message(
            subject="s",
            sender="a@b.test",
            to=["c@d.test", "e@f.test"],
            message_id="<x@y>",
            text="t",
            date=datetime(2026, 11, 28, 3, 10, tzinfo=UTC),
        )["To"]
        == "c@d.test, e@f.test"
    )


def test_non_ascii_recipient_uses_smtputf8(plain: SmtpTestServer, clock: FrozenClock) -> None:
    recipient = "jürgen.müller@polizei-nrw.test"
    msg = message(clock, to=recipient)
    result = send_email(msg, recipient, plain.smtp_config())
    assert result.outcome is Outcome.SENT, result.detail
    [received] = plain.messages
    assert received.rcpt_tos == (recipient,)
    assert received.message["To"] == recipient


# -- session reuse --------------------------------------------------------------------------


def test_a_burst_reuses_one_session_over_starttls(
    starttls: SmtpTestServer, clock: FrozenClock
) -> None:
    config = starttls.smtp_config()
    ids = [f"<burst.{k}@alerts.atm-risk.test>" for k in range(3)]
    for mid in ids:
        result = send_email(message(clock, message_id=mid), RECIPIENT, config)
        assert result.outcome is Outcome.SENT, result.detail
    received = starttls.wait_for(3)
    assert [m.message_id for m in received] == ids
    assert all(m.tls and m.auth_login == USER for m in received)
    assert len({m.peer for m in received}) == 1  # one connection, one TLS handshake


def _connections(server: SmtpTestServer, clock: FrozenClock, n: int, **config: float) -> int:
    """Send ``n`` messages (``pause`` seconds apart); how many connections carried them."""
    pause = config.pop("pause", 0.0)
    for k in range(n):
        mid = f"<session.{k}@alerts.atm-risk.test>"
        result = send_email(message(clock, message_id=mid), RECIPIENT, server.smtp_config(**config))
        assert result.outcome is Outcome.SENT, result.detail
        time.sleep(pause)
    return len({m.peer for m in server.wait_for(n)})


def test_without_keepalive_every_message_has_its_own_session(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    assert _connections(plain, clock, 3, keepalive_s=0) == 3


def test_an_idle_session_dropped_by_the_relay_is_replaced_without_losing_the_message(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    config = plain.smtp_config()
    first = "<idle.1@alerts.atm-risk.test>"
    assert send_email(message(clock, message_id=first), RECIPIENT, config).outcome is (Outcome.SENT)
    plain.restart()  # drops the idle session held for the next message
    second = "<idle.2@alerts.atm-risk.test>"
    result = send_email(message(clock, message_id=second), RECIPIENT, config)
    assert result.outcome is Outcome.SENT, result.detail
    received = plain.wait_for(2)
    assert [m.message_id for m in received] == [first, second]
    assert received[0].peer != received[1].peer


def test_an_idle_session_older_than_keepalive_is_not_used(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    assert _connections(plain, clock, 2, keepalive_s=0.2, pause=0.3) == 2


COMPOSE_CASES = [
    pytest.param(
        "[atm-risk] Gang active: explosive attack in Leeuwarden, Fryslân; 3 machine(s) within "
        "5 km recommended for temporary shutdown",
        "Attack in Fryslân\n.a line that starts with a dot\n" + "x" * 120 + "\nspaces   \nend",
        "<p>é</p>" + "<td>cell</td>" * 300,
        id="non-ascii-long-lines",
    ),
    pytest.param("[atm-risk] short", "plain ascii\nshort\n", None, id="text-only"),
    pytest.param("[atm-risk] short", "no final newline", "<p>ok</p>", id="ascii-alternative"),
    pytest.param("s", "a\r\nb\rc\n\n\n", "x\n\n", id="mixed-line-ends"),
]


@pytest.mark.parametrize(("subject", "text", "html"), COMPOSE_CASES)
def test_compose_reads_the_same_as_build_message_at_the_receiver(
    plain: SmtpTestServer, clock: FrozenClock, subject: str, text: str, html: str | None
) -> None:
    """The immediate path's fast wire form: a receiver parses the same headers, text and
    HTML as from the email-package message, and lines stay within SMTP's 998."""
    fields = {
        "subject": subject,
        "sender": "alerts@atm-risk.test",
        "to": RECIPIENT,
        "message_id": MESSAGE_ID,
        "text": text,
        "html": html,
        "date": clock.now(),
    }
    wire = compose(**fields)
    assert wire is not None
    assert max(len(line) for line in wire.split(b"\r\n")) <= 998
    assert send_email(wire, RECIPIENT, plain.smtp_config()).outcome is Outcome.SENT
    assert send_email(build_message(**fields), RECIPIENT, plain.smtp_config()).outcome is (
        Outcome.SENT
    )
    fast, slow = (m.message for m in plain.wait_for(2))
    for name in ("From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version"):
        assert str(fast[name]) == str(slow[name]), name
    assert fast.get_content_type() == slow.get_content_type()
    for kind in ("plain", "html"):
        a, b = fast.get_body((kind,)), slow.get_body((kind,))
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.get_content() == b.get_content(), kind


def _short_message(subject: str, clock: FrozenClock) -> bytes:
    """The wire form of a one-letter message with this subject."""
    wire = compose(
        subject=subject,
        sender="alerts@atm-risk.test",
        to=RECIPIENT,
        message_id=MESSAGE_ID,
        text="t",
        date=clock.now(),
    )
    assert wire is not None
    return wire


def test_compose_keeps_a_line_break_in_the_subject_out_of_the_headers(
    plain: SmtpTestServer, clock: FrozenClock
) -> None:
    wire = _short_message("Attack in Venlo\r\nBcc: everyone@example.org", clock)
    send_email(wire, RECIPIENT, plain.smtp_config())
    [received] = plain.wait_for(1)
    assert received.message["Bcc"] is None
    assert received.subject == "Attack in Venlo Bcc: everyone@example.org"


def test_compose_leaves_non_ascii_addresses_to_build_message(clock: FrozenClock) -> None:
    fields = {"subject": "s", "sender": "alerts@atm-risk.test", "message_id": MESSAGE_ID}
    assert compose(**fields, to="agent@politie.nl", text="t", date=clock.now()) is not None
    assert compose(**fields, to="agënt@politie.nl", text="t", date=clock.now()) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        compose(**fields, to="agent@politie.nl", text="t", date=datetime(2026, 11, 28))


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "x" * 200,
        "[atm-risk] " + "word " * 40,
        "[atm-risk] =?utf-8?q?not-an-encoded-word?= in a place name",
        "Geldautomaat \u2019s-Hertogenbosch \u2014 3 \u20ac " * 5,
        "emoji 🚨 and CJK 東京 " * 4,
    ],
)
def test_compose_folds_and_encodes_any_subject_so_it_reads_back_the_same(
    plain: SmtpTestServer, clock: FrozenClock, subject: str
) -> None:
    wire = _short_message(subject, clock)
    head = wire.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if b"Message-ID" not in line)
    send_email(wire, RECIPIENT, plain.smtp_config())
    [received] = plain.wait_for(1)
    assert received.subject == " ".join(subject.split())
