"""Crashes while saving: whatever two crashes happen, the last complete checkpoint survives.

Two witnesses:
  - real SIGKILLs: a subprocess saves two different states A and B over the same PATH in a
    loop; the test kills it at a random moment, starts another saver and kills that one too
    (two crashes in a row), many rounds. After each pair `load_model(PATH)` must give A or B
    exactly, and leftover folders stay within a small constant (none after the load);
  - every pair of crash points: a forked child saves with a crash (os._exit, which skips all
    cleanup as SIGKILL does) injected before its k-th file-system operation, then a second
    child crashes before its j-th; every (k, j) is tried.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import splitgrad as sg
from splitgrad import losses, nn, optim
from splitgrad.checkpoint import load_model, save_model
from splitgrad.layers.layer import generators

MAX_LEFTOVERS = 2  # one old and one new copy at most, whatever the crash

SAVER = textwrap.dedent("""
    import itertools, sys
    import splitgrad as sg
    from splitgrad.checkpoint import load_model, save_model
    a, b, path = sys.argv[1:4]
    models = [load_model(a, restore_rng=False), load_model(b, restore_rng=False)]
    sg.seed(0)  # the state the references were saved with; saving draws nothing
    print("ready", flush=True)
    for i in itertools.count():
        save_model(models[i % 2], path)
""")


def _model(steps):
    sg.seed(0)
    model = nn.Sequential([nn.Dense(12, activation="relu"), nn.Dropout(0.3, seed=4), nn.Dense(3)])
    model.compile(
        optimizer=optim.Adam(learning_rate=0.01),
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(1)
    model.build_from_sample(np.zeros((1, 6), np.float32))
    for _ in range(steps):
        model.train_on_batch(rng.normal(size=(8, 6)).astype(np.float32), rng.integers(0, 3, size=8))
    sg.seed(0)
    return model


def _state(model):
    opt = model.optimizer.state_dict()
    return (
        json.dumps(
            {
                k: [str(p.data.dtype), p.data.tobytes().hex()]
                for k, p in model.named_weights().items()
            }
        ),
        opt["step"],
        opt["param_steps"],
        json.dumps(opt["config"], sort_keys=True),
        json.dumps({k: v.tobytes().hex() for k, v in opt["state"].items()}),
        json.dumps(sg.random.get_state()),
        json.dumps({k: g.bit_generator.state for k, g in generators(model).items()}),
    )


@pytest.fixture
def two_states(tmp_path):
    """Reference folders A and B (1 and 3 steps) and their full states."""
    refs, states = [], []
    for name, steps in (("ref_a", 1), ("ref_b", 3)):
        model = _model(steps)
        save_model(model, tmp_path / name)
        refs.append(tmp_path / name)
        states.append(_state(load_model(tmp_path / name)))
    assert states[0] != states[1]
    return refs, states


def _leftovers(path):
    return [p.name for p in path.parent.iterdir() if p.name.startswith(path.name + ".")]


def _sigkill_rounds(tmp_path, refs, states, rounds, seed):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    path = tmp_path / "runs" / "m"
    save_model(load_model(refs[0], restore_rng=False), path)
    r = random.Random(seed)
    seen = set()
    most = 0
    for _ in range(rounds):
        for _crash in range(2):
            saver = subprocess.Popen(
                [sys.executable, str(script), *map(str, refs), str(path)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert saver.stdout.readline().strip() == "ready"
            time.sleep(r.choice([r.uniform(0, 0.005), r.uniform(0, 0.05)]))
            saver.kill()  # SIGKILL
            saver.wait()
            saver.stdout.close()
            most = max(most, len(_leftovers(path)))
            assert len(_leftovers(path)) <= MAX_LEFTOVERS, _leftovers(path)
        state = _state(load_model(path))
        assert state in states
        seen.add(states.index(state))
        assert _leftovers(path) == []
    return seen, most


def test_two_sigkills_in_a_row_never_lose_the_checkpoint(tmp_path, two_states):
    refs, states = two_states
    _sigkill_rounds(tmp_path, refs, states, rounds=10, seed=1)


@pytest.mark.slow
def test_two_sigkills_in_a_row_many_rounds(tmp_path, two_states):
    refs, states = two_states
    seen, most = _sigkill_rounds(tmp_path, refs, states, rounds=150, seed=2)
    print(
        f"\n150 rounds of two SIGKILLs: loaded states {sorted(seen)}, at most {most} "
        "leftover folders between crashes"
    )
    assert seen == {0, 1}


# ----- every pair of crash points ------------------------------------------------------------
_OPS = ("mkdir", "write", "fsync", "replace", "rename", "unlink", "rmdir")


def _save_crashing_at(model, path, k) -> int:
    """In a forked child: save, dying (os._exit, no cleanup) before the k-th file-system
    operation. Returns the child's status: 0 if the save finished before operation k."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            count = [0]

            def hook(name, real):
                def wrapper(*args, **kwargs):
                    count[0] += 1
                    if count[0] == k:
                        os._exit(9)
                    return real(*args, **kwargs)

                return wrapper

            for name in _OPS:
                setattr(os, name, hook(name, getattr(os, name)))
            save_model(model, path)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _crash_pairs(tmp_path, refs, states, stride):
    models = [load_model(ref, restore_rng=False) for ref in refs]
    sg.seed(0)
    path = tmp_path / "m"
    pairs = 0
    for k in range(1, 200):
        for j in range(1, 200, stride):
            for p in list(tmp_path.iterdir()):
                if p.name.startswith("m"):
                    shutil.rmtree(p)
            save_model(models[0], path)
            first = _save_crashing_at(models[1], path, k)
            second = _save_crashing_at(models[0], path, j)
            assert len(_leftovers(path)) <= MAX_LEFTOVERS, (k, j, _leftovers(path))
            sg.seed(0)
            assert _state(load_model(path)) in states, (k, j)
            sg.seed(0)
            assert _leftovers(path) == [], (k, j)
            pairs += 1
            if second == 0:
                break
        if first == 0:
            return pairs
    raise AssertionError("a save took more than 200 file-system operations")


def test_every_pair_of_crash_points(tmp_path, two_states):
    refs, states = two_states
    assert _crash_pairs(tmp_path, refs, states, stride=4) > 100


@pytest.mark.slow
def test_every_pair_of_crash_points_exhaustive(tmp_path, two_states):
    refs, states = two_states
    pairs = _crash_pairs(tmp_path, refs, states, stride=1)
    print(f"\n{pairs} pairs of crash points, every one recovered")
