"""Weather normalisation of electricity: savings against a cooling-degree-day (CDD)
regression of the base year's months (ASHRAE Guideline 14: CV(RMSE), NMBE and the
savings' uncertainty with it).

:func:`daily_temps` reads each site's daily mean outdoor temperature from its own
weather station; :func:`weather_normalised` is pure: it is given the temperatures and
asks the caller for the base year's monthly energy (``energy``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date

from foursave.core.config import Site
from foursave.core.influx import InfluxClient
from foursave.core.influxql import agg, eq, every, select
from foursave.core.periods import Period, local_date, month
from foursave.core.periods import zone as zone_of
from foursave.rules import formulas
from foursave.rules.rollup import days_range

MIN_DAYS = 0.9  # a month (or the period) needs temperatures on 90 % of its days
MIN_MONTHS = 6  # base-year months needed for a regression


def daily_temps(
    influx: InfluxClient, sites: Iterable[Site], start: date, end: date
) -> dict[str, dict[date, float]]:
    """Site -> local day -> mean outdoor temperature from the site's own weather station."""
    out: dict[str, dict[date, float]] = {}
    for site in sites:
        zone = zone_of(site.timezone)
        rows = influx.rows(
            select(
                agg("mean", "ambient_temp_c", "t"),
                "weather",
                where=[eq("site", site.id), days_range(start, end, zone)],
                group_by=[every("1d")],
                tz=site.timezone,
            )
        )
        out[site.id] = {local_date(r["time"], zone): r["t"] for r in rows if r["t"] is not None}
    return out


def weather_normalised(
    temps: Mapping[date, float],
    base_year: int,
    p: Period,
    actual: float,
    energy: Callable[[Period], float | None],
) -> dict[str, float] | None:
    """Savings of ``actual`` over ``p`` against the CDD regression of ``base_year``'s
    months (``energy``: a month's electricity), or None without enough temperatures
    or base-year months.  ``temps``: the site's daily mean temperatures."""
    if not temps:
        return None
    energies: list[float] = []
    days: list[float] = []
    cdd: list[float] = []
    for m in range(1, 13):
        bp = month(base_year, m)
        e = energy(bp)
        t = [temps[d] for d in bp.dates() if d in temps]
        if e is None or len(t) < MIN_DAYS * bp.days:
            continue
        energies.append(e)
        days.append(bp.days)
        cdd.append(formulas.cooling_degree_days(t) * bp.days / len(t))
    if len(energies) < MIN_MONTHS:
        return None
    fit = formulas.fit_cdd_baseline(energies, days, cdd)
    t_rep = [temps[d] for d in p.dates() if d in temps]
    if len(t_rep) < MIN_DAYS * p.days:
        return None
    predicted = fit.predict(p.days, formulas.cooling_degree_days(t_rep) * p.days / len(t_rep))
    saved = formulas.savings_rate(predicted, actual)
    months = max(1, round(p.days / 30.4))
    return {
        "normalised_baseline_kwh": predicted,
        "normalised_savings_rate": saved,
        "normalised_savings_uncertainty": fit.savings_uncertainty(months, saved) * abs(saved)
        if saved
        else float("nan"),
        "baseline_cv_rmse": fit.cv_rmse,
        "baseline_nmbe": fit.nmbe,
    }
