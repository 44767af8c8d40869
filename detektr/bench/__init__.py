"""`detektr bench`: the benchmark suite, run on an embedded Valkey with real worker and ingest processes.

`suite` measures, `report` writes docs/benchmarks.md and its plot (matplotlib, imported only there),
`baselines` holds the comparison systems that are not detektr: a plain Celery app, a minimal Redis
Streams consumer and the decode-only ceiling.
"""
