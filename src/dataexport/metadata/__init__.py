"""Metadata store: accounts, projects, clients, segments, jobs, runs and files (SQLAlchemy 2 + Alembic)."""
