"""Read the scalar curves of a run back from its TensorBoard event files."""

from collections import defaultdict
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util.tensor_util import make_ndarray


def scalars(tensorboard: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, seconds since the logger started, value)] from a run's event files.

    Depending on the tensorboard version, the loader hands a scalar back as `simple_value` or
    migrated to a one-element tensor; both are read.
    """
    curves: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    start = None
    for events in sorted(tensorboard.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            start = event.wall_time if start is None else start
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                    number = float(make_ndarray(value.tensor))
                else:
                    continue  # images, histograms, text
                curves[value.tag].append((event.step, event.wall_time - start, number))
    return dict(curves)
