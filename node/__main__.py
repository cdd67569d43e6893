"""`python -m node --config FILE`: one DFL node process."""

import sys

from node.service.main import main

sys.exit(main())
