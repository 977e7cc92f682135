"""``python -m flowtts.cli`` (and ``torchrun -m flowtts.cli``)."""

import sys

from flowtts.cli import main

sys.exit(main())
