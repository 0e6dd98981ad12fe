"""The four-saving, PV-performance and demand formulas: pure functions, documented
with units, formula and source (docs/domain.md).  No I/O: the ledger and the rules engine
feed them numbers they got from InfluxDB and configuration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

G_STC_W_M2 = 1000.0  # IEC 61724-1 reference irradiance


class FormulaError(ValueError):
    """Inputs for which a formula has no meaning (e.g. a zero baseline)."""


# ------------------------------------------------------------------ four-saving


def savings_rate(baseline: float, actual: float) -> float:
    """Savings rate [-] = (baseline - actual) / baseline.

    As agencies compute it (docs/domain.md): the baseline is the base year (2011 plan) or
    the previous year (oil and water from 2016).  Positive means saved.
    """
    if baseline <= 0:
        raise FormulaError(f"savings rate needs a positive baseline, got {baseline}")
    return (baseline - actual) / baseline


def eui_kwh_m2(energy_kwh: float, floor_area_m2: float, excluded_area_m2: float = 0.0) -> float:
    """Energy use intensity [kWh/m²] = energy / (floor area - excluded area).

    The energy-audit EUI excludes indoor parking area (docs/domain.md, H).  Annual energy
    gives the annual EUI; a rolling 12 months the rolling EUI.
    """
    area = floor_area_m2 - excluded_area_m2
    if area <= 0:
        raise FormulaError(
            f"EUI needs a positive floor area, got {floor_area_m2} - {excluded_area_m2}"
        )
    return energy_kwh / area


def online_signing_rate(
    online_signed: int, electronic_received: int, paper_to_online: int, self_created: int
) -> float:
    """線上簽核率 [-] = 線上簽核件數 / (電子公文收文總數 + 紙本來文轉線上簽核數 + 自創簽稿數).

    Classified documents are excluded from every count before calling (docs/domain.md, H).
    """
    denominator = electronic_received + paper_to_online + self_created
    if denominator <= 0:
        raise FormulaError("online-signing rate needs at least one document in the denominator")
    if min(online_signed, electronic_received, paper_to_online, self_created) < 0:
        raise FormulaError("document counts cannot be negative")
    return online_signed / denominator


def electronic_dispatch_rate(electronic_dispatched: int, total_dispatched: int) -> float:
    """電子發文率 [-] = 電子發文 / 發文總件數 (docs/domain.md, H)."""
    if total_dispatched <= 0:
        raise FormulaError("electronic-dispatch rate needs dispatched documents")
    return electronic_dispatched / total_dispatched


def co2e_kg(quantity: float, factor: float) -> float:
    """Emissions [kg CO2e] = quantity [kWh, L or m³] x factor [kg CO2e per unit]."""
    return quantity * factor


# ------------------------------------------------------------------ PV (IEC 61724-1)


def final_yield(e_ac_kwh: float, p0_kwp: float) -> float:
    """Final yield Y_f [kWh/kWp = h] = E_AC / P0."""
    if p0_kwp <= 0:
        raise FormulaError("final yield needs the array's rated power P0 > 0")
    return e_ac_kwh / p0_kwp


def reference_yield(h_poa_kwh_m2: float) -> float:
    """Reference yield Y_r [h] = H_POA / G_STC with G_STC = 1 kW/m²."""
    return h_poa_kwh_m2 / (G_STC_W_M2 / 1000.0)


def performance_ratio(y_f: float, y_r: float) -> float:
    """Performance ratio PR [-] = Y_f / Y_r (IEC 61724-1)."""
    if y_r <= 0:
        raise FormulaError("PR needs irradiation in the period (Y_r > 0)")
    return y_f / y_r


def temperature_corrected_pr(
    e_ac_kwh: float,
    p0_kwp: float,
    poa_w_m2: Sequence[float],
    t_cell_c: Sequence[float],
    gamma_per_c: float,
    interval_h: float,
    t_ref_c: float = 25.0,
) -> float:
    """Temperature-corrected PR [-] (IEC 61724-1 annex; NREL/TP-5200-57991).

    PR' = E_AC / Σ_k [ P0 · (G_k / G_STC) · (1 + γ · (T_cell,k - T_ref)) · τ_k ]

    ``gamma_per_c`` is the power temperature coefficient [1/°C] (about -0.0037 for
    crystalline silicon); ``t_ref_c`` 25 °C for IEC, the annual typical cell
    temperature for NREL's weather-corrected PR.
    """
    g = np.asarray(poa_w_m2, dtype=float)
    t = np.asarray(t_cell_c, dtype=float)
    expected = np.sum(p0_kwp * (g / G_STC_W_M2) * (1 + gamma_per_c * (t - t_ref_c)) * interval_h)
    if expected <= 0:
        raise FormulaError("temperature-corrected PR needs irradiance in the period")
    return e_ac_kwh / float(expected)


def availability(
    producing: Sequence[bool], poa_w_m2: Sequence[float], threshold_w_m2: float = 50.0
) -> float:
    """Availability [-] ≈ time producing while POA > threshold / time POA > threshold
    (IEC 61724-3 style)."""
    p = np.asarray(producing, dtype=bool)
    sun = np.asarray(poa_w_m2, dtype=float) > threshold_w_m2
    n = int(sun.sum())
    if n == 0:
        raise FormulaError("availability needs time with irradiance above the threshold")
    return float((p & sun).sum()) / n


# ------------------------------------------------------------------ demand (Taipower)


def block_demand_kw(energy_kwh: float, interval_h: float = 0.25) -> float:
    """Demand of one 15-minute block [kW] = energy in the block / 0.25 h.

    Maximum demand is the highest 15-minute average of the month (docs/domain.md, H).
    """
    return energy_kwh / interval_h


def forecast_block_demand_kw(
    energy_so_far_kwh: float, elapsed_h: float, power_now_kw: float, interval_h: float = 0.25
) -> float:
    """Forecast of the running block's final demand [kW]: the energy so far plus the
    present power for the rest of the block, over the block."""
    remaining = max(0.0, interval_h - elapsed_h)
    return (energy_so_far_kwh + power_now_kw * remaining) / interval_h


@dataclass(frozen=True)
class Surcharge:
    excess_kw: float
    within_kw: float
    above_kw: float
    ntd: float


def over_contract_surcharge(
    max_demand_kw: float,
    contract_kw: float,
    basic_rate_ntd_per_kw: float,
    within_share: float = 0.10,
    within_multiplier: float = 2.0,
    above_multiplier: float = 3.0,
) -> Surcharge:
    """Over-contract surcharge [NT$] (Taipower, docs/domain.md H): the excess up to
    ``within_share`` of the contract capacity at ``within_multiplier`` x the basic
    (demand) rate, the part above at ``above_multiplier`` x."""
    if contract_kw <= 0:
        raise FormulaError("contract capacity must be positive")
    excess = max(0.0, max_demand_kw - contract_kw)
    within = min(excess, within_share * contract_kw)
    above = excess - within
    ntd = basic_rate_ntd_per_kw * (within_multiplier * within + above_multiplier * above)
    return Surcharge(excess, within, above, ntd)


def power_factor_adjustment(
    pf: float, base: float = 0.80, step_per_percent: float = 0.001, credit_up_to: float = 0.95
) -> float:
    """Bill adjustment [-] for the monthly power factor (docs/domain.md, M): each 1 % below
    the base adds 0.1 % to the bill (positive), each 1 % above, up to 95 %, takes 0.1 %
    off (negative)."""
    if not 0 < pf <= 1:
        raise FormulaError(f"power factor must be in (0, 1], got {pf}")
    if pf < base:
        return (base - pf) * 100 * step_per_percent
    return -(min(pf, credit_up_to) - base) * 100 * step_per_percent


# ------------------------------------------------------------------ weather normalisation


def cooling_degree_days(daily_mean_temp_c: Sequence[float], base_c: float = 24.0) -> float:
    """Cooling degree days [°C·day] = Σ max(0, T_mean,day - base)."""
    t = np.asarray(daily_mean_temp_c, dtype=float)
    return float(np.clip(t - base_c, 0, None).sum())


def cv_rmse(actual: Sequence[float], predicted: Sequence[float], n_params: int) -> float:
    """CV(RMSE) [-] (ASHRAE Guideline 14) = sqrt(Σ(y - ŷ)² / (n - p)) / ȳ."""
    y, yh = np.asarray(actual, float), np.asarray(predicted, float)
    n = len(y)
    if n <= n_params:
        raise FormulaError("CV(RMSE) needs more points than model parameters")
    return math.sqrt(float(np.sum((y - yh) ** 2)) / (n - n_params)) / float(np.mean(y))


def nmbe(actual: Sequence[float], predicted: Sequence[float], n_params: int) -> float:
    """NMBE [-] (ASHRAE Guideline 14) = Σ(y - ŷ) / ((n - p) · ȳ)."""
    y, yh = np.asarray(actual, float), np.asarray(predicted, float)
    n = len(y)
    if n <= n_params:
        raise FormulaError("NMBE needs more points than model parameters")
    return float(np.sum(y - yh)) / ((n - n_params) * float(np.mean(y)))


@dataclass(frozen=True)
class CddBaseline:
    """Energy = per_day x days + per_cdd x CDD, fitted on the baseline periods."""

    per_day_kwh: float
    per_cdd_kwh: float
    n: int
    cv_rmse: float
    nmbe: float
    r2: float

    def predict(self, days: float, cdd: float) -> float:
        return self.per_day_kwh * days + self.per_cdd_kwh * cdd

    def savings_uncertainty(self, m: int, savings_fraction: float, t_stat: float = 1.0) -> float:
        """Fractional savings uncertainty (ASHRAE Guideline 14-2014, eq. B-14 without
        autocorrelation): 1.26 · t · CV · sqrt((n/m)(1 + 2/n)) / F, for ``m``
        reporting periods and savings fraction F; t = 1.0 for ±1σ (68 %)."""
        if savings_fraction == 0:
            return math.inf
        return (
            1.26
            * t_stat
            * self.cv_rmse
            * math.sqrt((self.n / m) * (1 + 2 / self.n))
            / abs(savings_fraction)
        )


def fit_cdd_baseline(
    energy_kwh: Sequence[float], days: Sequence[float], cdd: Sequence[float]
) -> CddBaseline:
    """Least-squares fit of period energy on days and cooling degree days."""
    y = np.asarray(energy_kwh, float)
    x = np.column_stack([np.asarray(days, float), np.asarray(cdd, float)])
    if len(y) < 4:
        raise FormulaError("a CDD baseline needs at least 4 periods")
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    pred = x @ coef
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return CddBaseline(
        float(coef[0]),
        float(coef[1]),
        len(y),
        cv_rmse(y.tolist(), pred.tolist(), 2),
        nmbe(y.tolist(), pred.tolist(), 2),
        1 - ss_res / ss_tot if ss_tot else 1.0,
    )
