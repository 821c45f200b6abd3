"""`commer-pipeline bench`: how fast compression runs, against a naive loop and the machine's peak.

Not part of commer_core (nothing there imports it). Modules:

- ``command``: the click command; runs the measurements in order and writes the report.
- ``perf``: compressor timings, FLOP counts, matmul peak probes, synthetic documents.
- ``measure``: bf16 vs fp32, the Beam job vs commer_core, generation, scaling runs, machine info.
- ``scaling``: one job size per fresh child process (``python -m jobs.bench.scaling``).
- ``report``: markdown tables, targets, cost model, and PERFORMANCE.md + chart in a docs folder.
"""
