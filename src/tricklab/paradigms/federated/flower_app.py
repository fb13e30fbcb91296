"""The Flower apps ``flwr run`` deploys (separate SuperLink / SuperNode processes): both read the experiment from
the run config (:func:`~tricklab.paradigms.federated.flower.config_from_run_config`); the ServerApp writes the
per-round rows as JSON to the run-config path ``result-path`` (atomically) when it is not empty.

Importing this module needs flwr (the ``federated`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from tricklab.paradigms.common import write_json
from tricklab.paradigms.federated.flower import _server_main, config_from_run_config, make_client_app

__all__ = ["server_app", "client_app"]

server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    config, seed = config_from_run_config(dict(context.run_config))
    rows: list[dict[str, Any]] = []
    _server_main(grid, context, config, seed, rows.append)
    out = str(context.run_config.get("result-path", ""))
    if out:
        write_json(Path(out), {"seed": seed, "rounds": rows})


client_app = ClientApp()


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    # the client is rebuilt from this run's config; make_client_app's legacy client handles the message
    config, seed = config_from_run_config(dict(context.run_config))
    return make_client_app(config, seed)(msg, context)
