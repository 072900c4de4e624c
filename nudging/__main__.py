import sys

from nudging.cli import main

sys.exit(main())
