"""opdf-ray: Over-Parameterised Distillation (OPDF) for BERT-style models, searched and scaled out with Ray."""

__version__ = "0.1.0"
__all__ = ["distill", "search"]


def __getattr__(name: str):
    """``opdf_ray.search`` and ``opdf_ray.distill`` (opdf_ray/api.py), imported on first use: ``import opdf_ray``
    stays light (no torch, no Ray)."""
    if name in __all__:
        from opdf_ray import api

        return getattr(api, name)
    raise AttributeError(f"module 'opdf_ray' has no attribute {name!r}")


def log_to_console(level: int = 20) -> None:
    """Timestamped ``logger: message`` lines on stderr (entry points, and Ray tasks and workers, whose root logger
    is not configured); does nothing where logging is already set up."""
    import logging

    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # A trial's ``best_score`` is -inf until its first evaluation (every report must carry the searched metric), and
    # Tune's TensorBoard logger warned "NaN or Inf found in input tensor" on each such report.
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)


def shipped_path(name: str):
    """A folder shipped with opdf-ray (``search_spaces``, ``data/glue``): at the top of a checkout (an editable
    install), or inside the package in a wheel (pyproject.toml maps it to ``opdf_ray/_shipped/<name>``)."""
    from pathlib import Path

    package = Path(__file__).resolve().parent
    checkout = package.parent / name
    return checkout if checkout.is_dir() else package / "_shipped" / Path(name).name
