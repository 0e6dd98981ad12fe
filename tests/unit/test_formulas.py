"""Golden cases computed by hand from the official formulas, checked to 4 significant
digits; factors looked up by date with their provenance."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from foursave.rules import formulas as f
from foursave.rules.factors import FactorError, emission_factor
from foursave.rules.tariff import load_tariffs


def sig4(x: float) -> float:
    return float(f"{x:.4g}")


def test_savings_rate():
    # 2007 baseline 1,000,000 kWh; this year 912,340 kWh: 87,660 / 1,000,000
    assert sig4(f.savings_rate(1_000_000, 912_340)) == 0.08766
    assert sig4(f.savings_rate(50_000, 52_500)) == -0.05  # grew: negative savings
    with pytest.raises(f.FormulaError, match="positive baseline"):
        f.savings_rate(0, 10)


def test_eui_excludes_indoor_parking():
    # 1,523,400 kWh over 12,000 m² of which 1,500 m² indoor parking: 1,523,400 / 10,500
    assert sig4(f.eui_kwh_m2(1_523_400, 12_000, 1_500)) == 145.1


def test_online_signing_and_dispatch_rates():
    # 8,940 / (7,200 + 1,150 + 2,010) = 8,940 / 10,360
    assert sig4(f.online_signing_rate(8_940, 7_200, 1_150, 2_010)) == 0.8629
    # the city's own figure: 7,113 electronic dispatches = 35.0 % of 20,323
    assert sig4(f.electronic_dispatch_rate(7_113, 20_323)) == 0.35
    with pytest.raises(f.FormulaError):
        f.online_signing_rate(1, 0, 0, 0)


def test_co2e_with_date_versioned_factors():
    grid_2023 = emission_factor("grid_electricity", date(2023, 6, 30))
    assert (grid_2023.value, grid_2023.confidence, grid_2023.provisional) == (0.494, "H", False)
    # 152,340 kWh x 0.494 = 75,255.96 kg
    assert sig4(f.co2e_kg(152_340, grid_2023.value)) == 75_260
    # 1,250 L x 2.263 = 2,828.75 kg; 300 L diesel x 2.606 = 781.8 kg
    assert sig4(f.co2e_kg(1_250, emission_factor("gasoline", date(2025, 1, 1)).value)) == 2_829
    assert sig4(f.co2e_kg(300, emission_factor("diesel", date(2025, 1, 1)).value)) == 781.8
    # 2025's grid factor is announced in 2026: the latest published year stands in, flagged
    g25 = emission_factor("grid_electricity", date(2025, 3, 1))
    assert g25.value == 0.474 and g25.provisional and "data year 2024" in g25.basis
    with pytest.raises(FactorError):
        emission_factor("grid_electricity", date(2016, 1, 1))
    assert emission_factor("tap_water", date(2025, 1, 1)).confidence == "L"


def test_performance_ratio():
    # E_AC 1,095.6 kWh from 10 kWp: Y_f = 109.56 h; H_POA 135.2 kWh/m²: Y_r = 135.2 h
    y_f = f.final_yield(1_095.6, 10)
    y_r = f.reference_yield(135.2)
    assert (sig4(y_f), sig4(y_r)) == (109.6, 135.2)
    assert sig4(f.performance_ratio(y_f, y_r)) == 0.8104


def test_temperature_corrected_pr():
    # two hours: 800 W/m² at 45 °C and 600 W/m² at 35 °C, gamma -0.4 %/°C, 10 kWp
    # expected = 10·0.8·(1 - 0.004·20) + 10·0.6·(1 - 0.004·10) = 7.36 + 5.76 = 13.12 kWh
    pr_t = f.temperature_corrected_pr(11.5, 10, [800, 600], [45, 35], -0.004, 1.0)
    assert sig4(pr_t) == 0.8765
    # the plain PR of the same hours is lower: hot modules, not a worse plant
    assert sig4(f.performance_ratio(f.final_yield(11.5, 10), f.reference_yield(1.4))) == 0.8214


def test_over_contract_surcharge():
    edition = load_tariffs().edition_on(date(2025, 7, 15))
    assert edition.is_summer(date(2025, 7, 15)) and not edition.is_summer(date(2025, 11, 1))
    summer, non_summer = edition.basic["two_stage"]["regular"]
    basic = {"summer": summer, "non_summer": non_summer}
    # contract 1,000 kW, maximum demand 1,150 kW: 100 kW at 2x, 50 kW at 3x
    s = f.over_contract_surcharge(1_150, 1_000, basic["summer"])
    assert (s.excess_kw, s.within_kw, s.above_kw) == (150, 100, 50)
    assert sig4(s.ntd) == 78_260  # 100·2·223.6 + 50·3·223.6 = 44,720 + 33,540
    assert sig4(f.over_contract_surcharge(1_150, 1_000, basic["non_summer"]).ntd) == 58_420
    assert f.over_contract_surcharge(990, 1_000, basic["summer"]).ntd == 0


def test_power_factor_adjustment():
    assert sig4(f.power_factor_adjustment(0.75)) == 0.005  # 5 % below: +0.5 % of the bill
    assert sig4(f.power_factor_adjustment(0.97)) == -0.015  # credit capped at 95 %


def test_block_demand_and_forecast():
    assert f.block_demand_kw(31.25) == 125.0
    # 20 kWh in the first 10 minutes, 150 kW now: (20 + 150·5/60) / 0.25 = 130 kW
    assert sig4(f.forecast_block_demand_kw(20, 10 / 60, 150)) == 130.0


def test_cdd_baseline_recovers_a_known_savings_rate():
    """Synthetic site: E = 3,000 kWh/day + 400 kWh/CDD with 2 % noise; in the reporting
    year it uses 10 % less.  The weather-normalised savings must come out at 10 %
    within their reported uncertainty."""
    rng = np.random.default_rng(61724)
    months = np.arange(36)
    days = np.full(36, 30.4)
    mean_t = 24.5 + 5.5 * np.sin(2 * np.pi * (months - 3) / 12) + rng.normal(0, 0.8, 36)
    cdd = np.array([f.cooling_degree_days(rng.normal(t, 1.5, 30)) for t in mean_t])
    true = 3_000 * days + 400 * cdd
    energy = true * rng.normal(1, 0.02, 36)
    base = f.fit_cdd_baseline(energy[:24], days[:24], cdd[:24])
    assert base.cv_rmse < 0.15 and abs(base.nmbe) < 0.005  # ASHRAE G14 monthly criteria
    reporting = energy[24:] * 0.90
    predicted = sum(base.predict(d, c) for d, c in zip(days[24:], cdd[24:], strict=True))
    saved = (predicted - reporting.sum()) / predicted
    uncertainty = base.savings_uncertainty(m=12, savings_fraction=saved, t_stat=1.645) * saved
    assert abs(saved - 0.10) <= uncertainty, (saved, uncertainty)
    assert uncertainty < saved  # the savings are distinguishable from zero
