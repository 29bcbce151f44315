"""benchmarks/fashion_authors.py: the authors' MLP grid read as their runner.py reads it."""

from benchmarks.fashion_authors import settings


def test_the_authors_grid_is_read_as_scikit_learn_takes_it_widest_first() -> None:
    grid = [
        {"activation": "relu", "hidden_layer_sizes": "(10,)"},
        {"activation": "tanh", "hidden_layer_sizes": "(100,10,)"},
        {"activation": "relu", "hidden_layer_sizes": "(100,)"},
    ]
    assert settings(grid) == [
        {"activation": "tanh", "hidden_layer_sizes": (100, 10)},
        {"activation": "relu", "hidden_layer_sizes": (100,)},
        {"activation": "relu", "hidden_layer_sizes": (10,)},
    ]
