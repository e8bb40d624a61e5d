"""threat_models/*.md cite only tests that exist, and the README maps every row of the
catalogue (docs/threats.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "threat_models").glob("*.md"))
CATALOGUE = ROOT / "docs" / "threats.md"
# `unit/x/test_y.py::test_z` or, continuing the last file named on the line, `::test_z`.
CITE = re.compile(r"`(?:([\w/]+\.py))?::(test_\w+)`")


def _tests(path: Path) -> set[str]:
    return {
        node.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _citations() -> list[tuple[str, int, str, str]]:
    out = []
    for doc in DOCS:
        for lineno, line in enumerate(doc.read_text().splitlines(), 1):
            current = None
            for match in CITE.finditer(line):
                current = match.group(1) or current
                assert current is not None, f"{doc.name}:{lineno}: `::` with no file before it"
                out.append((doc.name, lineno, current, match.group(2)))
    return out


def test_every_cited_test_exists() -> None:
    cites = _citations()
    assert len(cites) > 100
    cache: dict[str, set[str]] = {}
    missing = []
    for doc, lineno, file, test in cites:
        path = ROOT / "proofs_tests" / file
        if file not in cache:
            cache[file] = _tests(path) if path.is_file() else set()
        if test not in cache[file]:
            missing.append(f"{doc}:{lineno}: {file}::{test}")
    assert not missing, "\n".join(missing)


def test_readme_maps_every_catalogue_row_once() -> None:
    ids = re.findall(r"^\| ([A-Z]+-[0-9]+) ", CATALOGUE.read_text(), flags=re.M)
    readme = (ROOT / "threat_models" / "README.md").read_text()
    rows = re.findall(r"^\| ([A-Z]+-[0-9]+) \| ([^|]+) \|", readme, flags=re.M)
    assert [r[0] for r in rows] == ids
    statuses = {r[1].strip().split(" (")[0] for r in rows}
    assert statuses <= {"covered", "partly", "open", "out of scope", "n/a"}, statuses


def test_the_product_points_nowhere_outside_the_repository() -> None:
    """Code, messages, docstrings and documents cite the repository's own documents."""
    offenders = []
    for top in ("secagg", "dp", "client", "aggregator", "protos", "threat_models", "docs"):
        for path in (ROOT / top).rglob("*"):
            if path.suffix in {".py", ".md", ".proto"} and path.is_file():
                text = path.read_text(errors="replace")
                if "../shared" in text or "shared/docs" in text:
                    offenders.append(str(path.relative_to(ROOT)))
    for name in ("README.md", "secagg/SPEC.md"):
        if "../shared" in (ROOT / name).read_text():
            offenders.append(name)
    assert not offenders, offenders


def test_the_license_file_matches_the_package_metadata() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
