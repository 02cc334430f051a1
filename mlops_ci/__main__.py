"""`python -m mlops_ci` is `mlops-ci`."""

import sys

from mlops_ci.cli import main

sys.exit(main())
