#!/usr/bin/env bash
# Build .gpu/ (git-ignored), what benchmarks/gpu_lease.sh needs on a lent GPU machine: its image has PyTorch and
# most of our dependencies for Python 3.12 but no Ray, Optuna or datasets, an older transformers, and no network.
# The list below is what it lacks (read off its package list in /work/.library/device/KINDS.md against ours);
# Ray's wheel alone is over the 64 MiB transfer, so the folder drops Ray's Java, RLlib, Serve, LLM and dashboard
# front end and is packed with xz -9 (about 48 MB). Run from the repo root, then carry .gpu (2026-12-04: ~3 min).
set -eu
PY="${PYTHON:-.venv/bin/python}"
SITE=$(mktemp -d)
"$PY" -m pip install -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --target "$SITE" \
    ray==2.60.0 optuna==5.1.0 transformers==5.25.0 datasets==5.2.0 huggingface-hub==2.4.0 httpx2==2.16.2 \
    httpcore2==2.16.2 truststore==0.10.5 kernels==0.19.1 tomlkit==0.15.3 alembic==1.20.1 Mako==1.4.3 \
    SQLAlchemy==2.1.9 colorlog==6.12.0 dill==0.4.1 multiprocess==0.70.19 aiohttp-cors==0.8.1 colorful==0.5.8 \
    opencensus==0.11.4 opencensus-context==0.1.3 google-api-core==2.44.0 google-auth==2.63.0 \
    googleapis-common-protos==1.76.0 proto-plus==1.29.0 pyasn1==0.6.5 pyasn1_modules==0.4.2 cachetools==7.3.3 \
    cryptography==50.0.2 cffi==2.1.1 pycparser==3.12 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 \
    opentelemetry-proto==1.45.2 opentelemetry-exporter-prometheus==0.66b2 opentelemetry-semantic-conventions==0.66b2 \
    importlib_metadata==10.2.0 lazy-importer==0.1.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 \
    rpds-py==2026.9.1 py-spy==0.4.3 smart_open==9.0.4 virtualenv==21.15.14 distlib==0.4.4 platformdirs==4.14.9 \
    python-discovery==1.9.9 tensorboardX==2.6.5
rm -rf "$SITE"/ray/jars "$SITE"/ray/rllib "$SITE"/ray/serve "$SITE"/ray/llm "$SITE"/ray/dashboard/client
find "$SITE" -name __pycache__ -type d -prune -exec rm -rf {} +
mkdir -p .gpu/minilm .gpu/bert-base
tar -cf - -C "$SITE" . | xz -T2 -9 > .gpu/site312.tar.xz
rm -rf "$SITE"
# the teachers' architectures and tokenizers (the lease gives them random weights: timing only)
"$PY" - <<'EOF'
import shutil
from pathlib import Path

from transformers import AutoTokenizer, BertConfig

from opdf_ray.models import packaged_minilm_path

source = Path(packaged_minilm_path())
for f in source.iterdir():                               # config, tokenizer, pooling: everything but weights
    target = Path(".gpu/minilm") / f.name
    if f.is_dir():
        shutil.copytree(f, target, dirs_exist_ok=True)
    elif f.suffix not in (".safetensors", ".bin", ".pt", ".onnx"):
        shutil.copy(f, target)
BertConfig().save_pretrained(".gpu/bert-base")          # bert-base-uncased's shapes: 12 layers, hidden 768
AutoTokenizer.from_pretrained(".gpu/minilm").save_pretrained(".gpu/bert-base")   # the same uncased vocabulary
EOF
du -sh .gpu
