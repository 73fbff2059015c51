"""DuckDB extensions loaded from the files of their PyPI packages: nothing is downloaded at run time.

The packages `duckdb-extension-<name>` (pinned with DuckDB in requirements.txt) each hold one binary,
`duckdb_extension_<name>/extensions/v<duckdb version>/<name>.duckdb_extension`, listed in the
distribution's RECORD. We find it through that metadata and `LOAD '<path>'` it. Connections made here turn
off DuckDB's automatic install and load of known extensions, so a missing file is an error at once rather
than a download from extensions.duckdb.org (which a production host may not reach, and which would run a
binary nobody pinned), and keep unsigned extensions refused, so DuckDB checks each file's signature.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from pathlib import Path

import duckdb

# The DuckLake backend needs these three: the lake format, its PostgreSQL catalog, and S3 for its data.
LAKE_EXTENSIONS = ("ducklake", "postgres_scanner", "httpfs")

# Merged into every connection's config here. These can only be set when the database opens.
OFFLINE_CONFIG: dict[str, str | bool | int] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_unsigned_extensions": False,
}


class ExtensionMissing(RuntimeError):
    """The extension's package is not installed, or holds no binary for this DuckDB version."""


def extension_file(name: str) -> Path:
    """The `.duckdb_extension` file of package `duckdb-extension-<name>` built for the running DuckDB."""
    distribution_name = f"duckdb_extension_{name}"
    try:
        distribution = importlib.metadata.distribution(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        raise ExtensionMissing(
            f"DuckDB extension {name!r}: package {distribution_name} is not installed (see requirements.txt)"
        ) from None
    # The binary lives under a directory named for the DuckDB version it was built against; a binary of
    # another version would fail to load anyway, with a less helpful message.
    wanted = f"v{duckdb.__version__}"
    for file in distribution.files or ():
        if file.name == f"{name}.duckdb_extension" and file.parent.name == wanted:
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    raise ExtensionMissing(
        f"DuckDB extension {name!r}: {distribution_name} {distribution.version} has no {name}.duckdb_extension "
        f"for DuckDB {duckdb.__version__}; pin the package at the same version as duckdb"
    )


def load_extension(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """LOAD extension `name` into `conn` from its package's file."""
    path = str(extension_file(name))
    # LOAD takes no bound parameter; the path comes from our own site-packages, quoted as a SQL string.
    conn.execute("LOAD '" + path.replace("'", "''") + "'")


def connect(
    database: str = ":memory:",
    *,
    config: Mapping[str, str | bool | int] | None = None,
    extensions: Iterable[str] = LAKE_EXTENSIONS,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that never downloads an extension, with `extensions` loaded from their packages."""
    conn = duckdb.connect(database, config={**(config or {}), **OFFLINE_CONFIG})
    try:
        for name in extensions:
            load_extension(conn, name)
    except BaseException:
        conn.close()
        raise
    return conn
