import sys

from geosearch.cli import main

sys.exit(main())
