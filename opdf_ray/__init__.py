"""opdf-ray: Over-Parameterised Distillation (OPDF) for BERT-style models, searched and scaled out with Ray."""

__version__ = "0.1.0"
