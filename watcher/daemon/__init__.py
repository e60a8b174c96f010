"""The long-running daemon: intake of push events, the work loop, the HTTP server."""
