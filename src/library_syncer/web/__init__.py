"""The HTTP(S) server: library files, status, API, metrics and health."""
