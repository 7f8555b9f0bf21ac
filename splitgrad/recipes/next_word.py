"""next-word: a word-level LSTM language model on Debian's fortunes (or any text, `--text FILE`).

Each document is tokenised (lower-case words and punctuation) and ends in "<eos>"; words seen
fewer than twice, or beyond the 8,000 most frequent, map to "<unk>". Embedding 128 → LSTM 256
(return_sequences) → Dense over the vocabulary, batch 32 random windows of 32 tokens, Adam 2e-3.
Quick mode: the first 400 documents, at most 500 words, Embedding 16 → LSTM 32, 2 × 10 steps.

`splitgrad generate next-word --prompt "..."` lists the most likely next words (splitgrad.generate).
"""

from __future__ import annotations

import types

from splitgrad.datasets import WordVocab, load_text_corpus, tokenize
from splitgrad.recipes import irish_lstm

DESCRIPTION = "word LSTM 128-256 language model on fortunes or --text FILE (next word)"
DEFAULTS = {"epochs": 10, "batch_size": 32, "learning_rate": 2e-3, "iterations": 100, "seq_len": 32}
QUICK = {"epochs": 2, "iterations": 10}
TASK = "sequence"
EOS = "<eos>"
SIZES = {"embedding": 128, "units": 256, "max_words": 8000, "min_count": 2}
QUICK_SIZES = {"embedding": 16, "units": 32, "max_words": 500, "min_count": 1, "documents": 400}
TEST_FRACTION = 0.05


def load_data(quick=False, seed=0, text=None):
    """Token ids of the corpus (fortunes, or the UTF-8 file `text`), held-out windows, `.vocab`."""
    sizes = QUICK_SIZES if quick else SIZES
    docs = load_text_corpus(text)
    if quick:
        docs = docs[: sizes["documents"]]
    token_lists = [tokenize(doc) + [EOS] for doc in docs]
    vocab = WordVocab.from_corpus(
        token_lists, min_count=sizes["min_count"], max_size=sizes["max_words"]
    )
    ids = [i for tokens in token_lists for i in vocab.encode(tokens)]
    train_ids, x_test, y_test = irish_lstm.split_ids(
        ids, DEFAULTS["seq_len"], TEST_FRACTION, max_test_windows=16 if quick else 256
    )
    return types.SimpleNamespace(
        ids=train_ids, x_test=x_test, y_test=y_test, vocab=vocab, sizes=sizes, meta={"task": TASK}
    )


# The model (Embedding → LSTM → Dense logits, Adam), its training on random windows and the
# saved vocabulary are irish-lstm's, at word level: only the data and the sizes differ.
build_model = irish_lstm.build_model
batches = irish_lstm.batches
saved_extra = irish_lstm.saved_extra
