import sys

from cos.cli import main

sys.exit(main())
