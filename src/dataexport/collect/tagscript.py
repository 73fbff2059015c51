"""The tag as served: its source (`static/uxa.js`) and the one line that starts it with a tag id's settings.

The source is read once per process; each answer is versioned by a hash of what it holds, so a browser or CDN
can keep it for a few minutes and revalidate it cheaply (ETag) once the tag or its settings change.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.resources import files

TAG_MAX_AGE_SECONDS = 300  # how long browsers keep the tag: a rotated tag id or a new tag reaches pages this fast


@cache
def tag_source() -> str:
    return files("dataexport.collect").joinpath("static/uxa.js").read_text(encoding="utf-8")


@cache
def tag_version() -> str:
    return hashlib.sha256(tag_source().encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ServedTag:
    body: bytes
    gzipped: bytes  # what most browsers are sent: the source is mostly comments and long names
    etag: str  # of `body`; the gzipped representation's is `gzip_etag` (each representation has its own)

    @property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gz"'


@lru_cache(maxsize=64)  # ~50 KB each; a process mostly serves a few tag ids on one or two host names
def served_tag(tag_id: str, endpoint: str) -> ServedTag:
    config = {"tagId": tag_id, "endpoint": endpoint, "version": tag_version()}
    # "<" escaped: whatever the endpoint holds, it cannot close a <script> the tag is inlined into.
    settings = json.dumps(config, sort_keys=True).replace("<", "\\u003c")
    start = f"\n__dataexportTag.install(window, {settings});\n"
    body = (tag_source() + start).encode()
    return ServedTag(body, gzip.compress(body, mtime=0), '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


def snippet(script_url: str) -> str:
    """What a site owner pastes into every page, as the vendor's tag is installed (the queue line first)."""
    return f'<script>window._uxa = window._uxa || [];</script>\n<script async src="{script_url}"></script>'
