"""`mnist-export ckpt_path=<file> format=onnx|torchscript`: the network (images in [0, 1], shape
(batch, 28, 28), to ten logits), kept only if it predicts as the checkpoint on `check_images`
test images of its data set. It never writes over an input, and replaces only an earlier export
of its format: each carries `mark` (ONNX: metadata; TorchScript: an extra file in its zip)."""

import importlib.util
import io
import json
import logging
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from mnist_lightning.cli import (
    carries,
    check_overwrite,
    command,
    held_out,
    open_checkpoint,
    writing,
)
from mnist_lightning.errors import ConfigError, UserError
from mnist_lightning.files import atomic_open, run_holder
from mnist_lightning.run.checkpoint import run_dir_of
from mnist_lightning.run.config import EXPORT, EXPORT_SUFFIXES, check

log = logging.getLogger(__name__)

MARK = "mnist_lightning_export"  # the metadata key (ONNX) and extra file's stem (TorchScript)
# What every export carries, to be recognised as one when it is exported over.
MARKS = {fmt: json.dumps({"tool": "mnist-export", "format": fmt}) for fmt in EXPORT_SUFFIXES}
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")  # the `export` extra


def is_earlier_export(path: Path, fmt: str) -> bool:
    """ONNX: the mark in its metadata. TorchScript: the mark as the zip's own extra file (not
    bytes inside another member: a user's archive that holds an export is not one)."""
    if fmt == "onnx":
        return carries(path, (b"\x08", MARKS[fmt].encode()))  # ONNX's first field: ir_version
    try:
        with zipfile.ZipFile(path) as archive:
            extra = [n for n in archive.namelist() if n.endswith(f"/extra/{MARK}.json")]
            return len(extra) == 1 and archive.read(extra[0]) == MARKS[fmt].encode()
    except (OSError, zipfile.BadZipFile):
        return False


def check_output(output: Path, given: bool, ckpt: Path, data_dir: Path, fmt: str) -> None:
    """Refuse, before any work: a run another writes, an input, a file that is not an export."""
    default = f" (by default the checkpoint's path with {EXPORT_SUFFIXES[fmt]})"
    key = f"output={output}{'' if given else default}"
    if holder := run_holder(run_dir_of(output)):  # one process at a time writes a run directory
        raise ConfigError(f"{key} lies in a run that {holder} is writing: wait until it ends.")
    inputs = {
        ckpt: f"is the checkpoint being exported (ckpt_path={ckpt})",
        data_dir: f"lies in the data directory {os.path.realpath(data_dir)}",
    }
    what = f"an earlier mnist-export {fmt} file"
    check_overwrite(output, key, inputs, "mnist-export", lambda p: is_earlier_export(p, fmt), what)


def export_onnx(net: torch.nn.Module, example: torch.Tensor) -> tuple[bytes, np.ndarray]:
    """`net` as ONNX with a free batch size, and that file's logits for `example`."""
    import onnxruntime

    for chatty in ("onnxscript", "onnx_ir"):  # their optimizer's passes, one INFO line each
        logging.getLogger(chatty).setLevel(logging.WARNING)
    program = torch.onnx.export(
        net,
        (example[:2],),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        verbose=False,
    )
    program.model.metadata_props[MARK] = MARKS["onnx"]
    data = program.model_proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return data, session.run(None, {"images": example.numpy()})[0]


def export_torchscript(net: torch.nn.Module, example: torch.Tensor) -> tuple[bytes, np.ndarray]:
    # torch deprecates TorchScript in four FutureWarnings; the user who asks for it hears it once.
    log.warning("TorchScript is deprecated by torch: format=onnx is the lasting choice.")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        traced = torch.jit.trace(net, example[:2])
        torch.jit.save(traced, buffer, _extra_files={f"{MARK}.json": MARKS["torchscript"]})
        buffer.seek(0)
        return buffer.getvalue(), torch.jit.load(buffer)(example).detach().numpy()


@command("export")
def main(cfg: DictConfig) -> None:
    check(cfg, EXPORT)
    missing = [m for m in ONNX_MODULES if importlib.util.find_spec(m) is None]
    if cfg.format == "onnx" and missing:
        raise ConfigError(
            f"format=onnx needs {', '.join(ONNX_MODULES)} ({', '.join(missing)} not installed): "
            'pip install -e ".[export]"'
        )
    ckpt = Path(cfg.ckpt_path)
    output = Path(cfg.output) if cfg.output else ckpt.with_suffix(EXPORT_SUFFIXES[cfg.format])
    check_output(output, bool(cfg.output), ckpt, Path(cfg.data_dir), cfg.format)

    model, _, dataset = open_checkpoint(ckpt, "cpu")
    net = model.net.eval()
    images, _ = held_out(cfg, dataset)  # checked on test images of what it learned
    example = images[: cfg.check_images].float() / 255
    with torch.no_grad():
        expected = net(example).numpy()

    exporter = export_onnx if cfg.format == "onnx" else export_torchscript
    data, got = exporter(net, example)  # in memory: kept only if it agrees
    disagree = int((got.argmax(1) != expected.argmax(1)).sum())
    largest = float(np.abs(got - expected).max())
    if disagree:
        raise UserError(
            f"The {cfg.format} export predicts differently from {ckpt} on {disagree} of "
            f"{len(example)} test images (largest logit difference {largest:.2e}); not kept."
        )
    with writing(f"output={output}"), atomic_open(output) as f:  # its missing folders made
        f.write(data)
    print(
        f"wrote {output}: same predictions as the checkpoint on {len(example)} test images "
        f"(largest logit difference {largest:.1e})"
    )


if __name__ == "__main__":
    main()
