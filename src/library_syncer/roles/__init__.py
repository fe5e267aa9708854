"""The long-running processes and their wiring: the site daemon (client) and the primary (server)."""
