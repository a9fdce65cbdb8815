"""``python -m kepkreator.cli``."""
import sys

from kepkreator.cli import main

sys.exit(main())
