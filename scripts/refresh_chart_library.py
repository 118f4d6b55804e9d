#!/usr/bin/env python3
"""Vendor the dashboard's chart library: Chart.js's minified UMD build and its licence, from the npm registry.

Run it after changing CHART_JS_VERSION and CHART_JS_INTEGRITY (`npm view chart.js@X dist.integrity`):

    python scripts/refresh_chart_library.py

It runs `npm pack chart.js@<version>`, checks the tarball against the pinned sha512, checks that the file
is the version it claims, and writes asgi_log_to_sqlite/datasette/static/chart.umd.min.js and
chart.js-LICENSE.md. Nothing else in the package loads from outside: the dashboard serves these two files.
"""
from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile

CHART_JS_VERSION = "4.6.1"
CHART_JS_INTEGRITY = (
    "sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/fDNWeSqqqArixMJWkWNN6fcYvPU3HneSANFNYtRi61g=="
)
MINIFIED = "package/dist/chart.umd.min.js"
LICENSE = "package/LICENSE.md"
STATIC = pathlib.Path(__file__).resolve().parent.parent / "asgi_log_to_sqlite" / "datasette" / "static"


class RefreshError(Exception):
    """The registry gave something other than the pinned, expected package."""


def pack(version: str, destination: pathlib.Path) -> pathlib.Path:
    """`npm pack chart.js@version` into ``destination``; the tarball's path."""
    result = subprocess.run(
        ["npm", "pack", f"chart.js@{version}", "--json", "--pack-destination", str(destination)],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        raise RefreshError(f"npm pack chart.js@{version} failed ({result.returncode}): {result.stderr.strip()}")
    (packed,) = json.loads(result.stdout)
    return destination / packed["filename"]


def integrity_of(tarball: pathlib.Path) -> str:
    """The tarball's Subresource Integrity string, as npm states it (sha512, base64)."""
    return "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()


def without_source_map_comment(source: str) -> str:
    """The script without its `//# sourceMappingURL=` line: the map is not vendored, so nothing may ask for it."""
    lines = source.rstrip("\n").split("\n")
    if lines[-1].startswith("//# sourceMappingURL="):
        lines.pop()
    return "\n".join(lines) + "\n"


def vendored_files(tarball: pathlib.Path, version: str) -> dict:
    """{file name in static/: text} from the checked tarball."""
    with tarfile.open(tarball, "r:gz") as archive:
        minified = archive.extractfile(MINIFIED).read().decode("utf8")
        licence = archive.extractfile(LICENSE).read().decode("utf8")
    banner = f"Chart.js v{version}"
    if banner not in minified[:200]:
        raise RefreshError(f"{MINIFIED} does not start with the banner {banner!r}: {minified[:120]!r}")
    if "MIT License" not in licence:
        raise RefreshError(f"{LICENSE} is not the MIT licence expected: {licence[:120]!r}")
    return {"chart.umd.min.js": without_source_map_comment(minified), "chart.js-LICENSE.md": licence}


def refresh(version: str = CHART_JS_VERSION, integrity: str = CHART_JS_INTEGRITY) -> list:
    """Fetch, check and write the vendored files; the paths written."""
    with tempfile.TemporaryDirectory() as tmp:
        tarball = pack(version, pathlib.Path(tmp))
        found = integrity_of(tarball)
        if found != integrity:
            raise RefreshError(f"chart.js@{version} has integrity {found}, expected the pinned {integrity}")
        files = vendored_files(tarball, version)
    written = []
    for name, text in files.items():
        path = STATIC / name
        path.write_text(text, encoding="utf8")
        written.append(path)
    return written


def main() -> int:
    try:
        written = refresh()
    except RefreshError as error:
        print(f"refresh_chart_library: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
