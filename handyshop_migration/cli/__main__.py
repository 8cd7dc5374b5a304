"""`python -m handyshop_migration.cli`."""

import sys

from handyshop_migration.cli import main

sys.exit(main())
