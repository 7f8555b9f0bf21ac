"""The registry of ways: every way the command line, the catalogue and `compare` know.

Adding a way = writing its module (driver side, place ops, catalogue entry, options; see
base.py) and naming its class in `BUILT_IN` below. `register(cls)` adds one from outside the
package (a way of your own, e.g. in a course notebook).
"""

from __future__ import annotations

from .accumulation import GradientAccumulation
from .acting import Acting
from .data_parallel import DataParallel
from .distillation import Distillation
from .dp_sgd import DPSGD
from .federated import DPFedAvg, Federated, FedProx, RobustFederated
from .local_learning import LocalLearning, SyntheticGradients
from .local_sgd import DiLoCo, LocalSGD
from .offload import Offload, OffloadDelayed
from .parameter_server import ParameterServer
from .pipeline import Pipeline
from .recompute import ActivationCheckpointing
from .resume import CheckpointResume
from .split_learning import SplitLearning, USplitLearning
from .tensor_parallel import TensorParallel
from .zero import Zero

BUILT_IN = (
    DataParallel,
    ParameterServer,
    LocalSGD,
    DiLoCo,
    Federated,
    FedProx,
    RobustFederated,
    DPSGD,
    DPFedAvg,
    Pipeline,
    TensorParallel,
    Zero,
    Offload,
    OffloadDelayed,
    SplitLearning,
    USplitLearning,
    LocalLearning,
    SyntheticGradients,
    GradientAccumulation,
    CheckpointResume,
    ActivationCheckpointing,
    Distillation,
    Acting,
)

WAYS: dict = {}  # command-line name → way class, in catalogue order


def register(cls):
    """Make a Way subclass known by its `name` (usable as a class decorator)."""
    if not cls.name or cls.name == "way":
        raise ValueError(f"{cls.__name__}: a way needs its own `name` to be registered")
    WAYS[cls.name] = cls
    return cls


for _cls in BUILT_IN:
    register(_cls)


def make_way(name: str, places: int = 2, options=None, where=None):
    """The way called `name` for `--places N` and `--way-option` values (`options`, a dict),
    its places `where` (default: inline)."""
    if name not in WAYS:
        known = ", ".join(WAYS)
        raise ValueError(
            f"unknown way {name!r}; implemented ways: {known} "
            "(`splitgrad ways` lists the whole catalogue)"
        )
    return WAYS[name].from_options(int(places), dict(options or {}), where)
