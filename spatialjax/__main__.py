import sys

from spatialjax.cli import main

sys.exit(main())
