"""``mfrec serve``: a fitted model behind an HTTP API, with a page to explore it in a browser.

The service needs the ``serve`` extra (FastAPI on uvicorn, prometheus-client); importing this
package does not import them, :func:`create_app` and :func:`run` do::

    pip install 'mfrec[serve]'

See :mod:`mfrec.serve.app` for the endpoints, limits and behaviour.
"""
from __future__ import annotations

__all__ = ["create_app", "run"]


def _require():
    missing = []
    for name in ("fastapi", "uvicorn", "prometheus_client"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"mfrec serve needs {', '.join(missing)}: pip install 'mfrec[serve]'")


def create_app(model_path, **kwargs):
    """The ASGI application serving ``model_path``; see :func:`mfrec.serve.app.create_app`."""
    _require()
    from .app import create_app as _create
    return _create(model_path, **kwargs)


def run(model_path, **kwargs):
    """Serve ``model_path`` until interrupted; see :func:`mfrec.serve.app.run`."""
    _require()
    from .app import run as _run
    return _run(model_path, **kwargs)
