"""mnist-train's SLURM launcher (conf/hydra/launcher/slurm.yaml) and Optuna sweeper
(conf/hparams_search/optuna.yaml). Hydra takes plugins only from this namespace, and imports
every module in it at start: each is there only where its extra is installed."""

from importlib.util import find_spec

__all__ = []
if find_spec("hydra_plugins.hydra_submitit_launcher"):
    from hydra_plugins.mnist_lightning._slurm import SlurmLauncher

    __all__ += ["SlurmLauncher"]
if find_spec("hydra_plugins.hydra_optuna_sweeper"):
    from hydra_plugins.mnist_lightning._optuna import OptunaSweeper

    __all__ += ["OptunaSweeper"]
