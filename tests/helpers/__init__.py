"""What the tests share besides fixtures (those are in tests/conftest.py):

- `synthetic`: the small synthetic MNIST in IDX format, and settings for fast runs on it;
- `commands`: the console commands' command lines, run as real subprocesses;
- `hydra_jobs`: the same commands' Hydra entry points, run in the test process;
- `worlds`: a user's world of data, run and pictures, a snapshot of it, and the runner that
  takes a module's cases through their commands in worlds of their own, two at a time;
- `tiers`: which cases of a long parametrized test the fast tier (`make test-fast`) keeps.
"""
