"""Callbacks: hooks that `fit` calls at the start and end of training, epochs and batches.

| file             | callbacks                                                       |
|------------------|-----------------------------------------------------------------|
| base.py          | Callback, CallbackList, History (always on), LambdaCallback     |
| progress.py      | ProgressBar (tqdm, on by default)                               |
| stopping.py      | EarlyStopping, TerminateOnNaN                                   |
| saving.py        | ModelCheckpoint, CSVLogger                                      |
| learning_rate.py | LearningRateScheduler, ReduceLROnPlateau                        |
| tensorboard.py   | TensorBoard (event files for TensorBoard; splitgrad/tensorboard)|

Names, arguments and defaults are Keras's. `TensorBoard` is imported on first use, so that
`import splitgrad` never loads the optional tensorboard package.
"""

from __future__ import annotations

from .base import Callback as Callback
from .base import CallbackList as CallbackList
from .base import History as History
from .base import LambdaCallback as LambdaCallback
from .learning_rate import LearningRateScheduler as LearningRateScheduler
from .learning_rate import ReduceLROnPlateau as ReduceLROnPlateau
from .progress import ProgressBar as ProgressBar
from .saving import CSVLogger as CSVLogger
from .saving import ModelCheckpoint as ModelCheckpoint
from .stopping import EarlyStopping as EarlyStopping
from .stopping import TerminateOnNaN as TerminateOnNaN


def __getattr__(name):
    # PEP 562: `splitgrad.callbacks.TensorBoard` loads its module only when asked for.
    if name == "TensorBoard":
        from .tensorboard import TensorBoard

        return TensorBoard
    raise AttributeError(f"module 'splitgrad.callbacks' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "TensorBoard"])
