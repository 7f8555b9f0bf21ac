"""Built-in datasets: scikit-learn's bundled tables, IDX images (Fashion-MNIST) and text corpora.

from splitgrad import datasets
x_train, y_train, x_test, y_test, meta = datasets.load_iris()
"""

from ..data import DataSplit as DataSplit
from .idx import FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES
from .idx import IDXError as IDXError
from .idx import load_fashion_mnist as load_fashion_mnist
from .idx import load_mnist_format as load_mnist_format
from .idx import read_idx as read_idx
from .idx import write_idx as write_idx
from .tabular import load_breast_cancer as load_breast_cancer
from .tabular import load_diabetes as load_diabetes
from .tabular import load_digits as load_digits
from .tabular import load_iris as load_iris
from .text import CharVocab as CharVocab
from .text import RandomWindows as RandomWindows
from .text import WordVocab as WordVocab
from .text import irish_text as irish_text
from .text import load_irish_songs as load_irish_songs
from .text import load_text_corpus as load_text_corpus
from .text import random_sequence_batches as random_sequence_batches
from .text import tokenize as tokenize
