"""Contract tests: one mixin of tests per stage role, run by every implementation of the role
(real backends and the fakes in ``tests/fakes.py`` alike)."""
