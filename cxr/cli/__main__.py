"""`python -m cxr.cli ...` runs the `cxr` command."""
import sys

from cxr.cli.main import main

sys.exit(main())
