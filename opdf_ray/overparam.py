"""Model surgery: over-parameterise the encoder matrices of a BERT-family model with MPO, and merge them back.

Modules are addressed by their ``named_modules()`` names matched against regular expressions (full match).
Matches are collected and validated first; only then is each one swapped through its parent, so a bad input
never leaves a half-converted model. No ``eval`` of strings, no editing of names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from torch import nn

from opdf_ray import mpo
from opdf_ray.layers import MPOLinear

log = logging.getLogger(__name__)

# The six matrices of every encoder layer (Hugging Face names, relative to a layer): Q, K, V, attention output, FFN
# in, FFN out — BERT, RoBERTa, XLM-R, ELECTRA and DeBERTa-v2 (``query_proj``…) share the layout, DistilBERT names them
# ``q_lin``…``lin2``. Biases, LayerNorm, embeddings, pooler and classifier stay dense.
LAYER_MATRICES: tuple[str, ...] = (
    r"attention\.self\.(query|key|value)(_proj)?",
    r"attention\.output\.dense",
    r"intermediate\.dense",
    r"output\.dense",
    r"attention\.(q_lin|k_lin|v_lin|out_lin)",
    r"ffn\.(lin1|lin2)",
)
# ... addressed from a whole model (``bert.encoder.layer.3.intermediate.dense``) or from a layer list
# (``3.output.dense``)
DEFAULT_TARGETS: tuple[str, ...] = tuple(rf"(.*\.)?layer\.\d+\.{m}" for m in LAYER_MATRICES)
LAYER_LIST_TARGETS: tuple[str, ...] = tuple(rf"\d+\.{m}" for m in LAYER_MATRICES)


def _compile(targets: Sequence[str] | str) -> list[re.Pattern]:
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise ValueError("targets must name at least one module pattern (a regular expression, full match)")
    patterns = []
    for t in targets:
        try:
            patterns.append(re.compile(t))
        except re.error as e:
            raise ValueError(f"target pattern {t!r} is not a valid regular expression: {e}") from None
    return patterns


def find_targets(model: nn.Module, targets: Sequence[str] | str | None = None) -> list[str]:
    """Names of the modules of ``model`` whose full name matches one of ``targets``; each must be ``nn.Linear``.

    ``targets=None`` means the six encoder matrices: ``DEFAULT_TARGETS`` for a model, ``LAYER_LIST_TARGETS``
    when ``model`` is an ``nn.ModuleList`` of layers (e.g. BERT-of-Theseus's successor layers).

    Raises:
        ValueError: nothing matched (the message shows some real Linear names), or a match is not an
            ``nn.Linear`` (an ``MPOLinear`` means the model is already over-parameterised).
    """
    if targets is None:
        targets = LAYER_LIST_TARGETS if isinstance(model, nn.ModuleList) else DEFAULT_TARGETS
    patterns = _compile(targets)
    matches = [(name, m) for name, m in model.named_modules() if name and any(p.fullmatch(name) for p in patterns)]
    if not matches:
        linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(
            f"no module of {type(model).__name__} matched targets {list(map(str, targets))} (full-match regular "
            f"expressions on named_modules() names); Linear modules here include: {linears[:8] or 'none'}")
    wrong = [(name, type(m).__name__) for name, m in matches if not isinstance(m, nn.Linear)]
    if wrong:
        hint = " (already over-parameterised: merge() it first)" if any(t == "MPOLinear" for _, t in wrong) else ""
        raise ValueError(f"targets must be nn.Linear modules, but {wrong[:5]} matched{hint}; narrow the patterns")
    return [name for name, _ in matches]


def encoder_matrices(layers: nn.Module) -> dict[str, nn.Linear | MPOLinear]:
    """The six encoder matrices of every layer of ``layers`` (a layer list or a model), dense or over-parameterised,
    by name: what OPDF decomposes and what L2-SP and drift measure, in module order."""
    patterns = _compile(LAYER_LIST_TARGETS if isinstance(layers, nn.ModuleList) else DEFAULT_TARGETS)
    return {name: m for name, m in layers.named_modules()
            if name and isinstance(m, (nn.Linear, MPOLinear)) and any(p.fullmatch(name) for p in patterns)}


def overparameterize(model: nn.Module, n_cores: int, bond_dim: int | None = None,
                     targets: Sequence[str] | str | None = None, style: str = "paper", name: str = "the model"
                     ) -> nn.Module:
    """Replace, in place, every target ``nn.Linear`` of ``model`` by an ``MPOLinear`` with ``n_cores`` cores.

    Works for any hidden size, head count and depth: factor shapes come from each matrix's real size. At full
    rank (``bond_dim=None``) the model computes the same function as before (to float rounding).

    ``targets``: see ``find_targets`` (default: the six encoder matrices of every layer). ``name``: what ``model`` is,
    for the log line.

    Returns:
        ``model`` itself (modified in place), for chaining.

    Raises:
        ValueError: see ``find_targets``; bad ``n_cores``/``bond_dim``/``style``, or a matrix size the style
            cannot factor — all checked before any module is replaced.
    """
    names = find_targets(model, targets)
    sizes = {(model.get_submodule(n).out_features, model.get_submodule(n).in_features) for n in names}
    shapes = {size: mpo.factor_shapes(*size, n_cores, style) for size in sorted(sizes)}   # validate all first
    mpo.check_bond_dim(bond_dim)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, child)
        size = (linear.out_features, linear.in_features)
        setattr(parent, child, MPOLinear.from_linear(linear, n_cores, bond_dim, shapes=shapes[size]))
    counts = parameter_counts(model)
    log.info("over-parameterised %s: %d matrices with %d cores (bond_dim=%s, style=%s): %s train / %s inference "
             "parameters (%.2f×)", name, len(names), n_cores, bond_dim, style, f"{counts['train']:,}",
             f"{counts['inference']:,}", counts["train"] / counts["inference"])
    return model


def mpo_modules(model: nn.Module) -> dict[str, MPOLinear]:
    """All ``MPOLinear`` modules of ``model`` by name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MPOLinear)}


def merge(model: nn.Module) -> nn.Module:
    """Contract every ``MPOLinear`` back into an ``nn.Linear``, in place, restoring the stock architecture.

    Afterwards ``model.save_pretrained`` writes a checkpoint stock ``transformers`` loads with no opdf-ray. A
    model with no ``MPOLinear`` is returned unchanged.
    """
    for name in list(mpo_modules(model)):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, getattr(parent, child).to_linear())
    return model


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``train``: parameters the optimiser sees (cores counted); ``inference``: parameters after ``merge``."""
    train = sum(p.numel() for p in model.parameters())
    mpos = mpo_modules(model).values()
    core_params = sum(c.numel() for m in mpos for c in m.cores)
    dense_weights = sum(m.in_features * m.out_features for m in mpos)
    return {"train": train, "inference": train - core_params + dense_weights}


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer layers of ``model`` that hold ``MPOLinear`` modules (or ``model`` if it is one).

    Raises:
        ValueError: no such list (not over-parameterised) or several (pass the intended ``nn.ModuleList``).
    """
    if isinstance(model, nn.ModuleList):
        return model
    lists = {name: m for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and any(isinstance(x, MPOLinear) for x in m.modules())}
    outer = {n: m for n, m in lists.items() if not any(n.startswith(o + ".") for o in lists if o != n)}
    if len(outer) != 1:
        problem = ("has no layer list holding MPOLinear modules: over-parameterise it first" if not outer else
                   f"has several layer lists holding MPOLinear modules ({sorted(outer)}): pass the one to align")
        raise ValueError(f"{type(model).__name__} {problem}")
    return next(iter(outer.values()))


def default_layer_map(n_student: int, n_teacher: int) -> dict[int, int]:
    """Student layer i ↔ teacher layer ``(i+1)·T//S − 1``, the last layer of its block (2i+1 for a 2× teacher)."""
    if n_teacher < n_student:
        raise ValueError(f"the default layer map needs a teacher at least as deep as the student, got teacher "
                         f"{n_teacher} < student {n_student} layers; pass layer_map explicitly")
    return {i: (i + 1) * n_teacher // n_student - 1 for i in range(n_student)}


def pair_mpo_layers(student: nn.Module, teacher: nn.Module,
                    layer_map: Sequence[int] | dict[int, int] | None = None) -> list[tuple[str, MPOLinear, MPOLinear]]:
    """Pairs ``(name, student MPOLinear, teacher MPOLinear)``: the same matrix in student layer i and teacher layer
    ``layer_map[i]``. ``layer_map`` is a sequence (teacher index per student layer) or a dict (student → teacher);
    ``None`` = ``default_layer_map``. ``student``/``teacher`` are models or their ``nn.ModuleList`` of layers.

    Raises:
        ValueError: a layer index out of range, or a student matrix with no over-parameterised twin in the teacher.
    """
    s_layers, t_layers = encoder_layers(student), encoder_layers(teacher)
    if layer_map is None:
        mapping = default_layer_map(len(s_layers), len(t_layers))
    elif isinstance(layer_map, dict):
        mapping = dict(layer_map)
    else:
        mapping = dict(enumerate(layer_map))
    pairs = []
    for i, j in sorted(mapping.items()):
        if not (0 <= i < len(s_layers) and 0 <= j < len(t_layers)):
            raise ValueError(f"layer_map entry {i} → {j} is out of range: the student has {len(s_layers)} layers "
                             f"(0..{len(s_layers) - 1}), the teacher {len(t_layers)} (0..{len(t_layers) - 1})")
        t_mpos = mpo_modules(t_layers[j])
        for name, s_mod in mpo_modules(s_layers[i]).items():
            if name not in t_mpos:
                raise ValueError(f"student layer {i} matrix {name!r} has no MPOLinear twin in teacher layer {j} "
                                 f"(teacher has {sorted(t_mpos) or 'none'}); over-parameterise both the same way")
            pairs.append((f"student.{i}.{name}~teacher.{j}.{name}", s_mod, t_mpos[name]))
    if not pairs:
        raise ValueError("the student has no MPOLinear modules to align; over-parameterise it first")
    return pairs
