"""``mfrec demo``: the notebook's three factorizations of its 4 x 5 matrix, then what the
``missing="ignore"`` variants predict for the blank cells and each user's top recommendation."""
from __future__ import annotations

import contextlib
import io
import sys

import numpy as np

from .datasets import seed_matrix
from .models.gd import GradientDescent
from .models.nmf import NMF
from .models.svd import SVD

__all__ = ["run_demo", "format_matrix"]


def format_matrix(M, *, row_label="user", col_label="item", digits=4, indent="  "):
    """Aligned text table of a 2-D array with numbered rows and columns."""
    M = np.asarray(M, dtype=float)
    M = np.where(np.abs(M) < 0.5 * 10.0 ** -digits, 0.0, M)  # no "-0.0000"
    cells = [[f"{v:.{digits}f}" for v in row] for row in M]
    width = max(max(len(c) for row in cells for c in row), len(col_label) + 2)
    head = indent + " " * (len(row_label) + 3) + " ".join(
        f"{col_label} {j}".rjust(width) for j in range(M.shape[1]))
    lines = [head]
    for i, row in enumerate(cells):
        lines.append(indent + f"{row_label} {i}".ljust(len(row_label) + 3) + " ".join(
            c.rjust(width) for c in row))
    return "\n".join(lines)


def _section(out, title):
    out.write(f"\n{title}\n{'=' * len(title)}\n")


def _show_factors(out, model, X):
    out.write("Learned user matrix (rows: users):\n")
    out.write(format_matrix(model.user_factors_, col_label="f") + "\n")
    out.write("Learned item matrix (rows: factors, columns: items, as in the notebook):\n")
    out.write(format_matrix(model.item_factors_.T, row_label="f") + "\n")
    out.write("Product user matrix @ item matrix:\n")
    R = model.reconstruct()
    out.write(format_matrix(R) + "\n")
    observed = X != 0
    out.write(f"Largest error on the rated cells: {np.abs(R - X)[observed].max():.2e}; "
              f"on all cells: {np.abs(R - X).max():.2e}\n")


def run_demo(out=None, *, random_state=0):
    """Print the demo to ``out`` (default stdout). Deterministic for a given ``random_state``."""
    out = out or sys.stdout
    X = seed_matrix()
    out.write("mfrec demo: the notebook's user x item rating matrix (0 = not rated)\n")
    out.write(format_matrix(X, digits=0) + "\n")

    _section(out, "1. Singular value decomposition  (SVD, all factors, missing='zero')")
    svd = SVD(missing="zero").fit(X)
    out.write("Singular values: " + "  ".join(f"{s:.4f}" for s in svd.singular_values_) + "\n")
    _show_factors(out, svd, X)

    _section(out, "2. Non-negative matrix factorization  (NMF, 6 factors, missing='zero')")
    nmf = NMF(n_factors=6, missing="zero", random_state=random_state).fit(X)
    out.write(f"{len(nmf.loss_history_)} HALS epochs, final squared error "
              f"{nmf.loss_history_[-1]:.3e}\n")
    _show_factors(out, nmf, X)

    _section(out, "3. Gradient descent with L2  (6 factors, lr 0.01, reg 0.1, 1000 iterations, "
                  "missing='zero')")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gd = GradientDescent(n_factors=6, n_epochs=1000, learning_rate=0.01, regularization=0.1,
                             missing="zero", random_state=random_state, verbose=100).fit(X)
    out.write(buf.getvalue())
    _show_factors(out, gd, X)

    _section(out, "4. Predicting the blanks  (missing='ignore': only rated cells are fitted)")
    models = {
        "SVD": SVD(n_factors=2, missing="ignore", random_state=random_state),
        "NMF": NMF(n_factors=2, missing="ignore", random_state=random_state),
        "GD": GradientDescent(n_factors=2, missing="ignore", regularization=0.1,
                              random_state=random_state),
    }
    fitted = {name: m.fit(X) for name, m in models.items()}
    preds = {name: m.reconstruct() for name, m in fitted.items()}
    lo, hi = X[X != 0].min(), X[X != 0].max()
    blanks = np.argwhere(X == 0)
    out.write("Blank cell      " + "".join(f"{name:>8}" for name in preds) + "\n")
    for u, i in blanks:
        out.write(f"user {u}, item {i}  " + "".join(
            f"{np.clip(p[u, i], lo, hi):8.2f}" for p in preds.values()) + "\n")
    out.write(f"(2 factors each; predictions clipped to the rating scale {lo:g}..{hi:g})\n")

    _section(out, "5. Top recommendation per user  (best unrated item)")
    users = np.arange(X.shape[0])
    top = {name: m.recommend(users, n=1, exclude_seen=True) for name, m in fitted.items()}
    out.write("User   " + "".join(f"{name:>16}" for name in top) + "\n")
    for u in users:
        row = f"user {u} "
        for ids, scores in top.values():
            row += f"{f'item {ids[u, 0]} ({np.clip(scores[u, 0], lo, hi):.2f})':>16}"
        out.write(row + "\n")
    return 0
