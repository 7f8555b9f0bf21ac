"""Elastic places: a dead place is restarted, and one that cannot come back is retired.

A way's `recover` calls `restart_or_retire` first. Each dead place is started again; a place
that cannot be (its machine is gone: `PlaceUnreachable`) is taken out of service
(`places.retire`), the event goes into the run's `elastic` list (history.traffic, metrics.json,
the printed report) and one line is printed. The way then moves what that place held to the
survivors: data parallel rebuilds its ring over them, federated learning re-homes the place's
clients (`rehome_clients`) and redoes the round.
"""

from __future__ import annotations

import numpy as np

from .places import PlaceUnreachable


def restart_or_retire(way, run, hosts, step) -> tuple[list, list]:
    """Restart each place of `hosts`; retire those that cannot come back.

    Returns (the places restarted, the events of the places retired). Each event is
    {"place", "event", way.unit: step, "places_left"}, appended to
    `run.traffic.extra["elastic"]`; the caller may add to it (the clients it moved).
    Retiring the last live place raises PlaceUnreachable: nothing is left to run on.
    """
    places = way.places
    restarted, events = [], []
    for h in hosts:
        try:
            places.restart(h)
            restarted.append(h)
        except PlaceUnreachable as err:
            places.retire(h)
            event = {
                "place": h,
                "event": f"retired ({err})",
                way.unit: step,
                "places_left": len(places.live()),
            }
            run.traffic.extra.setdefault("elastic", []).append(event)
            events.append(event)
            print(
                f"{way.name}: place {h} cannot come back; continuing on "
                f"{len(places.live())} place(s)",
                flush=True,
            )
    return restarted, events


def rehome_clients(way, run, events, home: np.ndarray, rows_of, step):
    """Move the clients of each retired place (`events` from `restart_or_retire`) to the live
    places, round robin in client order; the other clients stay where they are. `home`
    (client → place) is updated in place; `rows_of(k)` is how many rows client k owns.

    A client's state is rebuilt from its seed and its rows, so moving it means sending its
    rows to its new place: counted as "state" traffic from the driver (the data's owner) and
    added to the event ("clients_moved", "bytes_moved"), with one printed line.
    """
    live = np.asarray(sorted(way.places.live()), dtype=home.dtype)
    per_row = int(run.x[:1].nbytes + run.y[:1].nbytes)
    for event in events:
        lost = np.flatnonzero(home == event["place"])
        home[lost] = live[np.arange(len(lost)) % len(live)]
        sent = 0
        for k in lost:
            size = rows_of(int(k)) * per_row
            if size:
                run.traffic.record("state", "driver", f"place{int(home[k])}", size=size)
                sent += size
        event.update({"clients_moved": [int(k) for k in lost], "bytes_moved": sent})
        print(
            f"{way.name}: the {len(lost)} client(s) of place {event['place']} moved to "
            f"place(s) {sorted({int(home[k]) for k in lost})} ({sent:,} B of their rows "
            f"sent); {way.unit} {step} is redone",
            flush=True,
        )
