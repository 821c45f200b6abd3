#!/usr/bin/env bash
# Fetch, here, the wheels the device machine lacks for the Beam job (it has no network):
# apache-beam and those of its requirements that the device image does not hold (its
# package list: torch, pyarrow, grpcio, protobuf, numpy and more are there), for its Python
# (3.12, x86-64 manylinux). Wheels fetched earlier are removed first: pip refuses a folder
# holding two versions of one package. About 36 MB into .whl/ (git-ignored); a device
# run names .whl in carry, and scripts/gpu_bench.sh's pipeline step installs them.
#
#   bash scripts/gpu_wheels.sh [PYTHON_VERSION]     # default 3.12
set -euo pipefail
version=${1:-3.12}
mkdir -p .whl
rm -f .whl/*.whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  "apache-beam==$(python3 -c 'import apache_beam; print(apache_beam.__version__)' 2>/dev/null || echo 2.77.0)" \
  "beartype<0.23" "cryptography<51" cffi pycparser "fastavro<2" "fasteners<1" "httplib2<1" "jsonpickle<5" \
  "objsize<0.8" "proto-plus<2" "pymongo<5" dnspython pytz "zstandard<1"
du -sh .whl
