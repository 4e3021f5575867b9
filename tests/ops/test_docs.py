"""Docs that cannot rot: every repository path named in docs/*.md, README.md and in the operator hints
of product code (string literals such as "see deploy/redis.acl") exists."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from harness.procs import REPO

TOP = ("deploy", "docs", "tests", "tools", "bench", "shared", "discoverer", "xds_server", "xdsctl", ".ci")
PRODUCT = ("shared", "discoverer", "xds_server", "xdsctl", "tools")
# a path under a top-level directory, or a top-level file; a placeholder (<id>, *, {..}) is no path
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*[\w/]|README\.md|Makefile|pyproject\.toml)" % "|".join(
    re.escape(t) for t in TOP))
LINK = re.compile(r"\]\(([\w./-]+\.md)(?:#[\w-]*)?\)")  # a relative Markdown link


def named_paths(text: str) -> set[str]:
    """Repository paths named in ``text``; ``:line``, ``::test`` and ``:NAME`` suffixes dropped."""
    out = set()
    for m in PATH.finditer(text):
        if text[m.end():m.end() + 1] in "<*{":
            continue
        out.add(m.group(1).rstrip("./"))
    return out


def missing(paths: set[str], base: Path = REPO) -> list[str]:
    return sorted(p for p in paths if not (base / p).exists())


def literals(path: Path) -> str:
    """Every string literal of a Python module, docstrings included, one per line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return "\n".join(n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str))


def test_the_checker_finds_a_path_that_does_not_exist():
    text = "grant what deploy/redis-acl.conf lists; see `shared/keys.py:STALE_AFTER` and `docs/routing.md`"
    assert named_paths(text) == {"deploy/redis-acl.conf", "shared/keys.py", "docs/routing.md"}
    assert missing(named_paths(text)) == ["deploy/redis-acl.conf"]
    assert named_paths("`{xds}:outcome:<request>`, deploy/<app>.toml, tests/*.py") == set()


def test_every_path_the_docs_name_exists():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(docs) > 3
    bad = {}
    for doc in docs:
        text = doc.read_text()
        gone = missing(named_paths(text)) + missing(set(LINK.findall(text)), doc.parent)
        if gone:
            bad[doc.relative_to(REPO).as_posix()] = gone
    assert not bad, f"paths named in the docs that are not in the repository: {bad}"


SECTION = re.compile(r"#{2,3} `([\w/]+/)`")  # "### `shared/`"
BULLET_DIR = re.compile(r"- `([\w/]+/)`")  # "- `bench/`: ..." under "### `tools/`, `bench/`, `tests/`"
MODULE = re.compile(r"`([\w/]+\.py)(?::\w+)?`")


def code_map_modules(text: str) -> set[str]:
    """The modules architecture.md's code map names, each relative to the package its section (or
    its bullet, "- `bench/`: ...") is about: "`sources/fly.py`" under "### `discoverer/`"."""
    out, base = set(), None
    for line in text.splitlines():
        if line.startswith("#"):
            section = SECTION.match(line)
            base = section.group(1) if section else None
            continue
        bullet = BULLET_DIR.match(line)
        if bullet:
            base = bullet.group(1)
        if base is None:
            continue
        for name in MODULE.findall(line):
            out.add(name if name.split("/")[0] in TOP else base + name)
    return out


def test_the_code_map_names_modules_that_exist():
    text = (REPO / "docs" / "architecture.md").read_text()
    named = code_map_modules(text)
    assert {"shared/status.py", "shared/addr.py", "discoverer/sources/fly.py", "bench/run.py"} <= named
    assert code_map_modules("### `shared/`\n- `gone.py`: moved away") == {"shared/gone.py"}
    assert not missing(named), f"architecture.md's code map names modules that are not there: {missing(named)}"


def test_every_path_an_operator_hint_names_exists():
    modules = [p for top in PRODUCT for p in sorted((REPO / top).rglob("*.py"))]
    assert modules
    bad = {}
    for module in modules:
        gone = missing(named_paths(literals(module)))
        if gone:
            bad[module.relative_to(REPO).as_posix()] = gone
    assert not bad, f"paths named in product code that are not in the repository: {bad}"
