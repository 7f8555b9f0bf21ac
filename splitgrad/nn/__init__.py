"""Layers and models. `from splitgrad import nn; nn.Dense(10)`."""

from ..model import Model as Model
from ..model import Sequential as Sequential
from . import activations as activations
from . import init as init
from . import regularizers as regularizers
from .conv import AveragePooling2D as AveragePooling2D
from .conv import AvgPool2D as AvgPool2D
from .conv import Conv2D as Conv2D
from .conv import Conv2DTranspose as Conv2DTranspose
from .conv import GlobalAveragePooling2D as GlobalAveragePooling2D
from .conv import MaxPool2D as MaxPool2D
from .conv import MaxPooling2D as MaxPooling2D
from .core import Activation as Activation
from .core import Dense as Dense
from .core import Dropout as Dropout
from .core import Flatten as Flatten
from .core import Reshape as Reshape
from .embedding import Embedding as Embedding
from .layer import Layer as Layer
from .layer import Parameter as Parameter
from .normalization import BatchNormalization as BatchNormalization
from .recurrent import GRU as GRU
from .recurrent import LSTM as LSTM
from .recurrent import Bidirectional as Bidirectional
from .recurrent import SimpleRNN as SimpleRNN
