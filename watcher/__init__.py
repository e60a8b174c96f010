"""registry-watcher: proves, for every image digest pushed to a registry, who signed it."""

__version__ = "0.1.0"
