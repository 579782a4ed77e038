"""The model registry: names the CLI (and model files) use -> model classes.

Classes are resolved lazily from the ``mfrec`` namespace, so importing this module costs nothing
and a model that is not available makes only its own name fail.
"""
from __future__ import annotations

__all__ = ["MODELS", "ALIASES", "get_model_class", "model_name", "available_models",
           "is_implicit"]

#: CLI name -> (class name in the mfrec namespace, feedback kind, one-line description)
MODELS = {
    "svd": ("SVD", "rating", "truncated SVD of the rating matrix (PureSVD for top-N)"),
    "nmf": ("NMF", "rating", "non-negative matrix factorization"),
    "gd": ("GradientDescent", "rating", "full-batch gradient descent factorization"),
    "baseline": ("Baseline", "rating", "global mean + user and item biases"),
    "biased-mf": ("BiasedMF", "rating", "SGD matrix factorization with biases (Funk SVD)"),
    "svdpp": ("SVDpp", "rating", "SVD++: biased MF with implicit feedback"),
    "als": ("ALS", "rating", "alternating least squares on explicit ratings"),
    "bayesian-mf": ("BayesianMF", "rating", "Bayesian probabilistic MF (Gibbs sampling)"),
    "implicit-als": ("ImplicitALS", "implicit", "weighted ALS for implicit feedback"),
    "bpr": ("BPR", "implicit", "Bayesian personalized ranking"),
    "popularity": ("Popularity", "implicit",
                   "baseline: most popular items (ranking), damped item means (ratings)"),
}

#: other spellings accepted on the command line
ALIASES = {
    "gradient-descent": "gd", "gradientdescent": "gd", "biasedmf": "biased-mf",
    "mf": "biased-mf", "funk-svd": "biased-mf", "funksvd": "biased-mf", "svd++": "svdpp",
    "bayesianmf": "bayesian-mf", "bpmf": "bayesian-mf", "implicitals": "implicit-als",
    "ials": "implicit-als", "wals": "implicit-als", "bias": "baseline", "baselineonly": "baseline",
    "pop": "popularity", "mostpop": "popularity", "most-popular": "popularity",
}


def _key(name):
    return str(name).strip().lower().replace("_", "-")


def model_name(name):
    """The registry name for a CLI name, alias or class name (case-insensitive).

    Raises ``ValueError`` listing the known names.
    """
    key = _key(name)
    if key in MODELS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    for reg, (cls_name, _, _) in MODELS.items():
        if key == cls_name.lower():
            return reg
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")


def get_model_class(name):
    """The model class for a registry name, alias or class name.

    Raises ``ValueError`` for an unknown name and ``ImportError`` when the model is not part of
    this installation.
    """
    reg = model_name(name)
    cls_name = MODELS[reg][0]
    import mfrec  # late: this module is imported while mfrec itself is being imported

    cls = getattr(mfrec, cls_name, None)
    if cls is None:
        raise ImportError(f"model {reg!r} ({cls_name}) is not available in this mfrec "
                          f"installation")
    return cls


def available_models():
    """Registry names whose classes can be imported, in registry order."""
    out = []
    for reg in MODELS:
        try:
            get_model_class(reg)
        except ImportError:
            continue
        out.append(reg)
    return out


def is_implicit(model_or_class):
    """Whether a model (or class) is for implicit feedback (ranking metrics by default)."""
    cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
    for cls_name, kind, _ in MODELS.values():
        if cls.__name__ == cls_name:
            return kind == "implicit"
    return bool(getattr(cls, "_implicit", False))
