"""Alembic migrations of the PSP database (run by hyperobf.psp.migrate; a package so it ships)."""
