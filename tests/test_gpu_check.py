"""The GPU check script runs on CPU in dry mode: every command it would launch passes tune_main.py's checks."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def test_gpu_check_dry_run_validates_each_command(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("would run:")]
    assert len(lines) == 4 and all("--gpus-per-worker 1" in line for line in lines)
    assert {line.split("--name ")[1].split()[0] for line in lines} == {"gpu-kd-0", "gpu-kd-5", "gpu-lgtm-0",
                                                                       "gpu-lgtm-5"}
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--cases", "lgtm-5"]) == 0   # rerun one case
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("would run:")]
    assert len(lines) == 1 and "--name gpu-lgtm-5 " in lines[0]
    assert gpu_check.main(["--out", str(tmp_path)]) == 2          # no CUDA here: a clear refusal, no run
