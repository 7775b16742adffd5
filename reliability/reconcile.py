"""Reconciliation, after the whole suite, of every database the other parts created with
``options.databases.new`` (the runner calls this part last, before the databases are
dropped):

- every reported incident (feed ``reports``) that is a located physical attack is in the
  payload of a gang_active alert;
- every alert has its deliveries: where the part recorded the routing file it used
  (``options.databases.describe(url, routing=..., routed_after=...)``), the latest version
  of each gang_active alert changed since then has one delivery per routed recipient
  address (computed again from the routing file with ``alerts.routing.targets``);
  elsewhere alerts without any delivery are only counted;
- no delivery is there twice (one idempotency key, one row);
- every delivery is in a final state: sent, suppressed (a silence), or failed with its
  reason; none left pending or claimed.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, select
from sqlalchemy.orm import Session

from reliability.common import Options, Scenario, part_result, scenario_table


def reconcile_database(
    url: str, routing_file: Path | None, routed_after: datetime | None = None
) -> dict[str, Any]:
    from atm_risk.alerts.models import Alert, AlertKind, Delivery, DeliveryStatus
    from atm_risk.alerts.routing import load_routing, targets
    from atm_risk.alerts.rules import is_gang_signal
    from atm_risk.alerts.service import REPORT_FEED
    from atm_risk.incidents.models import Incident

    engine = create_engine(url)
    try:
        if not inspect(engine).has_table("deliveries"):
            return {"skipped": "no schema"}
        with Session(engine) as s:
            incidents = s.scalars(select(Incident).where(Incident.feed == REPORT_FEED)).all()
            alerts = s.scalars(select(Alert)).all()
            deliveries = s.scalars(select(Delivery)).all()
        routing = load_routing(routing_file) if routing_file else None
    finally:
        engine.dispose()

    in_alerts = {
        i.get("pk")
        for a in alerts
        if a.kind == AlertKind.GANG_ACTIVE
        for i in a.payload.get("incidents", [])
    }
    signals = [i for i in incidents if is_gang_signal(i)]
    without_alert = [f"{i.feed}/{i.incident_id}" for i in signals if i.id not in in_alerts]

    by_alert: dict[int, list[Any]] = {}
    for d in deliveries:
        by_alert.setdefault(d.alert_id, []).append(d)
    no_delivery = [a.id for a in alerts if a.id not in by_alert]
    missing: list[str] = []
    if routing is not None:
        for a in alerts:
            if a.kind != AlertKind.GANG_ACTIVE or (routed_after and a.updated_at < routed_after):
                continue  # (last changed before the routing was in force)
            wanted = {
                (t.receiver.name, str(t.channel), t.address)
                for t in targets(
                    routing,
                    kind=a.kind,
                    severity=a.severity,
                    region=a.region,
                    operators=set(a.operator_codes or []),
                )
            }
            latest = [
                d
                for d in by_alert.get(a.id, [])
                if d.alert_version == a.version and d.reason in ("new", "update")
            ]
            got = {(d.receiver, str(d.channel), d.address) for d in latest}
            missing += [f"alert {a.id} v{a.version}: {w[0]} {w[2]}" for w in sorted(wanted - got)]
    keys = Counter(d.idempotency_key for d in deliveries)
    duplicated = sum(n - 1 for n in keys.values() if n > 1)
    final = {DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SUPPRESSED}
    stuck = [
        f"delivery {d.id} ({d.channel} {d.receiver}): {d.status}, {d.attempts} attempt(s)"
        for d in deliveries
        if d.status not in final
    ]
    failed_silently = [
        f"delivery {d.id}"
        for d in deliveries
        if d.status == DeliveryStatus.FAILED and not d.last_error
    ]
    states = Counter(str(d.status) for d in deliveries)
    return {
        "reported_incidents": len(incidents),
        "reported_attacks": len(signals),
        "incidents_without_alert": without_alert,
        "alerts": len(alerts),
        "alerts_without_deliveries": len(no_delivery),
        "routing_checked": routing is not None,
        "recipients_missing": missing,
        "deliveries": len(deliveries),
        "deliveries_by_state": dict(sorted(states.items())),
        "deliveries_duplicated": duplicated,
        "deliveries_not_final": stuck,
        "failed_without_reason": failed_silently,
    }


def run(options: Options) -> dict[str, Any]:
    scenarios = []
    for backend, url, label in list(options.databases.created):
        start = time.monotonic()
        info = options.databases.info.get(url, {})
        r = reconcile_database(url, info.get("routing"), info.get("routed_after"))
        if "skipped" in r or r["reported_incidents"] + r["alerts"] + r["deliveries"] == 0:
            continue  # nothing to reconcile (ingest-only databases)
        problems = (
            len(r["incidents_without_alert"])
            + len(r["recipients_missing"])
            + len(r["deliveries_not_final"])
            + len(r["failed_without_reason"])
        )
        scenarios.append(
            Scenario(
                name=f"reconcile {label or 'database'}",
                backend=backend,
                survived=problems == 0 and r["deliveries_duplicated"] == 0,
                cases=r["reported_incidents"] + r["alerts"] + r["deliveries"],
                unreconciled=problems,
                messages_duplicated=r["deliveries_duplicated"],
                messages_lost=len(r["recipients_missing"]),
                seconds=time.monotonic() - start,
                details={k: (v[:8] if isinstance(v, list) else v) for k, v in r.items()},
            )
        )
    return part_result(scenarios, databases=len(options.databases.created))


def markdown(results: dict[str, Any]) -> str:
    rows = results["scenarios"]
    flat = [
        {
            **s,
            "reported": s["details"]["reported_incidents"],
            "alerts": s["details"]["alerts"],
            "deliveries": s["details"]["deliveries"],
            "by state": ", ".join(
                f"{k} {v}" for k, v in s["details"]["deliveries_by_state"].items()
            )
            or "-",
            "routing checked": "yes" if s["details"]["routing_checked"] else "no",
        }
        for s in rows
    ]
    out = [
        f"Every database the other parts created ({results.get('databases', len(rows))}) was "
        "read after the suite; those without incidents reported, alerts or deliveries are "
        "left out of the table "
        "(reliability/reconcile.py): reported attacks without their alert, routed recipients "
        "without their delivery (where the routing file is known), deliveries twice, and "
        "deliveries not in a final state (sent, suppressed, failed with a reason) count as "
        "unreconciled.",
        "",
        scenario_table(
            flat,
            [
                "reported",
                "alerts",
                "deliveries",
                "by state",
                "routing checked",
                "unreconciled",
                "messages_duplicated",
            ],
        ),
    ]
    for s in rows:
        for key in (
            "incidents_without_alert",
            "recipients_missing",
            "deliveries_not_final",
            "failed_without_reason",
        ):
            for item in s["details"].get(key, []):
                out.append(f"- {s['name']} ({s['backend']}): {key.replace('_', ' ')}: {item}")
    return "\n".join(out)
