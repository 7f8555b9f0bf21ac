"""Layers and models. `from splitgrad import nn; nn.Dense(10)`."""

from ..model import Model as Model
from ..model import Sequential as Sequential
from . import activations as activations
from . import init as init
from . import regularizers as regularizers
from .core import Activation as Activation
from .core import Dense as Dense
from .core import Dropout as Dropout
from .core import Flatten as Flatten
from .core import Reshape as Reshape
from .layer import Layer as Layer
from .layer import Parameter as Parameter
