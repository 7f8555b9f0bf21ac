"""irish-lstm: MIT 6.S191 lab 1's character-level music model on 817 Irish folk songs (ABC).

Embedding(83, 256) → LSTM(1024, return_sequences) → Dense(83) logits; batch 8 random windows
of 100 characters (y is x shifted by one), Adam 5e-3, 3000 iterations. `Model.fit` trains on a
`RandomWindows` batch source: one "epoch" is a block of `iterations` steps, so the History
has a loss curve (nats per character) with a held-out validation loss after each block.
Quick mode: Embedding 32 → LSTM 64, 3 blocks of 10 iterations.

`splitgrad generate irish-lstm` samples new songs from a trained run (splitgrad.generate).
This module's `batches` and `split_ids` also serve the word-level `next-word` recipe.
"""

from __future__ import annotations

import types

import numpy as np

from splitgrad import nn
from splitgrad.datasets import CharVocab, RandomWindows, irish_text
from splitgrad.recipes import compile_classifier

DESCRIPTION = "char LSTM 256-1024-83 on Irish folk songs in ABC (MIT lab 1 music model)"
DEFAULTS = {"epochs": 30, "batch_size": 8, "learning_rate": 5e-3, "iterations": 100, "seq_len": 100}
QUICK = {"epochs": 3, "iterations": 10}
TASK = "sequence"
SIZES = {"embedding": 256, "units": 1024}
QUICK_SIZES = {"embedding": 32, "units": 64}
TEST_FRACTION = 0.05


def split_ids(ids, seq_len, test_fraction, max_test_windows=None):
    """(train ids, x_test, y_test): the last `test_fraction` of the stream, cut into
    non-overlapping windows of seq_len (y shifted by one), is held out from training."""
    ids = np.asarray(ids, dtype=np.int64)
    cut = int(len(ids) * (1.0 - test_fraction))
    test = ids[cut:]
    count = (len(test) - 1) // seq_len
    if max_test_windows is not None:
        count = min(count, max_test_windows)
    if count < 1 or cut < seq_len + 1:
        raise ValueError(
            f"the text has {len(ids)} tokens, too few for sequences of {seq_len}; "
            f"give a longer text (at least {int((seq_len + 1) / test_fraction)})"
        )
    starts = np.arange(count) * seq_len
    windows = starts[:, None] + np.arange(seq_len)
    return ids[:cut], test[windows], test[windows + 1]


def load_data(quick=False, seed=0):
    """The songs as one id stream plus held-out windows; `.vocab` is the CharVocab (83)."""
    text = irish_text()
    vocab = CharVocab(text)
    seq_len = DEFAULTS["seq_len"]
    train_ids, x_test, y_test = split_ids(
        vocab.encode(text), seq_len, TEST_FRACTION, max_test_windows=16 if quick else None
    )
    return types.SimpleNamespace(
        ids=train_ids,
        x_test=x_test,
        y_test=y_test,
        vocab=vocab,
        sizes=QUICK_SIZES if quick else SIZES,
        meta={"task": TASK},
    )


def build_model(learning_rate, data):
    """Embedding → LSTM(return_sequences) → Dense logits over the vocabulary, Adam.
    (next-word uses it too, with words for characters.)"""
    vocab_size = len(data.vocab)
    model = nn.Sequential(
        [
            nn.Embedding(vocab_size, data.sizes["embedding"]),
            nn.LSTM(data.sizes["units"], return_sequences=True),
            nn.Dense(vocab_size),
        ]
    )
    return compile_classifier(model, learning_rate)


def saved_extra(data):
    """The vocabulary and sizes, so generation needs neither the text nor the recipe's data."""
    return {"vocab": data.vocab.to_json(), "sizes": data.sizes}


def batches(data, settings):
    """What `fit` trains on: `epochs` blocks of `iterations` random windows of data.ids (the
    held-out windows serve as validation data after each block)."""
    return RandomWindows(
        data.ids, settings["seq_len"], settings["batch_size"], settings["iterations"]
    )
