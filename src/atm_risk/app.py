"""The wiring of one process: settings, engine, sessions and clock, built once at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.clock import Clock, SystemClock
from atm_risk.config import Settings
from atm_risk.db import make_engine, session_factory
from atm_risk.migrate import require_current


@dataclass
class Context:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        require_current(self.engine)
        return session_factory(self.engine)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
