"""What happens after the push: serving records, prediction logs, feedback and lineage.

The serving process never imports ``ml_metadata``: it appends reports to a durable local spool
(:mod:`serving.metadata.spool`) and a separate worker process (:mod:`serving.metadata.worker`)
owns the MLMD connection. MLMD's embedded client holds the GIL while it waits on a lock, and a
down or locked database must never slow a prediction (see docs in ``reference/mlmd.md``).
"""
