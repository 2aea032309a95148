# syntax=docker/dockerfile:1
# bgjob-operator: build a wheel in one stage, install it into a virtual environment in a
# second, and copy only that environment into a small runtime image. No compilers, pip caches
# or sources in the final image; it runs as a numeric non-root user with a read-only root
# filesystem (the chart mounts an emptyDir at /tmp).
#
# BASE_IMAGE is any Debian-like image with python3 (>= 3.11) and its venv module: upstream
# python:3.12-slim by default; hack/image.sh builds without a Docker engine or a registry from
# a Debian base made with mmdebstrap (see the README's "The image").

ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN python3 -m pip install --no-cache-dir build==1.3.0 \
 && python3 -m build --wheel --outdir /dist

FROM ${BASE_IMAGE} AS install
COPY --from=build /dist/ /dist/
# Not needed to run: pip and setuptools, the official client's asyncio copy of itself
# (kubernetes.aio, 64 MB; nothing imports it) and its bundled tests. The bytecode stays: the
# root filesystem is read-only, so without it every start would compile the client again.
RUN python3 -m venv /opt/bgjob \
 && /opt/bgjob/bin/pip install --no-cache-dir /dist/*.whl \
 && /opt/bgjob/bin/pip uninstall --yes pip setuptools wheel \
 && rm -rf /opt/bgjob/lib/python3*/site-packages/kubernetes/aio \
 && find /opt/bgjob -name '*_test.py' -delete \
 && find /opt/bgjob -name '*_test.*.pyc' -delete \
 && /opt/bgjob/bin/bgjob-operator --help > /dev/null

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="bgjob-operator" \
      org.opencontainers.image.description="Scheduled and on-demand background jobs on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
# A passwd and group entry for the runtime user: kopf names itself after getpass.getuser(),
# which raises KeyError for a uid the image does not know. Podman adds such an entry for
# --user; a kubelet with containerd does not, and the pod crash-looped.
RUN echo 'nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'nonroot:x:65532:' >> /etc/group
COPY --from=install /opt/bgjob /opt/bgjob
ENV PATH=/opt/bgjob/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["bgjob-operator"]
