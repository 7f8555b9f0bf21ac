"""Split learning (#11) against federated averaging (#4): bytes per epoch crossing the cut (or
the client–server boundary) on the same data, and the test accuracy they reach.

    python benchmarks/split_learning_bench.py                  # K = 2 and 10 clients, 5 epochs
    python benchmarks/split_learning_bench.py --clients 5 --epochs 3

The bundled digits (1,437 training rows of 8×8 images), K clients owning 1/K of the rows each
(iid), batch 32, Adam 2e-3, on Inline places (the bytes are the same on Ray, see
tests/test_split_model_ways_ray.py). One epoch of split learning = every row once through the
cut, the clients taking turns and relaying the client layers (weights and Adam state);
one epoch of FedAvg = one round, every client one local epoch on its rows. Two models:
digits-cnn (the recipe) and a wide MLP 64-1024-1024-10, so the trade-off shows: split learning
sends activations (2·N·d per epoch, N rows, d the cut width, plus the labels in vanilla), which
does not grow with the model; FedAvg sends the model (2·K·P per round), which does not grow
with the data. The BLAS kernel is printed (threadpoolctl); bytes do not depend on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from threadpoolctl import threadpool_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import splitgrad as sg
from splitgrad import nn
from splitgrad.recipes import compile_classifier, digits_cnn
from splitgrad.split import Federated
from splitgrad.split.split_learning import SplitLearning, USplitLearning


def wide_mlp(learning_rate, data):
    model = nn.Sequential(
        [
            nn.Flatten(),
            nn.Dense(1024, activation="relu"),
            nn.Dense(1024, activation="relu"),
            nn.Dense(10),
        ]
    )
    return compile_classifier(model, learning_rate)


MODELS = {"digits-cnn": digits_cnn.build_model, "wide MLP 64-1024-1024-10": wide_mlp}


def run(build, way, data, epochs):
    sg.seed(0)
    model = build(2e-3, data)
    history = model.fit(
        data.x_train, data.y_train, batch_size=32, epochs=epochs, seed=0, verbose=0, way=way
    )
    accuracy = model.evaluate(data.x_test, data.y_test, return_dict=True)["accuracy"]
    t = history.traffic
    return sg.split.replicas.count(model), t, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    print("BLAS: " + ", ".join(f"{i['internal_api']} {i.get('architecture')} x{i['num_threads']}"
                              for i in blas))  # fmt: skip
    data = digits_cnn.load_data()
    e = args.epochs
    print(f"\n{len(data.x_train)} training rows; MB = 10^6 bytes per epoch; accuracy after {e}")
    print("| model | P | K | way | cut width d | MB/epoch measured | MB/epoch formula | "
          "test accuracy |")  # fmt: skip
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for label, build in MODELS.items():
        for k in args.clients:
            for way in (
                SplitLearning(clients=k),
                USplitLearning(clients=k),
                Federated(clients=k, local_batch_size=32),
            ):
                p, t, accuracy = run(build, way, data, e)
                width = "+".join(map(str, t.get("cut_widths", []))) or "-"
                print(
                    f"| {label} | {p:,} | {k} | {way.name} | {width} | "
                    f"{t['total_bytes'] / e / 1e6:.2f} | {t['textbook_bytes'] / e / 1e6:.2f} | "
                    f"{accuracy:.3f} |"
                )


if __name__ == "__main__":
    main()
