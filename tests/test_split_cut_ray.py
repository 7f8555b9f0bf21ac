"""The ways that cut through the layers on Ray actors: the same weights as Inline, activations
handed from stage to stage as Ray objects, the bytes at each cut, a killed stage.

One local cluster (2 CPUs, no dashboard) and one pair of places serve the whole module.
"""

import time

import numpy as np
import pytest
from test_split_cut import X, close, fit

from splitgrad.split import Inline, PlaceFailure
from splitgrad.split.pipeline import Pipeline
from splitgrad.split.recompute import ActivationCheckpointing
from splitgrad.split.tensor_parallel import TensorParallel

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def places(ray_places):
    return ray_places


def _has_array(value) -> bool:
    if isinstance(value, np.ndarray):
        return True
    if isinstance(value, dict):
        return any(_has_array(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_array(v) for v in value)
    return False


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline_on_ray_equals_inline_and_the_driver_fetches_no_activation(places, schedule):
    kw = {"opt": "adam", "lr": 0.01, "dropout": 0.3}
    ref, _ = fit(Pipeline(2, 4, schedule, cuts="2", places=Inline()), **kw)
    fetched = []
    gather = places.gather

    def watching(pendings, timeout=None):  # what the driver itself receives
        values = gather(pendings, timeout)
        fetched.extend((p.op, v) for p, v in zip(pendings, values))
        return values

    places.gather = watching
    try:
        model, history = fit(Pipeline(2, 4, schedule, cuts="2", places=places), **kw)
    finally:
        del places.gather
    close(model, ref, tol=1e-12)
    # The forward and backward ops hand their activations and gradients to the next stage's
    # call as Ray objects (top-level arguments); the driver fetches only their small reports.
    ops = [v for op, v in fetched if op in ("forward", "backward")]
    assert len(ops) == 6 * 4 * 2 * 2 and not any(_has_array(v) for v in ops)
    t, d = history.traffic, 64  # the cut after the first pool: 4x4x4 values per row
    for direction in ("stage0->stage1", "stage1->stage0"):
        assert t["by_boundary"][direction] == 6 * 4 * (16 // 4) * d * 8  # 2·(B/M)·d both ways
    assert t["total_bytes"] == t["textbook_bytes"]
    timed = t["bubble"]["timed"]  # measured from each op's start and end at the actors
    assert len(timed) == 2 and all(0.0 <= v < 1.0 for v in timed)


def test_data_parallel_times_pipeline_on_ray_equals_inline(places):
    kw = {"opt": "adam", "lr": 0.01, "batch_size": 20}
    ref, _ = fit(Pipeline(2, 2, replicas=2, places=Inline()), **kw)
    model, history = fit(Pipeline(2, 2, replicas=2, places=places), **kw)
    close(model, ref, tol=1e-12)
    assert history.traffic["total_bytes"] == history.traffic["textbook_bytes"]


def test_tensor_parallel_and_recompute_on_ray_equal_inline(places):
    kw = {"opt": "adam", "lr": 0.01, "dropout": 0.3, "batch_size": 20}
    for make in (
        lambda w: TensorParallel(2, places=w),
        lambda w: ActivationCheckpointing(places=w),
    ):
        ref, ref_history = fit(make(Inline()), **kw)
        model, history = fit(make(places), **kw)
        close(model, ref, tol=1e-12)
        assert history.traffic["total_bytes"] == ref_history.traffic["total_bytes"]


def test_a_killed_stage_is_a_clear_error_not_a_hang(places):
    class KillAt:
        def on_train_batch_end(self, step, logs=None):
            if step == 1:
                places.kill(1)  # stage 1's actor dies between steps

    start = time.perf_counter()
    try:
        with pytest.raises(PlaceFailure, match=r"place\(s\) \[1\] holding stage\(s\) \[1\]"):
            fit(Pipeline(2, 2, places=places), batch_size=8, callbacks=[KillAt()])
        assert time.perf_counter() - start < 60
    finally:
        places.restart(1)  # a fresh actor for the tests that follow
    assert X.shape[0] == 48
