"""`atm-risk incident report`, `alerts ...` and `silences ...` from the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from atm_risk.cli import app
from tests.smtp_server import SmtpTestServer

ATMS = "atm_id,operator,lat,lon,site_type,country\nU1,BankA,52.0907,5.1214,shop,NL\n"
ROUTING = """
version = 1
[[receivers]]
name = "ops"
role = "operator"
email = ["ops@atm-risk.example"]
[[routes]]
kinds = ["gang_active"]
receivers = ["ops"]
"""


def test_report_list_show_ack_and_silences(database_url: str, write) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    with SmtpTestServer() as smtp:
        cfg = smtp.smtp_config()
        env = {
            "ATM_RISK_DATABASE_URL": database_url,
            "ATM_RISK_MODEL_PATH": "",
            "ATM_RISK_ALERTS__ROUTING_FILE": str(write("r.toml", ROUTING)),
            "ATM_RISK_ALERTS__SMTP": json.dumps(
                {
                    "host": cfg.host,
                    "port": cfg.port,
                    "security": "none",
                    "from_address": "a@b.example",
                }
            ),
        }

        def run(*args: str, code: int = 0) -> str:
            result = runner.invoke(app, list(args), env=env)
            assert result.exit_code == code, result.output
            return result.output

        run("ingest", "atms", str(write("a.csv", ATMS)))
        out = run(
            "incident",
            "report",
            "--lat",
            "52.091",
            "--lon",
            "5.118",
            "--method",
            "ram_raid",
            "--notes",
            "dark Audi towards A12",
        )
        assert "deliveries" in out
        assert "sent 1" in out
        assert len(smtp.messages) == 1
        assert "ram raid" in (smtp.messages[0].subject or "")
        listed = json.loads(run("alerts", "list", "--json"))
        assert listed[0]["kind"] == "gang_active"
        alert_id = listed[0]["id"]
        shown = json.loads(run("alerts", "show", str(alert_id)))
        assert shown["deliveries"][0]["status"] == "sent"
        assert shown["deliveries"][0]["address"] == "ops@atm-risk.example"
        log = json.loads(run("alerts", "deliveries", "--json"))
        assert log[0]["attempts"] == 1
        assert "acknowledged by duty officer" in run(
            "alerts", "ack", str(alert_id), "--by", "duty officer"
        )
        assert "no alert 999" in run("alerts", "ack", "999", "--by", "x", code=1)
        # bad reports are refused whole
        bad = run("incident", "report", "--lat", "95", "--lon", "5", code=2)
        assert "nothing written" in bad
        # silences: bounded, and say that gang_active to police is never silenced
        assert "at most 30 days" in run(
            "silences", "add", "--creator", "ops", "--comment", "x", "--until", "40d", code=2
        )
        added = run("silences", "add", "--creator", "ops", "--comment", "upgrade", "--until", "2h")
        assert "never silenced" in added
        silence_id = added.split()[1]
        assert "upgrade" in run("silences", "list")
        assert "expired" in run("silences", "expire", silence_id, "--by", "ops")
