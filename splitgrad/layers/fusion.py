"""Where Sequential runs several layers as one op. Three cases, each taken only where nothing
can tell the difference (same output and gradients, rounded differently within float
precision, or the same bits):

1. A first Conv2D(relu) and the MaxPool2D after it:

    Conv2D(filters, k, activation="relu") → MaxPool2D(2)   ==>   ops.conv_pool.conv_relu_pool

The fused op never writes the conv's full-size output (lab CNN: its first conv and pool went
from 2.6 to about 1.2 ms a training step). Taken when:
- the conv is built, has a ReLU, "valid" padding, stride 1, no dilation and at most
  `conv_pool.MAX_CHANNELS` input channels; the pool is built, 2×2 with stride 2, "valid";
- the input needs no gradient (a network's input: the fused op computes none for it), and no
  per-example gradients are being recorded (DP-SGD reads the conv's receptive fields);
- the compiled kernels are there for the dtype (numba; else the layers run one by one).

2. An Embedding feeding a SimpleRNN, LSTM or GRU:

    Embedding(V, d) → LSTM(H)   ==>   table = E·W_ih (V × 4H), then the LSTM looks rows up by id

x_t·W_ih with x_t = E[id] is row `id` of E·W_ih, so the recurrent op's input projection, its
input gradient and its W_ih gradient (three products with batch·time rows) become one product
with V rows each way: the op sums each id's gate gradients into the table's gradient, and the
product that made the table turns that into dE and dW_ih (ops/recurrent.py). The music model
(83 characters, 800 tokens a batch, LSTM 1024) does 18 % fewer multiply-adds per step. Taken
when the batch has at least V ids (else the table costs more than it saves), both layers are
built with one dtype, and no per-example gradients are recorded (DP-SGD's sites are per token).

3. A stack of Dense layers:

    Dense(a, "relu") → Dense(b, "relu") → Dense(c)   ==>   ops.linalg.DenseChain, then c's own
                                                           activation

A small MLP's training step is mostly Python: each layer is a Linear node and an activation
node, each with its own bookkeeping forward and backward. As one node, W5 (MLP 30-16-1,
batch 32) went from 75 to 70 µs a step; results are the same bits (the same NumPy calls).
Taken for two or more Dense layers in a row, every one but the last with a linear, ReLU,
sigmoid or tanh activation (the last keeps its own, so a softmax or sigmoid output still
reaches the loss with its logits), all built with one dtype and sizes that chain, and no
per-example gradients being recorded (DP-SGD's site is each Dense).

Anything else, or a model that is not a Sequential, runs the layers one after the other.
"""

from __future__ import annotations

from .. import functional as F
from .. import ops
from .._kernels.compiled import conv_pool_kernels
from ..ops import conv_pool
from ..ops.linalg import DenseChain
from ..tensor import Tensor
from . import per_example
from .conv import Conv2D, MaxPool2D, check_nhwc
from .core import Dense
from .embedding import Embedding
from .recurrent import GRU, LSTM, SimpleRNN

# The inner activations a DenseChain runs itself (ops.linalg.CHAIN_ACTIVATIONS), by function.
_CHAINED = {
    F.linear_activation: "linear",
    ops.relu: "relu",
    ops.sigmoid: "sigmoid",
    ops.tanh: "tanh",
}


def run_fused(layers, i, x):
    """(y, n): the output of layers[i : i + n] run as one op where this module's rules allow
    it (n ≥ 2), else None (then the caller runs layers[i] alone)."""
    if i + 1 >= len(layers):
        return None
    first, second = layers[i], layers[i + 1]
    y = conv_relu_pool(first, second, x)
    if y is None:
        y = embedding_recurrent(first, second, x)
    if y is not None:
        return y, 2
    return dense_chain(layers, i, x)


def fusable(conv, pool) -> bool:
    """True when the layer pair `conv`, `pool` may run as one conv_relu_pool op (any input)."""
    return (
        type(conv) is Conv2D
        and type(pool) is MaxPool2D
        and conv.built
        and pool.built
        and conv.activation_name == "relu"
        and conv.padding in ("valid", 0)
        and conv.strides == (1, 1)
        and conv.dilation_rate == (1, 1)
        and conv.kernel.shape[2] <= conv_pool.MAX_CHANNELS
        and pool.pool_size == (2, 2)
        and pool.strides == (2, 2)
        and pool.padding in ("valid", 0)
    )


def conv_relu_pool(conv, pool, x):
    """pool(conv(x)) as one op where this module's rules allow it, else None (then the caller
    runs the layers one by one)."""
    if not fusable(conv, pool) or per_example.recording_now():
        return None
    if isinstance(x, Tensor) and x.requires_grad:
        return None
    x = conv.to_tensor(x)
    if conv_pool_kernels(x.dtype) is None:
        return None
    check_nhwc(conv, x.shape, conv.kernel.shape[2])
    if x.shape[1] < conv.kernel_size[0] + 1 or x.shape[2] < conv.kernel_size[1] + 1:
        return None  # no whole pool window: the layers say why, one by one
    return conv_pool.conv_relu_pool(x, conv.kernel, conv.bias, ws=conv._ws)


def embedding_recurrent(embedding, rnn, x):
    """rnn(embedding(x)) with the input projection looked up by id, where the rules above
    allow it, else None."""
    if type(embedding) is not Embedding or type(rnn) not in (SimpleRNN, LSTM, GRU):
        return None
    if not (embedding.built and rnn.built) or embedding.dtype != rnn.dtype:
        return None
    if rnn.w_ih.shape[0] != embedding.output_dim or per_example.recording_now():
        return None  # a size mismatch: the layers one by one say what is wrong
    x = embedding.to_tensor(x)
    if x.ndim != 2 or x.data.size < embedding.input_dim:
        return None
    ids = embedding.checked_ids(x)
    return rnn.call_projected(embedding.embeddings @ rnn.w_ih, ids)


def dense_chain(layers, i, x):
    """(y, n): layers[i : i + n], n ≥ 2 Dense layers, as one DenseChain op and the last one's
    activation, where the rules above allow it, else None."""
    first = layers[i]
    if type(first) is not Dense or not first.built or per_example.recording_now():
        return None
    chain, acts = [first], []
    for layer in layers[i + 1 :]:
        last = chain[-1]
        act = _CHAINED.get(last.activation)
        if type(layer) is not Dense or not layer.built or act is None:
            break
        if layer.dtype != first.dtype or layer.kernel.shape[0] != last.kernel.shape[1]:
            break  # (a size mismatch: the layer alone says what is wrong)
        chain.append(layer)
        acts.append(act)
    if len(chain) < 2:
        return None
    x = first.to_tensor(x)
    first.expect_last_dim(x, first.kernel.shape[0])
    weights = [w for layer in chain for w in (layer.kernel, layer.bias)]
    y = DenseChain.apply(x, *weights, acts=tuple(acts))
    return chain[-1].activation(y), len(chain)
