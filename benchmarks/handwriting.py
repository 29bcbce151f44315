"""Photographed handwriting, made from a seed, and how much of it checkpoints read per kind,
through `read_image` as mnist-predict reads it (docs/handwriting.json, images/handwriting_*.png).
Seven kinds re-draw MNIST *test* digits as pen strokes, `vector` draws glyphs, each put on paper
and photographed or scanned; `repo` is docs/images/digits/. Seeds 1 3 4: development; 2026 reported.
"""

import argparse
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.common import ROOT, data_dir, markdown, mnist_train, save

DIGITS_IN_REPO = ROOT / "docs" / "images" / "digits"
OUT, PER_KIND = ROOT / "outputs" / "handwriting", 150  # the sets and runs; pictures of a kind


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
TINTED = replace(BASE, paper="tinted", color=True)
# fmt: off
KINDS: dict[str, tuple[Look, str]] = {
    "scan": (BASE, "ballpoint on white paper, scanned at 64-400 px"),
    "thin_pen": (replace(BASE, pen=(0.035, 0.065)), "a fine pen: strokes 3.5-6.5 % of the height"),
    "marker": (replace(BASE, pen=(0.12, 0.17)), "a felt marker: strokes 12-17 % of the height"),
    "paper": (replace(TINTED, noise=(0.0, 0.02)),
              "grey, yellowish and cream paper, colour photo, coloured ink"),
    "lighting": (replace(TINTED, light=1.0, noise=(0.005, 0.02)),
                 "uneven light: a gradient across the page, vignetting, a shadow"),
    "photo": (replace(TINTED, side=(400, 1000), light=0.4, blur=(0.3, 1.0), noise=(0.01, 0.05),
                      jpeg=(15, 50), rotation=10.0),
              "a phone photo at 400-1000 px: blur, sensor noise, JPEG quality 15-50, "
              "rotated up to 10°"),
    "margins": (replace(BASE, height=(0.12, 0.97), offset=0.3, rotation=8.0),
                "tight (digit up to 97 % of the side) and wide (down to 12 %) margins, off-centre"),
    "vector": (replace(BASE, source="vector", pen=(0.05, 0.2), paper="tinted", light=0.4),
               "hand-drawn vector glyphs, 2-3 styles per digit, jittered, pens of 5-20 %"),
}
# fmt: on
REPO_KIND = "repo"  # the pictures already in docs/images/digits/

# Vector glyphs: per digit, styles; a style is strokes; a stroke is points in a unit box
# (x right, y down), or ("arc", cx, cy, rx, ry, start°, end°) sampled as a polyline.
Stroke = list
A = "arc"
# fmt: off
GLYPHS: dict[int, list[list[Stroke]]] = {
    0: [[[A, 0.5, 0.5, 0.32, 0.5, -90, 275]], [[A, 0.5, 0.5, 0.22, 0.5, -100, 265]]],
    1: [[[(0.5, 0.0), (0.5, 1.0)]], [[(0.3, 0.22), (0.55, 0.0), (0.55, 1.0)]],
        [[(0.3, 0.2), (0.55, 0.0), (0.55, 1.0)], [(0.3, 1.0), (0.8, 1.0)]]],
    2: [[[A, 0.5, 0.3, 0.3, 0.3, 190, 395], [(0.76, 0.42), (0.15, 1.0), (0.88, 1.0)]],
        [[A, 0.5, 0.28, 0.32, 0.28, 180, 330], [(0.78, 0.17), (0.5, 0.55), (0.15, 1.0)],
         [(0.15, 1.0), (0.9, 0.97)]]],
    3: [[[A, 0.48, 0.26, 0.3, 0.26, 200, 450], [A, 0.48, 0.74, 0.33, 0.26, 270, 520]],
        [[(0.15, 0.0), (0.85, 0.0), (0.45, 0.42)], [A, 0.47, 0.7, 0.35, 0.3, 270, 510]]],
    4: [[[(0.65, 1.0), (0.65, 0.0), (0.1, 0.68), (0.92, 0.68)]],
        [[(0.3, 0.0), (0.15, 0.6), (0.9, 0.6)], [(0.7, 0.2), (0.7, 1.0)]]],
    5: [[[(0.82, 0.0), (0.25, 0.0), (0.2, 0.42)], [A, 0.48, 0.68, 0.34, 0.32, 230, 500]],
        [[(0.25, 0.0), (0.2, 0.45)], [A, 0.48, 0.7, 0.33, 0.3, 220, 500],
         [(0.25, 0.02), (0.85, 0.0)]]],
    6: [[[(0.72, 0.0), (0.35, 0.35), (0.18, 0.7)], [A, 0.48, 0.72, 0.3, 0.28, 180, 540]],
        [[A, 0.9, 0.7, 0.72, 0.72, 190, 265], [A, 0.5, 0.72, 0.3, 0.28, 180, 540]]],
    7: [[[(0.1, 0.0), (0.9, 0.0), (0.4, 1.0)]],
        [[(0.1, 0.05), (0.9, 0.0), (0.45, 1.0)], [(0.35, 0.5), (0.85, 0.5)]],
        [[(0.1, 0.2), (0.15, 0.0), (0.9, 0.0), (0.55, 0.5), (0.5, 1.0)]]],
    8: [[[A, 0.5, 0.25, 0.25, 0.25, 0, 360], [A, 0.5, 0.74, 0.32, 0.26, 0, 360]],
        [[(0.75, 0.1), (0.5, 0.0), (0.25, 0.1), (0.25, 0.35), (0.75, 0.65), (0.75, 0.9),
          (0.5, 1.0), (0.25, 0.9), (0.25, 0.65), (0.75, 0.35), (0.75, 0.1)]]],
    9: [[[A, 0.48, 0.28, 0.3, 0.28, 0, 360], [(0.78, 0.28), (0.72, 1.0)]],
        [[A, 0.5, 0.28, 0.3, 0.28, 0, 360], [A, 0.2, 0.28, 0.6, 0.72, 0, 90]]],
}
# fmt: on


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


# fmt: off
PAPERS = {  # RGB tones of paper under neutral light
    "white": [(250, 250, 248), (245, 245, 245), (238, 240, 242)],
    "tinted": [(205, 205, 205), (180, 182, 180), (238, 228, 190), (245, 235, 205), (230, 220, 200),
               (215, 210, 195), (250, 250, 248)],
}
# fmt: on
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
        entry = {"file": str(path), "kind": REPO_KIND, "digit": int(path.stem[-1])}
        manifest.append(entry | {"source": str(path.relative_to(ROOT))})
    (out / "labels.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def the_set(seed: int) -> list[dict]:
    """The manifest of `OUT/set-<seed>/` (made if not there yet), each picture's `path` added."""
    folder = OUT / f"set-{seed}"
    labels = folder / "labels.json"
    made = json.loads(labels.read_text()) if labels.is_file() else None
    return [e | {"path": folder / e["file"]} for e in made or make_set(folder, seed, PER_KIND)]


def read_set(manifest: list[dict]) -> tuple[list, list[str]]:
    """Each picture as mnist-predict's `read_image` prepares it (None: refused), and refusals."""
    from mnist_lightning.data.images import ImageError, read_image

    prepared, refused = [], []
    for entry in manifest:
        try:
            prepared.append(read_image(entry["path"]))
        except ImageError as e:
            prepared.append(None)
            refused.append(str(e))
    return prepared, refused


def predictions(ckpt: Path, prepared: list) -> list[int | None]:
    """The digit a checkpoint reads in each prepared picture, as mnist-predict: softmax's top."""
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
    right, total = Counter(), Counter()
    for entry, digit in zip(manifest, predicted, strict=True):
        right.update({entry["kind"]: digit == entry["digit"], "all": digit == entry["digit"]})
        total.update((entry["kind"], "all"))
    return {key: (right[key], n) for key, n in total.items()}


# How each checkpoint is trained when none is given (without a progress bar).
TRAIN = {"default": ["trainer.max_epochs=6"], "preset": ["experiment=handwriting"]}
# What a recipe for the preset may change, recorded from each checkpoint's saved config.
SETTINGS = ["trainer.max_epochs", "data.augment", "data.elastic_sigma", "data.elastic_alpha",
            "data.max_rotation", "data.max_scale", "data.max_stroke", "model.hidden_dims",
            "model.dropout", "model.input_dropout", "seed"]  # fmt: skip


def checkpoint(name: str, given: str | None, out: Path) -> dict:
    """The checkpoint to measure (`given`, or a new run's best) and its run's SETTINGS."""
    from omegaconf import OmegaConf

    ckpt = Path(
        given
        or mnist_train([*TRAIN[name], "callbacks.progress_bar.refresh_rate=0"], out).metrics[
            "best_checkpoint"
        ]
    )
    file = ckpt.resolve().parents[1] / ".hydra" / "config.yaml"
    config = OmegaConf.load(file) if file.is_file() else OmegaConf.create()
    settings = OmegaConf.create({key: OmegaConf.select(config, key) for key in SETTINGS})
    return {"checkpoint": str(ckpt), "settings": OmegaConf.to_container(settings)}


def pictures(manifest: list[dict], prepared: list, picks: list, path: Path) -> None:
    """Pairs of (the picture as taken, what `prepare` made of it), captioned, 8 pairs a row."""
    from matplotlib.figure import Figure

    columns, rows = 8, math.ceil(len(picks) / 8)
    fig = Figure(figsize=(columns * 1.6, rows * 1.05 + 0.35), layout="tight")
    axes = fig.subplots(rows, 2 * columns, squeeze=False).reshape(-1, 2)
    for ax in axes.flat:
        ax.axis("off")
    for (i, caption), (taken, made) in zip(picks, axes, strict=False):
        with Image.open(manifest[i]["path"]) as image:
            image.thumbnail((96, 96))
            taken.imshow(image.convert("RGB"))
        taken.set_title(caption, fontsize=7, loc="left")
        if prepared[i] is not None:
            made.imshow(prepared[i].numpy(), cmap="gray", vmin=0, vmax=1)
    fig.savefig(path, dpi=80)


def main(args: argparse.Namespace) -> None:
    seeds = args.seeds or [2026]
    manifest = [entry for seed in seeds for entry in the_set(seed)]
    print(f"{len(manifest)} pictures of seeds {seeds} in {OUT}", flush=True)
    prepared, refused = read_set(manifest)
    print(*(f"skipped: {line}" for line in refused), sep="\n")
    given = dict(pair.split("=", 1) for pair in args.ckpts or []) or dict.fromkeys(TRAIN)
    models = {name: checkpoint(name, ckpt, OUT) for name, ckpt in given.items()}
    read = {name: predictions(Path(m["checkpoint"]), prepared) for name, m in models.items()}
    kinds = {kind: text for kind, (_, text) in KINDS.items()}
    kinds |= {REPO_KIND: "docs/images/digits/", "all": "the whole set"}
    rows = [{"kind": kind, "what it is": text} for kind, text in kinds.items()]
    for name, predicted in read.items():
        table = per_kind(manifest, predicted)
        for r in rows:
            right, total = table[r["kind"]]
            r |= {"pictures": total, f"{name} (%)": round(100 * right / total, 1)}
    result = {"seeds": seeds, "refused": len(refused), "models": models, "rows": rows}
    save(args.json, (), result, args.command_line)
    print(markdown(rows))
    figures = args.json.parent / "images"  # docs/images/ for docs/handwriting.json
    figures.mkdir(exist_ok=True)
    first = [next(i for i, e in enumerate(manifest) if e["kind"] == k) for k in KINDS]
    picks = [(i + j, manifest[i]["kind"]) for i in first for j in (0, 1)]
    pictures(manifest, prepared, picks, figures / f"{args.json.stem}_kinds.png")
    right = [sum(read[name][i] == e["digit"] for name in read) for i, e in enumerate(manifest)]
    wrong = sorted((i for i, n in enumerate(right) if n < len(read)), key=right.__getitem__)
    said = {i: " ".join(f"{name[0].upper()} {read[name][i]}" for name in read) for i in wrong}
    picks = [(i, f"{manifest[i]['kind']}: {manifest[i]['digit']}\n{said[i]}") for i in wrong[:16]]
    pictures(manifest, prepared, picks, figures / f"{args.json.stem}_hard.png")
