"""The server: Flower's FedAvg over the LoRA adapter, its fit rounds run by our secure
aggregation. From Flower's SecAgg+ example this changes one line: the fit workflow."""

from __future__ import annotations

from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow

from aggregator.flower import SecAggWorkflow
from secagg_flower_lora.task import adapter_of, build_model

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    net, _ = build_model(dict(cfg))
    nodes = int(context.run_config.get("min-clients", 2))
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=nodes,
        min_available_clients=nodes,
        initial_parameters=ndarrays_to_parameters([adapter_of(net)]),
    )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=int(cfg["num-server-rounds"])),
        strategy=strategy,
    )
    fit_workflow = SecAggWorkflow(  # was: SecAggPlusWorkflow(num_shares=..., ...)
        str(cfg["secagg-consortium"]),
        expected_dropout=float(cfg["expected-dropout"]),
        timeout=float(cfg["stage-timeout"]),
    )
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    for r in fit_workflow.rounds:
        print(
            f"secure aggregation round {r.round}: "
            f"{'completed' if r.completed else 'aborted: ' + r.reason}, "
            f"{len(r.included)} of {r.sampled} clients in the sum, {r.seconds:.1f} s",
            flush=True,
        )
