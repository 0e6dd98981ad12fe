"""What a site's PV is worth on its Taipower bill, per month and TOU period.

Per 15-minute block (the bill's blocks: ``rules/bill.py block_energies``):

- PV production ``P``: the site's PV meters (role ``pv``, their import counter is the
  plant's output, as in the ledger: ``rules/items.py``) when every inverter of the site
  is behind the main meter, else the inverters behind it (``ac_energy_wh``; an inverter
  whose ``simulate.behind_main`` is false is not seen by the main meter).
- Main meters' import ``I`` and export ``E`` (their ``export_energy_wh`` counters).
- PV consumed on site ``C = P - E`` (clamped to [0, P]): whatever the PV made and the
  main meter did not send out was used behind it.  Export is PV not consumed on site.
  It is valued at the block's TOU energy price (``Edition.period_at``, ``energy_price``)
  of the site's plan: each kWh consumed is a kWh the main meter did not import.
- Demand with PV: ``I / 0.25 h`` (the bill's); without PV: ``(I + C) / 0.25 h`` (the
  site's load, ``I - E + P``).  The maximum per period of each, and the difference.
- The bill with PV and the bill the same blocks plus ``C`` would have given
  (``compute_bill`` both times, same contracts, power factor and gaps): their
  over-contract charges and totals differ by what the PV saved there.  The basic charge
  is on the contract capacity, not on demand: the PV changes it only if the contract is
  lowered (``foursave contract``), which is not counted here.

Blocks where the PV has data but the main meters have none: their PV is not valued
(``pv_unvalued_kwh``): its export cannot be told.  Main meters with no export counter
at all: every PV kWh counts as consumed (``export_measured`` false, and a note).
A site with PV and its own ``tariff`` but no main meter (a plant that is its own site):
all its production is valued at that plan; no demand figures.  A site with no
``tariff``: nothing is valued (the rules pass logs why).

``pv_value_month`` (tags site, plan, tariff), at the billing period's local start:
``pv_kwh_<period>`` (consumed), ``pv_value_ntd_<period>``, ``pv_value_ntd`` (at the
energy prices, before the bill's industry coefficient), ``coefficient``,
``pv_generation_kwh``, ``pv_exported_kwh``, ``pv_consumed_kwh``, ``pv_unvalued_kwh``,
``demand_kw_<period>``, ``demand_without_pv_kw_<period>``,
``demand_reduction_kw_<period>``, ``over_contract_saved_ntd`` (before the coefficient,
as the bill's over-contract line), ``bill_saved_ntd`` (bill total without PV minus with
PV: energy, over-contract, power-factor adjustment and coefficient), ``blocks_valued``,
``valued_to_ms`` (end of the last block valued: the public display's "as of"),
``export_measured``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from foursave.core.config import Config, Site, SiteTariff
from foursave.core.influx import InfluxClient
from foursave.core.periods import ZoneLike, bounds_ms, day_start_ms, local_datetime, zone
from foursave.core.reading import to_line
from foursave.rules.bill import (
    NoMeterData,
    bill_inputs,
    billing_periods,
    block_energies,
    main_meters,
)
from foursave.rules.records import RecordStore
from foursave.rules.tariff import (
    BLOCK_MS,
    Edition,
    Gap,
    NoTariff,
    Tariffs,
    compute_bill,
    load_tariffs,
)

log = logging.getLogger("foursave.rules.pvvalue")


@dataclass(frozen=True)
class PvSource:
    measurement: str
    counter: str
    devices: tuple[str, ...]
    label: str


@dataclass
class PvValue:
    site: str
    plan: str
    start: date
    end: date  # exclusive
    tariffs: tuple[str, ...]
    behind_main: bool  # valued against main meters (else: the plant's own supply)
    export_measured: bool
    generation_kwh: float = 0.0  # in the blocks with PV data
    exported_kwh: float = 0.0
    unvalued_kwh: float = 0.0
    consumed_kwh: dict[str, float] = field(default_factory=dict)
    value_ntd: dict[str, float] = field(default_factory=dict)
    demand_kw: dict[str, float] = field(default_factory=dict)
    demand_without_pv_kw: dict[str, float] = field(default_factory=dict)
    over_contract_saved_ntd: float | None = None
    bill_saved_ntd: float | None = None
    coefficient: float = 1.0
    blocks_valued: int = 0
    valued_to_ms: int | None = None  # end of the last block valued
    notes: list[str] = field(default_factory=list)

    @property
    def total_value_ntd(self) -> float:
        return sum(self.value_ntd.values())

    @property
    def total_consumed_kwh(self) -> float:
        return sum(self.consumed_kwh.values())

    @property
    def tariff_tag(self) -> str:
        return "+".join(self.tariffs)

    def demand_reduction_kw(self) -> dict[str, float]:
        return {
            p: self.demand_without_pv_kw[p] - kw
            for p, kw in self.demand_kw.items()
            if p in self.demand_without_pv_kw
        }


def pv_value(
    site: str,
    st: SiteTariff,
    start: date,
    end: date,
    tz: ZoneLike,
    pv_kwh: Mapping[int, float],
    import_kwh: Mapping[int, float] | None = None,
    export_kwh: Mapping[int, float] | None = None,
    *,
    gaps: tuple[Gap, ...] = (),
    power_factor: float | None = None,
    plan: str | None = None,
    tariffs: Tariffs | None = None,
) -> PvValue:
    """The PV value of local days [start, end) from 15-minute block energies (block start
    [epoch ms] -> kWh).  ``import_kwh`` None: no main meter (the PV is the site's own
    supply); ``export_kwh`` None: the main meters measure no export.  ``NoTariff`` when
    a day has no edition."""
    t = tariffs or load_tariffs()
    tzi = zone(tz)
    plan_id = plan or st.plan
    lo, hi = bounds_ms(start, end, tzi)
    editions: dict[date, Edition] = {}
    out = PvValue(
        site,
        plan_id,
        start,
        end,
        (),
        behind_main=import_kwh is not None,
        export_measured=export_kwh is not None,
        coefficient=t.coefficient(st.industry, start)[0],
    )
    consumed_at: dict[int, float] = {}
    consumed: dict[str, float] = defaultdict(float)
    value: dict[str, float] = defaultdict(float)
    export_unknown = 0
    for ms in sorted(pv_kwh):
        if not lo <= ms < hi:
            continue
        p = max(pv_kwh[ms], 0.0)
        out.generation_kwh += p
        if import_kwh is None:
            c = p
        elif ms not in import_kwh:
            out.unvalued_kwh += p
            continue
        else:
            e = 0.0
            if export_kwh is not None:
                if ms in export_kwh:
                    e = export_kwh[ms]
                else:
                    export_unknown += 1
            c = min(p, max(p - e, 0.0))
            out.exported_kwh += p - c
        lt = local_datetime(ms, tzi)
        ed = editions.get(lt.date())
        if ed is None:
            ed = editions[lt.date()] = t.edition_on(lt.date())
        period = ed.period_at(plan_id, lt)
        consumed[period] += c
        value[period] += c * ed.energy_price(plan_id, period, ed.is_summer(lt.date()))
        consumed_at[ms] = c
        out.blocks_valued += 1
        out.valued_to_ms = ms + BLOCK_MS
    out.consumed_kwh, out.value_ntd = dict(consumed), dict(value)
    used = {e.id: e for e in editions.values()}
    out.tariffs = tuple(sorted(used, key=lambda i: used[i].valid_from))
    if export_kwh is None and import_kwh is not None:
        out.notes.append("the main meters measure no export: all PV counted as consumed on site")
    if export_unknown:
        out.notes.append(
            f"{export_unknown} blocks without a main-meter export reading: their PV "
            "counted as consumed on site"
        )
    if out.unvalued_kwh:
        out.notes.append(
            f"{out.unvalued_kwh:,.1f} kWh of PV in blocks without main-meter data: not valued"
        )
    if import_kwh is not None and import_kwh:
        kw = {"gaps": gaps, "power_factor": power_factor, "plan": plan_id, "tariffs": t}
        with_pv = compute_bill(site, st, start, end, tzi, import_kwh, **kw)  # type: ignore[arg-type]
        without = {ms: kwh + consumed_at.get(ms, 0.0) for ms, kwh in import_kwh.items()}
        without_pv = compute_bill(site, st, start, end, tzi, without, **kw)  # type: ignore[arg-type]
        out.demand_kw = dict(with_pv.max_demand_kw)
        out.demand_without_pv_kw = dict(without_pv.max_demand_kw)
        out.over_contract_saved_ntd = without_pv.over_contract_ntd - with_pv.over_contract_ntd
        out.bill_saved_ntd = without_pv.total_ntd - with_pv.total_ntd
        out.tariffs = tuple(dict.fromkeys(with_pv.tariffs + out.tariffs))
    return out


def pv_source(config: Config, site: Site) -> PvSource | None:
    """Where the site's PV production that the main meter sees is measured (see the
    module's docstring); None when the site has no PV device."""
    invs = [d for d in config.devices if d.site == site.id and d.kind == "inverter"]
    behind = [d for d in invs if not (d.simulate is not None and not d.simulate.behind_main)]
    pv_meters = [
        d.id for d in config.devices if d.site == site.id and d.kind == "meter" and d.role == "pv"
    ]
    if not main_meters(config, site):  # a plant of its own: all of its production
        behind = invs
    if pv_meters and len(behind) == len(invs):
        return PvSource("meter", "import_energy_wh", tuple(pv_meters), "PV meters")
    if behind:
        return PvSource("inverter", "ac_energy_wh", tuple(d.id for d in behind), "inverters")
    return None


def site_pv_value(
    config: Config,
    influx: InfluxClient,
    site: Site,
    start: date,
    end: date,
    records: RecordStore | None = None,
    *,
    plan: str | None = None,
    tariffs: Tariffs | None = None,
) -> PvValue | None:
    """The PV value of local days [start, end) from InfluxDB; None when the site has no
    PV device.  ``NoTariff`` (no tariff configured, or no edition) or ``NoMeterData``
    (no PV data in the period)."""
    if site.tariff is None:
        raise NoTariff(
            f"site {site.id!r} has no 'tariff' in its configuration: its PV cannot be "
            "valued (which supply the PV feeds and its plan are not known)"
        )
    src = pv_source(config, site)
    if src is None:
        return None
    start_ms, end_ms = bounds_ms(start, end, site.timezone)
    pv, _ = block_energies(
        influx,
        list(src.devices),
        start_ms,
        end_ms,
        measurement=src.measurement,
        counter=src.counter,
    )
    if not pv:
        raise NoMeterData(
            f"no PV data ({src.label} {', '.join(src.devices)}) for site {site.id!r} in "
            f"{start}..{end - timedelta(days=1)}"
        )
    mains = main_meters(config, site)
    imp = exp = None
    gaps: tuple[Gap, ...] = ()
    pf = None
    if mains:
        x = bill_inputs(config, influx, site, start, end, records)
        imp, gaps, pf = x.blocks_kwh, x.gaps, x.power_factor
        exp_blocks, _ = block_energies(influx, mains, start_ms, end_ms, counter="export_energy_wh")
        exp = exp_blocks or None
    v = pv_value(
        site.id,
        site.tariff,
        start,
        end,
        site.timezone,
        pv,
        imp,
        exp,
        gaps=gaps,
        power_factor=pf,
        plan=plan,
        tariffs=tariffs,
    )
    v.notes.append(f"PV production from the {src.label} ({', '.join(src.devices)})")
    return v


def pv_value_lines(v: PvValue, tz: ZoneLike) -> list[str]:
    """The ``pv_value_month`` point, at the billing period's local start."""
    fields: dict[str, float | int | bool] = {}
    for period in sorted(v.consumed_kwh):
        fields[f"pv_kwh_{period}"] = v.consumed_kwh[period]
        fields[f"pv_value_ntd_{period}"] = v.value_ntd[period]
    for period, kw in sorted(v.demand_kw.items()):
        fields[f"demand_kw_{period}"] = kw
    for period, kw in sorted(v.demand_without_pv_kw.items()):
        fields[f"demand_without_pv_kw_{period}"] = kw
    for period, kw in sorted(v.demand_reduction_kw().items()):
        fields[f"demand_reduction_kw_{period}"] = kw
    fields.update(
        {
            "pv_value_ntd": v.total_value_ntd,
            "coefficient": v.coefficient,
            "pv_generation_kwh": v.generation_kwh,
            "pv_consumed_kwh": v.total_consumed_kwh,
            "pv_exported_kwh": v.exported_kwh,
            "pv_unvalued_kwh": v.unvalued_kwh,
            "blocks_valued": v.blocks_valued,
            "export_measured": v.export_measured,
        }
    )
    if v.valued_to_ms is not None:
        fields["valued_to_ms"] = v.valued_to_ms
    if v.over_contract_saved_ntd is not None:
        fields["over_contract_saved_ntd"] = v.over_contract_saved_ntd
    if v.bill_saved_ntd is not None:
        fields["bill_saved_ntd"] = v.bill_saved_ntd
    tags = {"site": v.site, "plan": v.plan, "tariff": v.tariff_tag or "none"}
    return [to_line("pv_value_month", tags, fields, day_start_ms(v.start, zone(tz)))]


def month_lines(
    config: Config,
    influx: InfluxClient,
    site: Site,
    months: list[tuple[int, int]],
    records: RecordStore | None = None,
) -> list[str]:
    """``pv_value_month`` points of ``site`` for its billing periods of ``months`` (the
    rules pass); what cannot be valued is logged, not raised."""
    if pv_source(config, site) is None:
        return []
    lines: list[str] = []
    for y, m in months:
        for b_start, b_end in billing_periods(site, y, m, records):
            try:
                v = site_pv_value(config, influx, site, b_start, b_end, records)
            except (NoTariff, NoMeterData) as exc:
                log.info("PV value %s %d-%02d: %s", site.id, y, m, exc)
                continue
            if v is not None:
                lines.extend(pv_value_lines(v, site.timezone))
    return lines
