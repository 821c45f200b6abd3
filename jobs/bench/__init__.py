"""`commer-pipeline bench`: how fast compression runs, against a naive loop and the machine's peak.

Not part of commer_core (nothing there imports it). Modules:

- ``command``: the click command; parses, runs the compressor or the serving benchmark, writes the report.
- ``compress_bench``: the compressor benchmark's steps (set-up, naive loop, batched core, summary, pipeline).
- ``perf``: compressor timings, FLOP counts, matmul peak probes, synthetic documents.
- ``measure``: bf16 vs fp32, the Beam job vs commer_core, generation, scaling runs, machine info.
- ``scaling``: one job size per fresh child process (``python -m jobs.bench.scaling``).
- ``report``: markdown tables, targets, cost model, and PERFORMANCE.md + chart in a docs folder.
- ``serving`` (per store, in a child process), ``serving_store`` (stores by the job's writer and index code),
  ``serving_run`` (sizes, real dims, generate), ``serving_s3`` (requests on moto), ``serving_format``
  (encodings on real prompts), ``serving_report``: ``bench --serving``.
"""
