"""splitgrad: a readable deep-learning library with its own autograd engine on NumPy.

import splitgrad as sg
from splitgrad import nn
"""

from . import callbacks as callbacks
from . import data as data
from . import datasets as datasets
from . import functional as functional
from . import losses as losses
from . import metrics as metrics
from . import nn as nn
from . import ops as ops
from . import optim as optim
from . import schedules as schedules
from . import split as split
from .checkpoint import load_model as load_model
from .layers.input_layer import Input as Input
from .layers.layer import register as register
from .model import Model as Model
from .model import Sequential as Sequential
from .model import clone_model as clone_model
from .random import seed as seed
from .tape import GradientTape as GradientTape
from .tensor import Tensor as Tensor
from .tensor import no_grad as no_grad
from .tensor import tensor as tensor

__version__ = "0.1.0"
