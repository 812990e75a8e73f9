"""Autoregressive decoder head: a Transformer decoder that cross-attends to every
modality's tokens, trained by teacher forcing; greedy decoding (evaluation) and beam
search (``predict``), both compiled with a fixed maximum length and a KV cache."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fusionjax import sequences
from fusionjax.answers import Alternative, TextAnswer
from fusionjax.errors import ConfigError, shown
from fusionjax.interfaces import FieldSpec, Head, TokenSequence
from fusionjax.sequences import END, PAD, SEQUENCE_DATA, Scorer, TargetVocabulary
from fusionjax_plugins.layers.attention_blocks import Attention, TokenEmbedding, check_heads, sinusoids
from fusionjax_plugins.layers.fusion_ops import masked_softmax

MLP_RATIO = 4  # the width of each layer's MLP, in multiples of ``features``
Memory = Mapping[str, jax.Array]  # {"values": [B, S, features], "valid": [B, S] bool}
Cache = tuple[jax.Array, jax.Array]  # one layer's self-attention keys and values [N, T, H, D / H]


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
    """GNMT's length penalty (Wu et al., 2016): ``((5 + length) / 6) ** alpha``."""
    return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def _split(x: jax.Array, heads: int) -> jax.Array:
    """``[N, T, D]`` -> ``[N, T, heads, D / heads]``."""
    return x.reshape(*x.shape[:2], heads, x.shape[-1] // heads)


def _attend(attention: Attention, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Multi-head attention of split queries ``q`` [N, Q, H, d] over keys and values
    [N, K, H, d] where ``mask`` (broadcast to [N, H, Q, K]); zeros for a query with no key."""
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) / math.sqrt(q.shape[-1])
    out = jnp.einsum("nhqk,nkhd->nqhd", masked_softmax(logits, mask), v)
    return attention.o(out.reshape(*out.shape[:2], -1))


class DecoderLayer(nnx.Module):
    """Pre-LayerNorm decoder layer: causal self-attention, cross-attention to the memory
    (where valid), MLP; each a residual branch.  :meth:`__call__` runs a whole sequence
    (teacher forcing), :meth:`step` one position against a KV cache: the same function."""

    def __init__(self, features: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.ln_self, self.ln_cross, self.ln_memory, self.ln_mlp = (
            nnx.LayerNorm(features, rngs=rngs) for _ in range(4))
        self.self_attention = Attention(features, heads, rngs=rngs)
        self.cross_attention = Attention(features, heads, rngs=rngs)
        self.mlp_in = nnx.Linear(features, MLP_RATIO * features, rngs=rngs)
        self.mlp_out = nnx.Linear(MLP_RATIO * features, features, rngs=rngs)

    def memory(self, values: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The cross-attention keys and values of the memory ``[N, S, features]`` (split)."""
        h = self.ln_memory(values)
        return _split(self.cross_attention.k(h), self.heads), _split(self.cross_attention.v(h), self.heads)

    def _rest(self, x: jax.Array, memory: tuple[jax.Array, jax.Array], valid: jax.Array) -> jax.Array:
        """Cross-attention and MLP, after the self-attention."""
        q = _split(self.cross_attention.q(self.ln_cross(x)), self.heads)
        x = x + _attend(self.cross_attention, q, *memory, valid[:, None, None, :])
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln_mlp(x))))

    def __call__(self, x: jax.Array, memory: tuple[jax.Array, jax.Array], valid: jax.Array) -> jax.Array:
        """``x`` [N, T, features]: position t attends to positions <= t and the memory."""
        h = self.ln_self(x)
        q, k, v = (_split(p(h), self.heads) for p in
                   (self.self_attention.q, self.self_attention.k, self.self_attention.v))
        causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
        x = x + _attend(self.self_attention, q, k, v, causal)
        return self._rest(x, memory, valid)

    def step(self, x: jax.Array, t: jax.Array, cache: Cache, memory: tuple[jax.Array, jax.Array],
             valid: jax.Array) -> tuple[jax.Array, Cache]:
        """Position ``t`` only: ``x`` [N, 1, features]; its key and value go into ``cache``
        at ``t``, and it attends to the cache's positions <= t."""
        h = self.ln_self(x)
        q, k, v = (_split(p(h), self.heads) for p in
                   (self.self_attention.q, self.self_attention.k, self.self_attention.v))
        keys = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), t, axis=1)
        values = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), t, axis=1)
        seen = jnp.arange(keys.shape[1]) <= t
        x = x + _attend(self.self_attention, q, keys, values, seen)
        return self._rest(x, memory, valid), (keys, values)


class DecoderHead(Head):
    """An autoregressive Transformer decoder (Vaswani et al., 2017) that writes the target
    sequence token by token while cross-attending to every modality's tokens: a
    transcript (``digit_speech``), a caption (``digit_strips``) or an answer in words
    (``digit_qa`` with ``target = "sentence"``).

    Memory (the predictions): each modality's tokens go through their own
    ``TokenEmbedding`` (linear map to ``features``, sinusoidal positions, a learned
    modality vector), concatenated along time in sorted modality order, then one learned
    "null" token that is always valid, so that an example with every modality absent
    still has something to attend to: ``{"values": [B, S, features], "valid": [B, S]}``.
    Invalid tokens and every token of an absent modality are zeroed (``jnp.where``, before
    anything is computed from them) and marked invalid, and attention never reads them:
    an absent modality's data, whatever it holds (NaN included), changes no output, loss,
    metric or gradient.

    Decoder: token embedding (``len(vocabulary)`` x ``features``) plus sinusoidal
    positions; ``layers`` pre-LayerNorm layers of causal self-attention, cross-attention
    to the valid memory and an MLP (4 x ``features``, GELU); a final LayerNorm and a
    dense layer to the vocabulary's logits.  Its input at position 0 is ``<pad>`` (the
    start); it emits ``<end>`` after the last token.  The output has a fixed maximum
    length, ``max_length + 1`` positions (the label's length, plus room for ``<end>``):
    decoding never emits ``<pad>``, and emits ``<end>`` at the last position at the latest.

    Loss: teacher forcing.  The inputs are the label shifted right, ``[<pad>, y1 ... yL]``,
    the targets ``[y1 ... yn, <end>, <pad> ...]``; the cross-entropy is averaged over each
    sequence's n + 1 target positions, then over the batch.  Training batches log the
    loss and ``token_accuracy`` (teacher-forced argmax against the targets; no search).

    Evaluation: greedy decoding in the compiled eval step (the most probable token at
    each position, fed back, until every row has emitted ``<end>``), with a KV cache: each
    step runs one position through the layers against the keys and values of the earlier
    ones, so decoding costs one pass of the sequence.  Metrics: ``loss``,
    ``token_accuracy``, and ``cer``, ``wer``, ``token_error_rate`` and
    ``sequence_accuracy`` of the greedy outputs (``fusionjax.sequences.Scorer``).

    ``predict``: beam search of width ``beam``, compiled once per batch size.  ``<end>``
    finishes a beam (a finished beam only extends with ``<pad>``, at no cost);
    hypotheses are ranked by their log-probability divided by GNMT's length penalty
    ``((5 + length) / 6) ** length_penalty`` (length: positions emitted, ``<end>``
    included).  The answer is the best text with its log-probability, the beam's other
    texts as alternatives.  ``decode(memory, beam=k)`` and ``greedy(memory)`` are the
    searches themselves.

    The labels must be token ids ``[max_length]`` with a target vocabulary in their
    metadata (the bundled sequence data sets: ``digit_speech``, ``digit_strips``,
    ``digit_qa`` with ``target = "sentence"``).

    Parameters:
        in_features: Token width of each modality's encoder.
        vocabulary: The target vocabulary, id -> token, starting ``"<pad>"``, ``"<end>"``.
            Taken from the data set's labels; required.
        separator: What joins tokens into text: ``""`` (tokens are characters) or ``" "``
            (words). Taken from the data set's labels.
        label_shape: The per-example shape of the data set's labels, ``[max_length]``; the
            decoder writes at most ``max_length + 1`` positions.
        features: Width of the memory and the decoder. A positive multiple of ``heads``.
        layers: Decoder layers (self-attention, cross-attention, MLP). ``>= 1``.
        heads: Attention heads of each attention. ``>= 1``.
        beam: Width of the beam search in ``predict``. ``>= 1``; 1 is greedy decoding.
        length_penalty: Exponent of GNMT's length penalty in the beam search. ``>= 0``; 0
            ranks by log-probability alone, larger values favour longer texts.
    """

    inputs: ClassVar[Literal["fused", "embeddings", "tokens"]] = "tokens"
    answer_from_outputs = False  # the searches run the decoder: not in an exported forward pass
    test_settings = {"features": 8, "layers": 1, "heads": 2, "beam": 2}
    test_labels = TargetVocabulary.of("abcd", " ").spec(3)

    def __init__(self, in_features: Mapping[str, int], *, vocabulary: tuple[str, ...] | None = None,
                 separator: str = "", label_shape: tuple[int, ...] = (), features: int = 128,
                 layers: int = 2, heads: int = 4, beam: int = 4, length_penalty: float = 0.6,
                 rngs: nnx.Rngs):
        if vocabulary is None:
            raise ConfigError("the decoder head needs a target vocabulary, and the data set's labels "
                              "declare none", key="vocabulary", hint=f"use {SEQUENCE_DATA}")
        vocabulary = tuple(vocabulary)
        sequences.check_vocabulary(vocabulary, separator)
        if len(label_shape) != 1 or label_shape[0] < 1:
            raise ConfigError(f"sequence labels are token ids [max_length], got labels of shape "
                              f"{tuple(label_shape)}", key="label_shape", hint=f"use {SEQUENCE_DATA}")
        if not in_features:
            raise ConfigError("the decoder head needs at least one modality's tokens", key="in_features")
        check_heads(features, heads)
        if layers < 1:
            raise ConfigError(f"must be >= 1, got {layers}", key="layers")
        if beam < 1:
            raise ConfigError(f"must be >= 1, got {beam}", key="beam", hint="4 to 16 is common")
        if not (math.isfinite(length_penalty) and length_penalty >= 0):
            raise ConfigError(f"must be a number >= 0, got {shown(length_penalty)}", key="length_penalty",
                              hint="0.6 to 1.0 is common; 0 ranks by log-probability alone")
        self.vocabulary, self.separator = vocabulary, separator
        self.max_length = int(label_shape[0])
        self.features, self.heads = features, heads
        self.beam, self.length_penalty = int(beam), float(length_penalty)
        self.embed = nnx.Dict({m: TokenEmbedding(in_features[m], features, rngs=rngs)
                               for m in sorted(in_features)})
        self.null = nnx.Param(jax.random.normal(rngs.params(), (features,)) * 0.02)
        self.tokens = nnx.Embed(len(vocabulary), features, rngs=rngs)
        self.layers = nnx.List([DecoderLayer(features, heads, rngs=rngs) for _ in range(layers)])
        self.ln_out = nnx.LayerNorm(features, rngs=rngs)
        self.out = nnx.Linear(features, len(vocabulary), rngs=rngs)
        sequences.scorer(vocabulary, separator)  # built once, here

    @property
    def scorer(self) -> Scorer:
        return sequences.scorer(self.vocabulary, self.separator)

    @property
    def positions(self) -> int:
        """The decoder's fixed output length: ``max_length + 1`` (room for ``<end>``)."""
        return self.max_length + 1

    # ---- the model ----------------------------------------------------------------------

    def __call__(self, tokens: Mapping[str, TokenSequence], masks: Mapping[str, jax.Array]
                 ) -> dict[str, jax.Array]:
        parts = [self.embed[m](tokens[m], masks[m].astype(bool)) for m in sorted(self.embed)]
        b = parts[0][0].shape[0]
        null = jnp.broadcast_to(self.null[...], (b, 1, self.features)).astype(parts[0][0].dtype)
        values = jnp.concatenate([x for x, _ in parts] + [null], axis=1)
        valid = jnp.concatenate([v.astype(bool) for _, v in parts] + [jnp.ones((b, 1), bool)], axis=1)
        return {"values": values, "valid": valid}

    def _embed(self, ids: jax.Array, start: jax.Array | int = 0) -> jax.Array:
        """Token ids [N, n] at positions ``start ...`` -> [N, n, features]."""
        table = sinusoids(self.positions, self.features)
        where = jax.lax.dynamic_slice_in_dim(table, start, ids.shape[1], axis=0)
        x = self.tokens(ids)
        return x + where.astype(x.dtype)

    def logits(self, memory: Memory, inputs: jax.Array) -> jax.Array:
        """Teacher forcing: the logits ``[B, n, V]`` after the inputs ``[B, n]`` (``n <=
        max_length + 1``); position t depends only on inputs ``<= t``."""
        x = self._embed(inputs.astype(jnp.int32))
        for layer in self.layers:
            x = layer(x, layer.memory(memory["values"]), memory["valid"])
        return self.out(self.ln_out(x))

    def _step(self, ids: jax.Array, t: jax.Array, caches: tuple[Cache, ...],
              memories: tuple[tuple[jax.Array, jax.Array], ...], valid: jax.Array
              ) -> tuple[jax.Array, tuple[Cache, ...]]:
        """The logits ``[N, V]`` at position ``t`` after input ``ids`` [N] there."""
        x = self._embed(ids[:, None], t)
        new = []
        for layer, cache, memory in zip(self.layers, caches, memories):
            x, cache = layer.step(x, t, cache, memory, valid)
            new.append(cache)
        return self.out(self.ln_out(x[:, 0])), tuple(new)

    def _start(self, memory: Memory, rows: int) -> tuple[tuple, tuple[Cache, ...], jax.Array]:
        """Per layer the memory's keys and values, each example's repeated ``rows`` times;
        empty KV caches; the memory's validity, repeated alike."""
        memories = tuple(jax.tree.map(lambda a: jnp.repeat(a, rows, axis=0), layer.memory(memory["values"]))
                         for layer in self.layers)
        n, _, h, d = memories[0][0].shape
        caches = tuple((jnp.zeros((n, self.positions, h, d), k.dtype),) * 2 for k, _ in memories)
        return memories, caches, jnp.repeat(memory["valid"].astype(bool), rows, axis=0)

    def _allowed(self, t: jax.Array) -> jax.Array:
        """bool [V]: the ids a live sequence may emit at position ``t``: never ``<pad>``;
        only ``<end>`` at the last position."""
        ids = jnp.arange(len(self.vocabulary))
        return (ids != PAD) & ((t < self.positions - 1) | (ids == END))

    # ---- searches -----------------------------------------------------------------------

    def greedy(self, memory: Memory, *, with_logits: bool = False
               ) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, jax.Array]:
        """Greedy decoding (traceable): int32 ids ``[B, max_length + 1]`` (the tokens, then
        ``<end>``, then ``<pad>``) and their log-probabilities ``[B]``; with ``with_logits``
        also each step's logits ``[B, max_length + 1, V]`` (zeros after a row's ``<end>``).
        A ``lax.while_loop`` over positions with a KV cache; it stops when every row has
        emitted ``<end>``."""
        b, steps = memory["values"].shape[0], self.positions
        vocab = len(self.vocabulary)
        memories, caches, valid = self._start(memory, 1)

        def body(carry):
            t, ids, score, done, caches, seen = carry
            prev = jnp.where(t == 0, PAD, jax.lax.dynamic_index_in_dim(ids, jnp.maximum(t - 1, 0), 1, False))
            logits, caches = self._step(prev, t, caches, memories, valid)
            logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
            choice = jnp.argmax(jnp.where(self._allowed(t), logp, -jnp.inf), axis=-1).astype(jnp.int32)
            choice = jnp.where(done, PAD, choice)
            score = score + jnp.where(done, 0.0, jnp.take_along_axis(logp, choice[:, None], 1)[:, 0])
            ids = jax.lax.dynamic_update_index_in_dim(ids, choice, t, 1)
            if with_logits:
                seen = jax.lax.dynamic_update_index_in_dim(
                    seen, jnp.where(done[:, None], 0.0, logits.astype(jnp.float32)), t, 1)
            return t + 1, ids, score, done | (choice == END), caches, seen

        def going(carry):
            return (carry[0] < steps) & ~jnp.all(carry[3])

        seen = jnp.zeros((b, steps, vocab) if with_logits else (), jnp.float32)
        init = (jnp.int32(0), jnp.zeros((b, steps), jnp.int32), jnp.zeros(b, jnp.float32),
                jnp.zeros(b, bool), caches, seen)
        _, ids, score, _, _, seen = jax.lax.while_loop(going, body, init)
        return (ids, score, seen) if with_logits else (ids, score)

    def decode(self, memory: Memory, *, beam: int | None = None) -> tuple[jax.Array, jax.Array]:
        """Beam search (traceable) of width ``beam`` (default: the head's): int32 ids
        ``[B, beam, max_length + 1]`` and their log-probabilities ``[B, beam]``, best first
        by log-probability / GNMT length penalty.  A beam that has not found ``beam``
        hypotheses has ``-inf`` scores in the rest.  A ``lax.while_loop`` over positions
        with a KV cache per beam; it stops when every beam has finished."""
        k = self.beam if beam is None else int(beam)
        if k < 1:
            raise ConfigError(f"must be >= 1, got {k}", key="beam")
        b, steps, vocab = memory["values"].shape[0], self.positions, len(self.vocabulary)
        memories, caches, valid = self._start(memory, k)
        alpha = self.length_penalty
        rows = jnp.arange(b)[:, None]

        def body(carry):
            t, ids, score, length, done, caches = carry
            prev = jnp.where(t == 0, PAD, jax.lax.dynamic_index_in_dim(ids, jnp.maximum(t - 1, 0), 2, False))
            logits, caches = self._step(prev.reshape(b * k), t, caches, memories, valid)
            logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, vocab)
            ext = jnp.where(self._allowed(t), score[..., None] + logp, -jnp.inf)  # a live beam grows
            stay = jnp.where(jnp.arange(vocab) == PAD, score[..., None], -jnp.inf)  # a finished one waits
            cand = jnp.where(done[..., None], stay, ext).reshape(b, k * vocab)
            cand_length = jnp.broadcast_to(jnp.where(done, length, t + 1)[..., None], (b, k, vocab))
            cand_length = cand_length.reshape(b, k * vocab)
            _, pick = jax.lax.top_k(cand / length_penalty(cand_length, alpha), k)
            src, token = pick // vocab, (pick % vocab).astype(jnp.int32)
            ids = jnp.take_along_axis(ids, src[..., None], 1)  # each kept beam's history
            ids = jax.lax.dynamic_update_index_in_dim(ids, token, t, 2)
            score = jnp.take_along_axis(cand, pick, 1)
            length = jnp.take_along_axis(cand_length, pick, 1)
            done = jnp.take_along_axis(done, src, 1) | (token == END)
            flat = (rows * k + src).reshape(-1)
            caches = jax.tree.map(lambda c: c[flat], caches)
            return t + 1, ids, score, length, done, caches

        def going(carry):
            return (carry[0] < steps) & ~jnp.all(carry[4] | jnp.isneginf(carry[2]))

        score = jnp.full((b, k), -jnp.inf, jnp.float32).at[:, 0].set(0.0)  # one beam to start
        init = (jnp.int32(0), jnp.zeros((b, k, steps), jnp.int32), score, jnp.zeros((b, k), jnp.int32),
                jnp.zeros((b, k), bool), caches)
        _, ids, score, _, _, _ = jax.lax.while_loop(going, body, init)
        return ids, score

    # ---- the Head interface -------------------------------------------------------------

    def check_labels(self, spec: FieldSpec) -> None:
        sequences.check_sequence_labels(spec, self.vocabulary, "decoder")

    def teacher_forced(self, predictions: Memory, labels: jax.Array
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Per example the mean cross-entropy over its n + 1 target positions [B], and per
        position whether the argmax is the target and whether the position counts [B, L + 1]."""
        graphdef, state = nnx.split(self)  # one compiled function, even when called eagerly
        return _teacher_forced(graphdef, state, {k: predictions[k] for k in ("values", "valid")}, labels)

    def loss(self, predictions, labels):
        return jnp.mean(self.teacher_forced(predictions, labels)[0])

    def train_stats(self, predictions, labels, weights):
        per_example, correct, counts = self.teacher_forced(predictions, labels)
        used = weights > 0
        w = weights.astype(jnp.float32)
        total = lambda x: jnp.sum(jnp.where(used, x * w, 0.0))  # noqa: E731
        return {"loss_sum": total(per_example), "count": jnp.sum(w),
                "token_correct": total(jnp.sum(correct, axis=1).astype(jnp.float32)),
                "token_count": total(jnp.sum(counts, axis=1).astype(jnp.float32))}

    def metric_stats(self, predictions, labels, weights):
        # the search carries no tangents (a while_loop cannot be reverse-differentiated),
        # and runs as one compiled function even when called eagerly
        graphdef, state = nnx.split(self)
        memory = {k: predictions[k] for k in ("values", "valid")}
        stats = _greedy_stats(graphdef, *jax.lax.stop_gradient((state, memory)), labels, weights)
        return {**stats, **self.train_stats(predictions, labels, weights)}

    @staticmethod
    def finalize_metrics(stats: Mapping[str, float]) -> dict[str, float]:
        out = {"loss": float(stats["loss_sum"]) / max(float(stats["count"]), 1.0)}
        if "token_edits" in stats:
            out.update(Scorer.metrics(stats))
        if "token_count" in stats:
            out["token_accuracy"] = float(stats["token_correct"]) / max(float(stats["token_count"]), 1.0)
        return out

    def answer(self, predictions, *, label_names=None, top=3) -> list[TextAnswer]:
        graphdef, state = nnx.split(self)
        memory = {k: jnp.asarray(predictions[k]) for k in ("values", "valid")}
        ids, scores = jax.device_get(_beam_search(graphdef, self.beam, state, memory))
        answers = []
        for row_ids, row_scores in zip(ids, scores):
            kept: dict[str, Alternative] = {}
            for hyp, score in zip(row_ids, row_scores):
                text = sequences.render(hyp, self.vocabulary, self.separator)
                if np.isfinite(score) and text not in kept:
                    kept[text] = Alternative(text, float(score))
            found = tuple(kept.values())[: max(top, 1)]
            if found:
                answers.append(TextAnswer(found[0].text, found[0].score, found))
            else:  # no finite score (the memory held NaN): the first beam, unscored
                answers.append(TextAnswer(sequences.render(row_ids[0], self.vocabulary, self.separator)))
        return answers


# The searches as compiled functions shared by every decoder head, keyed by its graph
# definition (and the beam's width), compiled once per batch shape: ``predict`` pads
# batches to fixed sizes, so nothing compiles after warm-up.

@functools.partial(jax.jit, static_argnums=(0, 1))
def _beam_search(graphdef, beam: int, state, memory):
    """``answer``'s beam search: :meth:`DecoderHead.decode`."""
    return nnx.merge(graphdef, state).decode(memory, beam=beam)


@functools.partial(jax.jit, static_argnums=0)
def _teacher_forced(graphdef, state, memory, labels):
    """:meth:`DecoderHead.teacher_forced`."""
    head = nnx.merge(graphdef, state)
    ids, n = sequences.trimmed(labels.astype(jnp.int32))
    pad = jnp.zeros((ids.shape[0], 1), jnp.int32)
    inputs = jnp.concatenate([pad, ids], axis=1)  # [<pad>, y1 ... yL]
    at = jnp.arange(inputs.shape[1])
    targets = jnp.where(at == n[:, None], END, jnp.concatenate([ids, pad], axis=1))
    counts = at <= n[:, None]
    logits = head.logits(memory, inputs).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    per_example = jnp.sum(jnp.where(counts, ce, 0.0), axis=1) / (n + 1).astype(jnp.float32)
    return per_example, (jnp.argmax(logits, axis=-1) == targets) & counts, counts


@functools.partial(jax.jit, static_argnums=0)
def _greedy_stats(graphdef, state, memory, labels, weights):
    """The :class:`Scorer` statistics of the greedy outputs (the evaluation metrics)."""
    head = nnx.merge(graphdef, state)
    return head.scorer.stats(head.greedy(memory)[0], labels, weights)
