"""The ``decoder`` head: teacher forcing is causal and matches step-by-step (KV-cache)
decoding, beam search against an exhaustive enumeration, the contract kit (absent
modalities included) and NaN in an absent modality's tokens, one compilation of
``answer``'s search, config errors."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import FieldSpec, TokenSequence
from fusionjax.sequences import END, PAD, TargetVocabulary
from fusionjax_plugins.heads import decoder
from fusionjax_plugins.heads.decoder import DecoderHead

VOCAB = TargetVocabulary.of("ab")  # ids 2, 3: 2 + 4 + 8 texts of 1-3 tokens, and the empty one
MAX_LENGTH = 3
WIDTHS = {"a": 5, "b": 3}
LENGTHS = {"a": 4, "b": 6}
B = 4


def make_head(**settings) -> DecoderHead:
    kwargs = {"features": 8, "layers": 2, "heads": 2, "beam": 16, "length_penalty": 0.0, **settings}
    return DecoderHead(WIDTHS, vocabulary=VOCAB.tokens, separator=VOCAB.separator,
                       label_shape=(MAX_LENGTH,), rngs=nnx.Rngs(0), **kwargs)


def make_inputs(seed: int = 0, b: int = B):
    """Token sequences and masks: row 1 lacks "b", row 2 lacks "a", row 3 has neither."""
    rng = np.random.default_rng(seed)
    tokens = {m: TokenSequence(jnp.asarray(rng.standard_normal((b, LENGTHS[m], w)) * 3, jnp.float32),
                               jnp.asarray(np.arange(LENGTHS[m]) < rng.integers(1, LENGTHS[m] + 1, (b, 1))))
              for m, w in WIDTHS.items()}
    rows = np.arange(b) % 4
    masks = {"a": jnp.asarray((rows == 0) | (rows == 1)), "b": jnp.asarray((rows == 0) | (rows == 2))}
    return tokens, masks


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run(graphdef, method: str, kw: tuple, state, *args):
    return getattr(nnx.merge(graphdef, state), method)(*args, **dict(kw))


def compiled(head: DecoderHead, method: str, **kw):
    """``head.method(memory, ...)``, compiled once per head structure and shapes."""
    graphdef, state = nnx.split(head)
    return lambda *a: jax.device_get(_run(graphdef, method, tuple(sorted(kw.items())), state, *a))


@pytest.fixture(scope="module")
def head():
    return make_head()


@pytest.fixture(scope="module")
def memory(head):
    return head(*make_inputs())


def log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


def test_teacher_forcing_is_causal_and_its_loss_is_the_mean_target_cross_entropy(head, memory):
    logits = compiled(head, "logits")
    rng = np.random.default_rng(1)
    inputs = rng.integers(2, len(VOCAB), (B, MAX_LENGTH + 1)).astype(np.int32)
    inputs[:, 0] = PAD
    base = logits(memory, inputs)
    for j in range(1, MAX_LENGTH + 1):
        changed = inputs.copy()
        changed[:, j] = np.where(changed[:, j] == 2, 3, 2)
        out = logits(memory, changed)
        np.testing.assert_array_equal(out[:, :j], base[:, :j], err_msg=f"input {j} changed an earlier logit")
        assert not np.array_equal(out[:, j:], base[:, j:]), f"input {j} changed nothing after it"

    labels = np.array([[2, 3, 0], [3, 0, 0], [0, 0, 0], [2, 2, 3]], np.int32)  # lengths 2, 1, 0, 3
    n = (labels > END).sum(1)
    lp = log_softmax(logits(memory, np.concatenate([np.zeros((B, 1), np.int32), labels], 1)))
    targets = [list(row[:k]) + [END] for row, k in zip(labels, n)]
    expected = np.mean([-np.mean([lp[i, t, y] for t, y in enumerate(targets[i])]) for i in range(B)])
    np.testing.assert_allclose(float(head.loss(memory, jnp.asarray(labels))), expected, rtol=1e-5)
    stats = jax.device_get(head.train_stats(memory, jnp.asarray(labels), jnp.ones(B)))
    assert stats["token_count"] == (n + 1).sum() and stats["count"] == B
    correct = sum(int(lp[i, t].argmax() == y) for i in range(B) for t, y in enumerate(targets[i]))
    assert stats["token_correct"] == correct


def test_step_by_step_decoding_gives_the_teacher_forced_logits():
    head = make_head()
    tokens, masks = make_inputs(seed=2, b=8)
    bias = head.out.bias[...]
    for offset in np.arange(0.25, 4.0, 0.25):  # <end> made likelier, so that rows end at
        head.out.bias[...] = bias.at[END].add(offset)  # different positions
        memory = head(tokens, masks)
        ids, score, steps = compiled(head, "greedy", with_logits=True)(memory)
        ends = np.argmax(ids == END, axis=1)
        if len(set(ends.tolist())) > 2:
            break
    assert len(set(ends.tolist())) > 2, f"the rows should end at different positions, got {ends}"
    assert (ids == END).sum(1).tolist() == [1] * 8, "every row ends with exactly one <end>"
    forced = compiled(head, "logits")(memory, np.concatenate([np.zeros((8, 1), np.int32), ids[:, :-1]], 1))
    for i, e in enumerate(ends):
        assert np.all(ids[i, :e] > END) and np.all(ids[i, e + 1:] == PAD)
        np.testing.assert_allclose(steps[i, : e + 1], forced[i, : e + 1], atol=1e-5, rtol=1e-5)
        lp = log_softmax(forced[i])
        np.testing.assert_allclose(score[i], sum(lp[t, ids[i, t]] for t in range(e + 1)), rtol=1e-5)


def enumerate_texts(head, memory, alpha: float):
    """Every text of up to MAX_LENGTH tokens with its teacher-forced log-probability (it
    and <end>), per example, ranked by log-probability / GNMT penalty."""
    texts = [t for n in range(MAX_LENGTH + 1) for t in itertools.product(range(2, len(VOCAB)), repeat=n)]
    inputs = np.zeros((len(texts), MAX_LENGTH + 1), np.int32)
    for j, t in enumerate(texts):
        inputs[j, 1: len(t) + 1] = t
    big = {k: np.repeat(np.asarray(v), len(texts), axis=0) for k, v in memory.items()}
    lp = log_softmax(compiled(head, "logits")(big, np.tile(inputs, (B, 1))))
    ranked = []
    for i in range(B):
        scored = []
        for j, t in enumerate(texts):
            row = lp[i * len(texts) + j]
            logp = sum(row[p, y] for p, y in enumerate((*t, END)))
            scored.append((logp / ((5 + len(t) + 1) / 6) ** alpha, logp, t))
        ranked.append(sorted(scored, key=lambda s: -s[0]))
    return ranked


@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_beam_search_against_every_text(head, memory, alpha):
    search = make_head(length_penalty=alpha)  # the same parameters (same seed)
    width = 16  # more than the 15 texts: nothing is pruned, so the search is exact
    ids, scores = compiled(search, "decode", beam=width)(memory)
    assert ids.shape == (B, width, MAX_LENGTH + 1) and scores.shape == (B, width)
    for i, ranked in enumerate(enumerate_texts(head, memory, alpha)):
        found = [tuple(int(x) for x in row if x > END) for row in ids[i, : len(ranked)]]
        assert found == [t for _, _, t in ranked], f"example {i}: the beams are not the ranked texts"
        np.testing.assert_allclose(scores[i, : len(ranked)], [s for _, s, _ in ranked], rtol=1e-5)
        assert np.all(np.isneginf(scores[i, len(ranked):]))
    if alpha == 0.0:  # width 1 is greedy decoding
        one, one_score = compiled(head, "decode", beam=1)(memory)
        greedy, greedy_score = compiled(head, "greedy")(memory)
        np.testing.assert_array_equal(one[:, 0], greedy)
        np.testing.assert_allclose(one_score[:, 0], greedy_score, rtol=1e-5)


def test_nan_in_absent_modalities_changes_no_answer():
    # (the contract kit's checks, with the absent-token property for the loss, the statistics
    # and the gradients, run in tests/test_components.py)
    head = make_head(beam=3)
    tokens, masks = make_inputs(seed=3)
    poisoned = {m: t._replace(values=jnp.where(~masks[m][:, None, None], jnp.nan, t.values))
                for m, t in tokens.items()}
    clean, dirty = head(tokens, masks), head(poisoned, masks)
    for k in clean:
        np.testing.assert_array_equal(dirty[k], clean[k])
    assert not np.asarray(clean["valid"][3, :-1]).any() and bool(clean["valid"][3, -1]), \
        "an example with no modality attends to the null token alone"
    answers = head.answer(jax.device_get(dirty), top=2)
    assert [a.to_json() for a in answers] == [a.to_json() for a in head.answer(jax.device_get(clean), top=2)]
    for a in answers:
        assert np.isfinite(a.score) and 1 <= len(a.alternatives) <= 2 and a.alternatives[0].text == a.text


def test_answer_compiles_its_search_once():
    head = make_head(beam=2)
    before = decoder._beam_search._cache_size()
    first = head.answer(jax.device_get(head(*make_inputs(seed=4, b=5))))
    second = head.answer(jax.device_get(head(*make_inputs(seed=5, b=5))))
    assert decoder._beam_search._cache_size() == before + 1, "answer's search recompiled"
    assert len(first) == len(second) == 5
    assert [a.text for a in first] != [a.text for a in second] or \
        [a.score for a in first] != [a.score for a in second]


def test_config_errors():
    with pytest.raises(ConfigError) as e:
        DecoderHead(WIDTHS, label_shape=(3,), rngs=nnx.Rngs(0))
    assert e.value.key == "vocabulary" and "digit_speech" in e.value.hint
    with pytest.raises(ConfigError) as e:
        make_head(features=10, heads=4)
    assert e.value.key == "features"
    with pytest.raises(ConfigError) as e:
        make_head().check_labels(FieldSpec((), "int32", {"num_classes": 5}))
    assert "digit_speech" in e.value.hint
