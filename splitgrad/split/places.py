"""Places that run steps: `Inline` (this process) and `RayPlaces` (one Ray actor per place).

Both expose the same small interface, so every way runs unchanged on either:
`submit(host, op, *args) -> Pending` runs the place op `op(host_object, *args)` (host.py) at
place `host`, `submit_multi(host, op, n_outs, *args)` an op whose outputs are separate objects
that other places fetch directly, `gather(pendings)`, `put(obj)`, `restart(host)`.
Many logical workers or clients live on one place (`host_of(worker)`), each in its own slot.
Arrays cross between places as Ray objects; on `Inline` they are copied instead, so nothing
is shared by accident. No scheduler or RPC layer of our own: Ray does the transport.

Ray keeps an output under 100 KB inline in its owner's memory, and the owner of an op's
outputs is the driver that submitted it, so small outputs pass through the driver's process on
their way to the next place (larger ones go from object store to object store). With
`submit_multi(..., direct=True)` (the pipeline's activations) the outputs stay at the place
that made them (`Handoff`): the driver holds only their ids, and the place that takes one as
an argument fetches it from its maker. That costs a round trip per output (about 1-3 ms here),
so the other ways keep Ray's default.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from . import host as host_ops
from .host import Host


class PlaceFailure(RuntimeError):
    """A place died while running a step; `hosts` lists the dead place indices, `where` what
    is known of each (its process, machine and Ray node)."""

    def __init__(self, hosts, cause=None, where=None):
        self.hosts = sorted(hosts)
        self.where = where or {}
        said = "; ".join(
            f"place {h} on {_describe(self.where[h])}" for h in self.hosts if h in self.where
        )
        super().__init__(
            f"place(s) {self.hosts} died during a step"
            + (f" ({said})" if said else "")
            + f": {cause!r}"
        )


def _describe(where: dict) -> str:
    node = f"node {where['node'][:12]}, " if where.get("node") else ""
    return f"{node}machine {where.get('host')}, pid {where.get('pid')}"


class PlaceUnreachable(RuntimeError):
    """A place (or cluster) did not answer within the time limit."""


class DataLost(RuntimeError):
    """Outputs a place had produced were lost with its node (Ray keeps large objects in the
    object store of the node that made them), so they cannot be fetched any more."""


class Handoff:
    """An op's output left at the place that made it (a Ray object that place owns). A place
    receiving it as an argument fetches it from there; the driver only passes its id on."""

    __slots__ = ("ref",)

    def __init__(self, ref):
        self.ref = ref


class _RayHost(Host):
    """A Ray place: `Handoff` arguments are fetched first; `call_direct`'s outputs become
    `Handoff`s."""

    def call(self, op, *args):
        return super().call(op, *_received(args))

    def call_multi(self, op, *args):
        return super().call_multi(op, *_received(args))

    def call_direct(self, op, *args):
        import ray

        head, busy, *outs = super().call_multi(op, *_received(args))
        return (head, busy, *(Handoff(ray.put(out)) for out in outs))


def _received(args):
    """`args` with every `Handoff` replaced by its value, fetched in one request."""
    at = [i for i, a in enumerate(args) if isinstance(a, Handoff)]
    if not at:
        return args
    import ray

    values = ray.get([args[i].ref for i in at])
    args = list(args)
    for i, value in zip(at, values):
        args[i] = value
    return args


class Pending:
    """A submitted op: `value` (a Ray ObjectRef or, inline, the value), its busy seconds and,
    from `submit_multi`, `outs`: its outputs (ObjectRefs or, inline, the arrays)."""

    __slots__ = ("busy", "deps", "host", "op", "outs", "value")

    def __init__(self, host, value, busy, outs=(), op=None, deps=()):
        self.host, self.value, self.busy, self.outs, self.op = host, value, busy, list(outs), op
        self.deps = list(deps)  # Ray objects the op waits for before it can start


class Inline:
    """Runs every op at once in this process, deterministically (for tests and teaching).

    One place; any number of logical workers share it.
    """

    name = "inline"

    def __init__(self):
        self.n = 1
        self._host = Host()

    def host_of(self, worker: int) -> int:
        return 0

    def live(self) -> list:
        return [0]

    def ensure_alive(self) -> list:
        return []

    def submit(self, host: int, op, *args) -> Pending:
        value, busy = self._host.call(op, *args)
        return Pending(host, value, busy)

    def submit_multi(self, host: int, op, n_outs: int, *args, direct=False) -> Pending:
        value, busy, *outs = self._host.call_multi(op, *args)
        return Pending(host, value, busy, outs)

    def gather(self, pendings, timeout=None):
        """Values of the pendings, in order (Inline ops have already run)."""
        return [p.value for p in pendings]

    def busy(self, pendings):
        return [p.busy for p in pendings]

    def put(self, obj):
        return obj

    def restart(self, host: int):
        self._host = Host()

    def reset(self):
        self._host.call(host_ops.reset)

    def close(self):
        pass

    def describe(self) -> str:
        return "inline (1 place, this process)"


class RayPlaces:
    """`n` places, each a Ray actor (a separate process, on any machine of the cluster).

    Starts a local cluster (no dashboard) unless one is running or `address` names one.
    `timeout` bounds every wait: a place that does not answer raises PlaceUnreachable.
    The places are spread over the cluster's nodes (Ray's SPREAD strategy). Each runs its BLAS
    with `threads` threads, by default as many as this driver's, so that a run on Ray gives
    the same bits as the same run inline.
    """

    name = "ray"

    def __init__(
        self,
        n: int = 2,
        address=None,
        num_cpus=None,
        timeout: float = 120.0,
        object_store_mb: int = 128,
        connect_timeout: float = 10.0,
        threads=None,
    ):
        import ray

        self._ray = ray
        self.n = int(n)
        if self.n < 1:
            raise ValueError(f"RayPlaces: n must be >= 1, got {n}")
        self.timeout = float(timeout)
        if not ray.is_initialized():
            if address is not None and address not in ("auto", "local"):
                _check_reachable(address, connect_timeout)
            if address is None:
                # The workers import splitgrad from the same source tree as this driver.
                root = str(Path(__file__).resolve().parents[2])
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    object_store_memory=object_store_mb * 1024 * 1024,
                    log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": root}},
                )
            else:
                ray.init(address=address, log_to_driver=False)
        self.threads = _blas_threads() if threads is None else int(threads)
        self._actor_cls = ray.remote(_RayHost)
        self.where = {}
        self.retired = set()
        self._actors = [self._start(h) for h in range(self.n)]
        self._wait_ready(range(self.n))

    def _nodes(self, avoid=()):
        """Ids of the cluster's live nodes that have CPUs, without those in `avoid`."""
        nodes = sorted(  # sorted: ray.nodes() need not list them in the same order each time
            n["NodeID"]
            for n in self._ray.nodes()
            if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0
        )
        return [n for n in nodes if n not in avoid] or nodes

    def _start(self, host: int, avoid=()):
        """A new actor for place `host`, on node number `host` of the live nodes (round robin,
        so places span the cluster's machines), avoiding the nodes in `avoid`."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = self._nodes(avoid)
        # Hard affinity: a soft one may fall back to a busier node while the chosen one is
        # still coming up. A node that dies first fails the start, and `_wait_ready` retries.
        strategy = (
            NodeAffinitySchedulingStrategy(nodes[host % len(nodes)], soft=False)
            if nodes
            else "SPREAD"
        )
        # num_cpus=0: a place is not a CPU reservation (its BLAS threads are set explicitly),
        # so more places than cores still start, and a replacement never waits for a CPU.
        return self._actor_cls.options(
            max_restarts=0, scheduling_strategy=strategy, num_cpus=0
        ).remote(self.threads)

    def _wait_ready(self, hosts, attempts: int = 3):
        """Wait for the places' actors to answer; an actor that dies at once (its node was
        just lost) is started again elsewhere, up to `attempts` times."""
        ray = self._ray
        for host in hosts:
            for attempt in range(attempts):
                try:
                    self.where[host] = ray.get(
                        self._actors[host].where.remote(), timeout=self.timeout
                    )
                    break
                except ray.exceptions.GetTimeoutError:
                    raise PlaceUnreachable(
                        f"RayPlaces: place {host} did not start within {self.timeout:.0f} s; "
                        "check that the cluster has free CPUs (ray status) or raise timeout="
                    ) from None
                except ray.exceptions.RayActorError as err:
                    if attempt == attempts - 1:
                        raise PlaceUnreachable(
                            f"RayPlaces: place {host} died {attempts} times while starting "
                            f"({err}); no node of the cluster can run it"
                        ) from None
                    gone = self.where.get(host, {}).get("node")
                    self._actors[host] = self._start(host, avoid={gone} - {None})

    def host_of(self, worker: int) -> int:
        """The place that hosts logical worker `worker`: round robin over the live places (a
        retired place's workers move to the others)."""
        live = self.live()
        return live[worker % len(live)]

    def live(self) -> list:
        """Indices of the places still in service."""
        return [h for h in range(self.n) if h not in self.retired]

    def retire(self, host: int):
        """Take a place that cannot come back out of service: its workers move to the others
        (`host_of`); the ways re-shard and rebuild what they need."""
        if len(self.live()) <= 1:
            raise PlaceUnreachable(
                f"RayPlaces: place {host} cannot come back and it is the last "
                "one; nothing is left to run on"
            )
        with contextlib.suppress(Exception):
            self._ray.kill(self._actors[host], no_restart=True)
        self.retired.add(host)

    def ensure_alive(self) -> list:
        """Before a run: places that died since they started are started again; one that
        cannot be is retired. Returns the events, e.g. {"place": 1, "event": "replaced"}."""
        return restart_or_retire(self, self.dead_hosts())

    def submit(self, host: int, op, *args) -> Pending:
        value, busy = self._actors[host].call.options(num_returns=2).remote(op, *args)
        return Pending(host, value, busy, op=op.__name__, deps=self._deps(args))

    def submit_multi(self, host: int, op, n_outs: int, *args, direct=False) -> Pending:
        """`direct=True`: the outputs stay at this place until another place fetches them."""
        call = self._actors[host].call_direct if direct else self._actors[host].call_multi
        refs = call.options(num_returns=2 + n_outs).remote(op, *args)
        return Pending(host, refs[0], refs[1], refs[2:], op=op.__name__, deps=self._deps(args))

    def _deps(self, args):
        return [a for a in args if isinstance(a, self._ray.ObjectRef)]

    def gather(self, pendings, timeout=None):
        """Fetch values; a dead place raises PlaceFailure, a silent one PlaceUnreachable."""
        ray = self._ray
        timeout = self.timeout if timeout is None else timeout
        try:
            values = ray.get([p.value for p in pendings], timeout=timeout)
            if any(isinstance(v, Handoff) for v in values):  # an output, fetched for a test
                values = [
                    ray.get(v.ref, timeout=timeout) if isinstance(v, Handoff) else v for v in values
                ]
            return values
        except ray.exceptions.GetTimeoutError:
            raise PlaceUnreachable(self._silence(pendings, timeout)) from None
        except ray.exceptions.ObjectLostError as err:
            dead = self.dead_hosts()
            if dead:  # lost with a place that died: the way may recover the place
                raise PlaceFailure(dead, err, self.where) from None
            raise DataLost(
                f"RayPlaces: an output of a place was lost with its node ({err}); it cannot "
                "be fetched again"
            ) from None
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as err:
            dead = self.dead_hosts()
            if not dead:
                raise
            # Let the survivors' queued ops finish (they fail fast on missing inputs).
            ray.wait(
                [p.value for p in pendings], num_returns=len(pendings), timeout=min(timeout, 30.0)
            )
            raise PlaceFailure(dead, err, self.where) from None

    def _silence(self, pendings, timeout):
        """The message for a wait that timed out: which places did not answer, to what."""
        ray = self._ray
        _, waiting = ray.wait([p.value for p in pendings], num_returns=len(pendings), timeout=0)
        waiting = set(waiting)
        late = [p for p in pendings if p.value in waiting]
        hosts = sorted({p.host for p in late})

        def has_inputs(p):
            ready, _ = ray.wait(p.deps, num_returns=len(p.deps), timeout=0)
            return len(ready) == len(p.deps)

        # A place that had all its inputs and still did not answer is the hung one; the
        # others wait for its outputs.
        hung = sorted({p.host for p in late if has_inputs(p)}) or hosts
        ops = sorted({p.op for p in late if p.op})
        on = "; ".join(f"place {h} on {_describe(self.where[h])}" for h in hung if h in self.where)
        return (
            f"RayPlaces: place(s) {hung} did not answer within the time limit of "
            f"{timeout:g} s (waiting for op(s) {ops} on places {hosts}"
            + (f"; {on}" if on else "")
            + "); a place is hung or its machine is gone. Raise RayPlaces(timeout=...) if "
            "steps are that slow."
        )

    def busy(self, pendings):
        return self._ray.get([p.busy for p in pendings], timeout=self.timeout)

    def dead_hosts(self):
        """Places that do not answer a ping in time (pinged all at once: one time limit)."""
        wait = min(self.timeout, 30.0)
        pings = {h: self._actors[h].ping.remote() for h in self.live()}
        dead = []
        for h, ref in pings.items():
            try:
                self._ray.get(ref, timeout=wait)
            except (self._ray.exceptions.RayActorError, self._ray.exceptions.GetTimeoutError):
                dead.append(h)
        return dead

    def put(self, obj):
        return self._ray.put(obj)

    def pids(self):
        """Process ids of the places (for memory measurements)."""
        return self._ray.get([a.ping.remote() for a in self._actors], timeout=self.timeout)

    def kill(self, host: int):
        """Kill a place's process (to test recovery); returns once it is gone, so the next
        step is the one that finds it dead."""
        ray = self._ray
        ray.kill(self._actors[host], no_restart=True)
        for _ in range(100):
            try:
                ray.get(self._actors[host].ping.remote(), timeout=5)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                return

    def stall(self, host: int, seconds: float):
        """Keep a place busy for `seconds` (to test that a hung place surfaces as an error)."""
        self._actors[host].call.options(num_returns=2).remote(host_ops.stall, seconds)

    def restart(self, host: int):
        """Replace a dead place with a fresh actor, away from the node it died on when another
        one can take it; its state must be restored by the way."""
        with contextlib.suppress(Exception):  # already gone is fine
            self._ray.kill(self._actors[host], no_restart=True)
        gone = self.where.get(host, {}).get("node")
        self._actors[host] = self._start(host, avoid={gone} - {None})
        self._wait_ready([host])

    def reset(self):
        self.gather([self.submit(h, host_ops.reset) for h in self.live()])

    def close(self):
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        self._actors = []

    def describe(self) -> str:
        nodes = len({w.get("node") for w in self.where.values()})
        return f"ray ({self.n} actors on {nodes} node(s), {self.threads} BLAS thread(s) each)"


def actors_for(places: int) -> int:
    """How many Ray actors host `places` logical places by default: one per core of this
    machine, at most one per place (many logical workers or clients share an actor)."""
    return max(1, min(int(places), os.cpu_count() or 1))


def _blas_threads() -> int:
    """This process's BLAS thread count (the most of any BLAS library loaded)."""
    from threadpoolctl import threadpool_info

    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts, default=1)


def _check_reachable(address: str, timeout: float):
    """Fail fast with a clear message instead of waiting on an unreachable cluster."""
    host, _, port = address.replace("ray://", "").rpartition(":")
    try:
        with socket.create_connection((host or address, int(port or 6379)), timeout=timeout):
            pass
    except (OSError, ValueError) as err:
        raise PlaceUnreachable(
            f"RayPlaces: cannot reach the Ray cluster at {address!r} within {timeout:.0f} s "
            f"({err}); start it with `ray start --head` there or leave address=None to run "
            "a local cluster"
        ) from None


def make_places(kind="inline", n=1, address=None, **kwargs):
    """Places by name: 'inline' or 'ray' (the CLI's --places)."""
    if kind == "inline":
        return Inline()
    if kind == "ray":
        return RayPlaces(n, address=address, **kwargs)
    raise ValueError(f"unknown places {kind!r}; expected 'inline' or 'ray'")


def restart_or_retire(places, hosts) -> list:
    """Start each dead place in `hosts` again, or retire it when it cannot be; the events,
    e.g. {"place": 1, "event": "replaced before the run"}."""
    events = []
    for h in hosts:
        try:
            places.restart(h)
            events.append({"place": h, "event": "replaced before the run"})
        except PlaceUnreachable as err:
            places.retire(h)
            events.append({"place": h, "event": f"retired before the run ({err})"})
    return events
