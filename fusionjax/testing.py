"""The contract kit: the checks every component keeps, for a plugin's own tests.

A plugin author checks everything an installed plugin registers in one line::

    # tests/test_contract.py of your plugin
    from fusionjax.testing import check_plugin

    def test_contract():
        check_plugin("my_plugin")      # the entry-point name in your pyproject.toml

Each component is checked with the settings it declares: ``test_settings`` (the
smallest constructor settings), an encoder's ``test_input`` and a head's ``test_labels``
(see :mod:`fusionjax.interfaces`); a component that declares none fails, asking for
them.  Every failure is collected, and one :class:`ContractError` (an
``AssertionError``) lists each as ``component: check: message``.  A test may also
check one component, with its declared settings or others: :func:`check_component`,
or :func:`check_encoder`, :func:`check_fusion`, :func:`check_head`,
:func:`check_dataset`, :func:`check_augmentation`.

Every check is one function below whose docstring says what it promises:

* encoders, fusions and heads (``module_*``): declared widths and output shapes,
  finite values and gradients, the same values under ``jax.jit`` as eagerly, an
  ``nnx.split`` / ``nnx.merge`` round trip, and the same parameters and outputs from the
  same seed;
* encoders (``encoder_*``): the embedding and the token sequence;
* fusions (``fusion_*``), built for modalities ``"a"``, ``"b"``, ``"c"``
  (:data:`FUSION_IN_FEATURES`, and for a fusion with ``uses_tokens`` token sequences of
  :data:`FUSION_TOKEN_FEATURES` / :data:`FUSION_TOKEN_LENGTHS`): an absent modality
  changes nothing, output or gradient, whatever its data (a hypothesis property);
* heads (``head_*``), built with ``in_features`` 6 (``inputs = "fused"``),
  ``{"a": 6, "b": 5}`` (``inputs = "embeddings"``, called as ``head(embeddings, masks)``)
  or the token widths ``{"a": 6, "b": 5}`` (``inputs = "tokens"``, called as
  ``head(tokens, masks)`` with sequences of :data:`HEAD_TOKEN_LENGTHS`), with
  ``label_shape`` and the parameters named like ``test_labels.metadata`` keys from
  ``test_labels``: labels, loss, metric statistics that ignore padding and add up over
  batches, finite metrics, typed answers; a head of token sequences also ignores an
  absent modality's tokens, whatever they hold.  A head whose metrics
  compare the examples of one batch with each other (in-batch retrieval, like the
  ``contrastive`` head's) declares ``metrics_within_batch = True``: its statistics are
  then checked to add up over whole batches only, not over the two halves of one;
* data sets (``dataset_*``): splits, sizes, batches matching the spec, one exact pass
  over a split, seeded order, ``encode``;
* augmentations (``augmentation_*``), on examples of :data:`AUGMENTATION_INPUTS` for each
  kind it ``applies_to``: the same shape and dtype out, finite, the input never written
  to, the same output from the same generator seed and another from other seeds, and the
  settings of its corruptions (if it defines any) at every severity of a sweep.

How inputs are drawn from a :class:`~fusionjax.interfaces.FieldSpec`: see
:func:`example_array`.  The fusion property needs hypothesis
(``pip install "fusionjax[testing]"``).
"""

from __future__ import annotations

import inspect
import json
import math
import tempfile
import wave
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax.answers import Answer
from fusionjax.augmentation import INPUT_KINDS, SEVERITIES, has_corruption
from fusionjax.errors import ConfigError
from fusionjax.interfaces import (
    LABEL,
    MASK_PREFIX,
    Augmentation,
    Dataset,
    Encoder,
    FieldSpec,
    Fusion,
    Head,
    TokenSequence,
)
from fusionjax.registry import ComponentSpec

__all__ = [
    "BATCH", "FUSION_IN_FEATURES", "FUSION_TOKEN_FEATURES", "FUSION_TOKEN_LENGTHS",
    "HEAD_EMBEDDING_FEATURES", "HEAD_FUSED_FEATURES", "HEAD_TOKEN_FEATURES",
    "HEAD_TOKEN_LENGTHS", "ContractError", "Failure", "build",
    "check_component", "check_dataset", "check_encoder", "check_fusion", "check_head",
    "check_plugin", "example_array", "example_batch", "fusion_inputs", "head_tokens",
]

BATCH = 3  # examples per batch in the module checks
FUSION_IN_FEATURES = {"a": 6, "b": 6, "c": 6}  # a fusion's in_features
FUSION_TOKEN_FEATURES = {"a": 5, "b": 3, "c": 4}  # a token fusion's token_features
FUSION_TOKEN_LENGTHS = {"a": 4, "b": 7, "c": 1}  # and its token sequences' lengths
HEAD_FUSED_FEATURES = 6  # a head's in_features (inputs = "fused")
HEAD_EMBEDDING_FEATURES = {"a": 6, "b": 5}  # ... and with inputs = "embeddings"
HEAD_TOKEN_FEATURES = {"a": 6, "b": 5}  # ... and with inputs = "tokens"
HEAD_TOKEN_LENGTHS = {"a": 9, "b": 4}  # ... its token sequences' lengths
HEAD_PADDING = BATCH  # weight-0 rows added to a head's batch (also its second part)
AUGMENTATION_INPUTS = {  # the example an augmentation is checked on, per kind it applies to
    "image": FieldSpec((12, 10, 3), "float32"),
    "audio": FieldSpec((800,), "float32", {"sample_rate": 8000}),
    "text": FieldSpec((16,), "int32", {"vocab_size": 50}),
}
AUGMENTATION_SEEDS = 4  # generator seeds an augmentation is run with, per example
GARBAGE = (np.nan, np.inf, -np.inf, 1e30, -1e30, -7.0, 0.0)  # what an absent modality may hold
MAX_LISTED = 25  # failures quoted in one ContractError
MAX_MESSAGE = 800  # characters of one failure's message
RTOL, ATOL = 1e-5, 1e-6  # jit against eager


# ---- reporting ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    """One broken promise: which component, which check, what went wrong."""

    component: str
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.component}: {self.check}: {self.message}"


class ContractError(AssertionError):
    """Every :class:`Failure` of a check run (``failures``), listed in the message
    (at most :data:`MAX_LISTED`, each message cut at :data:`MAX_MESSAGE` characters)."""

    def __init__(self, failures: list[Failure], what: str = "the component contract"):
        self.failures = list(failures)
        listed = "\n".join(f"  - {f}" for f in self.failures[:MAX_LISTED])
        more = len(self.failures) - MAX_LISTED
        tail = f"\n  (and {more} more)" if more > 0 else ""
        super().__init__(f"{len(self.failures)} failure(s) of {what}:\n{listed}{tail}")


def _message(e: BaseException) -> str:
    text = str(e) if isinstance(e, AssertionError) and str(e) else f"{type(e).__name__}: {e}"
    notes = [n for n in getattr(e, "__notes__", ()) if n.strip()]
    if notes:
        text += " [" + "; ".join(notes) + "]"
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


class _Report:
    """Runs checks on one component and keeps their failures."""

    def __init__(self, component: str):
        self.component = component
        self.failures: list[Failure] = []

    def fail(self, check: str, message: str) -> None:
        self.failures.append(Failure(self.component, check, message))

    def run(self, check: Callable[..., Any], *args: Any) -> bool:
        try:
            check(*args)
        except Exception as e:  # noqa: BLE001 - any exception is a broken promise, reported
            self.fail(check.__name__, _message(e))
            return False
        return True

    def run_all(self, checks: Iterable[Callable[..., Any]], *args: Any, required: int = 0) -> None:
        """Each check in turn; the first ``required`` must pass for the rest to run."""
        for i, check in enumerate(checks):
            if not self.run(check, *args) and i < required:
                return


def _raise(failures: list[Failure], what: str = "the component contract") -> None:
    if failures:
        raise ContractError(failures, what)


# ---- inputs ------------------------------------------------------------------------------

def example_array(spec: FieldSpec, batch_size: int, seed: int = 0) -> np.ndarray:
    """A random NumPy batch ``[batch_size, *spec.shape]`` of ``spec.dtype``, drawn by
    these conventions:

    * bool: random True/False;
    * integer with metadata ``vocab_size`` V: token ids in ``[1, V)``, each row (the last
      axis) padded with trailing 0s after a random length of at least 1;
    * integer with metadata ``num_classes`` C: class ids in ``[0, C)``;
    * other integers: in ``[0, 10)``;
    * floating with metadata ``{"binary": True}``: 0.0 / 1.0 (e.g. multi-hot labels);
    * other floating: standard normal.

    The same ``seed`` gives the same array."""
    return _draw(spec, batch_size, np.random.default_rng(seed))


def example_batch(spec: FieldSpec | Mapping[str, FieldSpec], batch_size: int,
                  seed: int = 0) -> np.ndarray | dict[str, np.ndarray]:
    """:func:`example_array` for one :class:`FieldSpec`; for a mapping (a data set's
    ``spec``), a batch dict with one such array per key (each key drawn on its own)."""
    if isinstance(spec, FieldSpec):
        return example_array(spec, batch_size, seed)
    return {k: _draw(s, batch_size, np.random.default_rng([seed, i]))
            for i, (k, s) in enumerate(spec.items())}


def _draw(spec: FieldSpec, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    shape = (batch_size, *tuple(spec.shape))
    meta = spec.metadata or {}
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        if "vocab_size" in meta:
            vocab = int(meta["vocab_size"])
            if vocab < 2:
                raise ValueError(f"vocab_size must be >= 2 (id 0 is padding), got {vocab}")
            ids = rng.integers(1, vocab, shape)
            if spec.shape:
                length = spec.shape[-1]
                lengths = rng.integers(1, length + 1, (*shape[:-1], 1))
                ids = np.where(np.arange(length) < lengths, ids, 0)
            return ids.astype(dtype)
        if "num_classes" in meta:
            return rng.integers(0, int(meta["num_classes"]), shape).astype(dtype)
        return rng.integers(0, 10, shape).astype(dtype)
    if np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16":
        if meta.get("binary"):
            return (rng.random(shape) < 0.5).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)
    raise ValueError(f"cannot draw examples of dtype {spec.dtype!r}")


def fusion_inputs(batch_size: int = BATCH, seed: int = 0, *, tokens: bool = True
                  ) -> tuple[dict[str, jax.Array], dict[str, TokenSequence] | None]:
    """Embeddings ``{m: [B, FUSION_IN_FEATURES[m]]}`` (standard normal) and, with
    ``tokens``, token sequences ``{m: TokenSequence([B, T_m, FUSION_TOKEN_FEATURES[m]],
    valid)}`` whose rows are valid up to a random length of at least 1."""
    rng = np.random.default_rng(seed)
    emb = {m: jnp.asarray(rng.standard_normal((batch_size, w)), jnp.float32)
           for m, w in FUSION_IN_FEATURES.items()}
    if not tokens:
        return emb, None
    return emb, _token_sequences(FUSION_TOKEN_FEATURES, FUSION_TOKEN_LENGTHS, batch_size, rng)


def _token_sequences(features: Mapping[str, int], lengths: Mapping[str, int], batch_size: int,
                     rng: np.random.Generator) -> dict[str, TokenSequence]:
    """Standard-normal ``{m: [B, lengths[m], features[m]]}`` token sequences, each row valid
    up to a random length of at least 1."""
    seqs = {}
    for m, d in features.items():
        t = lengths[m]
        valid = np.arange(t) < rng.integers(1, t + 1, (batch_size, 1))
        seqs[m] = TokenSequence(jnp.asarray(rng.standard_normal((batch_size, t, d)), jnp.float32),
                                jnp.asarray(valid))
    return seqs


# ---- building ----------------------------------------------------------------------------

_KIND_OF = ((Encoder, "encoder"), (Fusion, "fusion"), (Head, "head"), (Dataset, "dataset"),
            (Augmentation, "augmentation"))


def _target(component: Any) -> tuple[str | None, Any, str]:
    """``(kind, constructor, label)`` of a :class:`ComponentSpec` or a component class."""
    if isinstance(component, ComponentSpec):
        return component.kind, component.load(), f"{component.kind} {component.qualified_name}"
    kind = next((k for base, k in _KIND_OF if isinstance(component, type) and issubclass(component, base)),
                None)
    name = getattr(component, "__qualname__", repr(component))
    return kind, component, f"{kind or 'component'} {getattr(component, '__module__', '?')}.{name}"


def _parameters(target: Any) -> tuple[set[str], bool]:
    """The keyword parameters of a constructor, and whether it takes ``**kwargs``."""
    fn = target.__init__ if isinstance(target, type) else target
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self"}, any(p.kind is p.VAR_KEYWORD for p in params)


def _construct(target: Any, settings: Mapping[str, Any], *, injected: Mapping[str, Any] = {},
               required: Iterable[str] = (), defaults: Mapping[str, Any] = {},
               seed: int | None = 0) -> Any:
    """``target(**settings)`` plus what fusionjax passes: ``injected`` entries the
    constructor takes (``required`` ones always), ``defaults`` for parameters it takes
    that ``settings`` leaves out, and ``rngs=nnx.Rngs(seed)`` (unless ``seed`` is None)."""
    names, var_kw = _parameters(target)
    takes = lambda k: k in names or var_kw  # noqa: E731
    kwargs = {k: v for k, v in defaults.items() if k in names and k not in settings}
    kwargs.update(settings)
    kwargs.update({k: v for k, v in injected.items() if k in required or takes(k)})
    if seed is not None:
        kwargs["rngs"] = nnx.Rngs(seed)
    return target(**kwargs)


def _declared(target: Any, settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if settings is None:
        settings = getattr(target, "test_settings", None)
    return None if settings is None else dict(settings)


def build(component: Any, settings: Mapping[str, Any] | None = None, *, seed: int = 0,
          test_input: FieldSpec | None = None, test_labels: FieldSpec | None = None) -> Any:
    """``component`` (a :class:`ComponentSpec` or a class) built as the checks build it:
    with ``settings`` (default: its ``test_settings``), ``rngs=nnx.Rngs(seed)`` for a
    module, and what fusionjax would pass: an encoder's ``input_shape`` (and parameters
    named like ``test_input.metadata`` keys; an augmentation's too, default: the
    :data:`AUGMENTATION_INPUTS` of the first kind it applies to), a fusion's
    :data:`FUSION_IN_FEATURES`
    (and :data:`FUSION_TOKEN_FEATURES` when it ``uses_tokens``), a head's ``in_features``,
    ``label_shape`` and the parameters named like ``test_labels.metadata`` keys (e.g.
    ``num_classes``, a target ``vocabulary``)."""
    kind, target, label = _target(component)
    kwargs = _declared(target, settings)
    if kwargs is None:
        raise ConfigError(f"{label} declares no test_settings; pass settings")
    if kind == "encoder":
        spec = test_input or getattr(target, "test_input", None)
        if spec is None:
            raise ConfigError(f"{label} declares no test_input; pass test_input")
        return _construct(target, kwargs, injected={"input_shape": tuple(spec.shape)},
                          defaults=dict(spec.metadata or {}), seed=seed)
    if kind == "fusion":
        injected = {"in_features": dict(FUSION_IN_FEATURES)}
        required = ["in_features"]
        if getattr(target, "uses_tokens", False):
            injected["token_features"] = dict(FUSION_TOKEN_FEATURES)
            required.append("token_features")
        return _construct(target, kwargs, injected=injected, required=required, seed=seed)
    if kind == "head":
        spec = test_labels or getattr(target, "test_labels", None)
        reads = getattr(target, "inputs", "fused")
        injected = {"in_features": {"fused": HEAD_FUSED_FEATURES, "embeddings": dict(HEAD_EMBEDDING_FEATURES),
                                    "tokens": dict(HEAD_TOKEN_FEATURES)}.get(reads)}
        defaults = {}
        if spec is not None:
            injected["label_shape"] = tuple(spec.shape)
            defaults = dict(spec.metadata or {})
        return _construct(target, kwargs, injected=injected, required=["in_features"],
                          defaults=defaults, seed=seed)
    if kind == "dataset":
        return _construct(target, kwargs, seed=None)
    if kind == "augmentation":
        spec = test_input or AUGMENTATION_INPUTS[tuple(getattr(target, "applies_to", ()) or ("image",))[0]]
        return _construct(target, kwargs, defaults=dict(spec.metadata or {}), seed=None)
    raise TypeError(f"{label} is not an Encoder, Fusion, Head, Dataset or Augmentation subclass")


# ---- comparing ---------------------------------------------------------------------------

def _floating(x: Any) -> bool:
    return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)


def _same(a: Any, b: Any, what: str, *, exact: bool, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Two pytrees of arrays are equal (``exact``) or close (floating leaves)."""
    la, ta = jax.tree_util.tree_flatten_with_path(a)
    lb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb, f"{what}: the structures differ ({ta} vs {tb})"
    for (path, x), (_, y) in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        where = f"{what}, at {jax.tree_util.keystr(path)}" if path else what
        assert x.shape == y.shape, f"{where}: shapes {x.shape} and {y.shape}"
        if exact or not np.issubdtype(x.dtype, np.floating):
            np.testing.assert_array_equal(x, y, err_msg=where)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=where)


def _finite(tree: Any, what: str) -> None:
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating):
            bad = int(np.size(x) - np.isfinite(x).sum())
            where = f"{what}, at {jax.tree_util.keystr(path)}," if path else what
            assert bad == 0, f"{where} has {bad} non-finite value(s) of {np.size(x)}"


def _positive_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool) and x >= 1


def _shape(x: Any, expected: tuple, what: str) -> None:
    assert tuple(jnp.shape(x)) == tuple(expected), f"{what} has shape {tuple(jnp.shape(x))}, " \
                                                    f"expected {tuple(expected)}"


def _params(module: nnx.Module) -> list[np.ndarray]:
    """Every leaf of the module's state (parameters, and e.g. RNG keys as their data)."""
    leaves = jax.tree.leaves(nnx.state(module))
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in leaves]


# ---- module checks (encoders, fusions, heads) ---------------------------------------------

class _ModuleCase:
    """One module under test, built by the first check (``self.module``), and how to run
    it: :meth:`call`, eagerly on the case's inputs; :meth:`compiled`, the compiled pass
    (``jax.jit`` over ``nnx.merge`` of the split module, compiled once per case)."""

    def __init__(self, target: Any, settings: dict[str, Any], seed: int):
        self.target, self.settings, self.seed = target, settings, seed
        self.module: Any = None
        self.eager: Any = None  # the eager outputs, set by the first check
        # not a bound method: the compiled function must not keep the case alive
        self._jit = jax.jit(type(self)._pass, static_argnums=(0, 1))
        self._compiled: Any = None

    def rebuild(self) -> Any:
        """The module, built (again) from the case's settings and seed."""
        raise NotImplementedError

    def call(self, module: Any) -> Any:
        """The eager outputs of ``module`` on the case's inputs."""
        raise NotImplementedError

    def inputs(self) -> tuple:
        """The arguments of :meth:`_pass` after the module's state."""
        raise NotImplementedError

    def static(self) -> tuple:
        """What :meth:`_pass` needs to know besides its arrays (hashable)."""
        return ()

    @staticmethod
    def _pass(static: tuple, graphdef: Any, params: Any, rest: Any, *inputs: Any) -> tuple[Any, Any, Any]:
        """Traced: ``(outputs, parameter gradient, other gradients or None)``."""
        raise NotImplementedError

    def compiled(self, module: Any = None, *inputs: Any) -> tuple[Any, Any, Any]:
        """:meth:`_pass` of ``module`` (default: the case's) on ``inputs`` (default: the
        case's), compiled once per structure and shape."""
        if module is None and not inputs:
            if self._compiled is None:
                self._compiled = self.compiled(self.module, *self.inputs())
            return self._compiled
        graphdef, params, rest = nnx.split(self.module if module is None else module, nnx.Param, ...)
        return self._jit(self.static(), graphdef, params, rest, *(inputs or self.inputs()))


def _same_structure(module: Any, other: Any, what: str) -> None:
    graphdef, state = nnx.split(module)
    graphdef2, state2 = nnx.split(other)
    assert graphdef2 == graphdef, f"{what} has another structure (or other static attributes)"
    _same(_params(other), _params(module), f"the state of {what}", exact=True)


def module_jit_matches_eager(case: _ModuleCase) -> None:
    """The compiled pass (``jax.jit`` over ``nnx.merge`` of the split module) gives the
    eager outputs, within rtol 1e-5 / atol 1e-6."""
    outputs, _, _ = case.compiled()
    _same(outputs, case.eager, "jitted outputs against eager ones", exact=False)


def module_split_merge_round_trip(case: _ModuleCase) -> None:
    """``nnx.merge(*nnx.split(module))`` has the same structure and state, and gives
    exactly the same outputs and gradients."""
    again = nnx.merge(*nnx.split(case.module))
    _same_structure(case.module, again, "the merged module")
    _same(case.compiled(again), case.compiled(), "the merged module's outputs and gradients", exact=True)


def module_gradients_finite(case: _ModuleCase) -> None:
    """The gradient of the outputs (a head: of its loss) with respect to every parameter
    is finite, and not zero everywhere (a fusion: also the gradients of its inputs)."""
    _, grads, other = case.compiled()
    _finite(grads, "the parameter gradient")
    _finite(other, "the input gradient")
    leaves = jax.tree.leaves(grads)
    assert not leaves or any(np.any(np.asarray(g) != 0) for g in leaves), \
        "the parameter gradient is zero everywhere: the output does not depend on the parameters"


def module_deterministic(case: _ModuleCase) -> None:
    """Built again from the same ``rngs`` seed, it has the same structure and parameters
    and gives exactly the same outputs, eagerly and compiled."""
    again = case.rebuild()
    _same_structure(case.module, again, "a second build")
    _same(case.compiled(again), case.compiled(), "the outputs of a second build", exact=True)


MODULE_CHECKS = (module_jit_matches_eager, module_split_merge_round_trip, module_gradients_finite,
                 module_deterministic)


def _squares(leaves: Iterable[jax.Array]) -> jax.Array:
    """Sum of squares of the floating leaves' finite values: a scalar to differentiate."""
    return sum((jnp.sum(jnp.square(jnp.where(jnp.isfinite(x), x, 0.0).astype(jnp.float32)))
                for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)), jnp.float32(0))


# ---- encoders ----------------------------------------------------------------------------

class _EncoderCase(_ModuleCase):
    def __init__(self, target, settings, seed, spec: FieldSpec):
        super().__init__(target, settings, seed)
        self.spec = spec
        self.x = jnp.asarray(example_array(spec, BATCH, seed))
        self.has_tokens = False  # set by encoder_tokens

    def rebuild(self):
        return build(self.target, self.settings, seed=self.seed, test_input=self.spec)

    def call(self, module):
        return module(self.x), (module.tokens(self.x) if self.has_tokens else None)

    def inputs(self):
        return (self.x,)

    def static(self):
        return (self.has_tokens,)

    @staticmethod
    def _pass(static, graphdef, params, rest, x):
        (tokens,) = static

        def f(p):
            m = nnx.merge(graphdef, p, rest)
            out = m(x), (m.tokens(x) if tokens else None)
            return _squares([out[0]] + ([out[1].values] if tokens else [])), out

        (_, out), grads = jax.value_and_grad(f, has_aux=True)(params)
        return out, grads, None


def encoder_output(case: _EncoderCase) -> None:
    """It is an :class:`Encoder` with a positive int ``out_features``, and ``encoder(x)``
    on a batch drawn from ``test_input`` is a floating ``[B, out_features]`` array of
    finite values."""
    enc = case.module = case.rebuild()
    assert isinstance(enc, Encoder), f"{type(enc).__name__} is not a fusionjax.interfaces.Encoder"
    width = getattr(enc, "out_features", None)
    assert _positive_int(width), f"out_features must be a positive int set in __init__, got {width!r}"
    out = enc(case.x)
    _shape(out, (BATCH, width), "encoder(x)")
    assert _floating(out), f"encoder(x) has dtype {out.dtype}, expected a floating dtype"
    _finite(out, "encoder(x)")
    case.eager = (out, None)


def encoder_tokens(case: _EncoderCase) -> None:
    """With ``token_features`` set (a positive int), ``tokens(x)`` is a
    :class:`TokenSequence`: finite floating ``values [B, T, token_features]`` and bool
    ``valid [B, T]``; without it, ``tokens`` raises NotImplementedError."""
    enc = case.module
    width = getattr(enc, "token_features", None)
    try:
        seq = enc.tokens(case.x)
    except NotImplementedError:
        assert width is None, f"token_features is {width!r} but tokens() raises NotImplementedError"
        return
    assert width is not None, "tokens() returns a sequence but token_features is not set"
    assert _positive_int(width), f"token_features must be a positive int, got {width!r}"
    assert isinstance(seq, TokenSequence), f"tokens() returned {type(seq).__name__}, not a TokenSequence"
    values, valid = seq
    assert jnp.ndim(values) == 3, f"tokens().values has shape {jnp.shape(values)}, expected [B, T, D]"
    _shape(values, (BATCH, values.shape[1], width), "tokens().values")
    _shape(valid, values.shape[:2], "tokens().valid")
    assert valid.dtype == jnp.bool_, f"tokens().valid has dtype {valid.dtype}, expected bool"
    assert _floating(values), f"tokens().values has dtype {values.dtype}, expected a floating dtype"
    _finite(values, "tokens().values")
    case.has_tokens = True
    case.eager = (case.eager[0], seq)


ENCODER_CHECKS = (encoder_output, encoder_tokens, *MODULE_CHECKS)


# ---- fusions -----------------------------------------------------------------------------

MODALITIES = tuple(FUSION_IN_FEATURES)


def _readable_masks(batch: int = BATCH) -> dict[str, jax.Array]:
    """Row 0 has every modality, row 1 lacks "b", row 2 has only "a" (and so on)."""
    rows = np.arange(batch) % 3
    return {"a": jnp.ones(batch, bool), "b": jnp.asarray(rows == 0), "c": jnp.asarray(rows != 2)}


class _FusionCase(_ModuleCase):
    def __init__(self, target, settings, seed, max_examples: int = 15):
        super().__init__(target, settings, seed)
        self.max_examples = max_examples
        self.uses_tokens = bool(getattr(target, "uses_tokens", False))
        self.emb, self.tokens = fusion_inputs(BATCH, seed, tokens=self.uses_tokens)
        self.masks = _readable_masks()

    def rebuild(self):
        return build(self.target, self.settings, seed=self.seed)

    def call(self, module):
        return module(self.emb, self.masks, self.tokens)

    def inputs(self):
        return (self.emb, self.masks, *_values_valid(self.tokens))

    @staticmethod
    def _pass(static, graphdef, params, rest, emb, masks, values, valid):
        def f(p, e, v):
            seqs = None if v is None else {m: TokenSequence(v[m], valid[m]) for m in v}
            return nnx.merge(graphdef, p, rest)(e, masks, seqs)

        out, vjp = jax.vjp(f, params, emb, values)
        grads, g_emb, g_values = vjp(jnp.ones_like(out))  # the cotangent is all ones
        return out, grads, (g_emb, g_values)

    def run(self, emb, masks, tokens):
        """``(output, parameter gradient, embedding gradient, token values gradient)``
        of the compiled pass on other inputs (of the same shapes: no recompilation)."""
        out, grads, (g_emb, g_values) = self.compiled(None, emb, masks, *_values_valid(tokens))
        return out, grads, g_emb, g_values


def _values_valid(tokens: Mapping[str, TokenSequence] | None) -> tuple[Any, Any]:
    if tokens is None:
        return None, None
    return {m: t.values for m, t in tokens.items()}, {m: t.valid for m, t in tokens.items()}


def _fill_absent(emb, tokens, present: Mapping[str, np.ndarray], fill: float):
    """``emb`` and ``tokens`` with every absent row (``present[m]`` False) set to ``fill``."""
    absent = {m: ~np.asarray(present[m]) for m in emb}
    emb = {m: jnp.where(absent[m][:, None], jnp.float32(fill), e) for m, e in emb.items()}
    if tokens is not None:
        tokens = {m: t._replace(values=jnp.where(absent[m][:, None, None], jnp.float32(fill), t.values))
                  for m, t in tokens.items()}
    return emb, tokens


def _present_rows(tree: Any, present: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A per-modality gradient with the absent rows zeroed (they are not compared)."""
    if tree is None:
        return {}
    return {m: np.where(np.asarray(present[m]).reshape((-1,) + (1,) * (np.ndim(g) - 1)), g, 0)
            for m, g in tree.items()}


def fusion_output(case: _FusionCase) -> None:
    """It is a :class:`Fusion` with a positive int ``out_features``, and its output for
    modalities "a", "b", "c" (some absent) is a floating ``[B, out_features]`` array of
    finite values."""
    fusion = case.module = case.rebuild()
    assert isinstance(fusion, Fusion), f"{type(fusion).__name__} is not a fusionjax.interfaces.Fusion"
    width = getattr(fusion, "out_features", None)
    assert _positive_int(width), f"out_features must be a positive int set in __init__, got {width!r}"
    out = case.call(fusion)
    _shape(out, (BATCH, width), "fusion(embeddings, masks, tokens)")
    assert _floating(out), f"the output has dtype {out.dtype}, expected a floating dtype"
    _finite(out, "the output")
    case.eager = out


def fusion_ignores_absent_data(case: _FusionCase) -> None:
    """The readable case of the property below: "b" is absent from rows 1-2 and "c" from
    row 2; filling those with 1e3 and NaN changes no output and no gradient."""
    present = {m: np.asarray(k) for m, k in case.masks.items()}
    out, grads, g_emb, g_tok = case.run(case.emb, case.masks, case.tokens)
    changed = dict(case.emb, b=case.emb["b"].at[1:].set(1e3), c=case.emb["c"].at[2].set(jnp.nan))
    tokens = case.tokens
    if tokens is not None:
        tokens = dict(tokens, b=tokens["b"]._replace(values=tokens["b"].values.at[1:].set(1e3)),
                      c=tokens["c"]._replace(values=tokens["c"].values.at[2].set(jnp.nan)))
    out2, grads2, g_emb2, g_tok2 = case.run(changed, case.masks, tokens)
    _finite(out2, "the output with absent data 1e3 / NaN")
    _same(out2, out, "the output with absent data 1e3 / NaN", exact=True)
    _same(grads2, grads, "the parameter gradient with absent data 1e3 / NaN", exact=True)
    _same(_present_rows(g_emb2, present), _present_rows(g_emb, present),
          "the gradient of the present embeddings with absent data 1e3 / NaN", exact=True)
    _same(_present_rows(g_tok2, present), _present_rows(g_tok, present),
          "the gradient of the present tokens with absent data 1e3 / NaN", exact=True)


def fusion_one_modality_is_enough(case: _FusionCase) -> None:
    """Each example with exactly one modality (the others absent, holding NaN) gets a
    finite output and finite gradients, and the three examples differ: the lone modality
    is used, whichever it is."""
    only = np.eye(len(MODALITIES), dtype=bool)[np.arange(BATCH) % len(MODALITIES)]
    present = {m: only[:, i] for i, m in enumerate(MODALITIES)}
    emb, tokens = fusion_inputs(BATCH, case.seed + 3, tokens=case.uses_tokens)
    emb, tokens = _fill_absent(emb, tokens, present, np.nan)
    out, grads, _, _ = case.run(emb, {m: jnp.asarray(p) for m, p in present.items()}, tokens)
    _finite(out, "the output")
    _finite(grads, "the parameter gradient")
    rows = {tuple(np.round(np.asarray(r, np.float64), 5)) for r in out[: len(MODALITIES)]}
    assert len(rows) == min(BATCH, len(MODALITIES)), \
        "examples with different lone modalities got the same output: a modality is ignored"


def fusion_absent_modalities_change_nothing(case: _FusionCase) -> None:
    """The property (hypothesis, ``max_examples`` examples, derandomized): for any masks
    (each example has any subset of "a", "b", "c", including none) and any data in the
    absent rows of an embedding or a token sequence (NaN, +-inf, +-1e30, ...), the output,
    the gradient with respect to the parameters and the gradients with respect to the
    present embeddings and tokens are exactly those of the same inputs with the absent rows
    left as they were, and all of them are finite."""
    try:
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import strategies as st
    except ImportError as e:
        raise AssertionError("this check needs hypothesis: pip install 'fusionjax[testing]'") from e
    m = len(MODALITIES)

    @settings(max_examples=case.max_examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much], print_blob=False)
    @given(seed=st.integers(0, 2**16),
           rows=st.lists(st.lists(st.booleans(), min_size=m, max_size=m), min_size=BATCH,
                         max_size=BATCH),
           fill=st.sampled_from(GARBAGE))
    def absent_data_changes_nothing(seed, rows, fill):
        flags = np.array(rows, bool)  # [B, M]
        present = {mod: flags[:, i] for i, mod in enumerate(MODALITIES)}
        masks = {mod: jnp.asarray(p) for mod, p in present.items()}
        emb, tokens = fusion_inputs(BATCH, seed, tokens=case.uses_tokens)
        out, grads, g_emb, g_tok = case.run(emb, masks, tokens)
        _finite(out, "the output")
        _finite(grads, "the parameter gradient")
        _finite(_present_rows(g_emb, present), "the gradient of the present embeddings")
        _finite(_present_rows(g_tok, present), "the gradient of the present tokens")
        emb2, tokens2 = _fill_absent(emb, tokens, present, fill)
        out2, grads2, g_emb2, g_tok2 = case.run(emb2, masks, tokens2)
        what = f"with absent rows holding {fill}"
        _same(out2, out, f"the output {what}", exact=True)
        _same(grads2, grads, f"the parameter gradient {what}", exact=True)
        _same(_present_rows(g_emb2, present), _present_rows(g_emb, present),
              f"the gradient of the present embeddings {what}", exact=True)
        _same(_present_rows(g_tok2, present), _present_rows(g_tok, present),
              f"the gradient of the present tokens {what}", exact=True)

    absent_data_changes_nothing()


FUSION_CHECKS = (fusion_output, *MODULE_CHECKS, fusion_ignores_absent_data,
                 fusion_one_modality_is_enough, fusion_absent_modalities_change_nothing)


# ---- heads -------------------------------------------------------------------------------

class _HeadCase(_ModuleCase):
    def __init__(self, target, settings, seed, labels: FieldSpec, within_batch: bool):
        super().__init__(target, settings, seed)
        self.spec, self.within_batch = labels, within_batch
        self.reads = getattr(target, "inputs", "fused")
        n = BATCH + HEAD_PADDING
        self.all_args = self._args(n, seed)  # the head's arguments: (features,) or (embeddings, masks)
        self.all_labels = jnp.asarray(example_array(labels, n, seed + 1))
        self.args = self._slice(self.all_args, slice(0, BATCH))
        self.labels = self.all_labels[:BATCH]

    def _args(self, n: int, seed: int) -> tuple:
        rng = np.random.default_rng([seed, 2])
        if self.reads == "fused":
            return (jnp.asarray(rng.standard_normal((n, HEAD_FUSED_FEATURES)), jnp.float32),)
        if self.reads == "tokens":
            return head_tokens(n, seed), {m: jnp.ones((n,), bool) for m in HEAD_TOKEN_FEATURES}
        emb = {m: jnp.asarray(rng.standard_normal((n, w)), jnp.float32)
               for m, w in HEAD_EMBEDDING_FEATURES.items()}
        return emb, {m: jnp.ones((n,), bool) for m in HEAD_EMBEDDING_FEATURES}

    @staticmethod
    def _slice(tree: Any, rows: slice) -> Any:
        return jax.tree.map(lambda x: x[rows], tree)

    def rebuild(self):
        return build(self.target, self.settings, seed=self.seed, test_labels=self.spec)

    def call(self, module):
        preds = module(*self.args)
        return preds, module.loss(preds, self.labels), module.metric_stats(
            preds, self.labels, jnp.ones(BATCH, jnp.float32))

    def inputs(self):
        return self.args, self.labels

    @staticmethod
    def _pass(static, graphdef, params, rest, args, labels):
        def f(p):
            head = nnx.merge(graphdef, p, rest)
            preds = head(*args)
            loss = head.loss(preds, labels)
            return loss, (preds, loss, head.metric_stats(preds, labels, jnp.ones(len(labels), jnp.float32)))

        (_, out), grads = jax.value_and_grad(f, has_aux=True)(params)
        return out, grads, None

    def stats(self, args: tuple, labels: jax.Array, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Eager ``metric_stats`` of the head's predictions for ``args``, as float64."""
        preds = self.module(*args)
        out = self.module.metric_stats(preds, labels, jnp.asarray(weights, jnp.float32))
        return {k: np.asarray(v, np.float64) for k, v in jax.device_get(dict(out)).items()}


def head_accepts_its_labels(case: _HeadCase) -> None:
    """It is a :class:`Head` (``inputs`` "fused", "embeddings" or "tokens"), and
    ``check_labels(test_labels)`` accepts the labels it declares it learns from."""
    head = case.module = case.rebuild()
    assert isinstance(head, Head), f"{type(head).__name__} is not a fusionjax.interfaces.Head"
    assert head.inputs in ("fused", "embeddings", "tokens"), f"inputs is {head.inputs!r}"
    head.check_labels(case.spec)


def head_output(case: _HeadCase) -> None:
    """The predictions (any pytree) have the batch as the first axis of every leaf, with
    finite floating values; ``loss(predictions, labels)`` is a finite scalar."""
    preds, loss, _ = case.eager = case.call(case.module)
    leaves = jax.tree.leaves(preds)
    assert leaves, "the head returned no arrays"
    for leaf in leaves:
        assert jnp.ndim(leaf) >= 1 and jnp.shape(leaf)[0] == BATCH, \
            f"a prediction leaf has shape {jnp.shape(leaf)}; every leaf needs the batch ({BATCH}) first"
    _finite(preds, "the predictions")
    _shape(loss, (), "loss(predictions, labels)")
    _finite(loss, "the loss")


def head_metric_stats_ignore_padding(case: _HeadCase) -> None:
    """``metric_stats`` with weight-0 rows (the padding of a short last batch, holding
    other examples) gives the statistics of the weight-1 rows alone (rtol 1e-5, atol 1e-4)."""
    alone = case.stats(case.args, case.labels, np.ones(BATCH))
    weights = np.r_[np.ones(BATCH), np.zeros(HEAD_PADDING)]
    padded = case.stats(case.all_args, case.all_labels, weights)
    assert set(padded) == set(alone), f"the statistics' keys change with padding: {set(padded) ^ set(alone)}"
    for k in alone:
        _same(padded[k], alone[k], f"statistic {k!r} with {HEAD_PADDING} padding rows", exact=False,
              rtol=1e-5, atol=1e-4)


def head_metric_stats_are_additive(case: _HeadCase) -> None:
    """The statistics of a batch are the sums of those of its two parts, each run as a
    batch of its own (same keys, same shapes, rtol 1e-5 / atol 1e-4).  A head that declares
    ``metrics_within_batch = True`` (retrieval among the examples of a batch) only needs the
    same keys and shapes from two batches, and finite metrics from their summed
    statistics."""
    n = BATCH + HEAD_PADDING
    whole = case.stats(case.all_args, case.all_labels, np.ones(n))
    first = case.stats(case.args, case.labels, np.ones(BATCH))
    rest = case.stats(case._slice(case.all_args, slice(BATCH, n)), case.all_labels[BATCH:],
                      np.ones(HEAD_PADDING))
    assert set(whole) == set(first) == set(rest), "the statistics' keys depend on the batch"
    for k in whole:
        assert first[k].shape == rest[k].shape == whole[k].shape, \
            f"statistic {k!r} has shapes {first[k].shape}, {rest[k].shape}, {whole[k].shape}"
    if case.within_batch:
        totals = {k: first[k] + rest[k] for k in first}
        _finite(list(case.module.finalize_metrics(totals).values()), "the metrics of two batches")
        return
    for k in whole:
        _same(first[k] + rest[k], whole[k], f"statistic {k!r} of two parts against the whole batch "
              "(a head that compares examples within a batch declares metrics_within_batch = True)",
              exact=False, rtol=1e-5, atol=1e-4)


def head_finalize_metrics(case: _HeadCase) -> None:
    """``finalize_metrics`` (a staticmethod) turns summed statistics into a non-empty dict
    of metric name -> finite Python float (what ``metrics.jsonl`` records)."""
    stats = case.stats(case.args, case.labels, np.ones(BATCH))
    metrics = type(case.module).finalize_metrics(stats)
    assert isinstance(metrics, dict) and metrics, f"finalize_metrics returned {metrics!r}"
    for k, v in metrics.items():
        assert isinstance(k, str), f"metric name {k!r} is not a str"
        assert isinstance(v, float), f"metric {k!r} is a {type(v).__name__}, not a float"
        assert math.isfinite(v), f"metric {k!r} is {v}"
    json.dumps(metrics)


def head_answer(case: _HeadCase) -> None:
    """``answer(predictions)`` (NumPy predictions on the host) returns one
    :class:`~fusionjax.answers.Answer` per example, each with a JSON-serialisable
    ``to_json()`` naming its ``kind`` and printable ``lines()``; a head with no
    single-example answer raises :class:`~fusionjax.errors.ConfigError` instead."""
    preds = jax.device_get(case.eager[0])
    try:
        answers = case.module.answer(preds, label_names=None, top=3)
    except ConfigError:
        return
    assert isinstance(answers, list) and len(answers) == BATCH, \
        f"answer() returned {type(answers).__name__} of {len(answers)} for {BATCH} examples"
    for a in answers:
        assert isinstance(a, Answer), f"answer() gave a {type(a).__name__}, not a fusionjax.answers.Answer"
        data = a.to_json()
        json.dumps(data)
        assert data.get("kind") == a.kind, f"to_json()['kind'] is {data.get('kind')!r}, not {a.kind!r}"
        lines = a.lines()
        assert isinstance(lines, list) and all(isinstance(s, str) for s in lines), \
            "lines() is not a list of str"


def head_ignores_absent_tokens(case: _HeadCase) -> None:
    """(``inputs = "tokens"`` only.)  With modality "a" absent from some examples and "b"
    from another, the loss, the metric statistics, the train statistics and the parameter
    gradients are exactly the same whatever the absent rows' tokens hold (each value of
    :data:`GARBAGE`, NaN included), and the same as with those rows' tokens zeroed."""
    if case.reads != "tokens":
        return
    tokens, masks = case.args
    present = {"a": np.array([False, True, True]), "b": np.array([True, False, True])}
    masks = {m: jnp.asarray(present[m]) for m in masks}
    weights = jnp.ones(BATCH, jnp.float32)

    def run(fill):
        filled = {m: t._replace(values=jnp.where(~present[m][:, None, None], jnp.float32(fill), t.values))
                  for m, t in tokens.items()}
        graphdef, params, rest = nnx.split(case.module, nnx.Param, ...)

        def f(p):
            head = nnx.merge(graphdef, p, rest)
            preds = head(filled, masks)
            loss = head.loss(preds, case.labels)
            return loss, (head.metric_stats(preds, case.labels, weights),
                          head.train_stats(preds, case.labels, weights))

        (loss, stats), grads = jax.value_and_grad(f, has_aux=True)(params)
        return loss, stats, grads

    reference = run(0.0)
    _finite(reference[0], "the loss with absent modalities")
    for fill in GARBAGE:
        loss, stats, grads = run(fill)
        what = f"with absent tokens holding {fill}"
        _same(loss, reference[0], f"the loss {what}", exact=True)
        _same(stats, reference[1], f"the metric statistics {what}", exact=True)
        _same(grads, reference[2], f"the parameter gradient {what}", exact=True)


def head_tokens(batch_size: int, seed: int = 0) -> dict[str, TokenSequence]:
    """Token sequences ``{m: [B, HEAD_TOKEN_LENGTHS[m], HEAD_TOKEN_FEATURES[m]]}`` for a head
    with ``inputs = "tokens"`` (standard normal), each row valid up to a random length of
    at least 1."""
    return _token_sequences(HEAD_TOKEN_FEATURES, HEAD_TOKEN_LENGTHS, batch_size,
                            np.random.default_rng([seed, 3]))


HEAD_CHECKS = (head_accepts_its_labels, head_output, *MODULE_CHECKS, head_metric_stats_ignore_padding,
               head_metric_stats_are_additive, head_finalize_metrics, head_answer,
               head_ignores_absent_tokens)


# ---- data sets ---------------------------------------------------------------------------

class _DatasetCase:
    def __init__(self, target, settings, seed):
        self.target, self.settings, self.seed = target, settings, seed
        self.dataset: Any = None


def _batch_size(n: int) -> int:
    """A batch size that leaves a short last batch (when ``n >= 3``), at most 64."""
    if n < 3:
        return max(n, 1)
    return next(b for b in range(min(64, n // 2 + 1), 1, -1) if n % b)


def _pass(ds: Dataset, split: str, batch_size: int, *, seed: int, shuffle: bool,
          drop_remainder: bool) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v) for k, v in b.items()}
            for b in ds.batches(split, batch_size, seed=seed, shuffle=shuffle, drop_remainder=drop_remainder)]


def _rows(batches: list[dict[str, np.ndarray]]) -> Counter:
    """The examples of a pass as a multiset (each example: its bytes under every key)."""
    out: Counter = Counter()
    for b in batches:
        keys = sorted(b)
        for i in range(len(b[LABEL])):
            out[tuple(np.ascontiguousarray(b[k][i]).tobytes() for k in keys)] += 1
    return out


def _same_pass(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f")
                                     for k in x) for x, y in zip(a, b))


def dataset_builds(case: _DatasetCase) -> None:
    """It is a :class:`Dataset`, built from ``test_settings`` as keyword arguments (no
    ``rngs``)."""
    ds = case.dataset = build(case.target, case.settings)
    assert isinstance(ds, Dataset), f"{type(ds).__name__} is not a fusionjax.interfaces.Dataset"


def dataset_spec(case: _DatasetCase) -> None:
    """``spec`` maps ``"label"``, at least one modality and any ``"mask/<modality>"``
    (shape ``()``, bool, of a modality in the spec) to :class:`FieldSpec` s with tuple
    shapes and NumPy dtypes; ``num_classes`` is None or an int >= 1, and ``label_names``
    None or that many strings."""
    ds = case.dataset
    spec = ds.spec
    assert isinstance(spec, Mapping), f"spec is a {type(spec).__name__}, not a mapping"
    assert LABEL in spec, f"spec has no {LABEL!r}"
    assert ds.modalities, "spec has no modality"
    for k, s in spec.items():
        assert isinstance(s, FieldSpec), f"spec[{k!r}] is a {type(s).__name__}, not a FieldSpec"
        assert isinstance(s.shape, tuple) and all(_positive_int(d) for d in s.shape), \
            f"spec[{k!r}].shape must be a tuple of positive ints, got {s.shape!r}"
        np.dtype(s.dtype)
        if k.startswith(MASK_PREFIX):
            assert k[len(MASK_PREFIX):] in ds.modalities, f"{k!r} names no modality of the spec"
            assert s.shape == () and np.dtype(s.dtype) == np.bool_, \
                f"spec[{k!r}] must be FieldSpec((), 'bool'), got {s}"
    n = ds.num_classes
    assert n is None or _positive_int(n), f"num_classes must be None or an int >= 1, got {n!r}"
    names = ds.label_names
    if names is not None:
        assert isinstance(names, tuple) and all(isinstance(x, str) for x in names), \
            f"label_names must be a tuple of str, got {names!r}"
        assert n is None or len(names) == n, f"{len(names)} label_names for {n} classes"


def dataset_splits(case: _DatasetCase) -> None:
    """``splits`` is a tuple of str holding "train"; ``size(split)`` is an int >= 1 for
    each; an unknown split is a :class:`~fusionjax.errors.ConfigError`
    (``check_split("nope")``)."""
    ds = case.dataset
    splits = ds.splits
    assert isinstance(splits, tuple) and all(isinstance(s, str) for s in splits), \
        f"splits must be a tuple of str, got {splits!r}"
    assert "train" in splits, f"splits {splits} has no 'train'"
    for split in splits:
        n = ds.size(split)
        assert _positive_int(n), f"size({split!r}) is {n!r}, expected an int >= 1"
    try:
        ds.check_split("nope")
    except ConfigError:
        return
    raise AssertionError("check_split('nope') raised no ConfigError")


def dataset_batches_match_the_spec(case: _DatasetCase) -> None:
    """Every batch of an unshuffled pass over each split holds exactly the spec's keys
    (modalities, "label", masks), each an array ``[b, *spec.shape]`` of ``spec.dtype``;
    every batch is full but the last, and the pass holds ``size(split)`` examples."""
    ds = case.dataset
    for split in ds.splits:
        n = ds.size(split)
        bs = _batch_size(n)
        batches = _pass(ds, split, bs, seed=case.seed, shuffle=False, drop_remainder=False)
        sizes = []
        for i, batch in enumerate(batches):
            assert set(batch) == set(ds.spec), \
                f"{split} batch {i} has keys {sorted(batch)}; the spec lists {sorted(ds.spec)}"
            b = len(batch[LABEL])
            sizes.append(b)
            for k, s in ds.spec.items():
                x = batch[k]
                assert x.shape == (b, *s.shape), f"{split} batch {i}: {k!r} has shape {x.shape}, " \
                                                 f"the spec says {(b, *s.shape)}"
                assert x.dtype == np.dtype(s.dtype), \
                    f"{split} batch {i}: {k!r} has dtype {x.dtype}, the spec says {s.dtype}"
        assert sum(sizes) == n, f"a pass over {split!r} holds {sum(sizes)} examples, size() is {n}"
        assert all(b == bs for b in sizes[:-1]) and 1 <= sizes[-1] <= bs, \
            f"batches of {split!r} at batch size {bs} have sizes {sizes}"


def dataset_one_exact_pass(case: _DatasetCase) -> None:
    """A shuffled pass over each split holds the same examples as the unshuffled one with
    the same seed, each exactly as often (per-example randomness must depend on the
    example, not on its place in the pass); with ``drop_remainder`` the train pass has
    only full batches, ``size - size % batch_size`` examples."""
    ds = case.dataset
    for split in ds.splits:
        bs = _batch_size(ds.size(split))
        plain = _pass(ds, split, bs, seed=case.seed, shuffle=False, drop_remainder=False)
        mixed = _pass(ds, split, bs, seed=case.seed, shuffle=True, drop_remainder=False)
        assert _rows(mixed) == _rows(plain), \
            f"a shuffled pass over {split!r} does not hold the unshuffled pass's examples once each"
    n = ds.size("train")
    bs = _batch_size(n)
    sizes = [len(b[LABEL]) for b in _pass(ds, "train", bs, seed=case.seed, shuffle=True,
                                          drop_remainder=True)]
    assert all(b == bs for b in sizes) and sum(sizes) == n - n % bs, \
        f"drop_remainder=True over 'train' ({n} examples, batch size {bs}) gave batches of {sizes}"


def dataset_seeded_order(case: _DatasetCase) -> None:
    """Two shuffled passes over "train" with the same seed are identical, and (with at
    least 3 examples) passes with other seeds differ."""
    ds = case.dataset
    n = ds.size("train")
    bs = _batch_size(n)
    one = _pass(ds, "train", bs, seed=case.seed + 1, shuffle=True, drop_remainder=False)
    again = _pass(ds, "train", bs, seed=case.seed + 1, shuffle=True, drop_remainder=False)
    assert _same_pass(one, again), "two shuffled passes with the same seed differ"
    if n >= 3:
        others = (_pass(ds, "train", bs, seed=case.seed + s, shuffle=True, drop_remainder=False)
                  for s in (2, 3, 4))
        assert any(not _same_pass(one, other) for other in others), \
            "shuffled passes with seeds 1, 2, 3 and 4 are all the same"


def _raw_input(spec: FieldSpec, folder: Path, name: str) -> str | None:
    """A raw input that ``spec`` plausibly reads, or None: a text for token ids, a PNG
    for an image (float ``[H, W]`` / ``[H, W, 1 or 3]``), a WAV for float audio whose
    metadata has a ``sample_rate``."""
    dtype = np.dtype(spec.dtype)
    meta = spec.metadata or {}
    if np.issubdtype(dtype, np.integer) and "vocab_size" in meta:
        return "the quick brown fox jumps over the lazy dog"
    if not np.issubdtype(dtype, np.floating):
        return None
    rng = np.random.default_rng(0)
    if len(spec.shape) in (2, 3) and (len(spec.shape) == 2 or spec.shape[2] in (1, 3)):
        from PIL import Image

        h, w = spec.shape[:2]
        rgb = len(spec.shape) == 3 and spec.shape[2] == 3
        pixels = rng.integers(0, 256, (h, w, 3) if rgb else (h, w), dtype=np.uint8)
        path = folder / f"{name}.png"
        Image.fromarray(pixels).save(path)
        return str(path)
    if len(spec.shape) == 1 and "sample_rate" in meta:
        rate = int(meta["sample_rate"])
        samples = (rng.uniform(-0.5, 0.5, spec.shape[0]) * 32767).astype("<i2")
        path = folder / f"{name}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(samples.tobytes())
        return str(path)
    return None


def dataset_encode(case: _DatasetCase) -> None:
    """``encode(modality, value)``, for each modality a raw input can be made up for (a
    text for token ids, a PNG for an image, a WAV for audio with a ``sample_rate``), is an
    array of ``spec[modality].shape`` and dtype.  Skipped for a data set whose ``encode``
    raises NotImplementedError (it reads no new inputs)."""
    ds = case.dataset
    with tempfile.TemporaryDirectory(prefix="fusionjax-encode-") as tmp:
        for m in ds.modalities:
            spec = ds.spec[m]
            raw = _raw_input(spec, Path(tmp), m.replace("/", "_"))
            if raw is None:
                continue
            try:
                x = np.asarray(ds.encode(m, raw))
            except NotImplementedError:
                return
            assert x.shape == tuple(spec.shape), f"encode({m!r}, ...) has shape {x.shape}, " \
                                                  f"the spec says {tuple(spec.shape)}"
            assert x.dtype == np.dtype(spec.dtype), \
                f"encode({m!r}, ...) has dtype {x.dtype}, the spec says {spec.dtype}"


def dataset_resolved_settings(case: _DatasetCase) -> None:
    """``resolved_settings()`` is a JSON-serialisable dict of constructor parameters (what
    the run's config records as used)."""
    resolved = case.dataset.resolved_settings()
    assert isinstance(resolved, dict), f"resolved_settings() returned {type(resolved).__name__}"
    names, var_kw = _parameters(case.target)
    unknown = set(resolved) - names
    assert var_kw or not unknown, f"resolved_settings() names no constructor parameter: {sorted(unknown)}"
    json.dumps(resolved)


DATASET_CHECKS = (dataset_builds, dataset_spec, dataset_splits, dataset_batches_match_the_spec,
                  dataset_one_exact_pass, dataset_seeded_order, dataset_encode, dataset_resolved_settings)


# ---- augmentations -----------------------------------------------------------------------

class _AugmentationCase:
    """The augmentation built for each kind of input it applies to, and a few examples of
    each (:data:`AUGMENTATION_INPUTS`, drawn by :func:`example_array`)."""

    def __init__(self, target, settings, seed):
        self.target, self.settings, self.seed = target, settings, seed
        self.kinds = tuple(getattr(target, "applies_to", ()))
        self.built: dict[str, Any] = {}
        self.examples = {k: list(example_array(AUGMENTATION_INPUTS[k], BATCH, seed))
                         for k in self.kinds if k in AUGMENTATION_INPUTS}

    def outputs(self, kind: str, rng_seed: int, augmentation: Any = None) -> list[np.ndarray]:
        """The augmentation of every example of ``kind``, each with ``default_rng([rng_seed, i])``
        and read-only (an augmentation that writes to its input fails here)."""
        augmentation = augmentation or self.built[kind]
        out = []
        for i, x in enumerate(self.examples[kind]):
            x = x.copy()
            x.flags.writeable = False
            out.append(augmentation(x, np.random.default_rng([rng_seed, i])))
        return out


def augmentation_applies_to(case: _AugmentationCase) -> None:
    """``applies_to`` is a non-empty tuple of ``"image"``, ``"audio"`` and ``"text"``."""
    kinds = case.kinds
    assert kinds and all(k in INPUT_KINDS for k in kinds), \
        f"applies_to must be a non-empty tuple of {', '.join(map(repr, INPUT_KINDS))}, got {kinds!r}"


def augmentation_builds(case: _AugmentationCase) -> None:
    """It is an :class:`Augmentation`, built from ``test_settings`` (no ``rngs``), with
    the parameters named like a metadata key of each kind's input taken from it."""
    for kind in case.kinds:
        built = case.built[kind] = build(case.target, case.settings,
                                         test_input=AUGMENTATION_INPUTS[kind])
        assert isinstance(built, Augmentation), \
            f"{type(built).__name__} is not a fusionjax.interfaces.Augmentation"


def _check_outputs(inputs: list[np.ndarray], outputs: list[Any], what: str) -> None:
    for x, y in zip(inputs, outputs):
        assert isinstance(y, np.ndarray), f"{what} returned a {type(y).__name__}, not a NumPy array"
        assert y.shape == x.shape and y.dtype == x.dtype, \
            f"{what} turned {x.dtype} {list(x.shape)} into {y.dtype} {list(y.shape)}"
        if np.issubdtype(y.dtype, np.floating):
            assert np.all(np.isfinite(y)), f"{what} returned non-finite values"


def augmentation_output(case: _AugmentationCase) -> None:
    """Every output is a NumPy array of its input's shape and dtype, finite where it is
    floating, and the input (passed read-only) is never written to."""
    for kind in case.kinds:
        _check_outputs(case.examples[kind], case.outputs(kind, case.seed), f"on a {kind} input, it")


def augmentation_deterministic(case: _AugmentationCase) -> None:
    """The same generator seed gives the same outputs; other seeds give other outputs for
    some example (it is random with its test settings)."""
    for kind in case.kinds:
        one, again = case.outputs(kind, case.seed), case.outputs(kind, case.seed)
        assert all(np.array_equal(a, b) for a, b in zip(one, again)), \
            f"on a {kind} input, two runs with the same generator seed differ"
        others = [case.outputs(kind, case.seed + s) for s in range(1, AUGMENTATION_SEEDS)]
        assert any(not np.array_equal(a, b) for other in others for a, b in zip(one, other)), \
            (f"on a {kind} input, {AUGMENTATION_SEEDS} generator seeds give the same outputs: "
             "is it random with its test_settings, and does it draw from the generator it is given?")


def augmentation_corruption(case: _AugmentationCase) -> None:
    """A corruption (if it defines one): ``corruption(severity)`` is a dict of settings that
    build it, for every severity of a sweep (:data:`fusionjax.augmentation.SEVERITIES`),
    and their outputs keep shape and dtype."""
    if not has_corruption(case.target):
        return
    for severity in SEVERITIES:
        settings = case.target.corruption(severity)
        assert isinstance(settings, Mapping), \
            f"corruption({severity}) returned a {type(settings).__name__}, not a dict of settings"
        for kind in case.kinds:
            corrupt = build(case.target, settings, test_input=AUGMENTATION_INPUTS[kind])
            _check_outputs(case.examples[kind], case.outputs(kind, case.seed, corrupt),
                           f"its corruption({severity}) on a {kind} input")


AUGMENTATION_CHECKS = (augmentation_applies_to, augmentation_builds, augmentation_output,
                       augmentation_deterministic, augmentation_corruption)


# ---- entry points ------------------------------------------------------------------------

_ASK = ("set the class attribute `test_settings = {...}`: the smallest constructor settings it is "
        "tested with (`{}` when its defaults are small)")


def _prepare(component: Any, kind: str, settings: Mapping[str, Any] | None
             ) -> tuple[_Report, Any, dict[str, Any] | None]:
    try:
        actual, target, label = _target(component)
    except Exception as e:  # noqa: BLE001 - a lazy target that fails to import
        report = _Report(f"{kind} {getattr(component, 'qualified_name', component)!r}")
        report.fail("import", _message(e))
        return report, None, None
    report = _Report(label)
    if actual is not None and actual != kind:
        report.fail("kind", f"is a {actual}, checked as a {kind}")
        return report, None, None
    declared = _declared(target, settings)
    if declared is None:
        report.fail("declares_test_settings", f"declares no test_settings: {_ASK}")
    return report, target, declared


def _encoder_failures(encoder: Any, settings=None, *, test_input: FieldSpec | None = None,
                      seed: int = 0) -> list[Failure]:
    report, target, declared = _prepare(encoder, "encoder", settings)
    spec = test_input or getattr(target, "test_input", None)
    if target is not None and spec is None:
        report.fail("declares_test_input", "declares no test_input: set the class attribute "
                    "`test_input = FieldSpec(shape, dtype, metadata)`, the per-example input its "
                    "test_settings take")
    if report.failures:
        return report.failures
    try:
        case = _EncoderCase(target, declared, seed, spec)
    except Exception as e:  # noqa: BLE001
        report.fail("test_input", _message(e))
        return report.failures
    report.run_all(ENCODER_CHECKS, case, required=2)
    return report.failures


def _fusion_failures(fusion: Any, settings=None, *, seed: int = 0, max_examples: int = 15) -> list[Failure]:
    report, target, declared = _prepare(fusion, "fusion", settings)
    if report.failures:
        return report.failures
    case = _FusionCase(target, declared, seed, max_examples)
    report.run_all(FUSION_CHECKS, case, required=1)
    return report.failures


def _head_failures(head: Any, settings=None, *, test_labels: FieldSpec | None = None,
                   within_batch: bool | None = None, seed: int = 0) -> list[Failure]:
    report, target, declared = _prepare(head, "head", settings)
    spec = test_labels or getattr(target, "test_labels", None)
    if target is not None and spec is None:
        report.fail("declares_test_labels", "declares no test_labels: set the class attribute "
                    "`test_labels = FieldSpec(shape, dtype, metadata)`, the per-example labels it "
                    "learns from with its test_settings")
    if report.failures:
        return report.failures
    if within_batch is None:
        within_batch = bool(getattr(target, "metrics_within_batch", False))
    try:
        case = _HeadCase(target, declared, seed, spec, within_batch)
    except Exception as e:  # noqa: BLE001
        report.fail("test_labels", _message(e))
        return report.failures
    report.run_all(HEAD_CHECKS, case, required=2)
    return report.failures


def _dataset_failures(dataset: Any, settings=None, *, seed: int = 0) -> list[Failure]:
    report, target, declared = _prepare(dataset, "dataset", settings)
    if report.failures:
        return report.failures
    report.run_all(DATASET_CHECKS, _DatasetCase(target, declared, seed), required=3)
    return report.failures


def _augmentation_failures(augmentation: Any, settings=None, *, seed: int = 0) -> list[Failure]:
    report, target, declared = _prepare(augmentation, "augmentation", settings)
    if report.failures:
        return report.failures
    report.run_all(AUGMENTATION_CHECKS, _AugmentationCase(target, declared, seed), required=2)
    return report.failures


def check_encoder(encoder: Any, settings: Mapping[str, Any] | None = None, *,
                  test_input: FieldSpec | None = None, seed: int = 0) -> None:
    """Every encoder check (``encoder_*``, ``module_*``) on ``encoder`` (a
    :class:`ComponentSpec` or an :class:`Encoder` class), built with ``settings``
    (default: its ``test_settings``) for a batch of :data:`BATCH` examples drawn from
    ``test_input`` (default: its ``test_input``) by :func:`example_array`.  Raises one
    :class:`ContractError` listing every failure."""
    _raise(_encoder_failures(encoder, settings, test_input=test_input, seed=seed))


def check_fusion(fusion: Any, settings: Mapping[str, Any] | None = None, *, seed: int = 0,
                 max_examples: int = 15) -> None:
    """Every fusion check (``fusion_*``, ``module_*``) on ``fusion``, built with
    ``settings`` (default: its ``test_settings``) for modalities "a", "b", "c";
    ``max_examples``: of the hypothesis property.  Raises one :class:`ContractError`."""
    _raise(_fusion_failures(fusion, settings, seed=seed, max_examples=max_examples))


def check_head(head: Any, settings: Mapping[str, Any] | None = None, *,
               test_labels: FieldSpec | None = None, within_batch: bool | None = None,
               seed: int = 0) -> None:
    """Every head check (``head_*``, ``module_*``) on ``head``, built with ``settings``
    (default: its ``test_settings``), learning from labels drawn from ``test_labels``
    (default: its ``test_labels``).  ``within_batch``: whether its metrics compare the
    examples of one batch (default: its ``metrics_within_batch`` attribute, else False).
    Raises one :class:`ContractError`."""
    _raise(_head_failures(head, settings, test_labels=test_labels, within_batch=within_batch, seed=seed))


def check_dataset(dataset: Any, settings: Mapping[str, Any] | None = None, *, seed: int = 0) -> None:
    """Every data-set check (``dataset_*``) on ``dataset``, built from ``settings``
    (default: its ``test_settings``).  Raises one :class:`ContractError`."""
    _raise(_dataset_failures(dataset, settings, seed=seed))


def check_augmentation(augmentation: Any, settings: Mapping[str, Any] | None = None, *,
                       seed: int = 0) -> None:
    """Every augmentation check (``augmentation_*``) on ``augmentation`` (a
    :class:`ComponentSpec` or an :class:`Augmentation` class), built with ``settings``
    (default: its ``test_settings``).  Raises one :class:`ContractError`."""
    _raise(_augmentation_failures(augmentation, settings, seed=seed))


_FAILURES = {"encoder": _encoder_failures, "fusion": _fusion_failures, "head": _head_failures,
             "dataset": _dataset_failures, "augmentation": _augmentation_failures}


def _component_failures(component: Any, settings=None, **options: Any) -> list[Failure]:
    kind = component.kind if isinstance(component, ComponentSpec) else _target(component)[0]
    if kind not in _FAILURES:
        return [Failure(repr(component), "kind", "is not an Encoder, Fusion, Head, Dataset or "
                        "Augmentation (subclass), nor a registered component")]
    return _FAILURES[kind](component, settings, **options)


def check_component(component: Any, settings: Mapping[str, Any] | None = None, **options: Any) -> None:
    """The checks of ``component``'s kind: :func:`check_encoder`, :func:`check_fusion`,
    :func:`check_head`, :func:`check_dataset` or :func:`check_augmentation` (``options`` are
    theirs), for a
    :class:`ComponentSpec` (e.g. ``default_registry().resolve("fusion", "concat")``) or a
    component class."""
    _raise(_component_failures(component, settings, **options))


def check_plugin(name: str) -> None:
    """Every component the installed plugin ``name`` (its entry-point name) registers,
    checked with its declared test settings.  Raises one :class:`ContractError` listing
    every failure of every component; an uninstalled, disabled or broken plugin fails
    with what ``fusionjax plugins list`` says about it."""
    from fusionjax.plugins import default_registry, loaded

    registry = default_registry()
    infos = {p.name: p for p in loaded().plugins}
    info = infos.get(name)
    if info is None:
        raise AssertionError(
            f"no plugin {name!r} is installed in this environment (installed: {', '.join(sorted(infos))}); "
            f"install its package (`pip install -e .`), and check its entry point under "
            f'[project.entry-points."fusionjax.plugins"]')
    if info.status != "active":
        raise AssertionError(f"plugin {name!r} ({info.package} {info.version}) is {info.status}"
                             + (f": {info.error}" if info.error else ""))
    specs = [s for s in registry if s.origin.plugin == name]
    if not specs and not info.components:
        raise AssertionError(f"plugin {name!r} registers nothing")
    failures = [f for spec in specs for f in _component_failures(spec)]
    _raise(failures, f"the contract of plugin {name!r} ({len(specs)} components)")
