"""Alerting settings (``[alerts]`` in the TOML settings file; ``ATM_RISK_ALERTS__...``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from atm_risk.alerts.channels.email import SmtpConfig
from atm_risk.secret_values import check_secret

ACK_SECRET_MIN_LENGTH = 32


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    routing_file: Path | None = Field(
        None,
        description="The routing TOML (receivers and routes). None: alerts are recorded but "
        "nobody is notified, and `atm-risk alerts list` says so.",
    )
    smtp: SmtpConfig | None = Field(
        None, description="The SMTP relay. None: e-mail deliveries wait in the outbox."
    )
    eml_dir: Path | None = Field(
        None,
        description="Write e-mails as .eml files here instead of sending them (the demo).",
    )
    ack_secret: SecretStr | None = Field(
        None,
        description="Key that signs acknowledgement links (at least 32 characters; empty "
        "values and placeholders are refused). No default: without it, messages carry no link "
        "and alerts are acknowledged with `atm-risk alerts ack`.",
    )
    public_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the API, for acknowledgement links."
    )
    message_domain: str = Field("atm-risk.invalid", description="Right side of Message-IDs.")
    gang_radius_km: float = Field(
        30.0,
        gt=0,
        description="gang_active lists the machines within this distance of the attack "
        "(gangs work along motorways at the scale of tens of kilometres).",
    )
    group_window_hours: float = Field(
        48.0,
        gt=0,
        description="An attack in a region with a gang_active alert younger than this "
        "updates that alert instead of opening a new one (one spree, one alert).",
    )
    repeat_interval_minutes: float = Field(
        60.0, gt=0, description="Unacknowledged critical alerts are re-sent this often."
    )
    max_repeats: int = Field(3, ge=0, description="At most this many repeats per alert.")
    top_band_rank: int = Field(
        50, ge=1, description="risk_change: a machine entering the top N of the ranking."
    )
    retry_base_s: float = Field(2.0, gt=0, description="First retry delay (doubles each time).")
    retry_max_s: float = Field(600.0, gt=0, description="Longest delay between retries.")
    max_attempts: int = Field(
        12, ge=1, description="Attempts before a delivery is failed for good (about 1 h)."
    )
    claim_lease_s: float = Field(
        60.0,
        gt=0,
        description="A dispatcher owns a claimed delivery this long; if it dies, another "
        "takes the delivery over after the lease (at-least-once).",
    )
    send_workers: int = Field(8, ge=1, le=64, description="Parallel sends per dispatch.")
    report_concurrency: int = Field(
        4,
        ge=1,
        le=256,
        description="Reported attacks a process prepares at once; more wait in strict arrival "
        "order. Measured with 20 concurrent reports (benchmarks/alert_latency.py): 2 to 6 at "
        "once gave the lowest p99 to the relay; letting all 20 compete for the interpreter "
        "cost a third more CPU per report and doubled the spread of the latencies.",
    )

    @field_validator("ack_secret")
    @classmethod
    def _real_ack_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_secret(
                value.get_secret_value(), "alerts.ack_secret", min_length=ACK_SECRET_MIN_LENGTH
            )
        return value
