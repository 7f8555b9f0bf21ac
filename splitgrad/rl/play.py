"""`splitgrad play RUN_DIR`: the trained policy of a reinforcement-learning run, acting.

    splitgrad play runs/cartpole-pg --episodes 20 --gif cartpole.gif

plays `--episodes` greedy episodes (seeded from `--seed`; other episodes than the ones
training, validation and the test metric used), prints their mean return, and with `--gif`
saves the first one as an animated GIF (gymnasium's rgb_array frames; CartPole's renderer
needs pygame, `pip install "gymnasium[classic-control]"`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointError, load_model
from ..validate import cli_type, positive_int
from .agent import Agent
from .env import describe, episode_seed
from .rollout import EpisodeRunner

PLAY = 3  # the episode stream of `play` (rollout.TRAIN, VALIDATION, TEST are 0, 1, 2)


def load_agent(path):
    """(agent, environment id) of a run folder saved by an RL recipe; else one clear error."""
    model = load_model(path)
    if not isinstance(model, Agent):
        raise CheckpointError(
            f"{path}: holds a {type(model).__name__}, not an agent; train one with "
            "`splitgrad train cartpole-pg` (or cartpole-dqn) and play that run"
        )
    env_id = (getattr(model, "saved_extra", {}) or {}).get("env")
    if not env_id:
        raise CheckpointError(
            f"{path}: the run does not say which environment it was trained in (no 'env' in "
            "its saved extra); save agents with `splitgrad train`"
        )
    info = describe(env_id)
    if (info.obs_size, info.n_actions) != (model.input_shape[-1], model.n_actions):
        raise CheckpointError(
            f"{path}: the agent takes {model.input_shape[-1]} observations and "
            f"{model.n_actions} actions, but {env_id} has {info.obs_size} and "
            f"{info.n_actions}; the run folder was altered"
        )
    return model, env_id


def play(path, episodes: int = 10, seed: int = 0, gif=None) -> dict:
    """Returns {"env", "returns", "mean_return", "gif"}; with `gif`, the first episode is
    rendered into that file."""
    agent, env_id = load_agent(path)
    episodes = positive_int(episodes, "play: episodes")
    seeds = [episode_seed(seed, PLAY, k) for k in range(episodes)]
    runner = EpisodeRunner(env_id)
    try:
        returns = [float(e["rewards"].sum()) for e in runner.play(agent, seeds)]
    finally:
        runner.close()
    out = {"env": env_id, "returns": returns, "mean_return": float(np.mean(returns)), "gif": None}
    if gif is not None:
        out["gif"] = str(record_gif(agent, env_id, seeds[0], gif))
    return out


def record_gif(agent, env_id, env_seed, path, max_frames=None):
    """Render one greedy episode into an animated GIF at the environment's frame rate."""
    import gymnasium as gym

    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"--gif {path}: the folder {path.parent} does not exist; create it first")
    runner = EpisodeRunner(env_id, render=True)
    try:
        frames = runner.play(agent, [env_seed], frames=True)[0]["frames"]
        fps = runner.envs[0].metadata.get("render_fps") or 30
    except gym.error.DependencyNotInstalled as exc:
        raise ValueError(
            f"rendering {env_id} needs a package that is not installed: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    finally:
        runner.close()
    frames = [f for f in frames if f is not None][:max_frames]
    if not frames:
        raise ValueError(f"{env_id} rendered no frames (its rgb_array rendering returned None)")
    save_gif(frames, path, fps)
    return path


def save_gif(frames, path, fps: float):
    """Write rgb frames (H, W, 3) uint8 as a looping GIF."""
    from PIL import Image

    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
        optimize=False,
    )


def _cmd_play(args):
    start = time.perf_counter()
    result = play(args.run, episodes=args.episodes, seed=args.seed, gif=args.gif)
    returns = np.asarray(result["returns"])
    print(
        f"{result['env']}: mean return {returns.mean():.2f} over {len(returns)} episode(s) "
        f"(min {returns.min():g}, max {returns.max():g}; {time.perf_counter() - start:.1f} s)"
    )
    if result["gif"]:
        print(f"saved the first episode to {result['gif']}")


def add_cli(subparsers):
    """Add `splitgrad play RUN_DIR --episodes N [--gif FILE]`."""
    p = subparsers.add_parser("play", help="run a trained RL policy and report its mean return")
    p.add_argument("run", help="a run folder of cartpole-pg or cartpole-dqn (runs/cartpole-pg)")
    p.add_argument(
        "--episodes", type=cli_type(positive_int, "--episodes"), default=10, help="episodes to play"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the episodes' starting states")
    p.add_argument("--gif", help="save the first episode as an animated GIF to this file")
    p.set_defaults(func=_cmd_play)
