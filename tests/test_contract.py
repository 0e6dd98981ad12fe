"""The contract optimiser on a real influxd holding the demo site's backfilled 15-minute
meter data (tests/api_fixtures.py history, 2024-01 .. 2026-01-21), through the
optimiser's own functions, ``foursave contract`` and ``GET /api/v1/sites/{site}/contract``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from foursave import cli
from foursave.api.main import create_app
from foursave.rules.bill import site_bill
from foursave.rules.contract import (
    Evaluator,
    advise,
    box_of,
    load_months,
    search,
    slow_cost,
    units_of,
)
from foursave.rules.tariff import load_tariffs
from tests.api_fixtures import ServerThread, build_stack

pytestmark = [pytest.mark.integration]
T = load_tariffs()


@pytest.fixture(scope="module")
def stack(api_history, tmp_path_factory):
    st = build_stack(tmp_path_factory.mktemp("contract"), 1, api_history)  # reads only
    yield st
    st.influx.close()


def test_search_against_brute_force_and_the_bills_on_stored_data(stack):
    cfg, influx = stack.config, stack.influx
    site = cfg.sites[0]
    st = site.tariff
    months = load_months(cfg, influx, site, (2025, 12), 12)
    assert [m.label for m in months][::11] == ["2025-01", "2025-12"]
    bills = [site_bill(cfg, influx, site, m.start, m.end, inputs=m.inputs) for m in months]
    assert sum(len(b.segments) for b in bills) == 14  # May and October cross 5/16, 10/16
    plan = T.plan(st.plan)
    units = units_of(bills, st, T)
    cur = np.array([st.contracts_kw.get(k, 0.0) for k in plan.contracts])
    ev = Evaluator(units, 12, T, plan, st, cur, 0.0, 24)
    box = box_of(units, T.contract_minimum_kw, [True, False, False, False])
    found = search(ev, box)
    # brute force over the whole regular-only range with tariff.basic_parts/excesses: with
    # the 100 kW minimum (what the search keeps to), and without it (a box whose minimum
    # is 0, searched too): the demo's simulated demand peaks near 110 kW, so the minimum
    # may bind, and the search must agree with brute force either way
    brute = {
        c: slow_cost(units, T, plan, st, {"regular": float(c)}) for c in range(box.lo1, box.hi + 1)
    }
    best = min((c for c in brute if c >= box.minimum), key=lambda c: brute[c])
    assert found.cost_ntd == pytest.approx(brute[best], abs=1e-6)
    assert brute[int(found.contracts[0])] == pytest.approx(brute[best], abs=1e-6)
    free = replace(box, minimum=0)
    found_free = search(ev, free)
    best_free = min(brute, key=lambda c: brute[c])
    assert found_free.cost_ntd == pytest.approx(brute[best_free], abs=1e-6)
    assert box.lo1 < best_free < box.hi  # an interior optimum: the range did not decide it
    print(f"regular-only optimum {best} kW, NT$ {brute[best]:,.0f} over 12 months")

    a = advise(cfg, influx, site, (2025, 12), 12, 0.0, months=months)
    r = a.current
    assert r.current_kw == st.contracts_kw
    rec_bills = [
        site_bill(cfg, influx, site, m.start, m.end, inputs=m.inputs, contracts_kw=r.recommended_kw)
        for m in months
    ]
    # the whole bills at the recommendation, and the months it would have gone over
    assert r.bills_total_ntd == pytest.approx(
        sum(b.total_ntd for b in rec_bills) + r.raise_cost_ntd
    )
    assert r.current_bills_total_ntd == pytest.approx(sum(b.total_ntd for b in bills))
    assert r.months_over == tuple(
        m.label for m, b in zip(months, rec_bills, strict=True) if b.over_contract_ntd
    )
    # the saving is the difference of the bills: energy charges do not move
    saving = (r.current_bills_total_ntd - r.bills_total_ntd) / a.years
    assert r.annual_saving_ntd == pytest.approx(saving, rel=1e-9)
    assert r.annual_saving_ntd > 0  # the demo's 300 kW is above its demand
    # the 4-type optimum is at least as cheap as the regular-only one (raising cost in both)
    fee = float(T.raise_within_2_years["ntd_per_kw_month_since_cut"])
    regular_only = search(Evaluator(units, 12, T, plan, st, cur, fee, 24), box)
    assert r.recommended_annual_ntd <= regular_only.cost_ntd + 1e-6
    # the other plan at its own optimum, whole bills through compute_bill(plan=)
    o = a.other
    assert o is not None and o.plan == "two_stage"
    other_bills = [
        site_bill(
            cfg,
            influx,
            site,
            m.start,
            m.end,
            inputs=m.inputs,
            plan="two_stage",
            contracts_kw=o.recommended_kw,
        )
        for m in months
    ]
    assert o.bills_total_ntd == pytest.approx(
        sum(b.total_ntd for b in other_bills) + o.raise_cost_ntd
    )
    cheaper = min((r, o), key=lambda x: x.bills_total_ntd).plan
    assert a.cheaper_plan == cheaper
    # a margin raises the recommendation: it is chosen on demand x 1.1
    m10 = advise(cfg, influx, site, (2025, 12), 12, 10.0, months=months).current
    level = sum(m10.recommended_kw.values())
    assert level > sum(r.recommended_kw.values())
    assert m10.annual_saving_ntd <= r.annual_saving_ntd
    print(
        f"recommendation {r.recommended_kw} (current {r.current_kw}): NT$ "
        f"{r.annual_saving_ntd:,.0f} a year; months over {r.months_over}; "
        f"margin 10 %: {m10.recommended_kw}, NT$ {m10.annual_saving_ntd:,.0f}; "
        f"three-stage NT$ {r.bills_total_ntd:,.0f} vs two-stage NT$ {o.bills_total_ntd:,.0f}"
    )


def test_cli_and_api_end_to_end(stack, capsys):
    path = str(stack.tmp / "config.yaml")
    cfg = stack.config
    expected = advise(cfg, stack.influx, cfg.sites[0], (2025, 12), 12, 5.0)
    rc = cli.main(
        ["contract", "--config", path, "--site", "demo", "--until", "2025-12", "--margin-pct", "5"]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    rec = expected.current.recommended_kw["regular"]
    assert f"recommended: regular {rec:,.0f} kW" in out.out
    assert f"annual saving: NT$ {expected.current.annual_saving_ntd:,.0f}" in out.out
    assert "2025-01 .. 2025-12 (12)" in out.out

    rc = cli.main(
        [
            "contract",
            "--config",
            path,
            "--site",
            "demo",
            "--until",
            "2025-12",
            "--lang",
            "zh-TW",
            "--margin-pct",
            "5",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0 and f"建議契約: 經常契約 {rec:,.0f} kW" in out.out

    # too few months: it says how many there are
    rc = cli.main(["contract", "--config", path, "--site", "demo", "--until", "2026-12"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "has main-meter data in 1 of the 12 billing months 2026-01..2026-12 (2026-01)" in err
    # 24 months back from 2025-12 reach months no tariff edition covers
    rc = cli.main(
        ["contract", "--config", path, "--site", "demo", "--until", "2025-12", "--months", "24"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "no tariff for 2024-01-01" in err and "Traceback" not in err
    rc = cli.main(["contract", "--config", path, "--site", "nowhere"])
    assert rc == 2 and "unknown site 'nowhere'" in capsys.readouterr().err

    import httpx

    with ServerThread(create_app(cfg, clock=stack.clock, refresh=False)) as server:

        def get(path, role="viewer", **params):
            headers = {"X-API-Key": stack.keys[role]} if role else {}
            return httpx.get(server.url + path, params=params, headers=headers, timeout=120)

        # the clock is at 2026-01-21: the last complete month is 2025-12
        r = get("/api/v1/sites/demo/contract", margin_pct=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["months"][0] == "2025-01" and body["months"][-1] == "2025-12"
        assert body["current"]["recommended_kw"] == expected.current.recommended_kw
        assert body["current"]["annual_saving_ntd"] == pytest.approx(
            expected.current.annual_saving_ntd
        )
        assert body["cheaper_plan"] == expected.cheaper_plan
        assert body["other"]["bills_total_ntd"] == pytest.approx(expected.other.bills_total_ntd)
        assert get("/api/v1/sites/demo/contract", role="engineer").status_code == 200
        assert get("/api/v1/sites/demo/contract", role=None).status_code == 401
        r = get("/api/v1/sites/demo/contract", until="2026-12")
        assert r.status_code == 422 and "1 of the 12 billing months" in r.json()["detail"]
        r = get("/api/v1/sites/demo/contract", months=24, until="2025-12")
        assert r.status_code == 422 and "no tariff for 2024-01-01" in r.json()["detail"]
        assert get("/api/v1/sites/demo/contract", months=18).status_code == 422
        assert get("/api/v1/sites/nowhere/contract").status_code == 404
