"""``python -m mfrec.cli``: the same as the ``mfrec`` command."""
import sys

from . import main

sys.exit(main())
