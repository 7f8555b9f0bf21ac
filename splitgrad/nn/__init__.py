"""The public namespace of layers and models: `from splitgrad import nn; nn.Dense(10)`.

It only re-exports: the layers live in splitgrad/layers/, Model and Sequential in
splitgrad/model.py (so the layers never depend on the training code above them).
"""

from ..layers import activations as activations
from ..layers import init as init
from ..layers import regularizers as regularizers
from ..layers.conv import AveragePooling2D as AveragePooling2D
from ..layers.conv import AvgPool2D as AvgPool2D
from ..layers.conv import Conv2D as Conv2D
from ..layers.conv import Conv2DTranspose as Conv2DTranspose
from ..layers.conv import GlobalAveragePooling2D as GlobalAveragePooling2D
from ..layers.conv import MaxPool2D as MaxPool2D
from ..layers.conv import MaxPooling2D as MaxPooling2D
from ..layers.core import Activation as Activation
from ..layers.core import Dense as Dense
from ..layers.core import Dropout as Dropout
from ..layers.core import Flatten as Flatten
from ..layers.core import Reshape as Reshape
from ..layers.embedding import Embedding as Embedding
from ..layers.input_layer import Input as Input
from ..layers.input_layer import InputLayer as InputLayer
from ..layers.layer import Layer as Layer
from ..layers.layer import Parameter as Parameter
from ..layers.layer import register as register
from ..layers.merge import Add as Add
from ..layers.merge import Average as Average
from ..layers.merge import Concatenate as Concatenate
from ..layers.merge import Multiply as Multiply
from ..layers.merge import Subtract as Subtract
from ..layers.normalization import BatchNormalization as BatchNormalization
from ..layers.recompute import Recompute as Recompute
from ..layers.recurrent import GRU as GRU
from ..layers.recurrent import LSTM as LSTM
from ..layers.recurrent import Bidirectional as Bidirectional
from ..layers.recurrent import SimpleRNN as SimpleRNN
from ..losses.torch_named import BCELoss as BCELoss
from ..losses.torch_named import BCEWithLogitsLoss as BCEWithLogitsLoss
from ..losses.torch_named import CrossEntropyLoss as CrossEntropyLoss
from ..losses.torch_named import HuberLoss as HuberLoss
from ..losses.torch_named import L1Loss as L1Loss
from ..losses.torch_named import MSELoss as MSELoss
from ..losses.torch_named import NLLLoss as NLLLoss
from ..losses.torch_named import SmoothL1Loss as SmoothL1Loss
from ..model import Model as Model
from ..model import Sequential as Sequential
