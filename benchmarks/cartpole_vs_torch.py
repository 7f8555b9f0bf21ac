"""Time to solve CartPole-v1: splitgrad's cartpole-pg and cartpole-dqn next to the same
algorithms written in PyTorch with the same hyperparameters.

    python benchmarks/cartpole_vs_torch.py                       # both algorithms, seeds 0 1 2
    python benchmarks/cartpole_vs_torch.py --algos pg --seeds 0 --kernel haswell

"Solved" is the recipes' own stopping rule, the same on both sides: after every epoch the greedy
policy plays 100 validation episodes, and training stops once their mean return is ≥ 475. The
wall time is the training (acting, learning and the validation checks) up to that point; the
final figure, 100 other greedy test episodes, is measured outside it.

Both sides play the same episodes in the same way: the same environment seeds and
action-sampling streams (splitgrad.rl.env.episode_seed, rollout.action_rng), episodes of a
batch stepped in lockstep with one batched forward pass, validation likewise. They differ in
the network code (splitgrad's engine against torch.nn, each with its own default
initialisation, so the runs learn along different paths) and the framework's overheads.
REINFORCE: Dense 32 ReLU → 2, γ 0.95, returns normalised per batch, Adam 2e-3, 4 episodes per
update, 10 updates per epoch, at most 100 epochs. DQN: 64-64 ReLU → 2, γ 0.99, double DQN,
Huber loss (δ 1), Adam 1e-3, replay 50,000, batch 64, learning after 1,000 steps, one update
per step, target copied every 500 updates, ε 1 → 0.05 over 10,000 steps, 1,000 steps per
epoch, at most 100 epochs. float32, 2 threads on each side (torch.set_num_threads(2); NumPy's
OpenBLAS uses 2 on this machine; `--torch-threads 1` also measures torch on one thread, which
these tiny networks suit better when other processes load the cores), every run in a fresh
process under the GLIBC_TUNABLES setting of docs/benchmarks.md (TUNABLES below). --kernel
user unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (NumPy picks its kernel: the headline);
--kernel haswell sets OPENBLAS_CORETYPE=Haswell. Each worker reports the BLAS kernel it ran
on (threadpoolctl).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ENV, SOLVED, THREADS, VALIDATION_EPISODES, TEST_EPISODES = "CartPole-v1", 475.0, 2, 100, 100
TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
PG = {"hidden": 32, "gamma": 0.95, "lr": 2e-3, "episodes": 4, "batches": 10, "epochs": 100}
DQN = {
    "hidden": 64,
    "gamma": 0.99,
    "lr": 1e-3,
    "batch": 64,
    "buffer": 50_000,
    "starts": 1000,
    "target_update": 500,
    "eps_start": 1.0,
    "eps_end": 0.05,
    "exploration": 10_000,
    "steps_per_epoch": 1000,
    "epochs": 100,
}


def blas_kernel() -> str:
    from threadpoolctl import threadpool_info

    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(
        f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}" for i in info
    )


# ----- splitgrad: the recipes, through Model.fit --------------------------------------------------
def run_splitgrad(algo, seed):
    import splitgrad as sg
    from splitgrad import recipes
    from splitgrad.recipes import cartpole_dqn, cartpole_pg

    module = cartpole_pg if algo == "pg" else cartpole_dqn
    settings = recipes.settings_for(module)
    sg.seed(seed)
    data = module.load_data(seed=seed)
    agent = module.build_model(settings["learning_rate"], data)
    source = module.batches(data, settings)
    options = module.fit_options(agent, data, settings)
    start = time.perf_counter()
    history = agent.fit(source, epochs=settings["epochs"], verbose=0, **options)
    wall = time.perf_counter() - start
    test = module.evaluate(agent, data)["mean_return"]
    epochs = len(history.epoch)
    steps = epochs * settings["steps_per_epoch"] if algo == "dqn" else sum(source.episode_returns)
    solved = bool(data.evaluator.evaluations and data.evaluator.evaluations[-1][2] >= SOLVED)
    return wall, epochs, len(source.episode_returns), int(steps), solved, test


# ----- PyTorch: the same algorithms ---------------------------------------------------------------
def _seeds():
    from splitgrad.rl.env import episode_seed
    from splitgrad.rl.rollout import TEST, TRAIN, VALIDATION, action_rng

    return episode_seed, action_rng, TRAIN, VALIDATION, TEST


def _lockstep(envs, seeds, choose):
    """Play len(seeds) episodes at once; choose(obs (n, d), lanes) -> actions. Returns each
    episode's (obs, actions, rewards)."""
    obs = [np.asarray(e.reset(seed=int(s))[0], np.float32) for e, s in zip(envs, seeds)]
    runs = [([], [], []) for _ in seeds]
    live = list(range(len(seeds)))
    while live:
        acts = choose(np.stack([obs[i] for i in live]), live)
        still = []
        for i, a in zip(live, acts):
            nxt, r, term, trunc, _ = envs[i].step(int(a))
            runs[i][0].append(obs[i])
            runs[i][1].append(int(a))
            runs[i][2].append(float(r))
            obs[i] = np.asarray(nxt, np.float32)
            if not (term or trunc):
                still.append(i)
        live = still
    return runs


class _Greedy:
    """Greedy returns of a torch network over numbered episodes of one stream."""

    def __init__(self, net, stream, seed, episodes):
        import gymnasium as gym

        episode_seed = _seeds()[0]
        self.net, self.envs = net, [gym.make(ENV) for _ in range(episodes)]
        self.seeds = [episode_seed(seed, stream, k) for k in range(episodes)]

    def mean(self):
        import torch

        with torch.no_grad():
            runs = _lockstep(
                self.envs, self.seeds, lambda o, _: self.net(torch.from_numpy(o)).argmax(1).numpy()
            )
        return float(np.mean([sum(r[2]) for r in runs]))


def _returns(rewards, lengths, gamma):
    out, at = [], 0
    for n in lengths:
        g, part = 0.0, []
        for r in reversed(rewards[at : at + n]):
            g = r + gamma * g
            part.append(g)
        out.extend(reversed(part))
        at += n
    out = np.asarray(out)
    return (out - out.mean()) / out.std() if out.std() > 0 else out * 0.0


def torch_pg(seed):
    import gymnasium as gym
    import torch
    import torch.nn.functional as F

    episode_seed, action_rng, TRAIN, VALIDATION, TEST = _seeds()
    torch.manual_seed(seed)
    c = PG
    net = torch.nn.Sequential(
        torch.nn.Linear(4, c["hidden"]), torch.nn.ReLU(), torch.nn.Linear(c["hidden"], 2)
    )
    opt = torch.optim.Adam(net.parameters(), lr=c["lr"])
    envs = [gym.make(ENV) for _ in range(c["episodes"])]
    check = _Greedy(net, VALIDATION, seed, VALIDATION_EPISODES)
    played, steps, best, best_state, epochs = 0, 0, None, None, 0
    start = time.perf_counter()
    for epoch in range(c["epochs"]):
        epochs = epoch + 1
        for b in range(c["batches"]):
            ids = [(epoch * c["batches"] + b) * c["episodes"] + k for k in range(c["episodes"])]
            rngs = [action_rng(seed, TRAIN, k) for k in ids]

            def sample(obs, lanes, rngs=rngs):
                with torch.no_grad():
                    p = torch.softmax(net(torch.from_numpy(obs)).double(), 1).numpy()
                cdf = np.cumsum(p, 1)
                draws = np.array([rngs[i].random() for i in lanes])
                return np.minimum((cdf < draws[:, None]).sum(1), 1)

            runs = _lockstep(envs, [episode_seed(seed, TRAIN, k) for k in ids], sample)
            obs = torch.from_numpy(np.concatenate([np.stack(r[0]) for r in runs]))
            acts = torch.tensor([a for r in runs for a in r[1]])
            g = _returns([x for r in runs for x in r[2]], [len(r[1]) for r in runs], c["gamma"])
            loss = (
                F.cross_entropy(net(obs), acts, reduction="none") * torch.tensor(g).float()
            ).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            played, steps = played + len(runs), steps + len(acts)
        mean = check.mean()
        if best is None or mean >= best:
            best, best_state = mean, {k: v.clone() for k, v in net.state_dict().items()}
        if mean >= SOLVED:
            break
    wall = time.perf_counter() - start
    net.load_state_dict(best_state)
    test = _Greedy(net, TEST, seed, TEST_EPISODES).mean()
    return wall, epochs, played, steps, best >= SOLVED, test


def torch_dqn(seed):
    import gymnasium as gym
    import torch
    import torch.nn.functional as F

    episode_seed, action_rng, TRAIN, VALIDATION, TEST = _seeds()
    torch.manual_seed(seed)
    c = DQN
    h = c["hidden"]

    def mlp():
        return torch.nn.Sequential(
            torch.nn.Linear(4, h),
            torch.nn.ReLU(),
            torch.nn.Linear(h, h),
            torch.nn.ReLU(),
            torch.nn.Linear(h, 2),
        )

    q, target = mlp(), mlp()
    target.load_state_dict(q.state_dict())
    for p in target.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(q.parameters(), lr=c["lr"])
    cap = c["buffer"]
    buf = {
        "obs": np.zeros((cap, 4), np.float32),
        "next": np.zeros((cap, 4), np.float32),
        "a": np.zeros(cap, np.int64),
        "r": np.zeros(cap, np.float32),
        "term": np.zeros(cap, np.float32),
    }
    size = at = updates = episodes = 0
    replay_rng = np.random.default_rng([seed, 0x5A3])
    act_rng = action_rng(seed, TRAIN, 0)
    env = gym.make(ENV)
    check = _Greedy(q, VALIDATION, seed, VALIDATION_EPISODES)
    obs, best, best_state, epochs = None, None, None, 0
    start = time.perf_counter()
    for epoch in range(c["epochs"]):
        epochs = epoch + 1
        for t in range(epoch * c["steps_per_epoch"], (epoch + 1) * c["steps_per_epoch"]):
            if obs is None:
                obs = np.asarray(
                    env.reset(seed=episode_seed(seed, TRAIN, 0, episodes))[0], np.float32
                )
            eps = c["eps_start"] + min(1.0, t / c["exploration"]) * (c["eps_end"] - c["eps_start"])
            with torch.no_grad():
                a = int(q(torch.from_numpy(obs[None])).argmax(1)[0])
            if act_rng.random() < eps:
                a = int(act_rng.integers(2))
            nxt, r, term, trunc, _ = env.step(a)
            buf["obs"][at], buf["a"][at], buf["r"][at], buf["term"][at] = obs, a, r, term
            buf["next"][at] = nxt
            at, size = (at + 1) % cap, min(cap, size + 1)
            obs = None if (term or trunc) else np.asarray(nxt, np.float32)
            episodes += obs is None
            if size < c["starts"]:
                continue
            idx = replay_rng.integers(0, size, c["batch"])
            s, s2 = torch.from_numpy(buf["obs"][idx]), torch.from_numpy(buf["next"][idx])
            with torch.no_grad():
                choice = q(s2).argmax(1, keepdim=True)
                future = target(s2).gather(1, choice)[:, 0]
                y = (
                    torch.from_numpy(buf["r"][idx])
                    + c["gamma"] * (1 - torch.from_numpy(buf["term"][idx])) * future
                )
            q_sa = q(s).gather(1, torch.from_numpy(buf["a"][idx])[:, None])[:, 0]
            loss = F.huber_loss(q_sa, y, delta=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            updates += 1
            if updates % c["target_update"] == 0:
                target.load_state_dict(q.state_dict())
        mean = check.mean()
        if best is None or mean >= best:
            best, best_state = mean, {k: v.clone() for k, v in q.state_dict().items()}
        if mean >= SOLVED:
            break
    wall = time.perf_counter() - start
    q.load_state_dict(best_state)
    test = _Greedy(q, TEST, seed, TEST_EPISODES).mean()
    return wall, epochs, episodes, epochs * c["steps_per_epoch"], best >= SOLVED, test


def worker(framework, algo, seed, torch_threads=THREADS):
    if framework == "torch":
        import torch

        torch.set_num_threads(torch_threads)
        run = torch_pg if algo == "pg" else torch_dqn
    else:
        run = run_splitgrad
    args = (seed,) if framework == "torch" else (algo, seed)
    wall, epochs, episodes, steps, solved, test = run(*args)
    return {
        "framework": framework,
        "algo": algo,
        "seed": seed,
        "wall_s": round(wall, 2),
        "epochs": epochs,
        "episodes": episodes,
        "steps": steps,
        "steps_per_s": round(steps / wall, 1),
        "solved": solved,
        "test_mean_return": test,
        "blas": blas_kernel(),
        "torch_threads": torch_threads if framework == "torch" else None,
    }


def child_env(kernel):
    env = {**os.environ, "GLIBC_TUNABLES": TUNABLES}
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    if kernel == "haswell":
        env["OPENBLAS_CORETYPE"] = "Haswell"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")] if p
    )
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", choices=["pg", "dqn"], default=["pg", "dqn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--kernel", choices=["user", "haswell"], default="user")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=THREADS,
        help="torch.set_num_threads (2 by the benchmark rules; 1 suits these tiny networks)",
    )
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument(
        "--worker", nargs=3, metavar=("FRAMEWORK", "ALGO", "SEED"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        framework, algo, seed = args.worker
        print(json.dumps(worker(framework, algo, int(seed), args.torch_threads)))
        return
    rows = []
    for algo in args.algos:
        for seed in args.seeds:
            for framework in ("splitgrad", "torch"):  # interleaved: drift hits both alike
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        framework,
                        algo,
                        str(seed),
                        "--torch-threads",
                        str(args.torch_threads),
                    ],
                    env=child_env(args.kernel),
                    check=True,
                    capture_output=True,
                    text=True,
                )
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    print(
        f"\nkernel setting: {args.kernel} ({rows[0]['blas']}); torch threads "
        f"{args.torch_threads}; GLIBC_TUNABLES={TUNABLES}"
    )
    print("algo  framework   median wall s  median episodes  median steps/s  solved  test mean")
    for algo in args.algos:
        for framework in ("splitgrad", "torch"):
            mine = [r for r in rows if r["algo"] == algo and r["framework"] == framework]
            print(
                f"{algo:<5} {framework:<10} {statistics.median(r['wall_s'] for r in mine):>14.1f}"
                f" {statistics.median(r['episodes'] for r in mine):>16.0f}"
                f" {statistics.median(r['steps_per_s'] for r in mine):>15.0f}"
                f"  {sum(r['solved'] for r in mine)}/{len(mine)}"
                f"  {statistics.median(r['test_mean_return'] for r in mine):>9.1f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
