"""The scan engine.

Kept free of imports on purpose: worker processes run ``python -m diskaudit.scan.worker`` and
every module imported here would be imported (and paid for in memory) by each of them.

- ``walk``: the directory walk itself (runs inside a worker process, stdlib only);
- ``protocol``: the framed pickle messages between the pool and its worker processes;
- ``worker``: the worker process's main loop;
- ``aggregate``: merges partial results into per-directory totals;
- ``pool``: the anyio side: ``max-procs`` worker slots, work splitting, deadlines;
- ``model``: the frozen records a scan returns.
"""
