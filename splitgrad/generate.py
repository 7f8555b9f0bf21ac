"""Generation from trained sequence recipes: Irish songs in ABC, and next-word predictions.

    model, vocab = load_run("runs/irish-lstm", "irish-lstm")
    text = sample_text(model, vocab, start="X", length=1000, temperature=1.0, seed=0)

Generation carries the LSTM state (h, c) from step to step, so each new character costs one
step, not a pass over everything generated so far; `step_logits` is that single move.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, load_model
from .datasets import CharVocab, WordVocab, tokenize
from .tensor import no_grad
from .validate import cli_type, positive_number
from .validate import positive_int as positive_int_check

VOCABS = {"irish-lstm": CharVocab, "next-word": WordVocab}


def load_run(path, recipe):
    """(model, vocab) of a run folder saved by `splitgrad train RECIPE`; else one clear error."""
    model = load_model(path)
    extra = getattr(model, "saved_extra", {}) or {}
    found = extra.get("recipe")
    if found != recipe:
        what = f"recipe {found!r}" if found else "no recipe (not made by `splitgrad train`)"
        raise CheckpointError(
            f"{path}: this run was trained with {what}, not {recipe!r}; "
            f"train one with `splitgrad train {recipe}` or pass its --run"
        )
    return model, VOCABS[recipe].from_json(extra["vocab"])


def _parts(model):
    """The (Embedding, LSTM, head layers) of a recipe's Sequential language model."""
    embedding, lstm, *head = model.layers
    return embedding, lstm, head


def step_logits(model, ids, state=None):
    """Logits (batch, time, vocab) for ids (batch, time) starting from LSTM state [h, c]
    (None = zeros), and the state after the last step."""
    embedding, lstm, head = _parts(model)
    was = lstm.return_state
    lstm.return_state = True  # the saved layer returns sequences only; we need (h, c) too
    try:
        with no_grad():
            x = embedding(np.asarray(ids, dtype=np.int64))
            y, h, c = lstm(x, initial_state=state)
            for layer in head:
                y = layer(y)
    finally:
        lstm.return_state = was
    return y.data, [h.data, c.data]


def softmax(logits, temperature=1.0):
    """softmax(logits / temperature) over the last axis, in float64 so it sums to 1."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def sample_text(model, vocab, start="X", length=1000, temperature=1.0, seed=0):
    """`start` followed by `length` characters sampled one by one from softmax(logits / T)."""
    if length < 0:
        raise ValueError(f"length must be ≥ 0, got {length}")
    if not start:
        raise ValueError("the start text must hold at least one character, e.g. 'X'")
    model.eval()
    rng = np.random.default_rng(seed)
    logits, state = step_logits(model, vocab.encode(start)[None, :])
    out = []
    for _ in range(length):
        p = softmax(logits[0, -1], temperature)
        nxt = int(rng.choice(len(p), p=p))
        out.append(nxt)
        logits, state = step_logits(model, np.array([[nxt]]), state)
    return start + vocab.decode(out)


def split_songs(text):
    """The songs in generated ABC text: the non-empty pieces between blank lines."""
    return [part.strip("\n") for part in text.split("\n\n") if part.strip()]


def _run_tool(args, made, what):
    """Run a converter; None on success, else a one-line reason (never raises)."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{what} failed: {exc}"
    if done.returncode != 0 or not Path(made).exists():
        # abc2midi exits 0 on a bad tune and says why on stdout, after a version banner.
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
        return f"{what} made no file (exit {done.returncode}): {why or 'no output'}"
    return None


def write_songs(songs, out, audio=True):
    """Write song_NNN.abc per song to `out`; with abc2midi and timidity on PATH also .mid and
    .wav. Returns {"files": [...], "problems": [...]}; a failed conversion is only a problem."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files, problems = [], []
    abc2midi, timidity = shutil.which("abc2midi"), shutil.which("timidity")
    if audio and not (abc2midi and timidity):
        problems.append("no .mid/.wav: install Debian's abcmidi and timidity to listen")
    for i, song in enumerate(songs, 1):
        abc = out / f"song_{i:03d}.abc"
        abc.write_text(song + "\n", encoding="utf-8")
        files.append(abc)
        if not (audio and abc2midi and timidity):
            continue
        mid, wav = abc.with_suffix(".mid"), abc.with_suffix(".wav")
        problem = _run_tool([abc2midi, str(abc), "-o", str(mid)], mid, f"{abc.name}: abc2midi")
        if problem is None:
            files.append(mid)
            problem = _run_tool(
                [timidity, str(mid), "-Ow", "-o", str(wav)], wav, f"{mid.name}: timidity"
            )
            if problem is None:
                files.append(wav)
        if problem:
            problems.append(problem)
    return {"files": [str(f) for f in files], "problems": problems}


def next_words(model, vocab, prompt, top=5):
    """(unknown prompt words, [(word, probability)] of the `top` most likely next words)."""
    tokens = tokenize(prompt)
    if not tokens:
        raise ValueError(f"the prompt {prompt!r} holds no words; give a few words to continue")
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    unknown = [t for t in tokens if t not in vocab]
    model.eval()
    logits, _ = step_logits(model, vocab.encode(tokens)[None, :])
    p = softmax(logits[0, -1])
    order = np.argsort(-p, kind="stable")[:top]
    return unknown, [(vocab.tokens[i], float(p[i])) for i in order]


# ----- the `splitgrad generate` command --------------------------------------------------
def _cmd_songs(args):
    model, vocab = load_run(args.run or "runs/irish-lstm", "irish-lstm")
    text = sample_text(
        model,
        vocab,
        start=args.start,
        length=args.length,
        temperature=args.temperature,
        seed=args.seed,
    )
    out = Path(args.out or Path(args.run or "runs/irish-lstm") / "songs")
    out.mkdir(parents=True, exist_ok=True)
    (out / "generated.txt").write_text(text, encoding="utf-8")
    songs = split_songs(text)
    result = write_songs(songs, out, audio=not args.no_audio)
    print(text)
    print(f"\nwrote {len(songs)} song(s), {len(result['files'])} file(s) to {out}")
    for problem in result["problems"]:
        print(f"note: {problem}")


def _cmd_next_word(args):
    model, vocab = load_run(args.run or "runs/next-word", "next-word")
    unknown, best = next_words(model, vocab, args.prompt, args.top)
    if unknown:
        print(
            f"note: not in the vocabulary, read as {WordVocab.UNK}: "
            + ", ".join(repr(w) for w in unknown)
        )
    print(f"{args.prompt!r} →")
    for word, p in best:
        print(f"  {word:<16} {p:.4f}")


def add_cli(sub):
    """Add `generate irish-lstm` and `generate next-word` to the splitgrad command."""
    positive_int = cli_type(positive_int_check, "the value")
    positive_float = cli_type(positive_number, "the value")
    p = sub.add_parser("generate", help="sample from a trained irish-lstm or next-word run")
    kinds = p.add_subparsers(dest="what", required=True)
    s = kinds.add_parser("irish-lstm", help="write new songs in ABC (+ .mid/.wav if possible)")
    s.add_argument("--run", help="the trained run folder (runs/irish-lstm)")
    s.add_argument(
        "--temperature",
        type=positive_float,
        default=1.0,
        help="below 1: safer, more repetitive; above 1: wilder",
    )
    s.add_argument(
        "--length",
        type=positive_int,
        default=1000,
        help="characters to generate after the start text",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--start", default="X", help="the text to start from (default 'X')")
    s.add_argument("--out", help="folder for the songs (RUN/songs)")
    s.add_argument("--no-audio", action="store_true", help="write .abc files only")
    s.set_defaults(func=_cmd_songs)
    w = kinds.add_parser("next-word", help="print the most likely next words of a prompt")
    w.add_argument("--run", help="the trained run folder (runs/next-word)")
    w.add_argument("--prompt", required=True)
    w.add_argument("--top", type=positive_int, default=5)
    w.set_defaults(func=_cmd_next_word)
