"""Safe checkpoints: a folder of JSON and safetensors files, vouched for by one manifest,
replaced so that no two crashes lose the last complete copy, and loaded without ever running
code from the files.

A saved model is a folder:
    manifest.json          SHA-256 and size of every other file, the save's generation, the
                           environment (NumPy, splitgrad, BLAS library/kernel/threads), and a
                           checksum of itself (_manifest.py)
    config.json            architecture, input shape, compile settings, optimizer settings and
                           step counts, generator states, the caller's `extra`
    weights.safetensors    every layer weight, keyed by its dotted path ("layers.0.kernel")
    optimizer.safetensors  the optimizer's arrays (moments, buffers), when it has any
    optimizer.NAME.safetensors  the arrays of each further optimizer the model names in
                           `extra_optimizers()` ({NAME: optimizer}, e.g. a GAN's
                           "discriminator"); their settings and step counts are in config.json
                           ("extra_optimizer_states"). A checkpoint without them (saved before
                           they were) loads with a RuntimeWarning: those optimizers start fresh
    ...                    attachments given to save_model (history.json, curves.png)
`save_weights` writes manifest.json and weights.safetensors only.

Where things live:
    _files.py     safe reading (regular files only, exact sizes), durable writes, bounded JSON,
                  safetensors headers checked before allocation
    _manifest.py  the manifest, legacy folders, the environment record
    _folder.py    the refuse-to-clobber check and the crash-safe replacement and recovery
    _state.py     a model's state and the checks run on it before anything is assigned
    _optimizers.py  loading the optimizers' states (the main one and the extra ones)
    _save.py, _load.py   the public save and load functions

Loading raises only CheckpointError (a ValueError) for anything wrong with the files.
"""

from __future__ import annotations

from ._files import CheckpointError as CheckpointError
from ._folder import check_target as check_target
from ._load import load_model as load_model
from ._load import load_weights as load_weights
from ._load import restore as restore
from ._load import saved_extra as saved_extra
from ._manifest import CONFIG as CONFIG
from ._manifest import MANIFEST as MANIFEST
from ._manifest import OPTIMIZER as OPTIMIZER
from ._manifest import WEIGHTS as WEIGHTS
from ._save import MODEL_FORMAT as MODEL_FORMAT
from ._save import MODEL_VERSION as MODEL_VERSION
from ._save import save_model as save_model
from ._save import save_weights as save_weights
