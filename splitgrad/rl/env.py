"""Gymnasium environments the agents can act in: a discrete action space and a 1-D vector
observation. CartPole-v1 is built in; Acrobot-v1, MountainCar-v0 or any registered environment
of that shape work without code changes.

    info = describe("CartPole-v1")    # EnvInfo(env_id, obs_size=4, n_actions=2, ...)
    env = make_env("CartPole-v1")     # a gymnasium.Env, checked

Anything else (continuous actions, images, an unknown id, a missing optional package) raises
`UnsupportedEnvironment`, one line saying why and what works. Episodes are seeded one by one
(`episode_seed`), so which episodes a run plays depends only on the run's seed and the
episode's number, never on how many were played at once or at which place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORKS = "CartPole-v1, Acrobot-v1 or MountainCar-v0"
DEFAULT_MAX_STEPS = 1000  # a cap for environments registered without a time limit
_ENV_TAG = 0xE9  # keeps environment seeds apart from the action-sampling streams


class UnsupportedEnvironment(ValueError):
    """The environment id is unknown, or its spaces are not ones the agents handle."""


@dataclass(frozen=True)
class EnvInfo:
    """What an agent needs to know about an environment."""

    env_id: str
    obs_size: int
    n_actions: int
    max_steps: int  # episodes are cut (truncated) after this many steps
    reward_threshold: float | None  # gymnasium's "solved" mark (475 for CartPole-v1)


def make_env(env_id: str, render_mode=None):
    """A gymnasium environment for `env_id`, checked to have discrete actions and a vector
    observation; capped at DEFAULT_MAX_STEPS steps when it has no time limit of its own."""
    import gymnasium as gym

    if not isinstance(env_id, str) or not env_id.strip():
        raise UnsupportedEnvironment(
            f"environment id must be a gymnasium id such as {WORKS}, got {env_id!r}"
        )
    try:
        env = gym.make(env_id, render_mode=render_mode)
    except gym.error.DependencyNotInstalled as exc:
        raise UnsupportedEnvironment(
            f"environment {env_id!r} needs a package that is not installed: {_one_line(exc)}"
        ) from None
    except (gym.error.Error, ModuleNotFoundError, ImportError) as exc:
        raise UnsupportedEnvironment(
            f"unknown gymnasium environment {env_id!r} ({_one_line(exc)}); "
            f"try {WORKS} (gymnasium.pprint_registry() lists them all)"
        ) from None
    try:
        check_spaces(env_id, env.observation_space, env.action_space)
    except UnsupportedEnvironment:
        env.close()
        raise
    if env.spec is None or env.spec.max_episode_steps is None:
        env = gym.wrappers.TimeLimit(env, DEFAULT_MAX_STEPS)
    return env


def check_spaces(env_id, observation_space, action_space):
    """UnsupportedEnvironment unless actions are Discrete(n) and observations a 1-D Box."""
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Discrete):
        kind = "continuous" if isinstance(action_space, spaces.Box) else "structured"
        raise UnsupportedEnvironment(
            f"environment {env_id!r} has {kind} actions ({action_space}); the agents choose "
            f"one of n actions (Discrete(n)): try {WORKS}"
        )
    box = isinstance(observation_space, spaces.Box)
    if not box or len(observation_space.shape) != 1:
        what = (
            f"images of shape {observation_space.shape}"
            if box and len(observation_space.shape) >= 2
            else f"{observation_space}, not a vector"
        )
        raise UnsupportedEnvironment(
            f"environment {env_id!r} observes {what}; the agents need a 1-D vector "
            f"observation (Box of shape (d,)): try {WORKS}"
        )


def describe(env_id: str) -> EnvInfo:
    """The sizes and limits of `env_id` (made once to check it, then closed)."""
    env = make_env(env_id)
    try:
        return EnvInfo(
            env_id=env_id,
            obs_size=int(env.observation_space.shape[0]),
            n_actions=int(env.action_space.n),
            max_steps=int(env.spec.max_episode_steps or DEFAULT_MAX_STEPS),
            reward_threshold=env.spec.reward_threshold,
        )
    finally:
        env.close()


def episode_seed(seed: int, *key) -> int:
    """The seed `env.reset(seed=...)` gets for the episode named by `key` (its stream and
    number, e.g. (TRAIN, 17)) in a run seeded with `seed`."""
    entropy = [int(seed), _ENV_TAG, *(int(k) for k in key)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())
    return text[:200].rstrip(".")
