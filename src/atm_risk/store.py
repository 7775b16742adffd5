"""Every ORM model, imported once so that ``Base.metadata`` is complete (Alembic, tests)."""

from atm_risk.alerts.models import Alert, Delivery, Silence
from atm_risk.areas.models import AreaFeature, AreaLayer
from atm_risk.atms.models import Atm
from atm_risk.db import Base
from atm_risk.incidents.models import Incident
from atm_risk.risk.models import RiskRun, RiskScore
from atm_risk.scheduler.models import JobRun
from atm_risk.tenancy.models import ApiKey, AuditEntry, Operator

metadata = Base.metadata

__all__ = [
    "Alert",
    "ApiKey",
    "AreaFeature",
    "AreaLayer",
    "Atm",
    "AuditEntry",
    "Delivery",
    "Incident",
    "JobRun",
    "Operator",
    "RiskRun",
    "RiskScore",
    "Silence",
    "metadata",
]
