"""All settings of atm-risk in one place.

One :class:`Settings` object is built at the edge (the CLI, the API factory, a test) and
passed explicitly to whatever needs it; nothing reads the environment at import time.

Sources, highest priority first: keyword arguments, environment variables with the prefix
``ATM_RISK_`` (for example ``ATM_RISK_DATABASE_URL``), a TOML file named by
``ATM_RISK_CONFIG`` or passed as ``config_file``, then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from atm_risk.alerts.settings import AlertSettings
from atm_risk.decisions.settings import DecisionSettings

DEFAULT_DATABASE_URL = "sqlite:///var/atm-risk.sqlite3"


class Settings(BaseSettings):
    """Every setting with its default. See docs/OPERATIONS.md for the reference table."""

    model_config = SettingsConfigDict(
        env_prefix="ATM_RISK_",
        extra="forbid",
        env_nested_delimiter="__",
        hide_input_in_errors=True,  # errors never echo a secret (passwords, ack_secret)
    )

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL. Default: a SQLite file under var/ (relative to the "
        "working directory). Production: postgresql+psycopg://user@host/db.",
    )
    data_dir: Path = Field(Path("data"), description="Folder of the shipped data.")
    metric_crs: str = Field(
        "EPSG:3035",
        description="Projected metric CRS for distances and buffers (ETRS89-LAEA: NL/DE/BE).",
    )
    model_path: Path | None = Field(
        Path("models/atm_risk_28d.joblib"),
        description="The fitted machine model `atm-risk score` uses (its model card lies "
        "beside it). When the file does not exist, or the value is empty, the transparent "
        "baseline scores instead.",
    )
    alerts: AlertSettings = Field(
        default_factory=AlertSettings,
        description="Routing file, SMTP relay, grouping, repeats and retries ([alerts]).",
    )
    decisions: DecisionSettings = Field(
        default_factory=DecisionSettings,
        description="Costs, attack rates, thresholds and the measure catalogue behind the "
        "expected loss, the recommended actions and the plans ([decisions] in TOML).",
    )
    # Transparent baseline score (issue 2): incident exposure with distance and time decay.
    baseline_spatial_bandwidth_m: float = Field(
        10_000.0, description="Spatial e-folding distance of the baseline exposure kernel."
    )
    baseline_half_life_days: float = Field(
        365.0, description="Half-life of an incident's weight in the baseline exposure."
    )
    location_uncertainty_m: dict[str, float] = Field(
        default_factory=lambda: {
            "exact": 0.0,
            "address": 50.0,
            "municipality": 3_000.0,
        },
        description="Standard location error (per axis, metres) assumed per geocode "
        "precision; it widens the spatial kernel so that municipality-level incidents never "
        "count as exact. 3 km is R/2 for a disc of about 120 km2, the mean Dutch "
        "municipality; where the municipality's polygon is loaded, its own area is used.",
    )

    @field_validator("model_path", mode="before")
    @classmethod
    def _empty_path_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls)  # reads model_config["toml_file"]
        return (init_settings, env_settings, toml)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, the environment and an optional TOML file.

    ``config_file`` takes the place of ``ATM_RISK_CONFIG``; a named file that does not exist
    is an error, never a silent fall-back to the defaults.
    """
    if config_file is None and os.environ.get("ATM_RISK_CONFIG"):
        config_file = Path(os.environ["ATM_RISK_CONFIG"])
    if config_file is None:
        return Settings(**overrides)
    if not config_file.is_file():
        raise FileNotFoundError(f"configuration file not found: {config_file}")

    class _SettingsFromFile(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    return _SettingsFromFile(**overrides)


def reference() -> list[tuple[str, str, str, str]]:
    """Every setting: (TOML key, environment variable, default, description), nested models
    flattened (``alerts.smtp`` ...). docs/OPERATIONS.md carries this table; a test keeps the
    two equal."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            key = f"{prefix}{name}"
            default = info.get_default(call_default_factory=True)
            models = [
                t
                for t in (info.annotation, *get_args(info.annotation))
                if isinstance(t, type) and issubclass(t, BaseModel)
            ]
            if models and not isinstance(default, list):
                if default is None:  # an optional block: say so, then its fields
                    rows.append(
                        (
                            key,
                            "ATM_RISK_" + key.upper().replace(".", "__"),
                            "none",
                            " ".join((info.description or "").split()),
                        )
                    )
                walk(models[0], f"{key}.")
                continue
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            elif isinstance(default, list) and default and isinstance(default[0], BaseModel):
                default = f"{len(default)} entries (see the code)"
            shown = (
                "required" if info.is_required() else "none" if default is None else str(default)
            )
            env = "ATM_RISK_" + key.upper().replace(".", "__")
            text = " ".join((info.description or "").split())
            rows.append((key, env, shown.replace("|", "\\|"), text.replace("|", "\\|")))
            if models:  # a list of blocks: each entry's fields
                walk(models[0], f"{key}[].")

    walk(Settings, "")
    return rows


def reference_markdown() -> str:
    lines = ["| setting (TOML) | environment variable | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | `{e}` | `{d}` | {t} |" for k, e, d, t in reference()]
    return "\n".join(lines) + "\n"
