"""``ipcbench faults``: the shutdown-cleanliness matrix (docs/design.md section 8).

:mod:`.scenarios` breaks one generator on purpose in a fresh process and says what it
saw; :mod:`.matrix` runs every scenario x strategy under a watchdog, judges each cell
from the outside and writes ``faults.jsonl`` and ``env.json`` with their report.
"""

from __future__ import annotations
