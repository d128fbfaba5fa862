"""ipcbench harness: datasets, measurement, runner, results, reports, faults, CLI.

The instrument around the system under test (``strategies``). It may import
``strategies``; the reverse is forbidden.
"""
