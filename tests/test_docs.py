"""The docs: every ```python block runs, each says what it needs, the site builds.

Every ```python block in README.md and ``docs/`` runs, alone, in a fresh
interpreter (warnings are errors).  Blocks written as ```py are fragments (they
need a broker, a server to connect to, or an application around them) and are
not run here; the Celery, Django and server tests run the ones they name.

A block whose imports need more than the standard library and ``ctxlog`` itself
says so on a line before it, ``Needs: `pip install ...```.  For a block that
runs, the test records each module the block itself, or ctxlog on its behalf,
imported (a finder on ``sys.meta_path``, set up by a ``sitecustomize`` module)
and checks that a distribution that line installs, directly or as a
dependency, provides it; for a fragment, it checks the imports written in it.
What the block's libraries import for themselves is pip's business.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
FENCE = re.compile(r"^```(python|py)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
NEEDS = re.compile(r"^Needs: `pip install ([^`]+)`", re.MULTILINE)
SELF = "ctxlog-correlation"
# Used when installed, never needed: json_formatter(serializer="auto") takes orjson
# if it is there.
OPPORTUNISTIC = frozenset({"orjson"})

# Records "module<TAB>importer" for each first import made by the script itself
# (``__main__``) or by ctxlog, in the file $CTXLOG_DOCS_IMPORTS (child processes too).
RECORDER = """\
import os, sys

class _Recorder:
    def find_spec(self, name, path=None, target=None):
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith(
            ("importlib", "_frozen_importlib")
        ):
            frame = frame.f_back
        importer = frame.f_globals.get("__name__", "") if frame is not None else ""
        if importer in ("__main__", "__mp_main__") or importer.partition(".")[0] == "ctxlog":
            with open(os.environ["CTXLOG_DOCS_IMPORTS"], "a", encoding="utf-8") as out:
                out.write(f"{name}\\t{importer}\\n")
        return None

sys.meta_path.insert(0, _Recorder())
"""
README_MAX_LINES = 300


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def page_name(page: Path) -> str:
    return "README.md" if page == README else f"docs/{page.relative_to(DOCS).as_posix()}"


def blocks(kind: str) -> list[tuple[str, int, str, str]]:
    """(page, line, code, the Needs spec before it or "") for each block of *kind*."""
    found = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        previous_end = 0
        for match in FENCE.finditer(text):
            # The Needs line belongs to the prose between the previous block and this one.
            prose = text[previous_end : match.start()]
            previous_end = match.end()
            if match.group(1) != kind:
                continue
            needs = NEEDS.findall(prose)
            line = text.count("\n", 0, match.start()) + 1
            found.append((page_name(page), line, match.group(2), needs[-1] if needs else ""))
    return found


def ids(found: list[tuple[str, int, str, str]]) -> list[str]:
    return [f"{page}:{line}" for page, line, _, _ in found]


# --------------------------------------------------------------------------
# what a Needs line installs
# --------------------------------------------------------------------------


@functools.cache
def module_owners() -> dict[str, list[str]]:
    """Top-level module name -> the distributions that install it.

    From each distribution's ``top_level.txt`` and its file list, as
    ``importlib.metadata.packages_distributions()`` does from Python 3.11 on
    (3.10's reads ``top_level.txt`` only, which wheels built by hatchling and
    others do not have).
    """
    owners: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        tops = set((dist.read_text("top_level.txt") or "").split())
        for file in dist.files or []:
            parts = file.parts
            if not parts or parts[0] in {"..", "__pycache__"} or ".dist-info" in parts[0]:
                continue
            if len(parts) > 1:
                tops.add(parts[0])
            elif parts[0].endswith(".py"):
                tops.add(parts[0][:-3])
        for top in tops:
            owners.setdefault(top, set()).add(name)
    return {top: sorted(names) for top, names in owners.items()}


@functools.cache
def owners_of(module: str) -> list[str] | None:
    """The distributions that provide *module* (namespace packages: the one with its files)."""
    dists = module_owners().get(module.partition(".")[0])
    if dists is None or len(dists) == 1 or "." not in module:
        return dists
    prefix = module.replace(".", "/") + "/"
    single = module.replace(".", "/") + ".py"
    precise = [
        dist
        for dist in dists
        if any(
            str(f).startswith(prefix) or str(f) == single
            for f in importlib.metadata.distribution(dist).files or []
        )
    ]
    return precise or owners_of(module.rpartition(".")[0])


def _requirements(dist: str, extras: frozenset[str]) -> list[Requirement]:
    try:
        requires = importlib.metadata.requires(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    wanted = []
    for text in requires:
        req = Requirement(text)
        environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
        if req.marker is None or any(req.marker.evaluate(env) for env in environments):
            wanted.append(req)
    return wanted


def installed_by(spec: str) -> set[str]:
    """Every distribution ``pip install <spec>`` brings, dependencies included."""
    todo = []
    for word in shlex.split(spec):
        req = Requirement(word)
        todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    seen: set[str] = set()
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        seen.add(name)
        todo.extend(
            (canonicalize_name(req.name), frozenset(req.extras))
            for req in _requirements(name, extras)
        )
    return seen


def third_party(module: str) -> bool:
    top = module.partition(".")[0]
    return not (top in sys.stdlib_module_names or top.startswith("_") or top == "ctxlog")


def missing_from(spec: str, modules: set[str]) -> set[str]:
    """Distributions of third-party *modules* that *spec* does not install."""
    brought = installed_by(spec) if spec else set()
    missing = set()
    for module in modules:
        top = module.partition(".")[0]
        if not third_party(module) or top in OPPORTUNISTIC:
            continue
        dists = owners_of(module)
        if dists is None:
            continue  # a module of the block's own (tasks.py, myapp)
        if not brought.intersection(dists):
            missing.add(" or ".join(dists))
    return missing


# --------------------------------------------------------------------------
# the blocks
# --------------------------------------------------------------------------


def test_docs_have_runnable_blocks() -> None:
    assert len(blocks("python")) >= 40


def test_readme_is_a_landing_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    assert lines[0] == "# ctxlog"
    assert any("make demo" in line for line in lines[:8])
    assert any("make test" in line for line in lines[:8])


RUNNABLE = blocks("python")
FRAGMENTS = blocks("py")


@pytest.mark.parametrize(("page", "line", "code", "needs"), RUNNABLE, ids=ids(RUNNABLE))
def test_block_runs(page: str, line: int, code: str, needs: str, tmp_path: Path) -> None:
    script = tmp_path / f"{Path(page).stem}_line{line}.py"
    script.write_text(code, encoding="utf-8")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(RECORDER, encoding="utf-8")
    record = tmp_path / "imports.tsv"
    record.touch()
    path = os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path, "CTXLOG_DOCS_IMPORTS": str(record)},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"{page} block at line {line} failed:\n{result.stdout}\n{result.stderr}"
    )
    imported = {row.partition("\t")[0] for row in record.read_text(encoding="utf-8").splitlines()}
    assert imported, "the import recorder saw nothing: the check below would pass blindly"
    missing = missing_from(needs, imported | written_imports(code))
    assert not missing, (
        f"{page} block at line {line} imports {sorted(missing)}, which its "
        f"'Needs: `pip install ...`' line ({needs or 'none'}) does not install"
    )


WRITTEN_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.MULTILINE)


def written_imports(code: str) -> set[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a piece of a larger file: a dictConfig entry, say
        return {a or b for a, b in WRITTEN_IMPORT.findall(code)}
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize(("page", "line", "code", "needs"), FRAGMENTS, ids=ids(FRAGMENTS))
def test_fragment_names_its_needs(page: str, line: int, code: str, needs: str) -> None:
    missing = missing_from(needs, written_imports(code))
    assert not missing, (
        f"{page} fragment at line {line} imports {sorted(missing)}, which its "
        f"'Needs: `pip install ...`' line ({needs or 'none'}) does not install"
    )


def test_needs_lines_name_real_extras() -> None:
    extras = set(importlib.metadata.metadata(SELF).get_all("Provides-Extra") or [])
    for page in pages():
        for spec in NEEDS.findall(page.read_text(encoding="utf-8")):
            for word in shlex.split(spec):
                req = Requirement(word)
                if canonicalize_name(req.name) == SELF:
                    assert req.extras <= extras, f"{page_name(page)}: {word}: no such extra"
                else:
                    assert not req.extras or canonicalize_name(req.name) != SELF
                    # The distribution exists here, so the line names a real one.
                    importlib.metadata.distribution(req.name)


def test_the_check_catches_an_unnamed_import(tmp_path: Path) -> None:
    """The Needs check can fail: structlog is not what the json extra installs."""
    assert missing_from(f"'{SELF}[json]'", {"structlog", "pythonjsonlogger.json"}) == {"structlog"}
    assert not missing_from(f"'{SELF}[structlog]'", {"structlog"})
    assert not missing_from("fastapi", {"starlette", "pydantic", "anyio"})
    otlp = {"opentelemetry.exporter.otlp.proto.http"}
    assert missing_from(f"'{SELF}[otel]'", otlp) == {"opentelemetry-exporter-otlp-proto-http"}
    assert not missing_from(f"'{SELF}[otel]' opentelemetry-exporter-otlp-proto-http", otlp)
    assert not missing_from(f"'{SELF}[otel]'", {"opentelemetry.sdk.trace"})


def test_make_test_says_it_takes_minutes(tmp_path: Path) -> None:
    """On a fresh clone, ``make test`` says first that it takes minutes, and pip's
    progress shows while the dev extras install."""
    make = shutil.which("make")
    assert make is not None, "the Makefile is how a fresh clone runs the suite"
    # As a user's shell runs it: not as a sub-make of a `make test` running
    # this suite (which would print "Entering directory" lines first).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(
        [make, "--no-print-directory", "-n", "test", f"VENV={tmp_path / 'venv'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    commands = result.stdout.splitlines()
    assert "several minutes" in commands[0]
    (install,) = [line for line in commands if "pip install" in line and "[dev]" in line]
    assert "--quiet" not in install
    assert "--progress-bar on" in install


def test_the_sdist_ships_what_the_suite_reads(tmp_path: Path) -> None:
    """An unpacked sdist's suite passes: it ships the docs (every example runs,
    the site builds, the servers' and Celery's tests start the pages' recipes),
    mkdocs.yml, the config files and the Makefile beside the tests."""
    import tarfile  # noqa: PLC0415 -- this test only

    from hatchling.builders.sdist import SdistBuilder  # noqa: PLC0415 -- same

    (archive,) = SdistBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"])
    with tarfile.open(archive) as sdist:
        shipped = {name.partition("/")[2] for name in sdist.getnames()}
    read = [ROOT / "mkdocs.yml", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for folder in ("docs", "config", "tests"):
        read += [path for path in (ROOT / folder).rglob("*") if path.is_file()]
    wanted = {
        path.relative_to(ROOT).as_posix()
        for path in read
        if "__pycache__" not in path.parts and ".pytest_cache" not in path.parts
    }
    assert wanted - shipped == set()


def test_configure_on_the_stdlib_page_shows_its_real_defaults() -> None:
    """The call the stdlib page lays out, argument by argument, is configure()'s
    own signature: the same names, each with its real default."""
    import inspect  # noqa: PLC0415 -- this test only

    from ctxlog.stdlib import configure  # noqa: PLC0415 -- same

    text = (DOCS / "stdlib.md").read_text(encoding="utf-8")
    (block,) = [code for _, code in FENCE.findall(text) if code.startswith("ctxlog.configure(")]
    call = ast.parse(block).body[0]
    assert isinstance(call, ast.Expr)
    assert isinstance(call.value, ast.Call)
    shown = {kw.arg: ast.literal_eval(kw.value) for kw in call.value.keywords}
    real = {name: p.default for name, p in inspect.signature(configure).parameters.items()}
    real["level"] = "INFO"  # logging.INFO, written as the name it takes too
    assert shown == real


# --------------------------------------------------------------------------
# the site
# --------------------------------------------------------------------------

#: Markup that mkdocstrings does not render: Sphinx roles and directives, a
#: doctest prompt.
SPHINX_MARKUP = re.compile(
    r":(?:func|class|meth|data|mod|attr|exc|obj):`|\.\. (?:versionadded|versionchanged|note|"
    r"warning|deprecated)::|>>>"
)
#: ... and, on a built page, a Markdown cross-reference left unresolved.
RAW_MARKUP = re.compile(f"{SPHINX_MARKUP.pattern}|\\[`[^`\\]]*`\\]\\[[\\w.]*\\]")
#: Sphinx field lines, which mkdocstrings' sphinx style turns into tables.
FIELD_LINE = re.compile(r"^\s*:(?:param|raises|returns?|rtype|type)\b", re.MULTILINE)


def page_text(html: str) -> str:
    """The text a reader sees on a built page, code blocks left out."""
    html = re.sub(r"<pre\b.*?</pre>", "", html, flags=re.DOTALL)
    html = re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.DOTALL)
    return unescape(re.sub(r"<[^>]+>", "", html))


def docstrings() -> list[tuple[str, int, str]]:
    """(module file, line, text) of every docstring in ctxlog/."""
    found = []
    for path in sorted((ROOT / "ctxlog").glob("*.py")):
        found += [
            (path.name, node.lineno, node.value.value)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ]
    return found


def test_docstrings_are_markdown() -> None:
    """Docstrings are written in what the API page renders: Markdown
    cross-references, ``*New in version X.*`` before the field lines (after
    them it would land in the last field's table cell), fenced examples."""
    wrong = []
    for name, line, text in docstrings():
        shown = SPHINX_MARKUP.findall(text)
        if shown:
            wrong.append(f"{name}:{line}: {shown[:3]}")
        if re.search(r"\S::\s*$", text, re.MULTILINE):
            wrong.append(f"{name}:{line}: a reST literal block (::)")
        note = text.find("*New in version")
        first_field = FIELD_LINE.search(text)
        if note >= 0 and first_field and note > first_field.start():
            wrong.append(f"{name}:{line}: *New in version* after the field lines")
    assert not wrong, "\n".join(wrong)


def test_site_builds_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    command = [mkdocs] if mkdocs else [sys.executable, "-m", "mkdocs"]
    result = subprocess.run(
        [*command, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in (
        "ctxlog.bind",
        "ctxlog.structlog.merge_context",
        "ctxlog.asgi.RequestContextMiddleware",
    ):
        assert name in api, f"API reference lacks {name}"
    for page in sorted((tmp_path / "site").rglob("*.html")):
        shown = RAW_MARKUP.findall(page_text(page.read_text(encoding="utf-8")))
        assert not shown, f"{page.relative_to(tmp_path / 'site')} shows raw markup: {shown[:5]}"
    # What the docstrings' markup becomes: links, notes, examples, field tables.
    bind = api[api.index('id="ctxlog.bind"') : api.index('id="ctxlog.unbind"')]
    assert 'href="#ctxlog.isolate"' in bind  # [`isolate`][ctxlog.isolate]
    assert "<p><em>New in version 0.1.0.</em></p>" in bind
    assert '<div class="highlight"><pre>' in bind  # the example, a code block
    assert "<blockquote" not in api
    cells = re.findall(r'<div class="doc-md-description">(.*?)</div>', api, re.DOTALL)
    assert cells
    assert not [cell for cell in cells if "New in version" in cell]  # not in a field's cell
    context_filter = api[api.index('id="ctxlog.ContextFilter"') :]
    table = context_filter[: context_filter.index("</table>")]
    assert "Parameters:" in table
    assert all(f"<code>{name}</code>" in table for name in ("fields", "defaults", "nest_under"))
