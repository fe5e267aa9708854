"""Primitives with one home each: files, child processes, addresses, formats."""
