import sys

from fusionjax.cli import main

sys.exit(main())
