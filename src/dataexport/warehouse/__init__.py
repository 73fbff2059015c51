"""Stored analytics data: Parquet files partitioned by project and session day, read with DuckDB."""
