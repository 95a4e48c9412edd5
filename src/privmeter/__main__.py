import sys

from privmeter.cli import main

sys.exit(main())
