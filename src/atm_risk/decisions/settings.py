"""The assumptions behind every decision, as configuration with documented defaults.

None of these figures is estimated by atm-risk: they are the analyst's assumptions, taken
from public reports where one exists (DOMAIN.md) and otherwise stated as a judgement to be
overridden (``[decisions]`` in the TOML settings file). ``atm-risk plan sensitivity`` shows
how much the plans move when they move.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from atm_risk.atms.models import HardeningMeasure, SiteType


class Measure(BaseModel):
    """One hardening measure of the catalogue.

    An attack on a machine with the measure is assumed to happen with probability
    ``p * (1 - deterrence)`` (gangs avoid protected machines, as they moved from the
    Netherlands to Germany after dye/glue and night closure) and, when it happens, to lose
    ``cash * (1 - cash_protection) + damage * (1 - damage_protection)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: HardeningMeasure = Field(description="dye_ink, glue, gas_neutraliser, bollards, ...")
    cost_eur: float = Field(gt=0, description="One-off cost per machine, installed.")
    lifetime_years: float = Field(gt=0, description="Years the measure lasts.")
    deterrence: float = Field(ge=0, le=1, description="Share of attacks no longer attempted.")
    cash_protection: float = Field(ge=0, le=1, description="Share of the cash loss averted.")
    damage_protection: float = Field(ge=0, le=1, description="Share of the damage averted.")
    group: str = Field(description="Measures of one group replace each other (at most one).")
    site_types: tuple[SiteType, ...] | None = Field(
        None, description="Site types the measure applies to; None: all."
    )
    note: str = Field("", description="Where the figures come from.")

    @property
    def annual_cost_eur(self) -> float:
        return self.cost_eur / self.lifetime_years


def default_measures() -> list[Measure]:
    """The default catalogue: judgements from public reporting, not measured effects."""
    return [
        Measure(
            name=HardeningMeasure.DYE_INK,
            cost_eur=4_000,
            lifetime_years=8,
            deterrence=0.5,
            cash_protection=0.9,
            damage_protection=0.0,
            group="cash_protection",
            note="ink staining makes the loot worthless; with glue the Dutch standard since 2019",
        ),
        Measure(
            name=HardeningMeasure.GLUE,
            cost_eur=6_000,
            lifetime_years=8,
            deterrence=0.6,
            cash_protection=0.95,
            damage_protection=0.0,
            group="cash_protection",
            note="notes bonded on an attack; considered the stronger deterrent",
        ),
        Measure(
            name=HardeningMeasure.GAS_NEUTRALISER,
            cost_eur=3_000,
            lifetime_years=8,
            deterrence=0.1,
            cash_protection=0.1,
            damage_protection=0.1,
            group="gas_neutraliser",
            note="stops gas attacks only; about 90 % of German attacks in 2023 used solid "
            "explosives (DOMAIN.md), hence the small effect",
        ),
        Measure(
            name=HardeningMeasure.BOLLARDS,
            cost_eur=8_000,
            lifetime_years=15,
            deterrence=0.3,
            cash_protection=0.0,
            damage_protection=0.2,
            group="bollards",
            site_types=(SiteType.FREE_STANDING, SiteType.WALL, SiteType.BRANCH, SiteType.OTHER),
            note="against ram raids; bollards with priority response cut NSW ram raids "
            "from 69 to 19 a year (Prenzler 2009)",
        ),
        Measure(
            name=HardeningMeasure.REINFORCED_SAFE,
            cost_eur=15_000,
            lifetime_years=12,
            deterrence=0.3,
            cash_protection=0.7,
            damage_protection=0.2,
            group="safe",
            note="CEN IV/V safe tested against explosives",
        ),
        Measure(
            name=HardeningMeasure.RELOCATED_INDOORS,
            cost_eur=25_000,
            lifetime_years=15,
            deterrence=0.8,
            cash_protection=0.0,
            damage_protection=0.5,
            group="location",
            site_types=(SiteType.FREE_STANDING, SiteType.WALL, SiteType.FOYER, SiteType.OTHER),
            note="moved into a building that is locked at night",
        ),
    ]


class DecisionSettings(BaseModel):
    """Costs, rates and thresholds that turn risk into actions and plans."""

    model_config = ConfigDict(extra="forbid")

    cash_at_risk_eur: float = Field(
        30_000.0,
        ge=0,
        description="Cash lost per attack when neither the machine nor its operator has a "
        "figure (EAST: EUR 13k-41k on average per attack).",
    )
    property_damage_eur: float = Field(
        70_000.0,
        ge=0,
        description="Damage to the machine and building per attack; with the cash, the "
        "EUR 100k all-in default of DOMAIN.md (Germany: EUR 77k-220k).",
    )
    residential_collateral_factor: float = Field(
        0.5,
        ge=0,
        description="Extra share of the damage for a machine in a residential building "
        "(people living above; buildings are often wrecked).",
    )
    attack_rate_per_machine_year: dict[str, float] = Field(
        default_factory=lambda: {"NL": 0.0014, "DE": 0.009, "*": 0.009},
        description="Published attacks per machine-year by country (DOMAIN.md: DE about "
        "0.9 %; NL 6-8 attacks on about 5,000 machines in 2023). Used to turn the "
        "uncalibrated baseline score into a probability: the country's expected number of "
        "attacks is shared out in proportion to the score. '*' is the fall-back (an "
        "assumption: the German level).",
    )
    high_band_p_year: float = Field(
        0.01, gt=0, le=1, description="Yearly attack probability from which a machine is 'high'."
    )
    elevated_band_p_year: float = Field(
        0.003, gt=0, le=1, description="Yearly attack probability from which it is 'elevated'."
    )
    shutdown_radius_km: float = Field(
        10.0,
        gt=0,
        description="A physical attack this close (plus its location uncertainty) makes a "
        "machine a candidate for temporary shutdown: gangs often hit several machines of a "
        "region within days.",
    )
    shutdown_days: float = Field(
        7.0, gt=0, description="How long after an attack nearby the shutdown applies."
    )
    night_closure_min_p_year: float = Field(
        0.01,
        gt=0,
        le=1,
        description="Yearly attack probability from which closing at night (23:00-07:00, "
        "the Dutch measure since Dec 2019) is recommended.",
    )
    night_withdrawal_max_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Night closure is only recommended when at most this share of the "
        "machine's withdrawals happen at night (when the figure is known).",
    )
    measures: list[Measure] = Field(
        default_factory=default_measures,
        description="The hardening measure catalogue: name, cost, lifetime, deterrence, cash "
        "and damage protection, group, site types ([[decisions.measures]] in TOML; the "
        "defaults are judgements documented in decisions/settings.py).",
    )
    patrol_speed_kmh: float = Field(
        90.0, gt=0, description="Average speed of a police unit at night (straight line)."
    )
    patrol_road_factor: float = Field(
        1.3,
        ge=1,
        description="Road distance / straight-line distance (detour index; 1.2-1.4 is usual "
        "for road networks).",
    )
    patrol_cluster_quantile: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="Machines above this quantile of tonight's expected loss form the "
        "high-risk clusters whose centres are candidate waiting positions.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DecisionSettings:
        if self.elevated_band_p_year > self.high_band_p_year:
            raise ValueError("elevated_band_p_year must not exceed high_band_p_year")
        if "*" not in self.attack_rate_per_machine_year:
            raise ValueError("attack_rate_per_machine_year needs a '*' fall-back entry")
        names = [m.name for m in self.measures]
        if len(names) != len(set(names)):
            raise ValueError("measures: each measure may appear once")
        return self

    def patrol_radius_m(self, minutes: float) -> float:
        """Straight-line reach of a unit in ``minutes``: speed x time / road factor."""
        return self.patrol_speed_kmh * 1000.0 * minutes / 60.0 / self.patrol_road_factor
