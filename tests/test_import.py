"""`import ctxlog` loads the standard library only."""

from __future__ import annotations

import json
import subprocess
import sys

import ctxlog


def test_import_loads_no_third_party_module() -> None:
    # A module counts as the standard library's when it is named in
    # sys.stdlib_module_names or lives in the standard library's folders: 3.15 loads
    # private helpers that list leaves out (traceback imports _missing_stdlib_info).
    code = (
        "import json, os, sys, sysconfig\n"
        "before = set(sys.modules)\n"
        "import ctxlog\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "paths = sysconfig.get_paths()\n"
        "stdlib = [os.path.realpath(paths[k]) for k in ('stdlib', 'platstdlib')]\n"
        "sites = [os.path.realpath(paths[k]) for k in ('purelib', 'platlib')]\n"
        "def under(path, roots):\n"
        "    return any(path.startswith(os.path.join(root, '')) for root in roots)\n"
        "def is_stdlib(name):\n"
        "    if name in sys.stdlib_module_names:\n"
        "        return True\n"
        "    path = os.path.realpath(getattr(sys.modules[name], '__file__', None) or '')\n"
        "    return under(path, stdlib) and not under(path, sites)\n"
        "print(json.dumps(sorted(m for m in new - {'ctxlog'} if not is_stdlib(m))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


def test_lazy_names_are_listed_before_their_first_use() -> None:
    code = (
        "import sys, ctxlog\n"
        "names = dir(ctxlog)\n"
        "print('multiprocessing' in sys.modules, 'logging.handlers' in sys.modules)\n"
        "print(all(name in names for name in ctxlog.__all__))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False", "True"]


def test_all_is_sorted_and_complete() -> None:
    assert ctxlog.__all__ == sorted(ctxlog.__all__)
    for name in ctxlog.__all__:
        assert getattr(ctxlog, name).__doc__, name
    assert "structlog" not in ctxlog.__all__
