"""`mfrec demo`: the notebook's three sections, then predictions and recommendations."""
import io
import subprocess
import sys

from mfrec.demo import run_demo


def test_demo_prints_all_sections():
    buf = io.StringIO()
    run_demo(buf)
    text = buf.getvalue()
    for title in ("1. Singular value decomposition", "2. Non-negative matrix factorization",
                  "3. Gradient descent", "4. Predicting the blanks", "5. Top recommendation"):
        assert title in text
    # the notebook's SVD numbers, rounded as printed
    assert "5.4320 -2.9166 -0.9390 -0.3240" in text
    assert "Iteration 900, Loss: 1.739" in text
    assert text.count("user 0, item 2") == 1 and "user 3, item 3" in text


def test_demo_is_deterministic():
    a, b = io.StringIO(), io.StringIO()
    run_demo(a)
    run_demo(b)
    assert a.getvalue() == b.getvalue()


def test_cli_demo_subprocess():
    out = subprocess.run([sys.executable, "-m", "mfrec.cli", "demo"], capture_output=True,
                         text=True, check=True).stdout
    assert "Learned user matrix" in out
