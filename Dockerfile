# syntax=docker/dockerfile:1
# bgjob-operator: build a wheel in one stage, install it into a virtual environment in a
# second, and copy only that environment into a small runtime image. No compilers, pip caches
# or sources in the final image; it runs as a numeric non-root user with a read-only root
# filesystem (the chart mounts an emptyDir at /tmp).

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install --no-cache-dir build==1.3.0 \
 && python -m build --wheel --outdir /dist

FROM python:${PYTHON_VERSION}-slim AS install
COPY --from=build /dist/ /dist/
RUN python -m venv /opt/bgjob \
 && /opt/bgjob/bin/pip install --no-cache-dir /dist/*.whl \
 && /opt/bgjob/bin/pip uninstall --yes pip setuptools wheel \
 && /opt/bgjob/bin/bgjob-operator --help > /dev/null

FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="bgjob-operator" \
      org.opencontainers.image.description="Scheduled and on-demand background jobs on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=install /opt/bgjob /opt/bgjob
ENV PATH=/opt/bgjob/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["bgjob-operator"]
