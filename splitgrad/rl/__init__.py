"""Reinforcement learning on gymnasium environments, trained by the one loop (`Model.fit`).

    from splitgrad import rl, optim
    info = rl.describe("CartPole-v1")
    agent = rl.Reinforce(info.n_actions, hidden=(32,), gamma=0.95)
    agent.build_from_sample(np.zeros((1, info.obs_size), "float32"))
    agent.compile(optimizer=optim.Adam(learning_rate=1e-3))
    agent.fit(rl.EpisodeBatches(agent, "CartPole-v1", episodes=4, batches=25), epochs=10)
    rl.evaluate_policy(agent, "CartPole-v1", episodes=100)

Where things are: env.py (which environments work, episode seeds), returns.py (discounted and
normalised returns), rollout.py (playing episodes; the collectors an actor runs), replay.py
(the replay buffer), agent.py (the Agent base), reinforce.py and dqn.py (the two agents),
sources.py (batch sources of experience for `fit`), evaluation.py (mean return, the solved-mark
callback, the reward curve), play.py (`splitgrad play`). Acting at other places than the
learner is a way of splitting training: splitgrad/split/acting.py.
"""

from .agent import Agent as Agent
from .agent import EpisodeReturn as EpisodeReturn
from .dqn import DQN as DQN
from .dqn import huber as huber
from .env import EnvInfo as EnvInfo
from .env import UnsupportedEnvironment as UnsupportedEnvironment
from .env import describe as describe
from .env import make_env as make_env
from .evaluation import EvaluateReturn as EvaluateReturn
from .evaluation import evaluate_policy as evaluate_policy
from .evaluation import plot_rewards as plot_rewards
from .reinforce import Reinforce as Reinforce
from .replay import ReplayBuffer as ReplayBuffer
from .returns import batch_returns as batch_returns
from .returns import discounted_returns as discounted_returns
from .returns import normalize as normalize
from .rollout import EpisodeRunner as EpisodeRunner
from .sources import EpisodeBatches as EpisodeBatches
from .sources import ReplayBatches as ReplayBatches
