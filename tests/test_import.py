"""`import ctxlog` loads the standard library only."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys

import pytest

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


#: What ``import ctxlog`` may load beyond what ``import logging`` and
#: ``import typing`` load: its core (the store, the API, the filter) and the
#: little it needs.  Threads and pools, snapshots and their codecs, headers,
#: JSON, pickling, dates, asyncio and multiprocessing load on first use.
IMPORTED_WITH_CTXLOG = {
    "__future__",
    "_contextvars",
    "contextvars",
    "ctxlog",
    "ctxlog._context",
    "ctxlog._errors",
    "ctxlog._memo",
    "ctxlog._projection",
    "ctxlog._store",
    "ctxlog._values",
    "ctxlog.stdlib",
    "math",
}


def test_import_loads_only_what_it_uses() -> None:
    # What typing and math drag along differs between Python versions (3.10's
    # typing loads contextlib; 3.15's loads annotationlib when the first NamedTuple
    # is made, and its math loads math.integer): measured here rather than listed.
    code = (
        "import json, sys, logging\n"
        "before = set(sys.modules)\n"
        "import math, typing\n"
        "class Probe(typing.NamedTuple):\n"
        "    x: int\n"
        "typing_loads = set(sys.modules) - before - {'math'}\n"
        "import ctxlog\n"
        "print(json.dumps(sorted(set(sys.modules) - before - typing_loads)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert set(json.loads(out)) <= IMPORTED_WITH_CTXLOG


def test_lazy_names_load_their_module_on_first_use() -> None:
    code = (
        "import sys, ctxlog\n"
        "lazy = ('concurrent.futures', 'pickle', 'json', 'ctxlog._snapshot', 'ctxlog.headers')\n"
        "print(any(name in sys.modules for name in lazy))\n"
        "ctxlog.ThreadPoolExecutor, ctxlog.snapshot, ctxlog.outgoing_headers\n"
        "print(all(name in sys.modules for name in lazy[:1] + lazy[3:]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "True"]


def _refuse_an_empty_key() -> None:
    ctxlog.set(**{"": 1})


def test_context_error_is_named_where_it_is_imported() -> None:
    assert ctxlog.ContextError.__module__ == "ctxlog"
    # An uncaught one, as a user sees it.
    failed = subprocess.run(
        [sys.executable, "-c", "import ctxlog\nctxlog.set(**{'': 1})"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1].startswith("ctxlog.ContextError: set(): ")
    # Raised in a worker process, it comes back through pickle as itself.
    with (
        concurrent.futures.ProcessPoolExecutor(1) as pool,
        pytest.raises(ctxlog.ContextError, match="non-empty strings"),
    ):
        pool.submit(_refuse_an_empty_key).result()
