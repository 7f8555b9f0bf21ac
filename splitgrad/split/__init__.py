"""Split training across places: each way of the catalogue as an object for `model.fit(way=)`.

    from splitgrad.split import DataParallel, RayPlaces
    model.fit(x, y, way=DataParallel(workers=2, places=RayPlaces(2)))

`history.traffic` then reports what crossed each boundary. `print_ways()` lists the catalogue
(docs/split-training.md); `compare(...)` runs a recipe under every registered way.

Where things are: base.py (the Way base and its step function for the training loop),
places.py and host.py (where steps run: inline or Ray actors), allreduce.py (the one
all-reduce), replicas.py (model replicas as plain data), accounting.py (what crossed), one
module per way (its driver side and its place ops together), registry.py (the list of ways).
"""

from .accounting import Traffic as Traffic
from .accumulation import GradientAccumulation as GradientAccumulation
from .base import NotApplicable as NotApplicable
from .base import Way as Way
from .catalogue import print_ways as print_ways
from .compare import compare as compare
from .data_parallel import DataParallel as DataParallel
from .distillation import Distillation as Distillation
from .dp_sgd import DPSGD as DPSGD
from .federated import DPFedAvg as DPFedAvg
from .federated import Federated as Federated
from .federated import FedProx as FedProx
from .federated import RobustFederated as RobustFederated
from .federated import partition as partition
from .local_learning import LocalLearning as LocalLearning
from .local_learning import SyntheticGradients as SyntheticGradients
from .local_sgd import DiLoCo as DiLoCo
from .local_sgd import LocalSGD as LocalSGD
from .offload import Offload as Offload
from .offload import OffloadDelayed as OffloadDelayed
from .parameter_server import ParameterServer as ParameterServer
from .pipeline import Pipeline as Pipeline
from .places import DataLost as DataLost
from .places import Inline as Inline
from .places import PlaceFailure as PlaceFailure
from .places import PlaceUnreachable as PlaceUnreachable
from .places import RayPlaces as RayPlaces
from .recompute import ActivationCheckpointing as ActivationCheckpointing
from .registry import WAYS as WAYS
from .registry import make_way as make_way
from .registry import register as register
from .resume import CheckpointResume as CheckpointResume
from .resume import resume as resume
from .split_learning import SplitLearning as SplitLearning
from .split_learning import USplitLearning as USplitLearning
from .tensor_parallel import TensorParallel as TensorParallel
from .tensor_shards import MegatronPair as MegatronPair
from .zero import Zero as Zero
