"""HTTP control of a running simulator: inject and clear faults per device.

    curl localhost:15080/devices
    curl -X PATCH localhost:15080/devices/inv-01/faults -H 'content-type: application/json' \\
         -d '{"trip": ["GROUND_FAULT"]}'
    curl -X DELETE localhost:15080/devices/inv-01/faults

Served on ``services.simulator.control_port`` (loopback by default); it changes only
the simulation, never a real device.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import FastAPI, HTTPException

from foursave.simulators.faults import EXCEPTION_CODES, FaultUpdate

if TYPE_CHECKING:
    from foursave.simulators.server import Simulator


def control_app(sim: Simulator) -> FastAPI:
    app = FastAPI(title="foursave simulator control", version="1")

    def device_or_404(device_id: str):
        sd = sim.devices.get(device_id)
        if sd is None:
            raise HTTPException(404, f"no simulated device {device_id!r}; see GET /devices")
        return sd

    def describe(sd) -> dict:
        return {
            "id": sd.device.id,
            "site": sd.device.site,
            "kind": sd.device.kind,
            "model": sd.device.simulate.model,
            "image": sd.device.simulate.image,  # a replayed register dump (model null)
            "faults": sd.faults.describe(),
            "requests": sd.requests,
            "writes_refused": sd.writes_refused,
        }

    @app.get("/devices")
    async def devices() -> list[dict]:
        """Every simulated device with its active faults."""
        return [describe(sd) for sd in sim.devices.values()]

    @app.get("/devices/{device_id}")
    async def device(device_id: str) -> dict:
        """One device, its faults and its latest values."""
        sd = device_or_404(device_id)
        out = describe(sd)
        if sd.served:
            t, values = sd.served[-1]
            out["values"] = values
            out["values_time"] = datetime.fromtimestamp(t, UTC).isoformat()
        return out

    @app.patch("/devices/{device_id}/faults")
    async def set_faults(device_id: str, update: FaultUpdate) -> dict:
        """Start (or, with null / false / 0, stop) faults on one device."""
        sd = device_or_404(device_id)
        codes = [update.exception] if update.exception else []
        codes += list((update.exception_at or {}).values())
        bad = [c for c in codes if c not in EXCEPTION_CODES]
        if bad:
            raise HTTPException(422, f"exception code(s) {bad} not one of {EXCEPTION_CODES}")
        try:
            await sim.apply_faults(device_id, update)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return describe(sd)

    @app.delete("/devices/{device_id}/faults")
    async def clear_faults(device_id: str) -> dict:
        """Stop every fault on one device (counter resets, being events, stay)."""
        sd = device_or_404(device_id)
        await sim.clear_faults(device_id)
        return describe(sd)

    @app.get("/clock")
    async def clock() -> dict:
        """The simulated time every device shares."""
        t = sim.clock.time()
        return {"time": datetime.fromtimestamp(t, UTC).isoformat(), "epoch_s": t}

    return app
