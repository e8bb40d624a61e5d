"""Shared by the Flower tests: a legacy Flower app (FedAvg over a small model) whose clients
run our client mod, a mod that makes chosen nodes drop out at a chosen stage, and the runner
that starts a script inside a private network namespace (Flower's simulation starts Ray).

The clients' models are exact on the ring's grid: every value is a multiple of ``1/SCALE``
and every weight ``num_examples / MAX_WEIGHT`` a multiple of 1/4, with the clip chosen so that
the ring encoding's scale is exactly ``SCALE``; the encoding then rounds nothing and the
unmasked sum must equal the plain sum of the included clients to the last bit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from proofs_tests.netns import in_netns, netns_env

REPO = Path(__file__).resolve().parents[1]
SHAPES: tuple[tuple[int, ...], ...] = ((3, 4), (5,))
SCALE = 1 << 16
MAX_WEIGHT = 4.0
LEVEL_BITS = 22


def flower_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("flwr", "ray"))


def exact_clip(n: int) -> float:
    """The clip for which the ring encoding of ``n`` clients has scale exactly ``SCALE``."""
    from secagg import RingEncoding

    per = RingEncoding.choose(n, 1.0, None, LEVEL_BITS)
    per_client = ((1 << (per.bits - 1)) - 1) // n
    clip = (per_client - 1) / SCALE
    assert RingEncoding.choose(n, clip, None, LEVEL_BITS).scale == SCALE
    return clip


def client_model(member: int) -> list[npt.NDArray[np.float32]]:
    """Member ``member``'s trained model: multiples of ``4/SCALE``, different per member."""
    out = []
    at = 0
    for shape in SHAPES:
        size = int(np.prod(shape))
        k = (np.arange(at, at + size) * 3 + member * 7) % 50 - 25
        out.append((4 * k / SCALE).astype(np.float32).reshape(shape))
        at += size
    return out


def client_examples(member: int) -> int:
    """Member ``member``'s example count: weights 1/4 .. 1 (5 is capped at MAX_WEIGHT)."""
    return 1 + member % 5


def expected_sum(included: list[int]) -> tuple[npt.NDArray[np.float64], float]:
    """``(sum w_u x_u, sum w_u)`` over ``included``, as the workflow must unmask it."""
    weighted = np.zeros(sum(int(np.prod(s)) for s in SHAPES), dtype=np.float64)
    total = 0.0
    for u in included:
        w = min(float(client_examples(u)), MAX_WEIGHT) / MAX_WEIGHT
        x = np.concatenate([a.astype(np.float64).ravel() for a in client_model(u)])
        weighted += w * x
        total += w
    return weighted, total


def run_in_netns(module: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Run ``python -m module args`` in a private network namespace (loopback only, Ray's
    usage stats off); return the JSON object it printed last on a line starting 'RESULT '."""
    env = netns_env(
        dict(os.environ),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        SECAGG_FLOWER_NETNS="1",
    )
    run = subprocess.run(
        in_netns([sys.executable, "-m", module, *args]),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = run.stdout + run.stderr
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert run.returncode == 0 and lines, out[-8000:]
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["_log"] = out
    return result


class DropAt:
    """A client mod, outermost: node ``partition-id`` in ``plan`` fails (a dropout: Flower
    answers the server with an error) on the message of the stage ``plan`` names for it. Each
    call is logged as ``partition stage pid`` to ``trace/<pid>`` (which worker ran it)."""

    def __init__(self, plan: dict[int, str], trace: Path, record: str = "secagg") -> None:
        self.plan = dict(plan)
        self.trace = trace
        self.record = record

    def __call__(self, msg: Any, ctxt: Any, call_next: Any) -> Any:
        pid = int(ctxt.node_config["partition-id"])
        stage = ""
        if msg.has_content() and self.record in msg.content.config_records:
            stage = str(msg.content.config_records[self.record].get("stage", ""))
        self.trace.mkdir(parents=True, exist_ok=True)
        with open(self.trace / str(os.getpid()), "a") as f:
            f.write(f"{pid} {stage} {os.getpid()}\n")
        if stage and self.plan.get(pid) == stage:
            raise RuntimeError(f"partition {pid} drops out at {stage}")
        return call_next(msg, ctxt)


def build_apps(
    bundle: Path,
    n: int,
    plan: dict[int, str],
    trace: Path,
    workflow: Any,
    *,
    rounds: int = 1,
) -> tuple[Any, Any, dict[str, Any]]:
    """``(server_app, client_app, out)``: FedAvg with ``workflow`` as its fit workflow, every
    node running ``DropAt(plan)`` then our client mod; ``out["params"]`` gets the global model
    after the last round."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import Context
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    from client.flower import SecAggMod

    class Member(NumPyClient):
        def __init__(self, member: int) -> None:
            self.member = member

        def fit(self, parameters: Any, config: Any) -> Any:
            return client_model(self.member), client_examples(self.member), {}

    def client_fn(context: Context) -> Any:
        return Member(int(context.node_config["partition-id"]) + 1).to_client()

    client_app = ClientApp(
        client_fn=client_fn, mods=[DropAt(plan, trace), SecAggMod(consortium=bundle)]
    )
    out: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Any, context: Any) -> None:
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_available_clients=n,
            initial_parameters=ndarrays_to_parameters([np.zeros(s, np.float32) for s in SHAPES]),
        )
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy
        )
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
        params = compat.arrayrecord_to_parameters(
            legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
        )
        out["params"] = parameters_to_ndarrays(params)

    return server_app, client_app, out


def simulate(server_app: Any, client_app: Any, n: int, workers: int = 2) -> None:
    """Flower's simulation engine on the Ray backend, ``workers`` actors of one CPU each."""
    from aggregator.flower import run_on_ray

    run_on_ray(server_app, client_app, n, workers=workers)


def worker_trace(trace: Path) -> dict[int, set[int]]:
    """partition -> the worker pids that ran its messages."""
    seen: dict[int, set[int]] = {}
    for f in trace.iterdir():
        for line in f.read_text().splitlines():
            part, _, pid = line.split(" ")
            seen.setdefault(int(part), set()).add(int(pid))
    return seen
