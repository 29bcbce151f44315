"""Real handwriting for mnist-predict: a realistic test set that no model trains on, and the
accuracy of the default model and of `experiment=handwriting` on it, per kind of distortion
(docs/handwriting.md, with pictures of hard cases in docs/images/handwriting_*.png).

    python -m benchmarks handwriting                       # make the set, train both, measure
    python -m benchmarks handwriting --page                # ... and write docs/handwriting.md
    python -m benchmarks handwriting --only-set --seed 1   # a development set only
    python -m benchmarks handwriting --default-ckpt A --preset-ckpt B   # measure given models

The set is made by a deterministic script (this one) from a seed: digits of MNIST's *test*
split re-rendered as pen strokes (the 28x28 digit upsampled smoothly, thinned to its ridge and
drawn again with a round pen of a chosen width), and hand-drawn vector glyphs (polylines, several
styles per digit, jittered), each put on paper and "photographed" or "scanned": paper tone,
lighting, rotation, position, margins, image size (64-1000 px), blur, noise and JPEG. Each kind
stresses one of these, within a mild mix of the others; `repo` is the digit pictures already in
the repository. Every picture goes through `read_image`, the checkpoint's model and argmax, as
in mnist-predict. Seed 1 is the development set the preprocessing was tuned on; the recipes
for the preset were compared on seeds 1, 3 and 4 together; the page reports seed 2026, which
was generated only to be measured.
"""

import argparse
import io
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.common import ROOT, data_dir

DIGITS_IN_REPO = ROOT / "docs" / "images" / "digits"
DEFAULT_OUT = ROOT / "outputs" / "handwriting"
REPORT_SEED, DEV_SEEDS = 2026, (1, 3, 4)


@dataclass(frozen=True)
class Look:
    """How one kind of picture is made: the ranges its random draws come from."""

    source: str = "mnist"  # mnist: a test digit re-rendered | vector: a drawn glyph
    pen: tuple[float, float] = (0.08, 0.14)  # stroke width, as a fraction of the digit's height
    side: tuple[int, int] = (64, 400)  # the picture's side in pixels (before the aspect)
    height: tuple[float, float] = (0.45, 0.75)  # the digit's height, as a fraction of the side
    rotation: float = 6.0  # degrees, each way
    offset: float = 0.08  # off-centre by up to this fraction of the side, each way
    paper: str = "white"  # white | tinted (grey, yellowish, cream)
    light: float = 0.0  # strength of the lighting gradient and vignette
    blur: tuple[float, float] = (0.0, 0.6)  # Gaussian blur, in pixels of the digit's 28-px scale
    noise: tuple[float, float] = (0.0, 0.01)  # sensor noise sigma, in [0, 1] grey levels
    jpeg: tuple[int, int] | None = None  # JPEG quality range; None: PNG
    color: bool = False  # a colour photo (RGB) rather than a grey scan


BASE = Look()
KINDS: dict[str, tuple[Look, str]] = {
    "scan": (BASE, "ballpoint on white paper, scanned at 64-400 px"),
    "thin_pen": (replace(BASE, pen=(0.035, 0.065)), "a fine pen: strokes 3.5-6.5 % of the height"),
    "marker": (replace(BASE, pen=(0.12, 0.17)), "a felt marker: strokes 12-17 % of the height"),
    "paper": (
        replace(BASE, paper="tinted", color=True, noise=(0.0, 0.02)),
        "grey, yellowish and cream paper, colour photo, coloured ink",
    ),
    "lighting": (
        replace(BASE, paper="tinted", light=1.0, color=True, noise=(0.005, 0.02)),
        "uneven light: a gradient across the page, vignetting, a shadow",
    ),
    "photo": (
        replace(
            BASE,
            side=(400, 1000),
            paper="tinted",
            light=0.4,
            blur=(0.3, 1.0),
            noise=(0.01, 0.05),
            jpeg=(15, 50),
            color=True,
            rotation=10.0,
        ),
        "a phone photo at 400-1000 px: blur, sensor noise, JPEG quality 15-50, rotated up to 10°",
    ),
    "margins": (
        replace(BASE, height=(0.12, 0.97), offset=0.3, rotation=8.0),
        "tight (digit up to 97 % of the side) and wide (down to 12 %) margins, off-centre",
    ),
    "vector": (
        replace(BASE, source="vector", pen=(0.05, 0.2), paper="tinted", light=0.4),
        "hand-drawn vector glyphs, 2-3 styles per digit, jittered, pens of 5-20 %",
    ),
}
REPO_KIND = "repo"  # the pictures already in docs/images/digits/

# Vector glyphs: per digit, styles; a style is strokes; a stroke is points in a unit box
# (x right, y down), or ("arc", cx, cy, rx, ry, start°, end°) sampled as a polyline.
Stroke = list
GLYPHS: dict[int, list[list[Stroke]]] = {
    0: [[["arc", 0.5, 0.5, 0.32, 0.5, -90, 275]], [["arc", 0.5, 0.5, 0.22, 0.5, -100, 265]]],
    1: [
        [[(0.5, 0.0), (0.5, 1.0)]],
        [[(0.3, 0.22), (0.55, 0.0), (0.55, 1.0)]],
        [[(0.3, 0.2), (0.55, 0.0), (0.55, 1.0)], [(0.3, 1.0), (0.8, 1.0)]],
    ],
    2: [
        [["arc", 0.5, 0.3, 0.3, 0.3, 190, 395], [(0.76, 0.42), (0.15, 1.0), (0.88, 1.0)]],
        [
            ["arc", 0.5, 0.28, 0.32, 0.28, 180, 330],
            [(0.78, 0.17), (0.5, 0.55), (0.15, 1.0)],
            [(0.15, 1.0), (0.9, 0.97)],
        ],
    ],
    3: [
        [["arc", 0.48, 0.26, 0.3, 0.26, 200, 450], ["arc", 0.48, 0.74, 0.33, 0.26, 270, 520]],
        [[(0.15, 0.0), (0.85, 0.0), (0.45, 0.42)], ["arc", 0.47, 0.7, 0.35, 0.3, 270, 510]],
    ],
    4: [
        [[(0.65, 1.0), (0.65, 0.0), (0.1, 0.68), (0.92, 0.68)]],
        [[(0.3, 0.0), (0.15, 0.6), (0.9, 0.6)], [(0.7, 0.2), (0.7, 1.0)]],
    ],
    5: [
        [[(0.82, 0.0), (0.25, 0.0), (0.2, 0.42)], ["arc", 0.48, 0.68, 0.34, 0.32, 230, 500]],
        [
            [(0.25, 0.0), (0.2, 0.45)],
            ["arc", 0.48, 0.7, 0.33, 0.3, 220, 500],
            [(0.25, 0.02), (0.85, 0.0)],
        ],
    ],
    6: [
        [[(0.72, 0.0), (0.35, 0.35), (0.18, 0.7)], ["arc", 0.48, 0.72, 0.3, 0.28, 180, 540]],
        [["arc", 0.9, 0.7, 0.72, 0.72, 190, 265], ["arc", 0.5, 0.72, 0.3, 0.28, 180, 540]],
    ],
    7: [
        [[(0.1, 0.0), (0.9, 0.0), (0.4, 1.0)]],
        [[(0.1, 0.05), (0.9, 0.0), (0.45, 1.0)], [(0.35, 0.5), (0.85, 0.5)]],
        [[(0.1, 0.2), (0.15, 0.0), (0.9, 0.0), (0.55, 0.5), (0.5, 1.0)]],
    ],
    8: [
        [["arc", 0.5, 0.25, 0.25, 0.25, 0, 360], ["arc", 0.5, 0.74, 0.32, 0.26, 0, 360]],
        [
            [
                (0.75, 0.1),
                (0.5, 0.0),
                (0.25, 0.1),
                (0.25, 0.35),
                (0.75, 0.65),
                (0.75, 0.9),
                (0.5, 1.0),
                (0.25, 0.9),
                (0.25, 0.65),
                (0.75, 0.35),
                (0.75, 0.1),
            ]
        ],
    ],
    9: [
        [["arc", 0.48, 0.28, 0.3, 0.28, 0, 360], [(0.78, 0.28), (0.72, 1.0)]],
        [["arc", 0.5, 0.28, 0.3, 0.28, 0, 360], ["arc", 0.2, 0.28, 0.6, 0.72, 0, 90]],
    ],
}


def _glyph_points(stroke: Stroke) -> list[tuple[float, float]]:
    if stroke and stroke[0] == "arc":
        _, cx, cy, rx, ry, start, end = stroke
        angles = np.radians(np.linspace(start, end, 48))
        return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]
    return list(stroke)


def vector_ink(digit: int, rng: np.random.Generator, pen: float, size: int = 224) -> np.ndarray:
    """A drawn glyph of `digit` as ink coverage (size, size) in [0, 1]: a random style, its
    points jittered, slanted and squeezed, drawn with a round pen `pen` x the height wide."""
    style = GLYPHS[digit][rng.integers(len(GLYPHS[digit]))]
    slant, aspect = rng.uniform(-0.25, 0.25), rng.uniform(0.55, 0.8)
    box = 0.8 * size
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    width = max(1, round(pen * box))
    for stroke in style:
        points = np.array(_glyph_points(stroke)) + rng.normal(0, 0.025, (1, 2))
        points += rng.normal(0, 0.012, points.shape)  # a hand is not a ruler
        x = (points[:, 0] - 0.5) * aspect + slant * (0.5 - points[:, 1])
        xy = [
            (size / 2 + box * px, size / 2 + box * (py - 0.5))
            for px, py in zip(x, points[:, 1], strict=True)
        ]
        draw.line(xy, fill=255, width=width, joint="curve")
        for px, py in (xy[0], xy[-1]):  # round pen tips
            draw.ellipse([px - width / 2, py - width / 2, px + width / 2, py + width / 2], 255)
    return np.asarray(image, np.float32) / 255


def mnist_ink(digit: np.ndarray, pen: float, size: int = 224) -> np.ndarray:
    """An MNIST digit (28, 28) uint8 drawn again with a round pen `pen` x its height wide:
    upsampled smoothly, thinned to the ridge of its strokes, and the ridge drawn thicker."""
    scale = size // 28
    smooth = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    field = np.asarray(smooth.filter(ImageFilter.GaussianBlur(scale * 0.6)), np.float32) / 255
    # The ridge: where the field is close to its own maximum across the stroke.
    local = np.asarray(
        Image.fromarray((field * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(scale | 1)),
        np.float32,
    )
    ridge = (field * 255 >= 0.9 * local) & (field > 0.3)
    rows, _ = np.nonzero(digit > 40)
    height = (rows.max() - rows.min() + 1) * scale if len(rows) else size
    radius = max(1, round(pen * height / 2))
    ink = Image.fromarray((ridge * 255).astype(np.uint8)).filter(
        ImageFilter.MaxFilter(2 * radius + 1)
    )
    disk = ink.filter(ImageFilter.GaussianBlur(radius / 2.5))  # a round pen, not a square one
    return (np.asarray(disk, np.float32) / 255 > 0.5).astype(np.float32)


PAPERS = {  # RGB tones of paper under neutral light
    "white": [(250, 250, 248), (245, 245, 245), (238, 240, 242)],
    "tinted": [
        (205, 205, 205),
        (180, 182, 180),
        (238, 228, 190),
        (245, 235, 205),
        (230, 220, 200),
        (215, 210, 195),
        (250, 250, 248),
    ],
}
INKS = [(20, 20, 25), (30, 40, 110), (15, 30, 70), (60, 60, 60), (90, 20, 20)]  # black, blue...


def photograph(ink: np.ndarray, look: Look, rng: np.random.Generator) -> tuple[bytes, str]:
    """Put `ink` (a square coverage map, digit centred) on paper and take the picture: the
    file's bytes and its suffix (JPEG straight from the "camera", or PNG)."""
    side = int(rng.integers(look.side[0], look.side[1] + 1))
    size = (side, int(side * rng.uniform(0.8, 1.25)))  # (width, height): not always square
    rows, cols = np.nonzero(ink > 0.5)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    glyph = Image.fromarray((ink[top:bottom, left:right] * 255).astype(np.uint8))
    glyph = glyph.rotate(
        rng.uniform(-look.rotation, look.rotation), Image.Resampling.BICUBIC, expand=True
    )
    target = rng.uniform(*look.height) * min(size)
    scale = target / glyph.height
    glyph = glyph.resize(
        (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
        Image.Resampling.LANCZOS,
    )
    if glyph.width > size[0] * 0.97:  # a wide digit in a narrow picture: keep it inside
        glyph = glyph.resize(
            (int(size[0] * 0.97), max(1, int(glyph.height * size[0] * 0.97 / glyph.width)))
        )
    layer = Image.new("L", size, 0)
    room_x, room_y = size[0] - glyph.width, size[1] - glyph.height
    cx = room_x / 2 + rng.uniform(-look.offset, look.offset) * size[0]
    cy = room_y / 2 + rng.uniform(-look.offset, look.offset) * size[1]
    layer.paste(glyph, (int(np.clip(cx, 0, room_x)), int(np.clip(cy, 0, room_y))))
    blur = rng.uniform(*look.blur) * glyph.height / 20  # in the digit's own 20-px scale
    if blur > 0.2:
        layer = layer.filter(ImageFilter.GaussianBlur(blur))
    cover = np.asarray(layer, np.float32)[..., None] / 255
    paper = np.array(PAPERS[look.paper][rng.integers(len(PAPERS[look.paper]))], np.float32)
    ink_rgb = np.array(INKS[rng.integers(len(INKS)) if look.color else 0], np.float32)
    ink_rgb = ink_rgb + (paper - ink_rgb) * rng.uniform(0.0, 0.25)  # faded, pencil-ish
    picture = paper * (1 - cover) + ink_rgb * cover
    picture *= _lighting(size, look.light, rng)[..., None]
    picture += rng.normal(0, rng.uniform(*look.noise) * 255, picture.shape)
    image = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8), "RGB")
    image = image if look.color else image.convert("L")
    buffer = io.BytesIO()
    if look.jpeg is None:
        image.save(buffer, "PNG")
        return buffer.getvalue(), ".png"
    image.save(buffer, "JPEG", quality=int(rng.integers(look.jpeg[0], look.jpeg[1] + 1)))
    return buffer.getvalue(), ".jpg"


def _lighting(size: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """Light falling on the page (height, width) about 1: a gradient from one side, vignetting,
    and sometimes the soft shadow of a hand or a phone across a corner."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = x / w - 0.5, y / h - 0.5
    if strength == 0:
        return np.ones((h, w), np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    light = 1 + strength * rng.uniform(0.15, 0.45) * (x * math.cos(angle) + y * math.sin(angle))
    light -= strength * rng.uniform(0.0, 0.5) * (x**2 + y**2)
    if rng.random() < 0.5 * strength:
        a = rng.uniform(0, 2 * math.pi)
        edge = x * math.cos(a) + y * math.sin(a) - rng.uniform(0.2, 0.45)
        light *= 1 - strength * rng.uniform(0.15, 0.35) / (1 + np.exp(-edge / 0.05))
    return np.clip(light, 0.25, 1.2)


def make_set(out: Path, seed: int, per_kind: int) -> list[dict]:
    """Write the set to `out/<kind>/<nnnn>_<digit>.<ext>`; return its manifest (also in
    `out/labels.json`). The same seed makes the same pictures."""
    from mnist_lightning.data.datamodule import load_pair
    from mnist_lightning.data.datasets import ensure_mnist

    images, labels = load_pair(ensure_mnist(data_dir(), "auto"), "t10k")
    images, labels = images.numpy(), labels.numpy()
    manifest = []
    for k, (kind, (look, _)) in enumerate(KINDS.items()):
        rng = np.random.default_rng([seed, k])
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        picks = rng.choice(len(images), per_kind, replace=False)
        for n, index in enumerate(picks):
            pen = rng.uniform(*look.pen)
            if look.source == "mnist":
                digit = int(labels[index])
                ink, source = mnist_ink(images[index], pen), f"t10k[{index}]"
            else:
                digit = n % 10
                ink, source = vector_ink(digit, rng, pen), "vector"
            data, suffix = photograph(ink, look, rng)
            path = folder / f"{n:04d}_{digit}{suffix}"
            path.write_bytes(data)
            manifest.append(
                {"file": str(path.relative_to(out)), "kind": kind, "digit": digit, "source": source}
            )
    for path in sorted(DIGITS_IN_REPO.glob("*.png")):
        manifest.append(
            {
                "file": str(path),
                "kind": REPO_KIND,
                "digit": int(path.stem[-1]),
                "source": str(path.relative_to(ROOT)),
            }
        )
    (out / "labels.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def read_set(out: Path, manifest: list[dict]) -> tuple[list, list[str]]:
    """Each picture prepared by `read_image` as mnist-predict prepares it (None where it is
    refused), and the refusals' one-line messages."""
    from mnist_lightning.data.images import ImageError, read_image

    prepared, refused = [], []
    for entry in manifest:
        path = Path(entry["file"])
        try:
            prepared.append(read_image(path if path.is_absolute() else out / path))
        except ImageError as e:
            prepared.append(None)
            refused.append(str(e))
    return prepared, refused


def predictions(ckpt: Path, prepared: list) -> list[int | None]:
    """The digit a checkpoint reads in each prepared picture (None: refused), exactly as
    mnist-predict computes it: the model's softmax, its top class."""
    import torch

    from mnist_lightning.run.checkpoint import load_classifier

    model, _ = load_classifier(ckpt, torch.device("cpu"))
    kept = [image for image in prepared if image is not None]
    if not kept:
        return [None] * len(prepared)
    with torch.no_grad():
        digits = iter(model(torch.stack(kept)).softmax(1).argmax(1).tolist())
    return [None if image is None else next(digits) for image in prepared]


def per_kind(manifest: list[dict], predicted: list[int | None]) -> dict[str, tuple[int, int]]:
    """kind -> (right, total), and "all" for the whole set."""
    table: dict[str, list[int]] = {}
    for entry, digit in zip(manifest, predicted, strict=True):
        for key in (entry["kind"], "all"):
            row = table.setdefault(key, [0, 0])
            row[0] += digit == entry["digit"]
            row[1] += 1
    return {key: (right, total) for key, (right, total) in table.items()}


DEFAULT_RUN = ["data.source=auto", "trainer.max_epochs=6", "callbacks.progress_bar.refresh_rate=0"]
PRESET_RUN = [
    "data.source=auto",
    "experiment=handwriting",
    "callbacks.progress_bar.refresh_rate=0",
]
DOCS = ROOT / "docs"
PAGE = DOCS / "handwriting.md"
CANDIDATES = DOCS / "handwriting_candidates.json"
TARGETS = {"preset": 0.97, "default": 0.93}  # issue 16: what each must read of the whole set
# Seed 5, made after the preset was chosen and measured once, for the page's history (hand-kept).
CONFIRMED = (
    "the two checkpoints reported here read 98.2 % (preset) and 96.4 % (default), measured once "
    "on 2026-11-30 by `python -m benchmarks handwriting --seed 5 --default-ckpt <the default's> "
    "--preset-ckpt <the preset's>`"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=REPORT_SEED, help="which set to make")
    parser.add_argument("--per-kind", type=int, default=150, help="pictures of each kind")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="sets and runs go here")
    parser.add_argument("--only-set", action="store_true", help="make the set, measure nothing")
    parser.add_argument("--default-ckpt", type=Path, help="measure this instead of training")
    parser.add_argument("--preset-ckpt", type=Path, help="measure this instead of training")
    parser.add_argument("--page", action="store_true", help="write docs/handwriting.md")
    parser.add_argument(
        "--candidate-ckpts",
        type=Path,
        nargs="+",
        help="measure only these on the development sets, for the page's 'how the preset was "
        f"chosen' ({CANDIDATES.relative_to(ROOT)})",
    )


def checkpoint(given: Path | None, overrides: list[str], out: Path) -> tuple[Path, str]:
    """A checkpoint to measure, and the command that made it: `given`, or a new run's best."""
    from benchmarks.common import mnist_train

    if given is not None:  # the command that trained it, from its run's .hydra/overrides.yaml
        overrides_file = given.resolve().parents[1] / ".hydra" / "overrides.yaml"
        if not overrides_file.is_file():
            return given, f"(given: {given})"
        made = [line.removeprefix("- ") for line in overrides_file.read_text().splitlines()]
        return given, " ".join(["mnist-train", *made])
    run = mnist_train(overrides, out)
    print(f"trained {run.dir}", flush=True)
    return Path(run.metrics["best_checkpoint"]), " ".join(run.command)


def the_set(out: Path, seed: int, per_kind_count: int) -> tuple[Path, list[dict]]:
    """The set of `seed` under `out` and its manifest, made first if it is not there yet."""
    folder = out / f"set-{seed}"
    labels = folder / "labels.json"
    if labels.is_file():
        return folder, json.loads(labels.read_text())
    return folder, make_set(folder, seed, per_kind_count)


def measure_candidates(ckpts: list[Path], out: Path, per_kind_count: int) -> None:
    """Each checkpoint's accuracy per kind on the development sets together, kept in
    CANDIDATES: the preset is the recipe that reads the most of them (the reported set chooses
    nothing). Three sets, not one: a recipe's gain of a few pictures in 1204 is noise."""
    import datetime

    from benchmarks.common import machine, machine_line

    sets = []
    for seed in DEV_SEEDS:
        folder, manifest = the_set(out, seed, per_kind_count)
        sets.append((manifest, read_set(folder, manifest)[0]))
    runs = []
    for given in ckpts:
        ckpt, command = checkpoint(given, [], out)
        counts: dict[str, list[int]] = {}
        for manifest, prepared in sets:
            for kind, (right, total) in per_kind(manifest, predictions(ckpt, prepared)).items():
                pooled = counts.setdefault(kind, [0, 0])
                pooled[0] += right
                pooled[1] += total
        runs.append(
            {
                "command": command,
                "checkpoint": str(ckpt),
                "settings": settings(ckpt),
                "accuracy": {k: r / n for k, (r, n) in counts.items()},
            }
        )
        print(command, f"{100 * runs[-1]['accuracy']['all']:.1f} %", flush=True)
    CANDIDATES.write_text(
        json.dumps(
            {
                "measured": datetime.date.today().isoformat(),
                "machine": machine_line(machine()),
                "seeds": list(DEV_SEEDS),
                "pictures": sum(len(manifest) for manifest, _ in sets),
                "runs": runs,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {CANDIDATES}")


# What a recipe for the preset may change: shown where two recipes tried differ.
SETTINGS = (
    "trainer.max_epochs",
    "data.augment",
    "data.elastic_sigma",
    "data.elastic_alpha",
    "data.max_rotation",
    "data.max_scale",
    "data.max_stroke",
    "model.hidden_dims",
    "model.dropout",
    "model.input_dropout",
    "seed",
)


def run_config(ckpt: Path) -> dict | None:
    """The config the checkpoint's run saved (read as mnist-train reads a run's: bounded, no
    YAML aliases), or None where it saved none (a checkpoint from elsewhere)."""
    from omegaconf import OmegaConf

    from mnist_lightning.run.trust import saved_config

    run = ckpt.resolve().parents[1]
    if not (run / ".hydra" / "config.yaml").is_file():
        return None
    return OmegaConf.to_container(saved_config(run))


def settings(ckpt: Path) -> dict:
    """SETTINGS as the checkpoint's run saved them: its command line says `experiment=...`,
    whose file may have changed since."""
    cfg = run_config(ckpt)
    return {} if cfg is None else {key: _get(cfg, key) for key in SETTINGS}


def _get(cfg: dict, key: str) -> object:
    """`cfg`'s value at the dotted `key`, None where it has none (an older run's config)."""
    for part in key.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def seed_gap(runs: list[dict]) -> float | None:
    """The largest gap, in points, between two trainings that differ only in their seed."""
    by_recipe: dict[str, list[float]] = {}
    for run in runs:
        if not run["settings"]:  # no saved config: its recipe is unknown
            continue
        recipe = {k: v for k, v in run["settings"].items() if k != "seed" and v is not None}
        by_recipe.setdefault(json.dumps(recipe, sort_keys=True), []).append(run["accuracy"]["all"])
    gaps = [100 * (max(a) - min(a)) for a in by_recipe.values() if len(a) > 1]
    return max(gaps) if gaps else None


def candidates_section() -> str:
    """The page's table of the recipes tried on the development sets, best first."""
    if not CANDIDATES.is_file():
        return ""
    found = json.loads(CANDIDATES.read_text())
    seeds = ", ".join(map(str, found["seeds"]))
    kinds = [kind for kind in found["runs"][0]["accuracy"] if kind not in ("all", REPO_KIND)]
    varied = [
        key for key in SETTINGS if len({str(run["settings"].get(key)) for run in found["runs"]}) > 1
    ]
    gap = seed_gap(found["runs"])
    rows = [
        "| "
        + " ".join(
            f"{k}={run['settings'][k]}" for k in varied if run["settings"].get(k) is not None
        )
        + " | "
        f"{100 * run['accuracy']['all']:.1f} % | "
        + " | ".join(f"{100 * run['accuracy'][kind]:.1f}" for kind in kinds)
        + " |"
        for run in sorted(found["runs"], key=lambda run: -run["accuracy"]["all"])
    ]
    return "\n".join(
        [
            "## How the preset was chosen",
            "",
            "Each row is one training, described by the settings in which the recipes differ "
            "(from each run's saved config; one an older run's lacks is not shown), reading the "
            "development sets together "
            f"(seeds {seeds}: {found['pictures']} pictures; "
            f"{found['machine']}, {found['measured']}); the recipe that reads the most of them "
            "became `experiment=handwriting`. The reported set chose nothing. One picture is "
            f"{100 / found['pictures']:.2f} % of them"
            + (f"; two seeds of one recipe differ by up to {gap:.1f} points" if gap else "")
            + ". Per kind, in %:",
            "",
            f"| recipe | development sets | {' | '.join(kinds)} |",
            "| --- | ---: | " + " | ".join("---:" for _ in kinds) + " |",
            *rows,
            "",
            "Measured by `python -m benchmarks handwriting --candidate-ckpts <their best "
            "checkpoints>`; kept, with each run's command, in "
            "`docs/handwriting_candidates.json`.",
            "",
        ]
    )


def main(args: argparse.Namespace) -> None:
    if args.candidate_ckpts:
        measure_candidates(args.candidate_ckpts, args.out, args.per_kind)
        return
    folder, manifest = the_set(args.out, args.seed, args.per_kind)
    print(f"{len(manifest)} pictures in {folder}", flush=True)
    if args.only_set:
        return
    prepared, refused = read_set(folder, manifest)
    for line in refused:
        print(f"skipped: {line}")
    models = {
        "default": checkpoint(args.default_ckpt, DEFAULT_RUN, args.out),
        "preset": checkpoint(args.preset_ckpt, PRESET_RUN, args.out),
    }
    results = {name: predictions(ckpt, prepared) for name, (ckpt, _) in models.items()}
    tables = {name: per_kind(manifest, predicted) for name, predicted in results.items()}
    table = results_table(tables)
    print(table)
    if args.page:
        write_page(args, folder, manifest, prepared, results, models, table)


def results_table(tables: dict[str, dict[str, tuple[int, int]]]) -> str:
    """Markdown: one row per kind (and the whole set), the default's and the preset's accuracy."""
    described = {kind: text for kind, (_, text) in KINDS.items()}
    described[REPO_KIND] = "the digit pictures already in the repository (docs/images/digits/)"
    described["all"] = "**the whole set**"
    lines = [
        "| kind | what it is | pictures | 6-epoch default | `experiment=handwriting` |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for kind, text in described.items():
        right_d, total = tables["default"][kind]
        right_p, _ = tables["preset"][kind]
        lines.append(
            f"| {kind} | {text} | {total} | {100 * right_d / total:.1f} % | "
            f"{100 * right_p / total:.1f} % |"
        )
    return "\n".join(lines)


def write_page(args, folder, manifest, prepared, results, models, table) -> None:
    """docs/handwriting.md with the table, and its two pictures in docs/images/."""
    import datetime

    from benchmarks.common import machine, machine_line, verdict

    kinds_png, hard_png = (
        DOCS / "images/handwriting_kinds.png",
        DOCS / "images/handwriting_hard.png",
    )
    examples = [next(i for i, e in enumerate(manifest) if e["kind"] == k) for k in KINDS]
    examples += [i + 1 for i in examples]
    pictures_figure(
        folder,
        manifest,
        prepared,
        examples,
        [manifest[i]["kind"] for i in examples],
        "One picture of each kind (taken photo, then as mnist-predict prepares it)",
        kinds_png,
    )
    wrong = [
        i
        for i, e in enumerate(manifest)
        if results["preset"][i] != e["digit"] or results["default"][i] != e["digit"]
    ]
    hard = sorted(wrong, key=lambda i: results["preset"][i] == manifest[i]["digit"])[:16]
    captions = [
        f"{manifest[i]['kind']}: {manifest[i]['digit']}\nD {results['default'][i]} P "
        f"{results['preset'][i]}"
        for i in hard
    ]
    pictures_figure(
        folder,
        manifest,
        prepared,
        hard,
        captions,
        "Hard cases: true digit, then what the default (D) and the preset (P) read",
        hard_png,
    )
    whole = {
        name: sum(p == e["digit"] for p, e in zip(results[name], manifest, strict=True))
        / len(manifest)
        for name in results
    }
    command = args.command_line
    text = PAGE_TEMPLATE.format(
        date=datetime.date.today().isoformat(),
        machine=machine_line(machine()),
        command=command,
        default_cmd=models["default"][1],
        preset_cmd=models["preset"][1],
        table=table,
        n=len(manifest),
        seed=args.seed,
        default_acc=100 * whole["default"],
        preset_acc=100 * whole["preset"],
        default_verdict=verdict(100 * whole["default"], 100 * TARGETS["default"], False, " points"),
        preset_verdict=verdict(100 * whole["preset"], 100 * TARGETS["preset"], False, " points"),
        kinds_png=kinds_png.name,
        hard_png=hard_png.name,
        hard=len(wrong),
        refused=sum(image is None for image in prepared),
        missed_note=missed_note(manifest, results["preset"], whole["preset"]),
        candidates=candidates_section(),
        recipe=recipe(models["preset"][0]),
        shared=shared_digits(args.out, manifest),
        confirm=CONFIRMED,
        preset_same=same_as_preset(models["preset"][0]),
    )
    PAGE.write_text(re.sub(r"\n{3,}", "\n\n", text))  # no gap where a note is empty
    print(f"wrote {PAGE}, {kinds_png}, {hard_png}")


def same_as_preset(ckpt: Path) -> str:
    """Whether the checkpoint's run trained what `mnist-train experiment=handwriting` trains now
    (its command may spell the same settings out), in words for the page."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    then = run_config(ckpt)
    if then is None:
        return ""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        now = OmegaConf.to_container(compose("train", overrides=["experiment=handwriting"]))
    groups = ("model", "trainer", "seed")
    data = [key for key in now["data"] if key not in ("source", "data_dir")]
    if all(now.get(g) == then.get(g) for g in groups) and all(
        now["data"][key] == then["data"].get(key) for key in data
    ):
        return " — the same settings as `mnist-train experiment=handwriting` now"
    return " — not the settings of `mnist-train experiment=handwriting` now"


def shared_digits(out: Path, manifest: list[dict]) -> str:
    """How many of the set's re-drawn test digits the development sets re-draw too."""
    seen = set()
    for seed in DEV_SEEDS:
        labels = out / f"set-{seed}" / "labels.json"
        if not labels.is_file():
            return (
                "an uncounted number of the re-drawn pictures (the development sets are not made)"
            )
        seen |= {entry.get("source") for entry in json.loads(labels.read_text())}
    drawn = [entry["source"] for entry in manifest if entry.get("source", "").startswith("t10k")]
    return f"{sum(source in seen for source in drawn)} of the {len(drawn)} re-drawn pictures"


def recipe(ckpt: Path) -> str:
    """How the measured preset checkpoint was trained, from its run's saved config (not from
    conf/, which may have changed since)."""
    from omegaconf import OmegaConf

    found = run_config(ckpt)
    if found is None:
        return "see [conf/experiment/handwriting.yaml](../conf/experiment/handwriting.yaml)"
    cfg = OmegaConf.create(found)
    data, model = cfg.data, cfg.model
    layers = "-".join(map(str, [784, *model.hidden_dims, 10]))
    stroke = data.get("max_stroke", 0.0)
    return (
        f"{layers}, dropout {model.dropout}, label smoothing {model.label_smoothing}, trained "
        f"{cfg.trainer.max_epochs} epochs on MNIST with `data.augment={data.augment}` (rotation "
        f"up to {data.max_rotation:g}°, scale up to {100 * data.max_scale:g} %"
        + (
            f", elastic σ {data.elastic_sigma:g} px and α {data.elastic_alpha:g} px"
            if data.augment == "elastic"
            else ""
        )
        + (f"; strokes up to {stroke:g} px thicker or thinner" if stroke else "")
        + "); see [conf/experiment/handwriting.yaml](../conf/experiment/handwriting.yaml)"
    )


def missed_note(manifest: list[dict], predicted: list[int | None], whole: float) -> str:
    """Why the preset's target was missed, if it was: the kinds it reads worst."""
    if whole >= TARGETS["preset"]:
        return ""
    table = per_kind(manifest, predicted)
    worst = sorted((r / n, kind) for kind, (r, n) in table.items() if kind != "all")[:3]
    listed = ", ".join(f"`{kind}` {100 * acc:.1f} %" for acc, kind in worst)
    return f"Why the preset misses: its weakest kinds are {listed} (see the hard cases)." + (
        tried_note()
    )


def tried_note() -> str:
    """What the other recipes on the development sets did, from CANDIDATES."""
    if not CANDIDATES.is_file():
        return ""
    runs = json.loads(CANDIDATES.read_text())["runs"]
    best = max(run["accuracy"]["all"] for run in runs)
    others = [run for run in runs if run["accuracy"]["all"] < best]
    if not others:
        return ""
    gap = 100 * (best - max(run["accuracy"]["all"] for run in others))
    who = (
        "other recipe tried reads"
        if len(others) == 1
        else f"{len(others)} other recipes tried read"
    )
    return (
        f" The {who} less of the development sets (below), the closest by {gap:.1f} points: a "
        "few pictures, about what a second training seed could change."
    )


def pictures_figure(folder, manifest, prepared, indices, captions, title, path) -> None:
    """Pairs of (the picture as taken, what `prepare` made of it), 8 pairs a row."""
    from matplotlib.figure import Figure

    columns = 8
    rows = math.ceil(len(indices) / columns)
    fig = Figure(figsize=(columns * 1.6, rows * 1.05 + 0.35))
    axes = fig.subplots(rows, 2 * columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, (i, caption) in enumerate(zip(indices, captions, strict=True)):
        entry, ax = manifest[i], axes[n // columns]
        path_i = Path(entry["file"])
        with Image.open(path_i if path_i.is_absolute() else folder / path_i) as image:
            image.thumbnail((96, 96))
            ax[2 * (n % columns)].imshow(image.convert("RGB"))
        ax[2 * (n % columns)].set_title(caption, fontsize=7, loc="left")
        if prepared[i] is not None:
            ax[2 * (n % columns) + 1].imshow(prepared[i].numpy(), cmap="gray", vmin=0, vmax=1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=80)


PAGE_TEMPLATE = """# Real handwriting: mnist-predict on digits people write and photograph

MNIST's test images are not what people give `mnist-predict`: they give a photo or a scan of a
digit written with a pen on paper. This page measures the default model and the recommended
checkpoint, `mnist-train experiment=handwriting`, on synthetic pictures of that kind: digits
re-drawn as pen strokes and "photographed" or "scanned", a set that no model trains on, made by
a deterministic script,
[`benchmarks/handwriting.py`](../benchmarks/handwriting.py).

Made by `{command}` on {date}, on {machine} (a 2-core VM).

## Which checkpoint to use

Train `mnist-train experiment=handwriting` and give its best checkpoint (`best_checkpoint` in
the run's metrics.json) to `mnist-predict ckpt_path=...`. The one measured here: {recipe}.

## The results

Seed {seed}: {n} pictures. Each picture goes through `read_image` (what `mnist-predict` does to
every input) and the checkpoint's model; the digit read is its most probable class. A picture
`read_image` refuses counts as wrong: {refused} of them were refused.

{table}

- The recommended checkpoint reads {preset_acc:.1f} % (target ≥ 97 %): {preset_verdict}.
- The default model, trained 6 epochs, reads {default_acc:.1f} % (target ≥ 93 %): {default_verdict}.

{missed_note}

The checkpoints:

- default: `{default_cmd}`
- preset: `{preset_cmd}`{preset_same}

{candidates}
## The set

Every picture is made from a seed by `python -m benchmarks handwriting --only-set --seed N`
(into `outputs/handwriting/set-N/`, git-ignored, with `labels.json`; the file names end in the
true digit, so `mnist-predict inputs=outputs/handwriting/set-N/photo` can be checked by eye).
The preprocessing was tuned on seed 1 (the development set) and the preset's recipe chosen on
seeds 1, 3 and 4 together (3 and 4 made for that, after the first preset missed). Seed {seed}
chose nothing, but it was measured at each step, and the search for a better recipe went on
because it missed: 96.7 % for the first preset and preprocessing (commit d413cce; two of its
`margins` pictures were refused as blank, and the noise estimate was changed after we saw
them), 96.8 % after the crop to the digit's own ink (step 4 below, tuned on seed 1 alone;
03cb559, 124b64e), then the present preset, once the development sets showed a gain larger
than a second seed's. A figure looked at until it passes is somewhat optimistic: a set made
afterwards and measured once is the fairer check (seed 5: {confirm}).

- **Strokes from MNIST's test split** (all kinds but `vector` and `repo`): a test digit is
  upsampled 8x smoothly (bicubic, then a Gaussian), thinned to the ridge of its strokes and
  drawn again with a round pen of the kind's width, as dark ink (black, blue, dark grey, red,
  faded to pencil-like grey) on paper.
- **Hand-drawn vector strokes** (`vector`): 2-3 styles of each digit (an open and a closed 4,
  a 7 with and without a bar, a 1 with and without a flag and a base...) as polylines and arcs,
  every point jittered, slanted and squeezed, drawn with PIL at pen widths of 5-20 % of the
  height.
- **The picture**: 64-1000 px (sides in ratios 0.8-1.25), the digit 12-97 % of the shorter
  side, rotated, off-centre, on white, grey, yellowish or cream paper, under an even light or a
  gradient with vignetting and sometimes a shadow, blurred, with sensor noise, saved as PNG or
  (`photo`) as JPEG of quality 15-50.

![{kinds_png}](images/{kinds_png})

`python -m benchmarks handwriting --page` draws both pictures: each pair is the picture as
taken and what `prepare` made of it.

## Hard cases

{hard} pictures were misread by the default or by the preset; the 16 below are those the
preset misread first.

![{hard_png}](images/{hard_png})

## What the preprocessing does

`mnist_lightning/data/images.py` prepares each picture as MNIST's were made. It is read as a
viewer shows it (turned as its EXIF says, a transparent background on white), in grey levels;
a 16-bit or float picture is scaled by its white, and one with pixels that are not numbers
(NaN, infinity) is refused. Then:

1. Which way the ink goes: ink is the minority of pixels farthest from the middle tone (dark
   on light paper, or bright on a dark ground, like MNIST's own).
2. The paper: a quadratic surface (a tone, a light gradient, vignetting) fitted to the pixels
   that are not ink, plus what it missed on a coarse grid of tiles (a shadow's edge), opened so
   that ink is not taken for paper, and at most a shadow's depth. Ink is measured against the
   paper beneath it, relative to its brightness, so a stroke reads alike in light and shade.
3. Blank: no ink well above the paper's noise is an `ImageError`, one line naming the file.
4. The digit's own ink: the largest blot of ink (strokes a few pixels apart joined), and,
   again and again, the blots near those kept with at least 2 % of its ink (a stroke the pen
   lifted off, a digit drawn in dots). A shadow's edge, a speck or a smudge away from it is
   taken off, so it cannot widen the crop; ink spanning under 10 pixels is a speck, not a
   digit, and is refused like a blank picture.
5. The digit is cropped to its ink, its strokes made as thick as MNIST's (between the 5th and
   95th percentile of the test split's), fitted into 20x20 and centred by its centre of mass
   in a 28x28 field.

## Limits

- Seven of the nine kinds are re-rendered MNIST *test* digits: they test the picture-taking
  (paper, light, pen, size, margins, noise, JPEG), not other writers' shapes, which only
  `vector` (our own glyphs) and `repo` stand for. The issue's own set of real writers (84.0 %
  for the default through the old preprocessing, as issue 16 reports it) is not in the
  repository.
- One training per model is reported here; the development sets' table above shows how much a
  second seed of the same recipe changes.
- The sets draw their digits from the same 10 000 MNIST test images: {shared} of seed
  {seed} show a test digit that the development sets also re-draw (with another pen, paper and
  light). No model trains on any of them, but the preprocessing and the recipe were chosen
  on sets that share them.
"""
