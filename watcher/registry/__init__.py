"""Talking to OCI distribution registries: the only code that makes registry HTTP requests."""
