"""What the tests share besides fixtures (tests/conftest.py): `synthetic` (a small MNIST in IDX
format), `hydra_jobs` (the commands run in the test process), `commands` (the same as real
processes), `worlds` (a user's files, a snapshot of them, refusals run in them) and `tiers`
(which cases of a long table the fast tier keeps)."""
