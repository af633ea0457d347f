"""``python -m tsam_ext``: the standalone runner (``tsam_ext.runtime.runner``)."""

import sys

from .runtime.runner import main

if __name__ == "__main__":
    sys.exit(main())
