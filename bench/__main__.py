"""`python -m bench [NAME ...] [options]`."""

from bench.cli import main

raise SystemExit(main())
