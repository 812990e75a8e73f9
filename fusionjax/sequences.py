"""Targets that are sequences: token ids, the vocabulary they index, and error rates
that add up exactly over batches and devices.

A sequence label is int32 ``[max_length]``: token ids, then padding.  Two ids are
reserved in every target vocabulary:

* ``PAD = 0`` (``"<pad>"``): padding after the last token.  It is never a token of a
  transcript, so a CTC head uses it as its blank and a decoder as its start input;
* ``END = 1`` (``"<end>"``): the end of a sequence, which a decoder learns to emit
  after the last token.  Labels never hold it.

A label's length is the number of tokens before its first ``PAD`` (or ``END``).  The
data set declares its target vocabulary in the label's :class:`FieldSpec` metadata
(:meth:`TargetVocabulary.spec`): ``vocabulary`` (id -> token) and ``separator`` (``""``
when tokens are characters, ``" "`` when they are words).  A sequence head takes both
as constructor parameters defaulted from that metadata, so the run's resolved config
records the vocabulary and ``evaluate``/``predict`` read the same one back.

Metrics (:class:`Scorer`) count edits in the compiled eval step, as additive
statistics: token edits and reference tokens (the token error rate), character edits
and reference characters of the rendered text (CER), word edits and reference words
(WER: words are the text's whitespace-separated runs), and exact matches (sequence
accuracy).  Their totals give the rates exactly, whatever the batching.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax.errors import ConfigError, DataError, shown
from fusionjax.interfaces import FieldSpec

PAD, END = 0, 1
SPECIAL = ("<pad>", "<end>")
SEPARATORS = ("", " ")
# what a sequence head's errors suggest when the data set's labels are not sequences
SEQUENCE_DATA = ('a data set with sequence targets, e.g. type = "digit_speech" or "digit_strips", '
                 'or "digit_qa" with target = "sentence"')


@dataclass(frozen=True)
class TargetVocabulary:
    """Token id -> token, ``tokens[0] = "<pad>"``, ``tokens[1] = "<end>"``; the text of a
    sequence is its tokens joined by ``separator`` (``""``: characters, ``" "``: words)."""

    tokens: tuple[str, ...]
    separator: str = ""

    def __post_init__(self):
        check_vocabulary(self.tokens, self.separator)

    @classmethod
    def of(cls, symbols: Iterable[str], separator: str = "") -> TargetVocabulary:
        """The vocabulary of ``symbols`` (ids 2, 3, ... in order) after the two reserved ids."""
        return cls((*SPECIAL, *symbols), separator)

    def __len__(self) -> int:
        return len(self.tokens)

    def spec(self, max_length: int) -> FieldSpec:
        """The label spec of sequences of at most ``max_length`` tokens."""
        return FieldSpec((max_length,), "int32", {"vocab_size": len(self.tokens),
                                                  "vocabulary": self.tokens, "separator": self.separator})

    def split(self, text: str) -> list[str]:
        """A text's tokens: its characters (``separator = ""``) or its words."""
        return list(text) if self.separator == "" else text.split()

    def encode(self, text: str, max_length: int) -> np.ndarray:
        """int32 ``[max_length]``: the ids of ``text``'s tokens, then ``PAD``.  A token not
        in the vocabulary, or a text longer than ``max_length`` tokens, is a DataError."""
        index = {t: i for i, t in enumerate(self.tokens) if i > END}
        tokens = self.split(text)
        unknown = [t for t in tokens if t not in index]
        if unknown:
            raise DataError(f"target {shown(text)}: {shown(unknown[0])} is not a token of the "
                            f"target vocabulary ({len(self.tokens) - 2} tokens: "
                            f"{shown(list(self.tokens[2:12]))}...)")
        if len(tokens) > max_length:
            raise DataError(f"target {shown(text)} has {len(tokens)} tokens; labels hold at most "
                            f"{max_length}")
        out = np.zeros(max_length, np.int32)
        out[: len(tokens)] = [index[t] for t in tokens]
        return out

    def text(self, ids: Iterable[int]) -> str:
        """The text of a sequence of ids, up to its first ``PAD`` or ``END``."""
        return render(ids, self.tokens, self.separator)


def check_vocabulary(tokens: Sequence[str], separator: str) -> None:
    """A :class:`ConfigError` (at ``vocabulary`` / ``separator``) unless ``tokens`` is a
    target vocabulary: the two reserved tokens first, then distinct non-empty tokens,
    which for ``separator = " "`` hold no whitespace."""
    if separator not in SEPARATORS:
        raise ConfigError(f"must be \"\" (tokens are characters) or \" \" (words), got {shown(separator)}",
                          key="separator")
    tokens = tuple(tokens)
    if tokens[:2] != SPECIAL or len(tokens) < 3:
        raise ConfigError(f"must start with {list(SPECIAL)} and hold at least one token, got "
                          f"{shown(list(tokens[:4]))}", key="vocabulary",
                          hint="ids 0 and 1 are padding and the end of a sequence")
    seen: dict[str, int] = {}
    for i, t in enumerate(tokens):
        if not isinstance(t, str) or not t or (separator == " " and any(c.isspace() for c in t)):
            raise ConfigError(f"token {i} is {shown(t)}: tokens are non-empty strings"
                              + (" without whitespace (they are words)" if separator else ""),
                              key="vocabulary")
        if t in seen:
            raise ConfigError(f"token {i} {shown(t)} repeats token {seen[t]}", key="vocabulary")
        seen[t] = i


def check_sequence_labels(spec: FieldSpec, vocabulary: tuple[str, ...], head: str) -> None:
    """What a sequence head's ``check_labels`` raises: a :class:`ConfigError` unless the
    labels are token ids ``[max_length]`` whose metadata holds ``vocabulary`` (the head's
    own, defaulted from the labels, so only a user's different choice can differ)."""
    meta = spec.metadata or {}
    if len(spec.shape) != 1 or not np.issubdtype(np.dtype(spec.dtype), np.integer) \
            or "vocabulary" not in meta:
        raise ConfigError(f"the {head} head needs token-id sequences [max_length] with a target "
                          f"vocabulary, got labels of shape {tuple(spec.shape)} ({spec.dtype})"
                          + ("" if "vocabulary" in meta else " without one"), hint=f"use {SEQUENCE_DATA}")
    if tuple(meta["vocabulary"]) != tuple(vocabulary):
        raise ConfigError(f"{shown(list(vocabulary))} is not the data set's target vocabulary "
                          f"{shown(list(meta['vocabulary']))}", key="vocabulary",
                          hint="leave it unset: it defaults to the data set's")


def render(ids: Iterable[int], tokens: Sequence[str], separator: str) -> str:
    """The text of ``ids`` (host side): tokens up to the first ``PAD``/``END``, joined."""
    out = []
    for i in ids:
        i = int(i)
        if i in (PAD, END):
            break
        out.append(tokens[i])
    return separator.join(out)


def lengths(ids: jax.Array) -> jax.Array:
    """``[B, L]`` -> int32 ``[B]``: tokens before the first ``PAD`` or ``END``."""
    return jnp.sum(jnp.cumprod(ids > END, axis=-1), axis=-1).astype(jnp.int32)


def trimmed(ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``ids`` with everything from the first ``PAD``/``END`` on set to ``PAD``, and the lengths."""
    keep = jnp.cumprod(ids > END, axis=-1).astype(bool)
    return jnp.where(keep, ids, PAD), jnp.sum(keep, axis=-1).astype(jnp.int32)


def compact(values: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row, the entries of ``values`` [B, N] where ``keep``, moved to the front in
    order (zeros after them), and how many there are."""
    position = jnp.where(keep, jnp.cumsum(keep, axis=-1) - 1, values.shape[-1])
    rows = jnp.arange(values.shape[0])[:, None]
    out = jnp.zeros((values.shape[0], values.shape[-1] + 1), values.dtype)
    out = out.at[rows, position].set(jnp.where(keep, values, 0))
    return out[:, :-1], jnp.sum(keep, axis=-1).astype(jnp.int32)


def edit_distance(ref: jax.Array, ref_len: jax.Array, hyp: jax.Array, hyp_len: jax.Array) -> jax.Array:
    """Levenshtein distance (insertions, deletions, substitutions, each 1) between each
    row's first ``ref_len`` entries of ``ref`` [B, N] and first ``hyp_len`` of ``hyp``
    [B, M]; int32 ``[B]``.  Row ``i`` of the dynamic programme is vectorised: with
    ``E[j] = min(D[i-1][j] + 1, D[i-1][j-1] + cost)``, the insertions make
    ``D[i][j] = min_k<=j E[k] + (j - k)``, a cumulative minimum."""
    b, m = hyp.shape
    j = jnp.arange(m + 1, dtype=jnp.int32)
    first = jnp.broadcast_to(j, (b, m + 1))

    def row(prev, r):
        cost = (r[:, None] != hyp).astype(jnp.int32)
        e = jnp.minimum(prev[:, 1:] + 1, prev[:, :-1] + cost)
        e = jnp.concatenate([prev[:, :1] + 1, e], axis=1)
        cur = jax.lax.cummin(e - j, axis=1) + j
        return cur, cur

    _, rows = jax.lax.scan(row, first, jnp.swapaxes(ref, 0, 1))
    table = jnp.concatenate([first[None], rows], axis=0)  # [N + 1, B, M + 1]
    return table[ref_len, jnp.arange(b), hyp_len]


class Scorer:
    """The error statistics of hypotheses against references, for one vocabulary.

    Built once from the vocabulary (NumPy tables, no parameters); :meth:`stats` runs
    inside a compiled step on token ids ``[B, L]`` and returns additive statistics,
    :meth:`metrics` turns their totals into ``cer``, ``wer``, ``token_error_rate`` and
    ``sequence_accuracy``."""

    STATS = ("token_edits", "tokens", "char_edits", "chars", "word_edits", "words", "exact", "count")

    def __init__(self, tokens: Sequence[str], separator: str):
        check_vocabulary(tokens, separator)
        alphabet = sorted({c for t in tokens[2:] for c in t} | set(separator))
        code = {c: i + 1 for i, c in enumerate(alphabet)}  # 0: no character
        spelled = ["", "", *(t for t in tokens[2:])]
        width = max(len(t) for t in spelled) + len(separator)
        table = np.zeros((len(tokens), width), np.int32)
        for i, t in enumerate(spelled):
            if t:  # each token but the first of a text is preceded by the separator
                table[i, : len(separator) + len(t)] = [code[c] for c in separator + t]
        self.table = table
        self.width = width
        self.lead = len(separator)  # the first token's separator is dropped
        self.space = frozenset(code[c] for c in alphabet if c.isspace())
        self.vocab_size = len(tokens)

    def characters(self, ids: jax.Array, length: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The rendered text of trimmed ``ids`` [B, L] as character codes ``[B, L * width]``."""
        b, n = ids.shape
        chars = jnp.asarray(self.table)[ids]  # [B, L, width]
        if self.lead:
            first = jnp.arange(self.width) < self.lead
            chars = chars.at[:, 0].set(jnp.where(first, 0, chars[:, 0]))
        return compact(chars.reshape(b, n * self.width), chars.reshape(b, -1) > 0)

    def words(self, chars: jax.Array, length: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The text's words (maximal runs of non-space characters), each as a 32-bit
        hash of its characters, moved to the front; and how many there are."""
        b, n = chars.shape
        j = jnp.arange(n)
        inside = j < length[:, None]
        space = jnp.isin(chars, jnp.asarray(sorted(self.space) or [-1])) | ~inside
        starts = ~space & jnp.concatenate([jnp.ones((b, 1), bool), space[:, :-1]], axis=1)
        word = jnp.cumsum(starts, axis=1) - 1  # the word each character belongs to
        start_at = jax.lax.cummax(jnp.where(starts, j, 0), axis=1)
        # hash = sum (c + 1) * R^(position in word) mod 2^32, with R odd
        powers = jnp.asarray(np.array([pow(0x9E3779B1, k, 2 ** 32) for k in range(n)], np.uint32))
        terms = (chars.astype(jnp.uint32) + 1) * powers[j - start_at]
        terms = jnp.where(space, jnp.uint32(0), terms)
        slot = jnp.where(space, n, word)
        rows = jnp.arange(b)[:, None]
        hashes = jnp.zeros((b, n + 1), jnp.uint32).at[rows, slot].add(terms)[:, :-1]
        return hashes, jnp.sum(starts, axis=1).astype(jnp.int32)

    def stats(self, hypotheses: jax.Array, references: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
        """Additive statistics of ``hypotheses`` [B, M] against ``references`` [B, N]
        (token ids, each read up to its first ``PAD``/``END``); ``weights`` [B] (0 or 1)."""
        hyp, hyp_len = trimmed(hypotheses.astype(jnp.int32))
        ref, ref_len = trimmed(references.astype(jnp.int32))
        token_edits = edit_distance(ref, ref_len, hyp, hyp_len)
        ref_chars, ref_nc = self.characters(ref, ref_len)
        hyp_chars, hyp_nc = self.characters(hyp, hyp_len)
        char_edits = edit_distance(ref_chars, ref_nc, hyp_chars, hyp_nc)
        ref_words, ref_nw = self.words(ref_chars, ref_nc)
        hyp_words, hyp_nw = self.words(hyp_chars, hyp_nc)
        word_edits = edit_distance(ref_words, ref_nw, hyp_words, hyp_nw)
        w = weights.astype(jnp.float32)
        total = lambda x: jnp.sum(x.astype(jnp.float32) * w)  # noqa: E731
        return {"token_edits": total(token_edits), "tokens": total(ref_len),
                "char_edits": total(char_edits), "chars": total(ref_nc),
                "word_edits": total(word_edits), "words": total(ref_nw),
                "exact": total(token_edits == 0), "count": jnp.sum(w)}

    @staticmethod
    def metrics(stats: Mapping[str, float]) -> dict[str, float]:
        """``cer``, ``wer``, ``token_error_rate`` (edits per reference unit; 0 when the
        references hold none) and ``sequence_accuracy`` from summed :meth:`stats`."""
        rate = lambda edits, units: float(stats[edits]) / max(float(stats[units]), 1.0)  # noqa: E731
        return {"cer": rate("char_edits", "chars"), "wer": rate("word_edits", "words"),
                "token_error_rate": rate("token_edits", "tokens"),
                "sequence_accuracy": float(stats["exact"]) / max(float(stats["count"]), 1.0)}


@functools.lru_cache(maxsize=32)
def scorer(tokens: tuple[str, ...], separator: str) -> Scorer:
    """The :class:`Scorer` of a vocabulary, built once per process.  A head keeps its
    vocabulary (a tuple) and looks its scorer up here rather than holding it: NNX makes a
    plain attribute part of the graph definition, and two builds would then differ."""
    return Scorer(tokens, separator)


def greedy_ctc(ids: jax.Array, valid: jax.Array) -> jax.Array:
    """CTC's best path collapsed: per-frame ids [B, T] (``PAD`` is the blank) ->
    the labels [B, T]: repeats merged, blanks and invalid frames dropped, moved to the front."""
    valid = valid.astype(bool)
    prev = jnp.concatenate([jnp.full(ids[:, :1].shape, -1, ids.dtype), ids[:, :-1]], axis=1)
    prev_valid = jnp.concatenate([jnp.zeros(valid[:, :1].shape, bool), valid[:, :-1]], axis=1)
    new = (ids != prev) | ~prev_valid
    return compact(ids, valid & new & (ids != PAD))[0]
