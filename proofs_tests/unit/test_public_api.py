"""client/ and aggregator/ export their public API; importing either pulls in neither torch
nor grpc until a name that needs them is used (a subprocess, so this run's imports don't
count)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import aggregator
import client


@pytest.mark.parametrize("package", [client, aggregator])
def test_every_exported_name_resolves(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    assert names and names == sorted(names)
    for name in names:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError):
        package.not_a_name  # type: ignore[attr-defined]


def test_importing_the_packages_is_light() -> None:
    code = (
        "import sys, client, aggregator, secagg, dp;"
        "print(sorted(m for m in ('torch', 'grpc', 'peft', 'opacus') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
