"""library-syncer: rsync-over-SSH Content Library sync with VCSP publishing."""

__version__ = "0.1.0"
