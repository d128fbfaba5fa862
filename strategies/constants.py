"""Every timeout and polling interval of the multi-process strategies, with its reason.

No ``recv``, ``get``, ``put``, ``join`` or ``wait`` in this package runs without one of
these or ``LoaderConfig.timeout`` (the longest wait for any one result or for the
workers to become ready, chosen by the user).
"""

from __future__ import annotations

# After the Stop message, a worker finishes the image in hand (the per-image work
# is ~0.05-0.3 s on a 2700 x 3600 image here) and exits by itself. Longer than the
# slowest image so that an orderly close never needs SIGTERM.
STOP_GRACE_S = 3.0

# After SIGTERM a worker dies at once unless it blocks or ignores the signal.
TERMINATE_GRACE_S = 1.0

# After SIGKILL only the kernel's reaping is left; this bounds the join, nothing else.
KILL_GRACE_S = 1.0

# How often a worker checks that its parent is still alive. When the main process
# is SIGKILLed, its workers exit within about this long (docs/design.md section 8).
PARENT_POLL_S = 0.2

# Prefix of every shared-memory segment this project creates, so stale ones can be
# found (``ls /dev/shm/ipcbench_*``) and attributed to the pid in their name.
SHM_PREFIX = "ipcbench_"

# Headroom kept free in /dev/shm beyond what the slots need, so a nearly full
# tmpfs fails with a clear message instead of SIGBUS on first write.
SHM_HEADROOM_BYTES = 16 * 2**20
