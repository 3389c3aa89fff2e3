"""``opdf-ray export``: take a leaderboard's best student home as a Hugging Face folder with a model card.

    opdf-ray export outputs/search/leaderboard --out best [--task sst2] [--trial ID]
    python -m opdf_ray.export outputs/search/leaderboard --out best

The best completed trial by selection score (never by dev: dev is what the card reports), or the one named,
copied from where its search saved it (the leaderboard's ``student_path``) into ``--out``: the merged student
(stock ``transformers``, no opdf-ray needed to load it), its tokenizer, the task's label names in its config and a
``README.md`` model card saying how it was made and how to make it again. A stock
``pipeline("text-classification", model=OUT)`` then prints the task's labels and scores what the row says.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import re
import shutil
import sys
import warnings
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from opdf_ray.config import METHOD_TITLES, RunSpec, inert_settings
from opdf_ray.tasks import DATASET_SETTINGS, Task, task_of
from opdf_ray.leaderboard import read_leaderboard, spec_of, usable
from opdf_ray.storage import check_folder, filesystem, is_uri, published
from opdf_ray.text import markdown, quoted, shell_join


def choose(board: pd.DataFrame, task: str | None = None, trial: str | None = None) -> pd.Series:
    """The row to export: ``trial`` (a trial id) if given, else the best completed row by selection score of
    ``task`` (needed when the leaderboard holds several tasks).

    Raises:
        ValueError: no such trial or task, several tasks and no ``task``, or no completed row with a student.
    """
    done = usable(board)
    if trial is not None:
        rows = done[done["trial_id"] == trial]
        if rows.empty:
            status = board.loc[board["trial_id"] == trial, "status"]
            why = f"its status is {status.iloc[0]}" if len(status) else "no row has that trial_id"
            raise ValueError(f"cannot export trial {trial!r}: {why}; completed trials: "
                             f"{', '.join(done['trial_id'].astype(str).head(8)) or 'none'}")
        return rows.iloc[-1]
    tasks = sorted(done["task"].astype(str).unique())
    if task is None and len(tasks) > 1:
        raise ValueError(f"the leaderboard holds several tasks ({', '.join(tasks)}); pass --task")
    if task is not None:
        if task not in tasks:
            raise ValueError(f"no completed trial of task {task!r} in the leaderboard; tasks there: "
                             f"{', '.join(tasks) or 'none'}")
        done = done[done["task"].astype(str) == task]
    done = done.dropna(subset=["selection_score"])
    if done.empty:
        raise ValueError("the leaderboard has no completed trial to export")
    return done.loc[done["selection_score"].idxmax()]


# What a Hugging Face folder of the exported architecture is: its config, its weights (safetensors only: never a
# pickle), its tokenizer. Nothing else in a student folder is copied: a link or a stray file there stays there.
STUDENT_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt",
                 "added_tokens.json", "sentencepiece.bpe.model", "spiece.model", "chat_template.jinja")
WEIGHT_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def export(leaderboard: str, out: str | Path, task: str | None = None, trial: str | None = None,
           storage: str | None = None, onnx: bool = False, int8: bool = False) -> pd.Series:
    """Copy the chosen row's merged student into ``out`` (which must not exist or be empty), name its labels and
    write its model card. Returns the row.

    Only ``STUDENT_FILES`` (and weight shards) are copied, each a regular file inside the student folder, from a
    ``student_path`` inside ``storage`` (default: the folder holding the leaderboard, where a search keeps both): a
    leaderboard row cannot make an export (or ``--push-to-hub``) carry any other file. The folder is written
    under a temporary name and renamed onto ``out`` when complete: an interrupted export leaves no ``out`` behind.

    Raises:
        ValueError: see ``choose``; a row without a saved student (a leaderboard older than schema 8, or a search
            whose checkpoints were deleted), one outside ``storage``, a link or no safetensors weights in it;
            ``out`` not empty.
    """
    row = choose(read_leaderboard(leaderboard), task, trial)
    source = row.get("student_path")
    if not isinstance(source, str) or not source:
        raise ValueError(f"trial {row['trial_id']} has no saved student in the leaderboard (rows written before "
                         f"opdf-ray recorded student_path, schema 8); re-run it with the command its model card "
                         f"would print: {retrain_command(row)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder; pass a new folder")
    check_folder("--out", out)                          # a file in the way: one line, before any copy
    fs, path = filesystem(source)
    files = student_files(fs, path, storage or _storage_of(leaderboard), str(row["trial_id"]))
    try:
        if out.exists():
            out.rmdir()                                  # empty: replaced by the complete folder below
        out.parent.mkdir(parents=True, exist_ok=True)
        with published(out) as (_, tmp):
            tmp = Path(tmp)
            tmp.mkdir()
            for name in files:
                with fs.open_input_stream(f"{path}/{name}") as src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            onnx_check = write_onnx(tmp, row) if onnx or int8 else None
            if int8:
                onnx_check |= write_int8(tmp, row)
            _finish(tmp, row, onnx_check)
    except OSError as e:
        raise ValueError(f"--out {out}: the folder cannot be made ({e.strerror or e}); pass a folder that can be "
                         f"made and written") from None
    return row


def _storage_of(leaderboard: str) -> str:
    """Where a search keeps its leaderboard and its students: the folder holding the leaderboard."""
    return leaderboard.rstrip("/").rsplit("/", 1)[0] if is_uri(leaderboard) else str(Path(leaderboard).resolve().parent)


def student_files(fs: pafs.FileSystem, path: str, storage: str, trial: str) -> list[str]:
    """The files of the student folder ``path`` to export (``STUDENT_FILES`` and weight shards present there).

    Raises:
        ValueError: ``path`` outside ``storage`` (links resolved), gone, holding a link among those files, or
            without ``config.json`` and safetensors weights.
    """
    local = isinstance(fs, pafs.LocalFileSystem)
    inside = (Path(path).resolve().is_relative_to(Path(storage).resolve()) if local
              else f"{path.rstrip('/')}/".startswith(f"{filesystem(storage)[1].rstrip('/')}/"))
    if not inside:
        raise ValueError(f"trial {trial}'s student_path {quoted(path)} is outside the search storage "
                         f"{quoted(storage)}; "
                         f"export copies students only from the storage its leaderboard belongs to (--storage "
                         f"names another)")
    if fs.get_file_info(f"{path}/config.json").type != pafs.FileType.File:
        raise ValueError(f"trial {trial}'s student is gone from {quoted(path)} (deleted, or storage that this "
                         f"machine cannot see)")
    entries = {e.base_name: e for e in fs.get_file_info(pafs.FileSelector(path))}
    names = [n for n in entries if n in STUDENT_FILES or WEIGHT_SHARD.fullmatch(n)]
    links = [n for n in names if local and Path(path, n).is_symlink()]
    if links or any(entries[n].type != pafs.FileType.File for n in names):
        raise ValueError(f"trial {trial}'s student folder {quoted(path)} holds links or folders where its files "
                         f"belong ({', '.join(links) or 'not plain files'}); export copies plain files only")
    if not any(n == "model.safetensors" or WEIGHT_SHARD.fullmatch(n) for n in names):
        raise ValueError(f"trial {trial}'s student folder {quoted(path)} has no safetensors weights; export never "
                         f"copies pickled weights")
    return sorted(names)


ONNX_TOLERANCE = 1e-4        # |logit| difference between onnxruntime and PyTorch that an ONNX export may have
ONNX_CHECK_EXAMPLES = 64


def write_onnx(folder: Path, row: pd.Series) -> dict:
    """``model.onnx`` beside the Hugging Face files (``torch.onnx.export``, dynamic batch and length), checked:
    onnxruntime's logits on the task's first dev examples equal PyTorch's to ``ONNX_TOLERANCE``. Returns what
    the check measured (for the card).

    optimum's ONNX exporter (optimum-onnx 0.1) requires transformers < 4.58; this project runs transformers 5.

    Raises:
        ValueError: the ``onnx`` extra is not installed, or the check fails (nothing is published then).
    """
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError:
        raise ValueError("--onnx needs onnx, onnxscript and onnxruntime: pip install 'opdf-ray[onnx]'") from None
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from opdf_ray.data import load_split

    task = task_of(row)
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data_dir = spec_of(row)["data_dir"]                  # the trial's data where it is here, else bundled or hub
    dev = load_split(task, task.dev_splits[0], data_dir if data_dir and Path(data_dir).is_dir() else None
                     )[0].head(ONNX_CHECK_EXAMPLES)
    texts = [dev[k].tolist() for k in task.text_keys]
    batch = tokenizer(*texts, truncation=True, max_length=int(spec_of(row)["max_length"]), padding=True,
                      return_tensors="pt")
    takes = inspect.signature(model.forward).parameters              # DistilBERT takes no token_type_ids
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in batch and n in takes]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")               # the exporter's notes on its own internals
        torch.onnx.export(model, (), str(folder / "model.onnx"), kwargs={n: batch[n] for n in names}, dynamo=True,
                          input_names=names, output_names=["logits"], dynamic_shapes=axes, verbose=False)
        expected = model(**{n: batch[n] for n in names}).logits.numpy()
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    got = session.run(["logits"], {n: batch[n].numpy() for n in names if n in wanted})[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= ONNX_TOLERANCE:
        raise ValueError(f"--onnx: onnxruntime's logits differ from PyTorch's by {diff:.2e} on {len(dev)} dev "
                         f"examples (allowed {ONNX_TOLERANCE:.0e}); the export was not written")
    return {"examples": len(dev), "max_abs_logit_diff": diff, "inputs": names}


def write_int8(folder: Path, row: pd.Series) -> dict:
    """``model.int8.onnx``: ``model.onnx`` with its weights dynamically quantised to int8 (onnxruntime), and both
    scored on the task's whole first dev split, so the card says what the smaller, faster file costs."""
    import numpy as np
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoTokenizer

    from opdf_ray.data import compute_metrics, load_split

    root = logging.getLogger()
    level, _ = root.level, root.setLevel(logging.ERROR)      # its "consider pre-processing" note, on every call
    try:
        quantize_dynamic(str(folder / "model.onnx"), str(folder / "model.int8.onnx"), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    task = task_of(row)
    data_dir = spec_of(row)["data_dir"]
    dev = load_split(task, task.dev_splits[0], data_dir if data_dir and Path(data_dir).is_dir() else None)[0]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    scores = {}
    for name in ("model.onnx", "model.int8.onnx"):
        session = onnxruntime.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        logits = []
        for start in range(0, len(dev), 64):
            part = dev.iloc[start:start + 64]
            batch = tokenizer(*[part[k].tolist() for k in task.text_keys], truncation=True, padding=True,
                              max_length=int(spec_of(row)["max_length"]), return_tensors="np")
            logits.append(session.run(["logits"], {k: v for k, v in batch.items() if k in wanted})[0])
        logits = np.concatenate(logits)
        predictions = logits[:, 0] if task.is_regression else logits.argmax(-1)
        scores[name] = compute_metrics(task, predictions, dev["label"].to_numpy())[task.selection_metric]
    return {"int8": {"split": task.dev_splits[0], "examples": len(dev), "metric": task.selection_metric,
                     "fp32": scores["model.onnx"], "int8": scores["model.int8.onnx"],
                     "size_ratio": (folder / "model.int8.onnx").stat().st_size / _onnx_bytes(folder)}}


def _onnx_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("model.onnx*"))


def _finish(folder: Path, row: pd.Series, onnx_check: dict | None = None) -> None:
    """Label names in the config, the tokenizer's length, the model card: what makes the copy an export."""
    from transformers import AutoConfig

    from opdf_ray.engine import name_labels

    config = AutoConfig.from_pretrained(folder)   # students saved before every saved student named its labels
    name_labels(config, task_of(row))
    config.save_pretrained(folder)
    tokenizer_path = folder / "tokenizer_config.json"
    if tokenizer_path.exists():          # truncation=True then cuts inputs where training and evaluation did
        tokenizer_config = json.loads(tokenizer_path.read_text())
        tokenizer_config["model_max_length"] = int(spec_of(row)["max_length"])
        tokenizer_path.write_text(json.dumps(tokenizer_config, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(model_card(row, onnx_check))


def retrain_command(row: pd.Series) -> str:
    """The ``python -m opdf_ray.run`` command that trains this row's configuration and seed again: its task,
    method and seed, and every hyperparameter that differs from the defaults, quoted for a shell
    (``text.shell_join``: a path with spaces or ``$(…)`` stays one argument, never code)."""
    spec, defaults = spec_of(row), RunSpec().to_dict()
    inert = set(inert_settings(spec))
    first = ("task", "method", "seed", "preset", "teacher", "student")        # always said, in this order
    rest = [n for n in RunSpec.hyperparameters() if n not in first and n not in inert and spec[n] != defaults[n]]
    data = [n for n in DATASET_SETTINGS if n != "dataset"] if spec.get("dataset") else []
    args = ["python", "-m", "opdf_ray.run"]
    for name in (*first, *data, *rest):
        value, flag = spec[name], "--" + name.replace("_", "-")
        if name == "task" and spec.get("dataset"):        # a dataset: --task is its path (or hub id) again
            value = spec["dataset"]
        if value is None:
            continue
        args += [flag if value else "--no-" + name.replace("_", "-")] if isinstance(value, bool) else [flag, value]
    return shell_join(args)


# the Hub's metric ids of opdf-ray's metric names; the teachers' licenses (a teacher of one's own: its license applies)
HUB_METRICS = {"accuracy": "accuracy", "f1": "f1", "mcc": "matthews_correlation", "pearson": "pearsonr",
               "spearman": "spearmanr"}
PRESET_BASES = {"minilm": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
                "bert-base": ("bert-base-uncased", "apache-2.0"), "tiny": (None, "apache-2.0")}


def card_data(row: pd.Series):
    """The card's metadata as the Hub reads it (``huggingface_hub.ModelCardData``): license, base model, dataset,
    language, metrics and a ``model-index`` entry with the dev score, so ``ModelCard.load(...).data`` has them."""
    from huggingface_hub import EvalResult, ModelCardData

    spec, task = spec_of(row), task_of(row)
    base, license_ = PRESET_BASES.get(spec["preset"], (None, None)) if not spec["teacher"] else (
        spec["teacher"] if _hub_id(spec["teacher"]) else None, "other")
    metric = str(row["selection_metric"])
    hub_data = "nyu-mll/glue" if not task.source else task.source if not Path(task.source).is_absolute() else None
    results = [] if row["dev_score"] is None or pd.isna(row["dev_score"]) else [EvalResult(
        task_type="text-classification", dataset_type=hub_data or task.name, dataset_name=dataset_title(task),
        dataset_config=None if task.source else task.name, dataset_split=task.dev_splits[0],
        metric_type=HUB_METRICS[metric], metric_name=metric, metric_value=round(float(row["dev_score"]), 2))]
    return ModelCardData(
        language="en", license=license_, base_model=base, datasets=[hub_data] if hub_data else None,
        library_name="transformers", pipeline_tag="text-classification",
        metrics=[HUB_METRICS[m] for m in task.metrics],
        tags=["distillation", "knowledge-distillation", "opdf", *([] if task.source else ["glue"]), task.name],
        model_name=f"{task.name}-{row['method']}-student", eval_results=results or None)


def dataset_title(task: Task) -> str:
    """How the card names the data: GLUE's task, or a user's dataset by name (a hub id, or a local file's name)."""
    return f"GLUE {task.name.upper()}" if not task.source else f"{task.name} ({Path(task.source).name})"


def _hub_id(text: str) -> bool:
    """``owner/name`` or ``name`` as the Hub spells repos, and not a folder here."""
    return bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", text)) and not Path(text).exists()


def model_card(row: pd.Series, onnx_check: dict | None = None) -> str:
    """A Hugging Face model card (``README.md``) for an exported row (``onnx_check``: ``write_onnx``'s result)."""
    spec = spec_of(row)
    spec_task, method = task_of(row), str(row["method"])
    task, data = spec_task.name, markdown(dataset_title(spec_task))
    opdf = (f"{spec['opdf_cores']} MPO cores per matrix, core lr {spec['opdf_core_lr']}, alignment "
            + (f"ratio {spec['opdf_align_ratio']}" if spec["opdf_align_ratio"] else f"weight {spec['opdf_align_weight']}")
            + f" ({spec['opdf_align_map']} map), trained cores: {spec['opdf_train_cores']}"
            if spec["opdf_cores"] >= 2 else "off (plain distillation)")
    teacher = (markdown(spec["teacher"]) if spec["teacher"]
               else f"the `{spec['preset']}` preset's teacher, fine-tuned on {task}")
    protocol = ("checkpoint chosen on a held-out slice of the training set; dev never used for selection"
                if row["protocol"] == "selection" else "checkpoint chosen on dev (the papers' protocol)")
    metric = row["selection_metric"]
    labels = spec_task.label_names
    return f"""---
{card_data(row).to_yaml()}
---

# {task if spec_task.source else task.upper()} student distilled with {METHOD_TITLES.get(method, method)}{" + OPDF" if spec['opdf_cores'] >= 2 else ""}

A student made by opdf-ray ({markdown(row.get('opdf_ray_version') or 'unknown version')}), exported
from trial {markdown(row['trial_id'])} of search {markdown(row['run_id'])}. It is a stock Hugging Face checkpoint: the
MPO cores OPDF trains with are merged back, so it has exactly the size and speed of a dense student
({_count(row.get('inference_params'))} parameters).

| | |
|---|---|
| task | {data} ({markdown(', '.join(labels)) if labels else 'regression'}) |
| teacher | {teacher} |
| method | {METHOD_TITLES.get(method, method)} (`{method}`) |
| OPDF | {opdf} |
| configuration | {markdown(row['config_id'])}, seed {spec['seed']} |
| protocol | {protocol} |
| selection {metric} | {_score(row['selection_score'])} |
| dev {metric} | {_score(row['dev_score'])} |
| training set | {spec['max_train_samples'] or 'full'} examples, length {spec['max_length']}, {spec['epochs']} epochs |

## Use

```python
from transformers import pipeline

classify = pipeline("text-classification", model="<this folder>", truncation=True)
print(classify({_example(spec_task)}))
```

{_onnx_section(row, onnx_check) if onnx_check else ""}## Limitations

A small student from a short, budgeted run: {spec['max_train_samples'] or 'every'} training examples of {data},
{spec['epochs']} epoch(s), inputs cut at {spec['max_length']} tokens, English only. Its dev score is on {data}'s
{spec_task.dev_splits[0]} split, which the checkpoint was{' not' if row['protocol'] == 'selection' else ''} chosen on;
texts unlike its training data, or longer than {spec['max_length']} tokens, may be scored worse. It inherits its teacher's
biases. Check it on your own data before relying on it.

## Train it again

```bash
{retrain_command(row)}
```
"""


def _onnx_section(row: pd.Series, check: dict) -> str:
    inputs = ", ".join(f'"{n}": batch["{n}"]' for n in check["inputs"])
    return f"""## Serve it with ONNX Runtime

`model.onnx` is the same network (dynamic batch and length); on the first {check['examples']} examples of the
task's dev split its logits equal PyTorch's to {check['max_abs_logit_diff']:.1e}.

```python
import onnxruntime
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("<this folder>")
session = onnxruntime.InferenceSession("<this folder>/model.onnx")
batch = tokenizer({_tokenizer_example(task_of(row))}, truncation=True, return_tensors="np")
logits = session.run(["logits"], {{{inputs}}})[0]
```
{_int8_note(check)}
"""


def _int8_note(check: dict) -> str:
    q = check.get("int8")
    if not q:
        return ""
    return (f"\n`model.int8.onnx` has its weights dynamically quantised to int8 ({q['size_ratio']:.2f}× the fp32 "
            f"file): on all {q['examples']} examples of `{q['split']}` it scores {q['metric']} {q['int8']:.2f}, the "
            f"fp32 ONNX model {q['fp32']:.2f}. Load it the same way (`model.int8.onnx`).\n")


def _score(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value):.2f}"


def _count(value) -> str:
    return "?" if value is None or pd.isna(value) else f"{int(value):,}"


def _tokenizer_example(task: Task) -> str:
    if len(task.text_keys) == 1:
        return '["The movie was a delight from start to finish."]'
    return '["A man is playing a guitar."], ["Someone plays an instrument."]'


def _example(task: Task) -> str:
    if len(task.text_keys) == 1:
        return '"The movie was a delight from start to finish."'
    return '{"text": "A man is playing a guitar.", "text_pair": "Someone plays an instrument."}'


def build_parser(prog: str = "python -m opdf_ray.export") -> argparse.ArgumentParser:
    from opdf_ray.commands import HelpFormatter

    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    p.add_argument("leaderboard", help="a leaderboard folder (e.g. outputs/search/leaderboard)")
    p.add_argument("--out", required=True, help="a new folder for the exported student")
    p.add_argument("--task", help="the task to export (needed when several are there): a GLUE name or a dataset's")
    p.add_argument("--trial", help="export this trial instead of the best one")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (checked against PyTorch on the "
                   "task's dev examples; needs pip install 'opdf-ray[onnx]')")
    p.add_argument("--int8", action="store_true", help="with --onnx: also model.int8.onnx (dynamic int8 weights), "
                   "both scored on the task's dev split in the model card")
    p.add_argument("--storage", help="the search storage its students live under (default: the folder holding the "
                   "leaderboard); a row whose student_path lies elsewhere is refused")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this Hugging Face hub model repo "
                   "(user/name; created if missing; your token: `hf auth login` or HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="--push-to-hub: create the repo private")
    return p


def check_repo_id(repo_id: str) -> None:
    """A hub repo id the hub would refuse fails before anything is exported."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f"--push-to-hub {repo_id!r} is not a hub repo id: {e}") from None
    if "/" not in repo_id:
        raise ValueError(f"--push-to-hub {repo_id!r}: give the owner too (user/name or org/name)")


def push_to_hub(folder: str, repo_id: str, private: bool = False) -> str:
    """Upload an exported folder as a hub model repo (created if missing); returns its URL. Any failure (offline,
    no token, no permission) is one ``RuntimeError`` line; the exported folder stays as it is."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model",
                          commit_message="opdf-ray export: merged student, tokenizer and model card")
    except Exception as e:  # noqa: BLE001 - offline, auth, permissions, network: all "not uploaded"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RuntimeError(f"--push-to-hub {repo_id}: not uploaded ({type(e).__name__}: {first}); the export is in "
                           f"{folder}") from None
    return str(url)


def main(argv: list[str] | None = None, prog: str = "python -m opdf_ray.export") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        if args.push_to_hub:
            check_repo_id(args.push_to_hub)
        if args.int8 and not args.onnx:
            raise ValueError("--int8 quantises the ONNX export: pass --onnx too")
        row = export(args.leaderboard, args.out, args.task, args.trial, args.storage, args.onnx, args.int8)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported trial {row['trial_id']} ({row['task']}, {row['method']}, selection "
          f"{_score(row['selection_score'])}, dev {_score(row['dev_score'])}) to {args.out}")
    if args.push_to_hub:
        try:
            print(f"uploaded to {push_to_hub(args.out, args.push_to_hub, args.private)}")
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
