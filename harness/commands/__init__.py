"""One module per ``ipcbench`` subcommand.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``main(args) -> int``. ``main`` converts the argparse Namespace into the domain's
dataclasses at once: nothing below the command layer sees a Namespace. Heavy imports
(pandas, matplotlib, torch) happen inside ``main``, so ``ipcbench --help`` is fast.
"""
