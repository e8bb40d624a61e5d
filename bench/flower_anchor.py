"""Run Flower's own SecAgg(+) primitives side by side with ours (anchor figures).

Flower (``flwr==1.42.0``) lives in its own virtual environment, ``bench/.venv-flwr``, so that
it never touches the project's ``.venv``. This module drives the read-only harness
``<repo>/../shared/anchors/flower_bench.py`` in that environment through ``subprocess`` and
parses the JSON lines it prints (plain ``json``; nothing is unpickled). It needs nothing
beyond the standard library, so the project's benchmark script can import it from any venv::

    from flower_anchor import flower_protocol  # with bench/ on sys.path

    rec = flower_protocol("plus", n=100, d=1_000_000, dropout=0.3)
    rec["mask_elems_per_s"], rec.get("server_unmask_total_s")

Run ``python bench/flower_anchor.py`` for a table of the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "FLOWER_BENCH",
    "FLWR_VERSION",
    "REPO_ROOT",
    "FlowerBenchError",
    "ensure_flower_venv",
    "flower_prims",
    "flower_protocol",
    "run_flower",
]

FLWR_VERSION = "1.42.0"
REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWER_BENCH = REPO_ROOT.parent / "shared" / "anchors" / "flower_bench.py"
_DEFAULT_VENV = Path("bench/.venv-flwr")  # relative paths are taken from REPO_ROOT
_REQUIREMENTS = (f"flwr=={FLWR_VERSION}", "numpy")  # never flwr[simulation]: it pulls in Ray

# Prints {"flwr": version | null, "numpy": version | null} without importing either package.
_VERSION_PROBE = """
import importlib.metadata as m, json
def v(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print(json.dumps({"flwr": v("flwr"), "numpy": v("numpy")}))
"""


class FlowerBenchError(RuntimeError):
    """The Flower venv could not be prepared, or the harness failed or printed no records."""


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _child_env() -> dict[str, str]:
    """The caller's environment minus what would leak its own venv into the Flower one."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _installed_versions(python: Path) -> dict[str, str | None]:
    proc = subprocess.run(
        [str(python), "-c", _VERSION_PROBE],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        return {"flwr": None, "numpy": None}
    versions: dict[str, str | None] = json.loads(proc.stdout)
    return versions


def ensure_flower_venv(path: Path = _DEFAULT_VENV) -> Path:
    """Return the python of the Flower venv at ``path``, creating it and installing
    ``flwr==1.42.0`` + ``numpy`` first if they are missing (the only network use: pip)."""
    venv = path if path.is_absolute() else REPO_ROOT / path
    python = _venv_python(venv)
    if not python.exists():
        # venv builds on the base interpreter even when sys.executable is itself in a venv.
        proc = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)],
            capture_output=True,
            text=True,
            env=_child_env(),
            timeout=300,
            check=False,
        )
        if proc.returncode != 0 or not python.exists():
            raise FlowerBenchError(f"python -m venv {venv} failed:\n{proc.stderr[-2000:]}")
    versions = _installed_versions(python)
    if versions["flwr"] != FLWR_VERSION or versions["numpy"] is None:
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *_REQUIREMENTS],
            capture_output=True,
            text=True,
            env=_child_env(),
            timeout=1800,
            check=False,
        )
        versions = _installed_versions(python)
        if proc.returncode != 0 or versions["flwr"] != FLWR_VERSION:
            raise FlowerBenchError(
                f"pip install {' '.join(_REQUIREMENTS)} into {venv} failed "
                f"(flwr now {versions['flwr']}):\n{proc.stderr[-2000:]}"
            )
    return python


def run_flower(
    subcommand: str, *args: str, timeout: float, venv: Path = _DEFAULT_VENV
) -> list[dict[str, Any]]:
    """Run ``flower_bench.py <subcommand> <args>`` in the Flower venv; return its JSON records.

    Each stdout line that parses as a JSON object is one record (``"what"`` names its kind);
    other lines (Flower's logging) are skipped. Raises ``FlowerBenchError`` on a non-zero exit,
    a timeout (the child is killed) or no record at all.
    """
    if not FLOWER_BENCH.is_file():
        raise FlowerBenchError(f"Flower harness not found at {FLOWER_BENCH}")
    python = ensure_flower_venv(venv)
    cmd = [str(python), str(FLOWER_BENCH), subcommand, *args]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=_child_env(),
            cwd=REPO_ROOT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise FlowerBenchError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise FlowerBenchError(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    records: list[dict[str, Any]] = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    if not records:
        raise FlowerBenchError(f"no JSON records from: {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return records


def _one(records: list[dict[str, Any]], what: str) -> dict[str, Any]:
    hits = [r for r in records if r.get("what") == what]
    if len(hits) != 1:
        raise FlowerBenchError(f"expected one {what!r} record, got {len(hits)}")
    return hits[0]


def flower_prims(*, timeout: float = 600.0, venv: Path = _DEFAULT_VENV) -> dict[str, Any]:
    """Flower's primitive micro-benchmarks (PRG, P-384, Fernet, Shamir, quantize), one record."""
    return _one(run_flower("prims", timeout=timeout, venv=venv), "prims")


def flower_protocol(
    mode: Literal["plus", "full"],
    n: int,
    d: int,
    dropout: float,
    sample_clients: int = 8,
    *,
    timeout: float = 3600.0,
    venv: Path = _DEFAULT_VENV,
) -> dict[str, Any]:
    """One re-enacted Flower SecAgg(+) round: ``n`` clients, ``d`` dims, ``dropout`` fraction
    dropped after share-keys. ``sample_clients`` are masked when all n would be too costly.

    An aborted round has ``"server"`` set to the reason and no ``server_*`` timings.
    """
    if mode not in ("plus", "full"):
        raise ValueError(f"mode must be 'plus' or 'full', not {mode!r}")
    args = ["--mode", mode, "--n", str(int(n)), "--dims", str(int(d))]
    args += ["--dropouts", repr(float(dropout)), "--sample-clients", str(int(sample_clients))]
    return _one(run_flower("protocol", *args, timeout=timeout, venv=venv), "protocol")


def _fmt(rec: dict[str, Any], key: str, scale: float = 1.0, spec: str = ".2f") -> str:
    val = rec.get(key)
    return "-" if val is None else format(float(val) * scale, spec)


def _table(rows: list[tuple[str, dict[str, Any], float]]) -> str:
    head = (
        "| case | client mask M elem/s (wall / CPU) | server unmask s (wall) | Shamir combine s "
        "| mask regen s | server total CPU s | upload x float32 (masked / total) "
        "| P(abort), random drop | wall s of run |"
    )
    lines = [head, "|" + "---|" * 9]
    for name, r, took in rows:
        aborted = "server" in r and "server_unmask_total_s" not in r
        lines.append(
            f"| {name} | {_fmt(r, 'mask_elems_per_s', 1e-6, '.0f')} / "
            f"{_fmt(r, 'mask_elems_per_cpu_s', 1e-6, '.0f')} "
            f"| {'ABORT' if aborted else _fmt(r, 'server_unmask_total_s')} "
            f"| {_fmt(r, 'server_shamir_combine_s')} | {_fmt(r, 'server_mask_regen_s')} "
            f"| {_fmt(r, 'server_total_cpu_s')} "
            f"| {_fmt(r, 'expansion_masked_vs_float32', spec='.3f')} / "
            f"{_fmt(r, 'expansion_total_vs_float32', spec='.3f')} "
            f"| {_fmt(r, 'abort_prob_random_drop', spec='.3f')} | {took:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--d", type=int, default=1_000_000)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per harness run")
    ap.add_argument("--json", action="store_true", help="also print the raw records")
    a = ap.parse_args()
    rows: list[tuple[str, dict[str, Any], float]] = []
    for mode in ("plus", "full"):
        t0 = time.perf_counter()
        rec = flower_protocol(mode, a.n, a.d, a.dropout, timeout=a.timeout)
        took = time.perf_counter() - t0
        name = (
            f"{mode} n={rec['n']} d={rec['d']:_} p={rec['p_drop']} "
            f"k={rec['k_neighbours']} t={rec['threshold']}"
        )
        rows.append((name, rec, took))
        if a.json:
            print(json.dumps(rec))
    print(f"Flower {FLWR_VERSION} SecAgg(+) primitives ({FLOWER_BENCH.name})")
    print(_table(rows))


if __name__ == "__main__":
    main()
