"""What MLflow and W&B are told about a run beside their config (conf/logger/): its name, the
sweep it is a job of, and, when it is resumed, the tracker's run to continue, so a resumed run
and every job of a sweep land where a user looks for them (docs/outputs.md)."""

import logging
import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_lightning.errors import ConfigError
from mnist_lightning.files import kind_of
from mnist_lightning.run.distributed import is_rank_zero

log = logging.getLogger(__name__)

MLFLOW_LOGGER = "lightning.pytorch.loggers.MLFlowLogger"
WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"
EXTRAS = {MLFLOW_LOGGER: "mlflow", WANDB_LOGGER: "wandb"}  # pyproject's extras they need
# The project's conf/logger/: each tracker's config, as the group `logger=<extra>` names it.
LOGGER_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "logger"


def trackers_as_configured(saved: DictConfig) -> None:
    """Replace each MLflow or W&B logger of a resumed run's saved config by conf/logger/'s own,
    resolved later with the current paths and environment. Where a tracker writes and which of
    its runs a resumed run continues (its store or server, run id, settings) are the command's
    choice, never the run directory's: a crafted one could send the W&B API key to a server of
    its choosing, write outside the run, or log into another run."""
    for name, node in list((saved.get("logger") or {}).items()):
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        class_name = target.rpartition(".")[2] if isinstance(target, str) else None
        kind = next((k for t, k in EXTRAS.items() if t.rpartition(".")[2] == class_name), None)
        if kind is not None:
            saved.logger[name] = OmegaConf.load(LOGGER_CONFIGS / f"{kind}.yaml")[kind]


def check_sqlite_store(uri: object) -> None:
    """A local MLflow store must be a database file or not yet exist, in a directory: MLflow
    itself retries anything else for minutes (a FIFO, a directory) before it gives up."""
    if not isinstance(uri, str) or not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///").split("?")[0])
    if path.exists() and not path.is_file():
        raise ConfigError(
            f"logger.mlflow.tracking_uri={uri}: {path} is {kind_of(path.stat().st_mode)}, not "
            "an SQLite database file."
        )
    if not path.parent.is_dir():
        raise ConfigError(
            f"logger.mlflow.tracking_uri={uri}: {path.parent} is not a directory; MLflow "
            "keeps its store in a file there."
        )


def finish_wandb_run() -> None:
    """Close the W&B run this process has open, if any: its files are complete, and the next
    run (a sweep's next job in the same process) gets its own."""
    wandb = sys.modules.get("wandb")  # not imported: no run
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def run_names(run: Path) -> tuple[str, str | None]:
    """The run's name for an experiment tracker and the sweep it is a job of (None for a single
    run): `<run dir name>`, or `<sweep dir name>/<job>` for a job of a sweep (Hydra writes
    multirun.yaml into the sweep directory)."""
    if (run.parent / "multirun.yaml").is_file():
        return f"{run.parent.name}/{run.name}", run.parent.name
    return run.name, None


def run_identity(node: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    """What MLflow and W&B are told about the run beside their config: its name, its sweep, and
    the tracker's run to continue when the run is resumed. Values the config sets win."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if target not in (MLFLOW_LOGGER, WANDB_LOGGER):
        return {}
    extra: dict[str, Any] = {"_convert_": "all"}  # plain dicts: wandb ignores a DictConfig
    run = Path(cfg.paths.output_dir).resolve()
    name, sweep = run_names(run)
    if target == MLFLOW_LOGGER:
        check_sqlite_store(node.get("tracking_uri"))
        tags = {"run_dir": str(run), **({"sweep": sweep} if sweep else {})}
        extra["run_name"] = node.get("run_name") or name
        extra["tags"] = {**tags, **dict(node.get("tags") or {})}
        if cfg.get("resume") and not node.get("run_id") and is_rank_zero():
            extra["run_id"] = mlflow_run_of(node, str(run))
        return extra
    # W&B: the id is the run's name, so a resumed run (same directory) continues it. The run
    # directory holds only its own files and folders (run/trust.py): no links to the latest run.
    settings = {**dict(node.get("settings") or {}), "symlink": False}
    extra |= {"name": node.get("name") or name, "settings": settings}
    if not node.get("id") and not node.get("version"):
        extra["id"] = re.sub(r"[^\w.-]", "-", name.replace("/", "-"))[:64]
    if sweep and not node.get("group"):
        extra["group"] = sweep
    return extra


def mlflow_run_of(node: DictConfig, run_dir: str) -> str | None:
    """The id of the MLflow run a resumed run logged to (tagged with its directory), in the
    store `node` names; None (a new MLflow run) if the store has none."""
    try:
        from mlflow.tracking import MlflowClient
    except ModuleNotFoundError:  # building the logger says what to install
        return None

    uri = node.get("tracking_uri")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(node.get("experiment_name") or "lightning_logs")
    found = []
    if experiment is not None:
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string="" if "'" in run_dir else f"tags.run_dir = '{run_dir}'",
            order_by=["attributes.start_time DESC"],
        )
        found = [r for r in runs if r.data.tags.get("run_dir") == run_dir]
    if not found:
        log.warning("No MLflow run of %s in %s: the resumed run starts a new one.", run_dir, uri)
        return None
    return found[0].info.run_id
