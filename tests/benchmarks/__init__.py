"""pytest-benchmark suites (a package, so its conftest is ``benchmarks.conftest``, not a second ``conftest``)."""
