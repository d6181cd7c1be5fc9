# syntax=docker/dockerfile:1
# pedsam images. The worker is the default target; the edge is the same install with another
# entry point.
#
#   docker build -t pedsam-worker .                                     # CPU torch (small)
#   docker build -t pedsam-worker:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#   docker build -t pedsam-edge --target edge .
#
# Everything installs from pinned versions (constraints.txt) into /opt/pedsam; the runtime
# stages copy only that virtual environment and run as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY partitioner partitioner
COPY workers workers
COPY stream stream
COPY protos protos
RUN python -m venv /opt/pedsam \
 && /opt/pedsam/bin/pip install --extra-index-url "${TORCH_INDEX}" -c constraints.txt ".[web,report]" \
 && find /opt/pedsam -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --home-dir /home/pedsam --create-home pedsam
COPY --from=build /opt/pedsam /opt/pedsam
ENV PATH=/opt/pedsam/bin:$PATH PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
WORKDIR /home/pedsam
USER 10001:10001

FROM runtime AS edge
ENTRYPOINT ["pedsam"]
CMD ["--help"]

FROM runtime AS worker
# 50051: the window service (TLS); 8081: plain-text grpc.health.v1 only, for probes; 9100: metrics.
EXPOSE 50051 8081 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["pedsam", "health", "127.0.0.1:8081"]
ENTRYPOINT ["pedsam", "worker"]
CMD ["--host", "0.0.0.0", "--port", "50051", "--health-port", "8081", "--metrics-port", "9100", \
     "--model", "vit_b", "--checkpoint", "/weights/sam_vit_b_01ec64.pth", \
     "--tls-cert", "/tls/tls.crt", "--tls-key", "/tls/tls.key", "--tls-client-ca", "/tls/ca.crt", \
     "--token-file", "/secrets/token"]
