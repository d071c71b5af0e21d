"""The operations dashboard served by central over HTTP (see central.web.server)."""
