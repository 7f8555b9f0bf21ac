"""Pipeline schedules: the order in which each stage runs its micro-batches' forwards and
backwards, and the idle time ("bubble") that order leaves.

A schedule is, for each stage s of S, a list of actions ("F", j) / ("B", j) for micro-batches
j = 0..M-1. The dependencies are those of backpropagation: F(s, j) needs F(s-1, j); B(s, j)
needs B(s+1, j) and F(s, j). Two schedules (Huang et al. 2019; Narayanan et al. 2019):

    GPipe   every stage runs all M forwards, then all M backwards (in micro-batch order),
            holding the activations of all M micro-batches at the turn;
    1F1B    stage s runs min(S-s-1, M) forwards to fill the pipe, then alternates one forward
            and one backward, then drains: at most S-s micro-batches in flight (PipeDream-flush).

Both give the same gradients (micro-batch gradients are summed in the same order) and, with
every forward taking tf and every backward tb at every stage, the same idle fraction per
stage: (S-1)/(M+S-1), the bubble. `simulate` replays a schedule with any op times.
"""

from __future__ import annotations


def gpipe(stages: int, micro: int) -> list:
    """All forwards, then all backwards, at every stage."""
    return [
        [("F", j) for j in range(micro)] + [("B", j) for j in range(micro)] for _ in range(stages)
    ]


def one_f_one_b(stages: int, micro: int) -> list:
    """Warm-up forwards, then one forward one backward in turn, then the remaining backwards."""
    out = []
    for s in range(stages):
        warm = min(stages - s - 1, micro)
        acts = [("F", j) for j in range(warm)]
        for j in range(micro - warm):
            acts += [("F", warm + j), ("B", j)]
        acts += [("B", j) for j in range(micro - warm, micro)]
        out.append(acts)
    return out


SCHEDULES = {"gpipe": gpipe, "1f1b": one_f_one_b}


def make(name: str, stages: int, micro: int) -> list:
    """The schedule called `name` ("gpipe" or "1f1b") for S stages and M micro-batches."""
    if name not in SCHEDULES:
        raise ValueError(f"pipeline: schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name](stages, micro)


def bubble_formula(stages: int, micro: int) -> float:
    """(S-1)/(M+S-1): the idle fraction of every stage with equal op times."""
    return (stages - 1) / (micro + stages - 1)


def _deps(stage, kind, j, stages):
    if kind == "F":
        return [(stage - 1, "F", j)] if stage > 0 else []
    return [(stage, "F", j)] + ([(stage + 1, "B", j)] if stage < stages - 1 else [])


def simulate(schedule, duration=None) -> dict:
    """Replay `schedule` with each action taking `duration(stage, kind, j)` seconds (default:
    forward 1, backward 2), every stage starting an action as soon as the stage is free and
    the action's inputs exist; transfers take no time.

    Returns {"start": {(s, kind, j): t}, "end": {...}, "makespan": T, "busy": [per stage],
    "bubble": [per stage idle fraction 1 - busy/T]}."""
    duration = duration or (lambda s, kind, j: 1.0 if kind == "F" else 2.0)
    stages = len(schedule)
    start, end, free, nxt = {}, {}, [0.0] * stages, [0] * stages
    total = sum(len(acts) for acts in schedule)
    while len(end) < total:
        progressed = False
        for s, acts in enumerate(schedule):
            while nxt[s] < len(acts):
                kind, j = acts[nxt[s]]
                deps = _deps(s, kind, j, stages)
                if any(d not in end for d in deps):
                    break
                key = (s, kind, j)
                start[key] = max([free[s]] + [end[d] for d in deps])
                end[key] = free[s] = start[key] + float(duration(s, kind, j))
                nxt[s] += 1
                progressed = True
        if not progressed:
            raise ValueError("pipeline schedule deadlocks: an action waits for one never run")
    makespan = max(end.values()) - min(start.values()) if end else 0.0
    busy = [
        sum(end[(s, k, j)] - start[(s, k, j)] for k, j in acts) for s, acts in enumerate(schedule)
    ]
    bubble = [1.0 - b / makespan if makespan > 0 else 0.0 for b in busy]
    return {"start": start, "end": end, "makespan": makespan, "busy": busy, "bubble": bubble}


def submission_order(schedule) -> list:
    """Every (stage, kind, j) in an order that submits each action after the ones it needs
    and keeps each stage's own order: by start time in the unit-time replay."""
    start = simulate(schedule)["start"]
    return sorted(start, key=lambda key: (start[key], key[0]))


def in_flight(schedule) -> list:
    """For each stage, the most micro-batches forwarded and not yet backwarded at once (how
    many micro-batches' activations it holds at its peak)."""
    out = []
    for acts in schedule:
        held = peak = 0
        for kind, _ in acts:
            held += 1 if kind == "F" else -1
            peak = max(peak, held)
        out.append(peak)
    return out


class BubbleLog:
    """Each stage's idle share over a run's steps, three ways: the schedule with equal op times
    ("schedule"), the schedule replayed with the op times measured at the stages ("replayed":
    what the stages would idle side by side with free transfers), and measured from each op's
    start and end times ("timed": only meaningful where the stages run at once, e.g. on Ray).
    """

    def __init__(self, stages: int):
        self.stages = stages
        self.replay_idle, self.timed_idle = [0.0] * stages, [0.0] * stages
        self.replay_span = self.timed_span = 0.0
        self.unit = None

    def add(self, plan, times):
        """One step of one pipeline: `times[(s, kind, j)]` = (start, end) of each action."""
        replay = simulate(plan, lambda s, kind, j: times[s, kind, j][1] - times[s, kind, j][0])
        span = max(t1 for _, t1 in times.values()) - min(t0 for t0, _ in times.values())
        self.replay_span += replay["makespan"]
        self.timed_span += span
        for s in range(self.stages):
            self.replay_idle[s] += replay["makespan"] - replay["busy"][s]
            self.timed_idle[s] += span - replay["busy"][s]
        self.unit = simulate(plan)["bubble"]

    def report(self, micro: int, timed: bool) -> dict:
        def share(idle, span):
            return [i / span if span > 0 else 0.0 for i in idle]

        return {
            "formula": bubble_formula(self.stages, micro),
            "schedule": self.unit,
            "replayed": share(self.replay_idle, self.replay_span),
            "timed": share(self.timed_idle, self.timed_span) if timed else None,
        }
