"""benchmarks/roofline.py: the GEMM list of a training step (W3/W3b, the Dense stacks W1/W4/W5)
or of W6's inference pass, and the script's output.

The FLOP total of the list is checked against the model's FLOPs worked out here from the
architecture alone; no figure is timed against a limit (the timing run is a smoke test).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import roofline  # benchmarks/ is not a package: imported through sys.path

# batch, hidden units; every W3 model has Embedding(83, 256), 100 steps, Dense(83).
ARCH = {"W3": (8, 1024), "W3b": (32, 256)}


def analytic_step_flops(batch, units, embed=256, vocab=83, steps=100):
    """(splitgrad's step, docs/benchmarks.md's convention). Forward: input projection + T
    recurrent products + Dense (2 FLOPs per MAC); backward costs two products per forward one
    (input and weight gradient), except that h0 takes no gradient: the first step's product
    with W_hhᵀ is skipped. splitgrad makes its input projection for the vocab's rows, not the
    batch's tokens (layers/fusion.py)."""
    gates, tokens = 4 * units, batch * steps
    forward = 2 * tokens * (embed * gates + units * gates + units * vocab)
    fused = 3 * forward - 2 * 3 * (tokens - vocab) * embed * gates
    return fused - 2 * batch * units * gates, 3 * forward


@pytest.mark.parametrize("workload", ["W3", "W3b"])
def test_gemm_flops_equal_the_analytic_step(workload):
    from workloads import WORKLOADS

    exact, convention = analytic_step_flops(*ARCH[workload])
    assert sum(g.flops for g in roofline.gemms(workload)) == exact
    # docs/benchmarks.md counts 3 × forward (rounded to 0.1 M): the same model
    assert abs(WORKLOADS[workload][2] - convention) < 0.1e6
    per_step = [g for g in roofline.gemms(workload) if g.sequence]
    assert [g.count for g in per_step] == [100, 99]  # forward and backward time loops


def test_workload_without_a_roofline_is_refused_by_name():
    with pytest.raises(SystemExit, match="W2.*W1, W3, W3b, W4, W5, W6"):
        roofline.gemms("W2")


def test_script_json_has_the_fields():
    done = subprocess.run(
        [sys.executable, str(BENCH / "roofline.py"), "W3b", "--json", "--seconds", "0.01"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(done.stdout)
    assert set(result["settings"]) == {"blas_kernel", "malloc", "seconds", "passes"}
    assert result["settings"]["blas_kernel"] == "auto"
    assert {"blas", "malloc", "coretype", "load_1min"} <= set(result["runtime"])
    pool = result["threadpool"][0]
    assert {"internal_api", "architecture", "num_threads"} <= set(pool)
    w = result["workloads"]["W3b"]
    assert {"gemms", "total_ms", "gflop", "gflops", "roofline_steps_per_s", "adam_ms"} <= set(w)
    assert len(w["gemms"]) == len(roofline.gemms("W3b"))
    for g in w["gemms"]:
        assert {"name", "phase", "shape", "count", "ms", "loop_ms", "gflops", "flops"} <= set(g)
    assert w["total_ms"] == pytest.approx(sum(g["ms"] for g in w["gemms"]))
    assert w["roofline_steps_per_s"] == pytest.approx(1e3 / w["total_ms"])


def test_beside_puts_splitgrad_next_to_the_roofline(monkeypatch, capsys):
    fake = {
        "runtime": {"blas": "openblas Haswell x2"},
        "workloads": {"W3": {"roofline_steps_per_s": 4.0}},
    }
    monkeypatch.setattr(roofline, "run_child", lambda *args, **kwargs: fake)
    summary = {"W3/splitgrad": {"median": 3.0}, "W3/torch": {"median": 5.0}}
    rows = roofline.beside(summary, ["splitgrad", "torch"], "Haswell", "tuned")["rows"]
    assert rows == {
        "W3/splitgrad": {"steps_per_s": 3.0, "roofline_steps_per_s": 4.0, "percent": 75.0},
        "W3/torch": {"steps_per_s": 5.0, "roofline_steps_per_s": 4.0, "percent": 125.0},
    }
    out = capsys.readouterr().out
    assert "roofline steps/s" in out and "% of roofline" in out and "75%" in out
    assert "125%" in out  # a framework faster than NumPy's BLAS on these shapes


@pytest.mark.parametrize("workload", ["W1", "W4", "W5"])
def test_dense_gemm_flops_are_three_forwards_less_the_inputs_gradient(workload):
    from workloads import WORKLOADS

    batch, widths = WORKLOADS[workload][0], roofline.WIDTHS[workload]
    forward = 2 * batch * sum(i * o for i, o in itertools.pairwise(widths))
    first_dx = 2 * batch * widths[0] * widths[1]  # the input takes no gradient
    assert sum(g.flops for g in roofline.gemms(workload)) == 3 * forward - first_dx
    assert abs(WORKLOADS[workload][2] - 3 * forward) < 0.1e6  # docs/benchmarks.md: 3 × forward
    assert roofline.parameters(workload) == sum(i * o + o for i, o in itertools.pairwise(widths))


def test_inference_gemms_are_the_w2_cnns_forward():
    from workloads import WORKLOADS

    gemms = roofline.gemms("W6")
    assert {g.phase for g in gemms} == {"forward"} and roofline.parameters("W6") == 0
    # conv 3×3 valid on 28×28×1 → 26×26×32, pool → 13×13, conv → 11×11×64, pool → 5×5×64
    assert [(g.m, g.k, g.n) for g in gemms] == [
        (256 * 26 * 26, 9, 32),
        (256 * 11 * 11, 9 * 32, 64),
        (256, 1600, 128),
        (256, 128, 10),
    ]
    assert abs(sum(g.flops for g in gemms) - WORKLOADS["W6"][2]) < 0.1e6
