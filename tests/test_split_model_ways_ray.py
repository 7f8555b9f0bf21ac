"""The ways that cut the optimizer, the data owner's model and the backward pass, on Ray
actors: the same weights as Inline, bit for bit, and the bytes at each cut as the formula."""

import numpy as np
import pytest
from test_split_model_ways import IMAGES, LABELS, cnn, train
from test_split_ways import flat

from splitgrad.split import Inline, PlaceFailure
from splitgrad.split.distillation import Distillation
from splitgrad.split.local_learning import LocalLearning, SyntheticGradients
from splitgrad.split.offload import Offload, OffloadDelayed
from splitgrad.split.split_learning import SplitLearning, USplitLearning
from splitgrad.split.zero import Zero

pytestmark = pytest.mark.ray

CNN = {"make": cnn, "x": IMAGES, "y": LABELS, "batch_size": 16}


@pytest.fixture(scope="module")
def places(ray_places):
    return ray_places


@pytest.mark.parametrize("way", [SplitLearning, USplitLearning])
def test_split_learning_on_ray_equals_inline_on_a_cnn(places, way):
    ref, _ = train(way=way(places=Inline()), **CNN)
    model, history = train(way=way(places=places), **CNN)
    assert np.array_equal(flat(model), flat(ref))
    t = history.traffic
    d, batches = t["cut_widths"], 2 * 40  # 2 epochs of 40 rows
    assert t["bytes"]["activations"] == t["bytes"]["gradients"] == batches * sum(d) * 8
    assert t["total_bytes"] == t["textbook_bytes"]  # 2·B·d per cut (+ labels in vanilla)
    assert {"client0", "server"} <= set(t["busy_s"])


@pytest.mark.parametrize(
    "make",
    [
        lambda w: Zero(3, stage=1, k=2, places=w),
        lambda w: Zero(3, stage=3, places=w),
        lambda w: Offload(places=w),
        lambda w: OffloadDelayed(places=w),
        lambda w: LocalLearning(3, places=w),
        lambda w: SyntheticGradients(2, places=w),
        lambda w: Distillation(teacher_epochs=1, places=w),
        lambda w: SplitLearning(clients=3, places=w),
    ],
    ids=["zero1xk", "zero3", "offload", "delayed", "local", "synthetic", "distill", "relay"],
)
def test_each_way_on_ray_equals_inline_bitwise(places, make):
    ref, hr = train(way=make(Inline()), dropout=0.25, **CNN)
    model, history = train(way=make(places), dropout=0.25, **CNN)
    assert np.array_equal(flat(model), flat(ref)) and history.history == hr.history
    t = history.traffic
    assert t["total_bytes"] == t["textbook_bytes"] == hr.traffic["total_bytes"]
    if "memory" in t:  # ZeRO: each place measured the same share on Ray as inline
        assert t["memory"] == hr.traffic["memory"]


def test_a_dead_place_under_zero_is_a_clear_error(places):
    class KillAt:
        def on_train_batch_end(self, step, logs=None):
            if step == 1:
                places.kill(1)

    try:
        with pytest.raises(PlaceFailure, match=r"\[1\].*piece of the optimizer state"):
            train(way=Zero(2, places=places), **CNN, callbacks=[KillAt()])
    finally:
        places.restart(1)
