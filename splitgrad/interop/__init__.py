"""Models in and out of other tools: ONNX export, weights from PyTorch and Keras files.

Each module here needs an optional extra (`pip install splitgrad[onnx]`, `splitgrad[keras]`)
and imports it only when called, so `import splitgrad` never needs them.
"""

from ._matching import ForeignWeightsError as ForeignWeightsError
from ._matching import LoadReport as LoadReport
from .keras_weights import load_keras_weights as load_keras_weights
from .torch_weights import load_torch_state_dict as load_torch_state_dict
