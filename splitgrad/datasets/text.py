"""Text data: the MIT lab-1 Irish folk songs, a fortunes corpus, vocabularies and LM batches.

text = irish_text()                       # 817 songs joined with "\\n\\n"
vocab = CharVocab(text)                   # 83 characters
ids = vocab.encode(text)
x, y = random_sequence_batches(ids, seq_len=100, batch_size=8, rng=rng)
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import numpy as np

from ..random import get_rng

__all__ = [
    "FORTUNES_DIR",
    "CharVocab",
    "WordVocab",
    "irish_text",
    "load_irish_songs",
    "load_text_corpus",
    "random_sequence_batches",
    "tokenize",
]

FORTUNES_DIR = Path("/usr/share/games/fortunes")

# The lab's song pattern: a song runs from the start or a blank line to the next blank line.
_SONG = re.compile(r"(^|\n\n)(.*?)\n\n", re.DOTALL)
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
_FORTUNE_SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def _irish_songs() -> tuple[str, ...]:
    text = resources.files("splitgrad.datasets").joinpath("files/irish.abc").read_text("utf-8")
    # MIT's lab extracts songs with regex.findall(..., overlapped=True): the search restarts one
    # character after each match start, so runs of three newlines yield a few extra snippets and
    # the unterminated last song is dropped. We reproduce that to get the lab's 817 songs.
    songs, pos = [], 0
    while (m := _SONG.search(text, pos)) is not None:
        songs.append(m.group(2))
        pos = m.start() + 1
    return tuple(songs)


def load_irish_songs() -> list[str]:
    """The 817 ABC-notation songs of MIT 6.S191 lab 1 (packaged irish.abc, MIT licence)."""
    return list(_irish_songs())


def irish_text() -> str:
    """All Irish songs joined with blank lines: 200,679 characters over 83 distinct ones."""
    return "\n\n".join(_irish_songs())


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


class CharVocab:
    """Sorted distinct characters ↔ ids 0..n−1; encoding an unseen character raises ValueError."""

    def __init__(self, chars: Iterable[str]):
        self.chars: list[str] = sorted(set(chars))
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("CharVocab: expected single characters (or one string of text).")
        self.index = {c: i for i, c in enumerate(self.chars)}
        self._codes = _codepoints("".join(self.chars))  # sorted, so searchsorted can look up

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """int64 ids of each character of `text`."""
        codes = _codepoints(text)
        ids = np.searchsorted(self._codes, codes)
        known = ids < len(self._codes)
        known[known] = self._codes[ids[known]] == codes[known]
        if not known.all():
            unknown = sorted({chr(c) for c in codes[~known]})
            raise ValueError(
                f"CharVocab.encode: {len(unknown)} character(s) not in the vocabulary: "
                f"{', '.join(map(repr, unknown))}. Use only characters seen in training "
                "(e.g. a generation seed like 'X'), or rebuild the vocabulary with them."
            )
        return ids.astype(np.int64)

    def decode(self, ids) -> str:
        """The text whose characters have these ids."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(
                f"CharVocab.decode: ids must lie in [0, {len(self) - 1}], got range "
                f"[{ids.min()}, {ids.max()}]."
            )
        return self._codes[ids].astype("<u4").tobytes().decode("utf-32-le")

    def to_json(self) -> str:
        return json.dumps({"type": "CharVocab", "chars": self.chars}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> CharVocab:
        return cls(json.loads(text)["chars"])


def tokenize(text: str) -> list[str]:
    """Lower-cased words (keeping inner apostrophes, "don't") and single punctuation marks."""
    return _TOKEN.findall(text.lower())


class WordVocab:
    """Words ↔ ids, id 0 = "<unk>" for every word not in the vocabulary.

    Built by frequency (ties alphabetical) with `from_corpus(corpus, min_count, max_size)`.
    """

    UNK = "<unk>"

    def __init__(self, tokens: Iterable[str]):
        tokens = list(tokens)
        if not tokens or tokens[0] != self.UNK:
            tokens = [self.UNK] + [t for t in tokens if t != self.UNK]
        if len(set(tokens)) != len(tokens):
            raise ValueError("WordVocab: tokens must be distinct.")
        self.tokens: list[str] = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        self.unk_id = 0

    @classmethod
    def from_corpus(cls, corpus, min_count: int = 1, max_size: int | None = None) -> WordVocab:
        """Keep words seen ≥ min_count times, the most frequent first, at most max_size ids
        (counting "<unk>"). `corpus` is a text, an iterable of texts, or of token lists."""
        if max_size is not None and max_size < 1:
            raise ValueError(f"WordVocab: max_size must be ≥ 1 (room for <unk>), got {max_size}.")
        docs = [corpus] if isinstance(corpus, str) else corpus
        counts = Counter()
        for doc in docs:
            counts.update(tokenize(doc) if isinstance(doc, str) else doc)
        counts.pop(cls.UNK, None)
        words = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max_size - 1]
        return cls([cls.UNK, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def encode(self, text_or_tokens) -> np.ndarray:
        """int64 ids; a string is tokenised first, unknown words map to `unk_id`."""
        tokens = tokenize(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens
        get = self.index.get
        return np.fromiter((get(t, 0) for t in tokens), dtype=np.int64)

    def decode(self, ids) -> list[str]:
        """The tokens for these ids (unknown words come back as "<unk>")."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(
                f"WordVocab.decode: ids must lie in [0, {len(self) - 1}], got range "
                f"[{ids.min()}, {ids.max()}]."
            )
        return [self.tokens[i] for i in ids.tolist()]

    def to_json(self) -> str:
        return json.dumps({"type": "WordVocab", "tokens": self.tokens}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> WordVocab:
        return cls(json.loads(text)["tokens"])


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e}); convert it, e.g. with iconv.") from e


def _split_fortunes(text: str) -> list[str]:
    return [doc.strip() for doc in _FORTUNE_SEPARATOR.split(text) if doc.strip()]


def load_text_corpus(path=None) -> list[str]:
    """Documents of a text corpus, split on lines holding only '%' (the fortune format).

    path=None reads every fortune file in Debian's /usr/share/games/fortunes (skipping the .dat
    indexes and the .u8 duplicate links); a folder reads its files the same way; a file without
    '%' lines is one document.
    """
    if path is None:
        if not FORTUNES_DIR.is_dir():
            raise FileNotFoundError(
                f"No text corpus: {FORTUNES_DIR} is missing. Run `apt-get install fortunes`, or "
                "pass a UTF-8 text file (path=..., or --text FILE on the command line)."
            )
        path = FORTUNES_DIR
    path = Path(path)
    if path.is_dir():
        files = [
            p
            for p in sorted(path.iterdir())
            if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
        ]
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(
            f"Text corpus {path} does not exist; pass an existing UTF-8 text file "
            "(or run `apt-get install fortunes` and pass nothing)."
        )
    docs = [doc for f in files for doc in _split_fortunes(_read_utf8(f))]
    if not docs:
        raise ValueError(f"Text corpus {path} holds no text.")
    return docs


def random_sequence_batches(ids, seq_len: int, batch_size: int, rng=None):
    """One batch of (x, y), both int64 (batch_size, seq_len): x = s[i:i+L], y = s[i+1:i+L+1].

    Start indices i are drawn uniformly from every valid position (MIT lab 1's batching);
    `rng` is a NumPy Generator, by default splitgrad's.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"random_sequence_batches: ids must be 1-D, got shape {ids.shape}.")
    if seq_len < 1 or batch_size < 1:
        raise ValueError(
            "random_sequence_batches: seq_len and batch_size must be positive, got "
            f"{seq_len} and {batch_size}."
        )
    if len(ids) < seq_len + 1:
        raise ValueError(
            f"random_sequence_batches: a sequence of {len(ids)} ids is too short "
            f"for seq_len={seq_len}; need at least seq_len + 1 = {seq_len + 1}."
        )
    rng = get_rng() if rng is None else rng
    starts = rng.integers(0, len(ids) - seq_len, size=batch_size)
    offsets = starts[:, None] + np.arange(seq_len)
    return ids[offsets].astype(np.int64), ids[offsets + 1].astype(np.int64)


class RandomWindows:
    """A batch source (for `Model.fit`) of `steps` random windows per epoch, MIT lab 1's
    batching: each batch is `random_sequence_batches(ids, seq_len, batch_size, rng)`.

    The windows are drawn from `rng` (by default splitgrad's generator, so `splitgrad.seed`
    fixes them); an "epoch" is just a block of `steps` batches.
    """

    def __init__(self, ids, seq_len: int, batch_size: int, steps: int, rng=None):
        self.ids, self.seq_len, self.batch_size = np.asarray(ids), int(seq_len), int(batch_size)
        self.steps = int(steps)
        self.rng = get_rng() if rng is None else rng

    def __len__(self) -> int:
        return self.steps

    def batches(self, epoch: int):
        for _ in range(self.steps):
            yield random_sequence_batches(self.ids, self.seq_len, self.batch_size, self.rng)
