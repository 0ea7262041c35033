"""What `.ci/pythons` needs to know about this machine, read at run time.

    python3 .ci/host.py mirror      the Debian mirror this machine's apt uses
    python3 .ci/host.py pip-paths   the local files and folders pip's settings name

Nothing here is written into the chroot's settings by hand: the chroot gets the
host's own apt mirror and pip settings, so it reaches the same package index
through the same proxy, certificates and local wheel folders as the host.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse


def _codename() -> str:
    text = Path("/etc/os-release").read_text(encoding="utf-8")
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.MULTILINE)
    return match.group(1) if match else ""


def _one_line_entries(path: str) -> list[tuple[str, list[str]]]:
    entries = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        if words[1].startswith("["):  # options: deb [arch=amd64 signed-by=...] URI suite
            while words and not words[0].endswith("]"):
                words.pop(0)
            words.pop(0)
            words.insert(0, "deb")
        entries.append((words[1], [words[2]]))
    return entries


def _deb822_entries(path: str) -> list[tuple[str, list[str]]]:
    entries = []
    for stanza in re.split(r"\n\s*\n", Path(path).read_text(encoding="utf-8")):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        suites = fields.get("suites", "").split()
        entries += [(uri, suites) for uri in fields.get("uris", "").split()]
    return entries


def mirror() -> str:
    """The URI of the host's own release suite (not -security, not a third party's)."""
    codename = _codename()
    entries: list[tuple[str, list[str]]] = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if os.path.exists(path):
            entries += _one_line_entries(path)
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        entries += _deb822_entries(path)
    for uri, suites in entries:
        if codename and codename in suites:
            return uri.rstrip("/")
    return ""


def _local_path(value: str) -> str:
    if value.startswith("file:"):
        path = unquote(urlparse(value).path).rstrip("/")
        # A PEP 503 index at <root>/simple links to its files beside it, under <root>.
        return os.path.dirname(path) if os.path.basename(path) == "simple" else path
    return value if value.startswith("/") else ""


def pip_paths() -> list[str]:
    """Lines `file PATH` / `dir PATH`: pip's settings files and every local path they name."""
    debug = subprocess.run(
        [sys.executable, "-m", "pip", "config", "debug"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.finditer(r"^\s+(/\S+), exists: True$", debug, re.MULTILINE)
    lines = [f"file {match.group(1)}" for match in found]
    if os.environ.get("PIP_CONFIG_FILE", "").startswith("/"):
        lines.append(f"file {os.environ['PIP_CONFIG_FILE']}")
    values = re.findall(r"^\s+(?:PIP_\w+='|[\w.-]+: )(.*?)'?$", debug, re.MULTILINE)
    for value in values:
        for word in value.split():
            path = _local_path(word)
            if path and os.path.isdir(path):
                lines.append(f"dir {path.rstrip('/') or '/'}")
            elif path and os.path.isfile(path):
                lines.append(f"file {path}")
    return list(dict.fromkeys(lines))


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "mirror":
        print(mirror())
    elif command == "pip-paths":
        print("\n".join(pip_paths()))
    else:
        sys.exit(__doc__)
