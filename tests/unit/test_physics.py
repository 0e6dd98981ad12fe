"""The simulated site behaves like Tainan city hall: physics checks, pure numpy."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from foursave.core.clock import SimClock
from foursave.core.config import parse_config
from foursave.rules.tariff import load_tariffs
from foursave.simulators.climate import TAINAN
from foursave.simulators.faults import ValueFaults
from foursave.simulators.physics import (
    CLOSED,
    MINUTES_PER_DAY,
    OPEN,
    SATURDAY,
    PvArray,
    SiteClimate,
    office_day,
    pv_output,
)
from foursave.simulators.site import SiteModel
from tests.helpers import YONGHUA_CONFIG

pytestmark = pytest.mark.clock  # local days and hours: run again under a second zone in CI

TAIPEI = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def site() -> SiteModel:
    cfg = parse_config(YONGHUA_CONFIG, env={})
    return SiteModel(cfg, cfg.sites[0])


@pytest.fixture(scope="module")
def october(site):
    return site.frame(date(2025, 10, 1), 31)


def minutes(day_index: int, hour: float) -> int:
    return day_index * MINUTES_PER_DAY + int(hour * 60)


def test_no_pv_output_at_night_and_peak_near_solar_noon(october):
    ac = october.devices["inv-a"]["ac_power_w"]
    zenith = october.weather.zenith
    assert ac[zenith > 90].max() == 0
    st = october.devices["inv-a"]["state"]
    assert set(st[zenith > 91]) == {2}  # SLEEPING
    # on clear days the daily maximum is within an hour of solar noon (~11:59 local)
    clear = [k for k, t in enumerate(october.weather.day_types) if t == 0]
    assert clear, "October in Tainan has clear days"
    for k in clear:
        day = ac[k * MINUTES_PER_DAY : (k + 1) * MINUTES_PER_DAY]
        peak_h = np.argmax(np.convolve(day, np.ones(31) / 31, "same")) / 60
        assert 11.0 <= peak_h <= 13.0, (k, peak_h)


def test_clipping_is_throttled_state(october):
    ac = october.devices["inv-a"]["ac_power_w"]
    st = october.devices["inv-a"]["state"]
    assert ac.max() <= 10000 + 1e-6
    assert (st == 5).any() and np.all(ac[st == 5] >= 10000 * 0.999)


def test_annual_specific_yield_is_in_tainans_range():
    """docs/domain.md: about 1,250-1,430 kWh/kWp per year (the city quotes 1,343)."""
    sc = SiteClimate("yonghua", 22.992, 120.185, "Asia/Taipei", 20.0, TAINAN, 2026)
    w = sc.frame(date(2025, 1, 1), 365)
    arr = PvArray(dc_kwp=10, ac_kw=8.3)
    yield_kwh_kwp = pv_output(w, arr).ac_w.sum() / 60 / 1000 / arr.dc_kwp
    assert 1250 <= yield_kwh_kwp <= 1430, yield_kwh_kwp


def test_counters_are_the_integral_of_power_and_continue_across_days(site):
    day = date(2025, 10, 14)
    t0 = datetime(2025, 10, 14, 0, 0, tzinfo=TAIPEI).timestamp()
    samples = [site.values_at("inv-a", t0 + s) for s in range(0, 86400, 60)]
    power_wh = sum(v["ac_power_w"] for v in samples) / 60
    end = site.values_at("inv-a", t0 + 86400)["ac_energy_wh"]
    assert end - samples[0]["ac_energy_wh"] == pytest.approx(power_wh, rel=0.01)
    # the counter at midnight is the sum of every earlier day since commissioning
    base = site.counters_at(day)["inv-a"]["ac_energy_wh"]
    assert samples[0]["ac_energy_wh"] == pytest.approx(base)
    nxt = site.counters_at(day + timedelta(days=1))["inv-a"]["ac_energy_wh"]
    assert nxt == pytest.approx(end)


def test_working_day_load_exceeds_holiday_load(october):
    main = october.devices["main"]["active_power_w"]
    hvac = october.devices["hvac"]["active_power_w"]
    # 2025-10-09 is a Thursday, 2025-10-10 National Day (a Friday, a public holiday)
    thu, holiday = 8, 9
    assert october.weather.workday[thu] and not october.weather.workday[holiday]
    office = slice(minutes(0, 9), minutes(0, 17))
    assert (
        hvac[minutes(thu, 9) : minutes(thu, 17)].mean()
        > 3 * hvac[minutes(holiday, 9) : minutes(holiday, 17)].mean()
    )
    assert (
        main[thu * 1440 : (thu + 1) * 1440].sum()
        > main[holiday * 1440 : (holiday + 1) * 1440].sum()
    )
    del office


def test_lunch_time_lights_off(october):
    light = october.devices["light"]["active_power_w"]
    thu = 8
    assert light[minutes(thu, 12.5)] < 0.5 * light[minutes(thu, 10.5)]


def test_hvac_rises_with_outdoor_temperature(site):
    f = site.frame(date(2025, 1, 6), 200)  # winter into summer
    hvac = f.devices["hvac"]["active_power_w"]
    temp = f.weather.temp_air
    means_p, means_t = [], []
    for k in range(200):
        if f.weather.workday[k]:
            sl = slice(minutes(k, 10), minutes(k, 16))
            means_p.append(hvac[sl].mean())
            means_t.append(temp[sl].mean())
    assert np.corrcoef(means_t, means_p)[0, 1] > 0.8


def test_main_meter_is_the_sum_of_its_parts(october):
    d = october.devices
    loads = d["hvac"]["active_power_w"] + d["light"]["active_power_w"] + d["ev"]["active_power_w"]
    pv = d["inv-a"]["ac_power_w"] + d["inv-b"]["ac_power_w"]
    unmetered = d["main"]["active_power_w"] - loads + pv
    # the remainder (lifts, pumps, IT rooms): never above its rating, never below the
    # half of it that runs all the time, and higher with people in than at night
    assert unmetered.min() > 0.5 * 30000 - 1 and unmetered.max() < 30000 + 1
    thu = 8
    assert unmetered[minutes(thu, 10) : minutes(thu, 11)].mean() > 0.9 * 30000
    assert unmetered[minutes(thu, 2) : minutes(thu, 3)].mean() < 0.55 * 30000
    np.testing.assert_allclose(d["pvm"]["active_power_w"], pv)
    # import and export counters split the main meter's power by sign
    np.testing.assert_allclose(
        d["main"]["import_energy_wh"] - d["main"]["export_energy_wh"],
        d["main"]["active_power_w"] / 60,
    )


def test_peers_differ_slightly(october):
    a, b = (
        october.devices["inv-a"]["ac_power_w"].sum(),
        october.devices["inv-b"]["ac_power_w"].sum(),
    )
    assert a != b and abs(a - b) / a < 0.05


def test_a_leak_raises_the_night_flow(site):
    t_night = datetime(2025, 10, 15, 3, 0, tzinfo=TAIPEI).timestamp()
    vf = ValueFaults()
    normal = [
        vf.apply(t_night + 60 * k, site.values_at("water", t_night + 60 * k)) for k in range(10)
    ]
    vf.faults.leak_m3h = 0.8
    leak = [
        vf.apply(t_night + 600 + 60 * k, site.values_at("water", t_night + 600 + 60 * k))
        for k in range(10)
    ]
    assert max(v["flow_m3h"] for v in normal) < 0.1
    assert min(v["flow_m3h"] for v in leak) > 0.8
    # the meter counts the leaked water
    used = leak[-1]["volume_m3"] - leak[0]["volume_m3"]
    assert used == pytest.approx(sum(v["flow_m3h"] for v in leak[:-1]) / 60, rel=0.05)


def test_simulated_clock_runs_fast_from_any_start():
    real = [1000.0]
    start = datetime(2024, 7, 1, 6, 0, tzinfo=TAIPEI).timestamp()
    clock = SimClock(start=start, speed=3600, real=lambda: real[0])
    assert clock.time() == start
    real[0] += 2.5  # 2.5 real seconds = 2.5 simulated hours
    assert clock.time() == start + 2.5 * 3600


@pytest.mark.parametrize(
    ("device", "field"),
    [
        ("inv-a", "ac_power_w"),
        ("hvac", "active_power_w"),
        ("ev", "active_power_w"),
        ("main", "active_power_w"),
        ("water", "flow_m3h"),
        ("wx", "ambient_temp_c"),
    ],
)
def test_same_seed_same_day_whatever_the_window(site, device, field):
    a = site.frame(date(2025, 10, 14), 1).devices[device][field]
    b = site.frame(date(2025, 10, 10), 7).devices[device][field][4 * 1440 : 5 * 1440]
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-6)


def test_counters_do_not_move_before_commissioning(site):
    """Live and backfill agree even for a window that starts before commissioning."""
    f = site.frame(date(2024, 12, 30), 4)  # commissioned 2025-01-01
    inc = f.devices["inv-a"]["ac_energy_wh"]
    assert inc[: 2 * 1440].sum() == 0 and inc[2 * 1440 :].sum() > 0
    t = datetime(2024, 12, 31, 12, 0, tzinfo=TAIPEI).timestamp()
    assert site.values_at("inv-a", t)["ac_energy_wh"] == 0


def test_office_days_follow_the_government_calendar_not_taipowers():
    """The office is closed on government days off; the bill's off-peak days are
    Taipower's list (rules/data/tariffs.yaml).  Days where the two differ (2025)."""
    tariff = load_tariffs().edition_on(date(2025, 1, 1))
    cases = [
        # (day, office, billed as)
        (date(2025, 7, 2), OPEN, "weekday"),  # a Wednesday
        (date(2025, 7, 5), SATURDAY, "saturday"),
        (date(2025, 7, 6), CLOSED, "off_peak"),  # Sunday
        (date(2025, 10, 10), CLOSED, "off_peak"),  # National Day: on both lists
        (date(2025, 9, 29), CLOSED, "weekday"),  # 補假 for Teachers' Day (a Sunday)
        (date(2025, 10, 24), CLOSED, "weekday"),  # 補假 for 10/25 (a Saturday)
        (date(2025, 1, 27), CLOSED, "off_peak"),  # 彈性放假 before New Year's Eve
        (date(2025, 2, 8), OPEN, "saturday"),  # 補班: the make-up working Saturday
        (date(2025, 5, 1), OPEN, "off_peak"),  # Labour Day: civil servants worked
    ]
    for day, office, billed in cases:
        assert (office_day(day), tariff.day_kind(day)) == (office, billed), day


def test_saturday_is_between_a_weekday_and_a_sunday(site):
    f = site.frame(date(2025, 7, 7), 14)  # Monday 7 July to Sunday 20 July, no holiday
    main = f.devices["main"]["active_power_w"] + f.devices["inv-a"]["ac_power_w"]
    main += f.devices["inv-b"]["ac_power_w"]  # the load, without the PV behind the meter
    hvac = f.devices["hvac"]["active_power_w"]
    assert list(f.weather.office_days[:7]) == [OPEN] * 5 + [SATURDAY, CLOSED]

    def day(x, k):
        return x[k * MINUTES_PER_DAY : (k + 1) * MINUTES_PER_DAY].sum() / 60

    for x in (main, hvac):
        for week in (0, 7):
            weekday = min(day(x, week + k) for k in range(5))
            saturday, sunday = day(x, week + 5), day(x, week + 6)
            assert weekday > 1.3 * saturday and saturday > 1.15 * sunday, (weekday, saturday)
    # some staff on a Saturday morning: lights on, less than on a weekday
    light = f.devices["light"]["active_power_w"]
    sat, wed, sun = 5, 2, 6
    assert light[minutes(sun, 10)] < light[minutes(sat, 10)] < 0.6 * light[minutes(wed, 10)]


def test_summer_cooling_peaks_in_the_afternoon(site):
    """The building's cooling load lags the outdoor air: on summer office days the HVAC's
    highest three hours start between 13:00 and 15:00 (the 14:00-17:00 peak), and the
    16:00-22:00 peak period takes more than a fifth of the day's HVAC energy."""
    f = site.frame(date(2025, 7, 1), 31)
    hvac = f.devices["hvac"]["active_power_w"]
    open_days = [k for k in range(31) if f.weather.office_days[k] == OPEN]
    assert len(open_days) >= 20
    for k in open_days:
        hourly = hvac[k * MINUTES_PER_DAY : (k + 1) * MINUTES_PER_DAY].reshape(24, 60).mean(1)
        three_hours = np.convolve(hourly, np.ones(3) / 3, "valid")  # [i] = hours i..i+2
        assert 13 <= int(np.argmax(three_hours)) <= 15, (k, hourly.round())
        assert hourly[16:22].sum() > 0.2 * hourly.sum(), k
