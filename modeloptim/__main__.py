"""``python -m modeloptim`` runs the CLI."""

import sys

from modeloptim.cli.main import main

sys.exit(main())
