"""Sequence targets: the edit distances and error rates against independent references
(a plain-Python Levenshtein distance, and jiwer's CER and WER), the vocabulary's errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jiwer
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionjax.errors import ConfigError, DataError
from fusionjax.sequences import PAD, Scorer, TargetVocabulary, edit_distance, greedy_ctc

MAX = 8


def levenshtein(a: list, b: list) -> int:
    """The textbook dynamic programme, one cell at a time."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


_distance = jax.jit(edit_distance)


def _padded(seq: list[int]) -> np.ndarray:
    return np.array(seq + [0] * (MAX - len(seq)), np.int32)[None]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(2, 5), max_size=MAX), st.lists(st.integers(2, 5), max_size=MAX))
def test_edit_distance_is_levenshtein(ref, hyp):
    # one shape for every draw: compiled once
    got = _distance(_padded(ref), np.array([len(ref)]), _padded(hyp), np.array([len(hyp)]))
    assert int(got[0]) == levenshtein(ref, hyp)


def _random_ids(rng, n, length, vocab, min_len):
    ids = rng.integers(2, vocab, (n, length))
    return np.where(np.arange(length) < rng.integers(min_len, length + 1, (n, 1)), ids, PAD)


@pytest.mark.parametrize("separator,symbols", [("", list("ab c")), (" ", ["the", "cat", "sat", "on", "a"])])
def test_error_rates_match_jiwer(separator, symbols):
    """CER and WER over a batch equal jiwer's on the rendered texts; the token error rate
    equals the Levenshtein distance over tokens; padding rows (weight 0) count nothing."""
    vocab = TargetVocabulary.of(symbols, separator)
    scorer = Scorer(vocab.tokens, separator)
    rng = np.random.default_rng(0)
    n, length = 300, 9
    ref = _random_ids(rng, n, length, len(vocab), 1)
    hyp = _random_ids(rng, n, length, len(vocab), 0)
    hyp[:20] = ref[:20]
    refs, hyps = [vocab.text(r) for r in ref], [vocab.text(h) for h in hyp]
    # jiwer reads texts whose words are separated by single spaces and which hold a word
    usable = np.array([bool(r.split()) and r == " ".join(r.split()) and h == " ".join(h.split())
                       for r, h in zip(refs, hyps)])
    assert usable.sum() > 50
    weights = usable.astype(np.float32)
    stats = jax.jit(scorer.stats)(jnp.asarray(hyp), jnp.asarray(ref), jnp.asarray(weights))
    metrics = Scorer.metrics({k: float(v) for k, v in stats.items()})
    kept = np.flatnonzero(usable)
    r_kept, h_kept = [refs[i] for i in kept], [hyps[i] for i in kept]
    assert metrics["cer"] == pytest.approx(jiwer.cer(r_kept, h_kept), abs=1e-6)
    assert metrics["wer"] == pytest.approx(jiwer.wer(r_kept, h_kept), abs=1e-6)
    tokens = lambda ids: [int(i) for i in ids if i != PAD]  # noqa: E731
    edits = sum(levenshtein(tokens(ref[i]), tokens(hyp[i])) for i in kept)
    assert metrics["token_error_rate"] == pytest.approx(edits / sum(len(tokens(ref[i])) for i in kept))
    exact = sum(tokens(ref[i]) == tokens(hyp[i]) for i in kept)
    assert metrics["sequence_accuracy"] == pytest.approx(exact / len(kept))


def test_greedy_ctc_collapse():
    ids = np.array([[0, 2, 2, 0, 2, 3, 3, 0, 4, 4],    # a a _ a b b _ c c -> a a b c
                    [2, 2, 2, 2, 2, 2, 2, 2, 2, 2],    # one long a
                    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],    # only blanks: nothing
                    [3, 0, 3, 3, 4, 2, 2, 2, 2, 2]])   # the invalid tail is not read
    valid = np.ones(ids.shape, bool)
    valid[3, 5:] = False
    out = np.asarray(greedy_ctc(jnp.asarray(ids), jnp.asarray(valid)))
    assert out[0, :4].tolist() == [2, 2, 3, 4] and not out[0, 4:].any()
    assert out[1].tolist() == [2] + [0] * 9
    assert not out[2].any()
    assert out[3, :3].tolist() == [3, 3, 4] and not out[3, 3:].any()


def test_target_vocabulary_round_trip_and_errors():
    words = TargetVocabulary.of(["seven", "plus", "four", "is", "eleven"], " ")
    ids = words.encode("seven plus four is eleven", 6)
    assert ids.tolist() == [2, 3, 4, 5, 6, 0] and words.text(ids) == "seven plus four is eleven"
    digits = TargetVocabulary.of("0123456789")
    assert digits.text(digits.encode("3057", 5)) == "3057"
    with pytest.raises(DataError, match="'x' is not a token"):
        digits.encode("12x", 5)
    with pytest.raises(DataError, match="has 6 tokens; labels hold at most 5"):
        digits.encode("123456", 5)
    with pytest.raises(ConfigError, match="must start with") as e:
        TargetVocabulary(("a", "b"), "")
    assert e.value.key == "vocabulary"
    with pytest.raises(ConfigError, match="repeats token 2") as e:
        TargetVocabulary.of(["a", "a"], "")
    with pytest.raises(ConfigError, match="without whitespace"):
        TargetVocabulary.of(["two words"], " ")
    with pytest.raises(ConfigError, match="separator|must be") as e:
        TargetVocabulary.of(["a"], "-")
    assert e.value.key == "separator"


def test_a_class_head_on_sequence_labels_is_pointed_to_the_sequence_heads():
    from fusionjax.assembly import assemble

    config = {"model": {"encoders": {"image": {"type": "cnn_image"}}, "fusion": {"type": "concat"},
                        "head": {"type": "classification"}},
              "data": {"type": "digit_strips", "train_size": 64, "test_size": 32}}
    with pytest.raises(ConfigError) as e:
        assemble(config)
    assert e.value.key == "model.head.num_classes" and '"ctc" or "decoder"' in e.value.hint
