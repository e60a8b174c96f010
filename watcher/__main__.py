"""`python -m watcher` is the same program as the `registry-watcher` console script."""

from watcher.cli import main

raise SystemExit(main())
