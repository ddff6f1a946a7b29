import sys

from churnops.cli import main

sys.exit(main())
