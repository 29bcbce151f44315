"""mnist-train's SLURM launcher (conf/hydra/launcher/slurm.yaml). Hydra takes launchers only from
this namespace, and imports every module in it at start: the launcher is there only where the
`cluster` extra is installed."""

from importlib.util import find_spec

if find_spec("hydra_plugins.hydra_submitit_launcher"):
    from hydra_plugins.mnist_lightning._slurm import SlurmLauncher

    __all__ = ["SlurmLauncher"]
