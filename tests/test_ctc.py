"""The ``ctc`` head: its loss and its prefix beam search against brute force over every
alignment, greedy decoding's collapse rules, impossible alignments, the contract kit and
its config errors.  The references below enumerate paths in plain Python and share no
code with the head."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import FieldSpec, TokenSequence
from fusionjax.sequences import TargetVocabulary
from fusionjax_plugins.heads.ctc import CTCHead, beam_search, greedy

BLANK, END = 0, 1


def _head(symbols="ab", **settings):
    vocab = TargetVocabulary.of(symbols)
    return CTCHead({"x": 3}, vocabulary=vocab.tokens, features=4, rngs=nnx.Rngs(0), **settings)


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


def _collapse(path):
    out, prev = [], None
    for s in path:
        if s != prev and s != BLANK:
            out.append(s)
        prev = s
    return tuple(out)


def _label_probabilities(logits, frames, ids):
    """{label: p(label | the first ``frames`` rows of ``logits``)}, summed over every path
    of ``ids`` (symbols per frame)."""
    logp = _log_softmax(logits[:frames])
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(ids, repeat=frames):
        p = math.exp(sum(logp[t, s] for t, s in enumerate(path)))
        label = _collapse(path)
        probs[label] = probs.get(label, 0.0) + p
    return probs


def _labels(rows, length):
    return jnp.asarray([list(r) + [0] * (length - len(r)) for r in rows], jnp.int32)


def test_loss_matches_brute_force_and_impossible_alignments_are_masked():
    a, b = 2, 3
    cases = [((), 5), ((a,), 5), ((a, a), 5), ((a, b), 4), ((b, a, b), 5), ((a, a, b), 4), ((b,), 1),
             ((), 0)]
    impossible = [((a, a, a), 4), ((a, b, a, b), 3), ((a,), 0)]  # 5, 4 and 1 frames needed
    rows = cases + impossible
    t, v = 5, 4
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0, 1.5, (len(rows), t, v)), jnp.float32)
    valid = jnp.asarray([[i < n for i in range(t)] for _, n in rows])
    labels = _labels([r for r, _ in rows], 4)
    head = _head()
    preds = {"logits": logits, "valid": valid}
    terms = head.losses(preds, labels)

    expected = []
    for i, (label, n) in enumerate(cases):
        p = _label_probabilities(np.asarray(logits[i]), n, range(v)).get(label, 0.0)
        expected.append(-math.log(p))
    np.testing.assert_allclose(np.asarray(terms.nll[: len(cases)]), expected, rtol=1e-5, atol=1e-5)
    assert np.asarray(terms.feasible).tolist() == [True] * len(cases) + [False] * len(impossible)
    assert np.all(np.asarray(terms.nll[len(cases):]) == 0.0)

    per_token = [e / max(len(r), 1) for e, (r, _) in zip(expected, cases)]
    loss, grads = jax.value_and_grad(lambda x: head.loss({"logits": x, "valid": valid}, labels))(logits)
    np.testing.assert_allclose(float(loss), np.mean(per_token), rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(grads)))
    assert np.all(np.asarray(grads[len(cases):]) == 0.0)  # impossible rows teach nothing

    weights = jnp.ones(len(rows), jnp.float32).at[0].set(0.0)  # row 0: padding
    stats = {k: float(x) for k, x in head.metric_stats(preds, labels, weights).items()}
    assert (stats["feasible"], stats["impossible"], stats["count"]) == (len(cases) - 1, 3, len(rows) - 1)
    metrics = CTCHead.finalize_metrics(stats)
    np.testing.assert_allclose(metrics["loss"], np.mean(per_token[1:]), rtol=1e-5)
    assert metrics["impossible"] == pytest.approx(3 / (len(rows) - 1))
    assert all(math.isfinite(x) for x in metrics.values())


def _one_hot_logits(paths, v=5):
    return jnp.asarray(np.eye(v)[np.asarray(paths)] * 8.0, jnp.float32)


def test_greedy_collapse_rules():
    a, b, c = 2, 3, 4
    paths = [[a, a, b, b, b, 0],  # repeats merge
             [a, 0, a, a, 0, a],  # a blank between repeats keeps both
             [0, 0, c, 0, 0, 0],  # blanks drop
             [a, b, b, c, a, c],  # invalid frames (the last three) are ignored
             [0, 0, 0, 0, 0, 0]]
    logits = _one_hot_logits(paths)
    logits = logits.at[2, 0, END].set(99.0)  # END is never chosen, however probable
    valid = jnp.asarray([[True] * 6] * 3 + [[True] * 3 + [False] * 3] + [[True] * 6])
    got = np.asarray(greedy({"logits": logits, "valid": valid}))
    want = [[a, b], [a, a, a], [c], [a, b], []]
    assert [list(r[r > 0]) for r in got] == want
    assert got.shape == (5, 6) and np.all(got[0, 2:] == 0)


@pytest.mark.parametrize("seed, t, symbols, frames", [(0, 5, "ab", 5), (1, 5, "ab", 4), (2, 4, "abc", 4),
                                                      (3, 3, "abc", 3)])
def test_prefix_beam_search_finds_the_most_probable_label(seed, t, symbols, frames):
    v = 2 + len(symbols)
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (t, v)).astype(np.float32)
    valid = np.arange(t) < frames
    # labels never hold END: paths through it are no label's
    probs = _label_probabilities(logits, frames, [BLANK, *range(2, v)])
    best = max(probs, key=probs.get)
    prefixes = sum(len(symbols) ** k for k in range(frames + 1))  # a beam this wide is exact
    found = beam_search(logits, valid, prefixes)
    assert found[0][0] == best
    assert found[0][1] == pytest.approx(math.log(probs[best]), abs=1e-5)
    for ids, score in found[:10]:
        assert score == pytest.approx(math.log(probs[ids]), abs=1e-5)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)

    head = _head(symbols, beam=prefixes)
    (answer,) = head.answer({"logits": logits[None], "valid": valid[None]}, top=3)
    text = "".join(symbols[i - 2] for i in best)
    assert (answer.text, len(answer.alternatives)) == (text, 3)
    assert answer.score == pytest.approx(math.log(probs[best]), abs=1e-5)
    assert answer.alternatives[0].text == text


def test_config_errors():
    # (the contract kit's checks, check_head, run in tests/test_components.py)
    with pytest.raises(ConfigError) as e:
        CTCHead({"audio": 4}, rngs=nnx.Rngs(0))
    assert e.value.key == "vocabulary" and "digit_speech" in str(e.value)
    tokens = TargetVocabulary.of("ab").tokens
    with pytest.raises(ConfigError) as e:
        CTCHead({"audio": 4, "image": 4}, vocabulary=tokens, rngs=nnx.Rngs(0))
    assert e.value.key == "modality" and "audio, image" in str(e.value)
    with pytest.raises(ConfigError) as e:
        CTCHead({"audio": 4, "image": 4}, vocabulary=tokens, modality="audoi", rngs=nnx.Rngs(0))
    assert e.value.key == "modality" and "did you mean 'audio'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _head().check_labels(FieldSpec((), "int32", {"num_classes": 10}))
    assert "digit_strips" in str(e.value)

    # the other modality is ignored, whatever it holds
    head = CTCHead({"audio": 3, "image": 2}, vocabulary=tokens, modality="audio", features=4,
                   rngs=nnx.Rngs(0))
    audio = TokenSequence(jnp.ones((2, 3, 3)), jnp.ones((2, 3), bool))
    masks = {"audio": jnp.ones(2, bool), "image": jnp.ones(2, bool)}
    out = [head({"audio": audio, "image": TokenSequence(jnp.full((2, 1, 2), fill), jnp.ones((2, 1), bool))},
                masks)["logits"] for fill in (0.0, np.nan)]
    np.testing.assert_array_equal(out[0], out[1])
