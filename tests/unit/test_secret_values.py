"""Secrets have no working defaults: empty values and template placeholders are refused,
and the refusal names the setting, never the value."""

from __future__ import annotations

import secrets

import pytest
from pydantic import ValidationError

from atm_risk.alerts.routing import RoutingError, Webhook
from atm_risk.config import Settings
from atm_risk.secret_values import check_secret

BAD = ["", "   ", "change-me", "CHANGE_ME", "changeme-" + "0" * 40, "replace-me", "<key>", "xxxx"]
SMTP = {"host": "relay.example", "port": 587, "from_address": "alerts@bank.example"}


@pytest.mark.parametrize("value", BAD)
def test_empty_values_and_placeholders_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"^the secret is (empty|a placeholder)"):
        check_secret(value, "the secret")


def test_a_generated_secret_is_accepted() -> None:
    value = secrets.token_hex(32)
    assert check_secret(value, "the secret", min_length=32) == value
    with pytest.raises(ValueError, match="shorter than 32 characters"):
        check_secret(value[:31], "the secret", min_length=32)


@pytest.mark.parametrize("value", [*BAD, "too-short-for-links"])
def test_the_ack_secret_must_be_real(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(alerts={"ack_secret": value})
    assert "alerts.ack_secret" in str(caught.value)
    if value.strip():
        assert value not in str(caught.value)
    assert Settings(alerts={"ack_secret": secrets.token_hex(32)}).alerts.ack_secret is not None


@pytest.mark.parametrize("value", BAD)
def test_the_smtp_password_must_be_real(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(alerts={"smtp": {**SMTP, "username": "alerts", "password": value}})
    assert "alerts.smtp.password" in str(caught.value)
    if value.strip():
        assert value not in str(caught.value)


def test_a_settings_error_never_echoes_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    password = secrets.token_hex(16)
    monkeypatch.setenv("ATM_RISK_ALERTS__SMTP__HOST", "relay.example")
    monkeypatch.setenv("ATM_RISK_ALERTS__SMTP__PORT", "587")
    monkeypatch.setenv("ATM_RISK_ALERTS__SMTP__PASSWORD", password)  # without a username
    monkeypatch.setenv("ATM_RISK_ALERTS__SMTP__FROM_ADDRESS", "alerts@bank.example")
    with pytest.raises(ValidationError, match="username and password go together") as caught:
        Settings()
    assert password not in str(caught.value)


@pytest.mark.parametrize("value", ["change-me", "<webhook secret>"])
def test_a_webhook_secret_must_be_real(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = Webhook(url="https://hooks.example/atm", secret_env="ATM_TEST_HOOK_SECRET")
    monkeypatch.setenv("ATM_TEST_HOOK_SECRET", value)
    with pytest.raises(RoutingError, match="ATM_TEST_HOOK_SECRET is a placeholder"):
        hook.secret()
    monkeypatch.setenv("ATM_TEST_HOOK_SECRET", "s3cret")
    assert hook.secret() == b"s3cret"
