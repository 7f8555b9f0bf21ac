"""Fuzzing the checkpoint loader with damaged and malicious folders.

A small trained model (Dense + Dropout(seed) + Dense, Adam, three steps) is saved once; every
case copies the folder, mutates it, and loads it. Two families of mutation:
  - damage, as a disk or a copy makes it: bit flips, truncations, insertions, deletions,
    removed, swapped or duplicated files, FIFOs, symlinks (to /dev/zero, outside, to another
    file), folders in place of files;
  - crafted content, RE-SIGNED (the manifest's sizes, hashes and own checksum recomputed, as
    an attacker could) so that it reaches the deep parsing: deep nesting, huge and negative
    shapes, wrong dtypes, class names like "os.system", "../" names, bad optimizer settings,
    NaN weights, broken generator states, forged safetensors headers, random JSON values.

Every outcome must be CheckpointError, or a load whose full state (weights, optimizer state,
default and layer generator states) equals the original bit for bit; a re-signed case may also
load a different state when its bytes are a valid checkpoint of other numbers. No hang (an
alarm per load) and bounded memory (peak RSS growth below RSS_BOUND_MB). The cases run in a
worker process (this file run as a script), so its peak RSS measures the loads alone and a
hang in C code cannot stall pytest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import pytest

RSS_BOUND_MB = 256
LOAD_TIMEOUT_S = 20
FILES = ["manifest.json", "config.json", "weights.safetensors", "optimizer.safetensors"]


# ----- the pytest side ---------------------------------------------------------------------
def _run_worker(tmp_path, cases, seed):
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--cases",
            str(cases),
            "--seed",
            str(seed),
            "--work",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60 + cases,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    _print_summary(summary)
    assert summary["failures"] == [], summary["failures"][:5]
    assert summary["cases"] == cases
    assert summary["max_rss_growth_mb"] < RSS_BOUND_MB
    return summary


def test_fuzz_loader(tmp_path):
    summary = _run_worker(tmp_path, 500, seed=1)
    # Every kind of mutation ran, and the damage cases were caught.
    assert {k.split("/")[0] for k in summary["by_kind"]} == set(KINDS)
    assert len([k for k in summary["by_kind"] if k.startswith("crafted/")]) == len(
        {label for label, _ in CRAFTED}
    )
    assert summary["outcomes"]["error"] > 300


@pytest.mark.slow
def test_fuzz_loader_at_scale(tmp_path):
    _run_worker(tmp_path, 10_500, seed=2)


def _print_summary(s):
    print(
        f"\ncheckpoint fuzz: {s['cases']} cases in {s['seconds']:.1f} s; "
        f"{s['outcomes'].get('error', 0)} CheckpointError, "
        f"{s['outcomes'].get('same', 0)} loaded an identical state, "
        f"{s['outcomes'].get('other', 0)} loaded a different valid state (re-signed); "
        f"max RSS growth {s['max_rss_growth_mb']:.1f} MB; slowest load "
        f"{s['slowest_s'] * 1000:.0f} ms ({s['slowest_kind']}); failures "
        f"{len(s['failures'])}"
    )
    for kind, counts in sorted(s["by_kind"].items()):
        print(f"  {kind:27s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


# ----- re-signing (independent of splitgrad's code: the documented format) -----------------
def resign(folder, change_manifest=None):
    """Recompute sizes and hashes of the listed plain files, apply `change_manifest`, and
    seal: manifest_sha256 = SHA-256 of the canonical JSON of the other entries."""
    try:
        doc = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return
    if not isinstance(doc, dict):
        return
    for name in list(doc.get("files", {})):
        path = folder / name
        if "/" not in name and path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    if change_manifest is not None:
        change_manifest(doc)
    doc.pop("manifest_sha256", None)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    doc["manifest_sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(doc, indent=1))


# ----- mutations -----------------------------------------------------------------------------
def _bytes(path):
    return bytearray(path.read_bytes())


def flip(r, folder, n=1):
    for _ in range(n):
        path = folder / r.choice(FILES)
        data = _bytes(path)
        data[r.randrange(len(data))] ^= 1 << r.randrange(8)
        path.write_bytes(bytes(data))


def truncate(r, folder):
    path = folder / r.choice(FILES)
    os.truncate(path, r.randrange(path.stat().st_size))


def insert(r, folder):
    path = folder / r.choice(FILES)
    data = _bytes(path)
    at = r.randrange(len(data) + 1)
    data[at:at] = r.choice(
        [
            bytes(r.randrange(256) for _ in range(r.randint(1, 64))),
            b" ",
            b"\n",
            b"0",
            b"{}",
            b"[",
            b"\x00" * 8,
        ]
    )
    path.write_bytes(bytes(data))


def delete(r, folder):
    path = folder / r.choice(FILES)
    data = _bytes(path)
    at = r.randrange(len(data))
    del data[at : at + r.randint(1, 64)]
    path.write_bytes(bytes(data))


def remove(r, folder):
    (folder / r.choice(FILES)).unlink()


def swap(r, folder):
    a, b = r.sample(FILES, 2)
    da, db = (folder / a).read_bytes(), (folder / b).read_bytes()
    (folder / a).write_bytes(db)
    (folder / b).write_bytes(da)
    if r.random() < 0.5:
        resign(folder)


def special(r, folder):
    path = folder / r.choice(FILES)
    path.unlink()
    how = r.choice(["fifo", "dev-zero", "outside", "sibling", "folder", "loop", "dangling"])
    if how == "fifo":
        os.mkfifo(path)
    elif how == "dev-zero":
        path.symlink_to("/dev/zero")
    elif how == "outside":
        path.symlink_to("/etc/hostname")
    elif how == "sibling":
        path.symlink_to(r.choice([f for f in FILES if f != path.name]))
    elif how == "folder":
        path.mkdir()
        (path / "x").write_text("x")
    elif how == "loop":
        path.symlink_to(path.name)
    else:
        path.symlink_to("no-such-file")


def signed_damage(r, folder):
    r.choice(
        [
            lambda: flip(r, folder, r.randint(1, 4)),
            lambda: truncate(r, folder),
            lambda: insert(r, folder),
            lambda: delete(r, folder),
        ]
    )()
    resign(folder)


DEEP = "[" * 100_000 + "]" * 100_000
VALUES = [
    None,
    True,
    False,
    0,
    -1,
    1,
    10**8,
    10**12,
    -(10**12),
    10**30,
    2**64,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    "",
    "1",
    "os.system",
    "__import__",
    "../../etc/passwd",
    "/dev/zero",
    "int8",
    "float16",
    "U100000",
    "object",
    "F64",
    [],
    {},
    [1, 2],
    [10**12, 10**12],
    [-1],
    [1, 10**9],
    [1, 10**8],
    {"class": "os.system", "config": {}},
    {"class_name": "Exploit", "config": {}},
    "DEEP50",
    "DEEP1000",
    "DEEP100000",
]


def _value(r):
    v = r.choice(VALUES)
    if isinstance(v, str) and v.startswith("DEEP"):
        n = int(v[4:])
        return {"__deep__": n}
    return json.loads(json.dumps(v))


def _dumps(doc):
    """JSON text in which {"__deep__": n} markers become n-deep nested lists."""
    text = json.dumps(doc)
    for n in (50, 1000, 100_000):
        text = text.replace(json.dumps({"__deep__": n}), "[" * n + "]" * n)
    return text


def _paths(doc, prefix=()):
    out = [prefix] if prefix else []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for k, v in items:
        out.extend(_paths(v, prefix + (k,)))
    return out


def _set(doc, path, value, delete=False):
    for k in path[:-1]:
        doc = doc[k]
    if delete and isinstance(doc, dict):
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


def config_value(r, folder):
    path = folder / "config.json"
    doc = json.loads(path.read_text())
    for _ in range(r.randint(1, 3)):
        target = r.choice(_paths(doc))
        _set(doc, target, _value(r), delete=r.random() < 0.2)
    path.write_text(_dumps(doc))
    resign(folder)


def manifest_value(r, folder):
    def change(doc):
        target = r.choice(_paths(doc))
        if r.random() < 0.3:
            entry = r.choice(
                [
                    "../../etc/passwd",
                    "/etc/passwd",
                    "manifest.json",
                    "a/b",
                    "..",
                    "",
                    "x" * 300,
                    "extra.bin",
                ]
            )
            doc["files"][entry] = r.choice(
                [{"sha256": "0" * 64, "size": 0}, {"sha256": "abc", "size": -1}]
            )
        else:
            _set(doc, target, _value(r), delete=r.random() < 0.2)

    resign(folder, change)
    text = (folder / "manifest.json").read_text()
    if "__deep__" in text:
        (folder / "manifest.json").write_text(_dumps(json.loads(text)))


def _header(path):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _write_header(path, header, body, length=None):
    text = json.dumps(header).encode()
    path.write_bytes((len(text) if length is None else length).to_bytes(8, "little") + text + body)


def tensor_header(r, folder):
    path = folder / r.choice(["weights.safetensors", "optimizer.safetensors"])
    header, body = _header(path)
    name = r.choice([k for k in header if k != "__metadata__"])
    how = r.randrange(7)
    if how == 0:
        header[name]["dtype"] = r.choice(["F16", "F64", "I8", "BOOL", "U8", "BF16", "X", 3])
    elif how == 1:
        header[name]["shape"] = r.choice(
            [[10**12, 10**12], [-6, 12], [], [0], [2**62], "12", [1.5], [True]]
        )
    elif how == 2:
        header[name]["data_offsets"] = r.choice([[0, 10**15], [-8, 0], [5, 1], [0], "0"])
    elif how == 3:
        header[r.choice(["../../etc/passwd", "", "layers.0.kernel.x"])] = header.pop(name)
    elif how == 4:
        header["__metadata__"] = r.choice([{"a": 1}, [], "x", {"format": "pt"}])
    elif how == 5:
        _write_header(
            path, header, body, length=r.choice([0, 7, 2**62, 2**64 - 1, len(body) + 10**6])
        )
        resign(folder)
        return
    else:
        header[name] = r.choice([None, [], {"dtype": "F32"}, {"__deep__": 1000}])
    text = _dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + body)
    resign(folder)


def tensor_values(r, folder):
    from safetensors.numpy import load, save

    path = folder / r.choice(["weights.safetensors", "optimizer.safetensors"])
    arrays = load(path.read_bytes())
    name = r.choice(sorted(arrays))
    how = r.randrange(4)
    if how == 0:
        arrays[name].reshape(-1)[r.randrange(arrays[name].size)] = r.choice(
            [float("nan"), float("inf"), -float("inf")]
        )
    elif how == 1:
        arrays[name] = arrays[name].astype(r.choice(["int8", "float16", "float64", "bool"]))
    elif how == 2:
        arrays[name] = arrays[name].reshape(-1)[:-1]
    else:
        arrays[name + r.choice(["", ".extra", "/../x"])] = arrays.pop(name)[..., None]
    path.write_bytes(save(arrays))
    resign(folder)


def _dense(doc):
    return doc["config"]["layers"][0]["config"]


def _opt_state(doc):
    return doc["optimizer_state"]


# The issue's own list, each case once per round (re-signed): (what it sets, how).
CRAFTED = [
    *[("extra", lambda d, n=n: d.update(extra={"__deep__": n})) for n in (50, 1000, 100_000)],
    *[("version", lambda d, v=v: d.update(version=v)) for v in ("1", 1.0, None, -1, 10**40)],
    *[
        ("class", lambda d, v=v: d.update({"class": v}))
        for v in ("os.system", "__builtins__", "Layer", "Dense")
    ],
    *[
        ("units", lambda d, v=v: _dense(d).update(units=v))
        for v in (10**8, 3 * 10**7, 10**12, -5, 0, 2**63, "12", 1.5)
    ],
    *[
        ("input_shape", lambda d, v=v: d.update(input_shape=v))
        for v in (
            [1, 10**8],
            [1, 10**9],
            [1, 2**24],
            [1, -6],
            [1],
            [1, 6, 10**6, 10**6],
            "x",
            [1, 6.0],
            [None, 6],
            [1] * 20,
        )
    ],
    *[
        ("dtype", lambda d, v=v: _dense(d).update(dtype=v))
        for v in ("int8", "bool", "float16", "object", "U100000", "V8", "os.system")
    ],
    *[
        ("model dtype", lambda d, v=v: d["config"].update(dtype=v))
        for v in ("int8", "float16", "float64", "U100000", "os.system")
    ],
    *[
        ("layer class", lambda d, v=v: d["config"]["layers"][1].update({"class": v}))
        for v in ("os.system", "subprocess.Popen", "../../x", "Sequential", "Model")
    ],
    *[
        ("optimizer", lambda d, k=k, v=v: d["compile"]["optimizer"].update({k: v}))
        for k, v in (
            ("class", "os.system"),
            ("learning_rate", -1.0),
            ("beta_1", 5.0),
            ("learning_rate", float("inf")),
            ("epsilon", float("nan")),
            ("clipnorm", -1.0),
            ("amsgrad", "yes"),
            ("learning_rate", "0.1"),
        )
    ],
    *[
        ("optimizer_state", lambda d, k=k, v=v: _opt_state(d)["config"].update({k: v}))
        for k, v in (
            ("learning_rate", -1.0),
            ("beta_1", 5.0),
            ("learning_rate", float("inf")),
            ("weight_decay", float("nan")),
            ("beta_2", "0.9"),
        )
    ],
    *[
        ("steps", lambda d, k=k, v=v: _opt_state(d).update({k: v}))
        for k, v in (
            ("step", -3),
            ("step", 2**70),
            ("param_steps", [1]),
            ("param_steps", "3"),
            ("class_name", "SGD"),
            ("class_name", ["Adam"]),
        )
    ],
    *[
        ("rng_state", lambda d, v=v: d.update(rng_state=v))
        for v in (None, [], {"bit_generator": "MT19937"}, {"bit_generator": "os.system"})
    ],
    ("rng_state", lambda d: d["rng_state"]["state"].update(state=-1, inc=2**200)),
    ("rng_state", lambda d: d["rng_state"].update(has_uint32="x")),
    *[
        ("layer_rng_states", lambda d, v=v: d.update(layer_rng_states=v))
        for v in ({}, {"../x": {}}, [], {"layers.1.": None})
    ],
    *[
        ("loss", lambda d, v=v: d["compile"]["loss"].update({"class": v}))
        for v in ("os.system", 3, None)
    ],
    *[
        ("metrics", lambda d, v=v: d["compile"].update(metrics=v))
        for v in (["os.system"], "zz", [{"class_name": "x"}], 3)
    ],
]
_crafted_round = iter(range(10**9))


def crafted(r, folder):
    path = folder / "config.json"
    doc = json.loads(path.read_text())
    label, change = CRAFTED[next(_crafted_round) % len(CRAFTED)]
    change(doc)
    path.write_text(_dumps(doc))
    resign(folder)
    return label


KINDS = {
    "flip1": (lambda r, f: flip(r, f), False),
    "flipN": (lambda r, f: flip(r, f, r.randint(2, 16)), False),
    "truncate": (truncate, False),
    "insert": (insert, False),
    "delete": (delete, False),
    "remove": (remove, False),
    "swap": (swap, True),
    "special": (special, False),
    "signed-damage": (signed_damage, True),
    "config-value": (config_value, True),
    "manifest-value": (manifest_value, True),
    "tensor-header": (tensor_header, True),
    "tensor-values": (tensor_values, True),
    "crafted": (crafted, True),
}


# ----- the worker ----------------------------------------------------------------------------
class Hang(BaseException):
    """Raised by the alarm; a BaseException so no `except Exception` can swallow it."""


def _state(model, sg):
    from splitgrad.layers.layer import generators

    opt = model.optimizer.state_dict() if model.optimizer is not None else None
    return {
        "weights": {
            k: (p.data.dtype.str, p.data.shape, p.data.tobytes())
            for k, p in model.named_weights().items()
        },
        "opt": opt
        and (
            opt["step"],
            opt["param_steps"],
            json.dumps(opt["config"], sort_keys=True),
            {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in opt["state"].items()},
        ),
        "rng": sg.random.get_state(),
        "layer_rng": {k: g.bit_generator.state for k, g in generators(model).items()},
    }


def work(cases, seed, root: Path) -> dict:
    import numpy as np

    import splitgrad as sg
    from splitgrad import losses, nn, optim
    from splitgrad.checkpoint import CheckpointError, load_model, save_model

    warnings.simplefilter("ignore")  # environment warnings of re-signed manifests
    sg.seed(0)
    model = nn.Sequential([nn.Dense(12, activation="relu"), nn.Dropout(0.3, seed=4), nn.Dense(3)])
    model.compile(
        optimizer=optim.Adam(learning_rate=0.01),
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    for _ in range(3):
        model.train_on_batch(
            rng.normal(size=(16, 6)).astype(np.float32), rng.integers(0, 3, size=16)
        )
    base, case = root / "base", root / "case"
    save_model(model, base, extra={"note": "fuzz"})
    original = _state(model, sg)
    load_model(base)  # warm: imports and caches before the memory baseline

    def alarm(signum, frame):
        raise Hang

    signal.signal(signal.SIGALRM, alarm)
    r = random.Random(seed)
    names = sorted(KINDS) + ["crafted"] * 4  # the list comes round every ~90 cases
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes, by_kind, failures = Counter(), defaultdict(Counter), []
    slowest, slowest_kind, start = 0.0, "", time.perf_counter()
    for i in range(cases):
        kind = names[i % len(names)]
        mutate, signed = KINDS[kind]
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(base, case)
        label = mutate(r, case)
        kind = f"{kind}/{label}" if label else kind
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, LOAD_TIMEOUT_S)
        try:
            loaded = load_model(case)
            outcome = "loaded"
        except CheckpointError:
            outcome = "error"
        except Hang:
            outcome = "hang"
            failures.append(f"case {i} ({kind}): load hung for {LOAD_TIMEOUT_S} s")
        except Exception as exc:  # noqa: BLE001 - what the fuzz is here to find
            outcome = "wrong-error"
            failures.append(f"case {i} ({kind}): {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        took = time.perf_counter() - t0
        if outcome == "loaded":
            outcome = "same" if _state(loaded, sg) == original else "other"
            if outcome == "other" and not signed:
                failures.append(f"case {i} ({kind}): damage loaded a different state")
        if took > slowest:
            slowest, slowest_kind = took, kind
        outcomes[outcome] += 1
        by_kind[kind][outcome] += 1
    shutil.rmtree(case, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "cases": cases,
        "seconds": time.perf_counter() - start,
        "outcomes": outcomes,
        "by_kind": by_kind,
        "failures": failures,
        "slowest_s": slowest,
        "slowest_kind": slowest_kind,
        "max_rss_growth_mb": (peak - baseline) / 1024,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    print(json.dumps(work(args.cases, args.seed, args.work)))
