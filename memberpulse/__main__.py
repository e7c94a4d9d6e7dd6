import sys

from memberpulse.cli import main

sys.exit(main())
