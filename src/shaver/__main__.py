import sys

from shaver.cli import main

sys.exit(main())
