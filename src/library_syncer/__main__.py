"""Allow ``python -m library_syncer``."""

from .cli import main

main()
