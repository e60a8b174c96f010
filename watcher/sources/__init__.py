"""Where push events come from: registry webhooks, polling, and scans.

Each source turns what a registry says, in whatever shape that registry says it, into
:class:`watcher.events.PushEvent` values, so that everything downstream sees one format.
"""
