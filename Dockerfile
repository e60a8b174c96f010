# registry-watcher container image.
#
#   docker build -t registry-watcher:0.1.0 .
#   docker run --rm -p 8080:8080 -v "$PWD/config:/etc/registry-watcher:ro" registry-watcher:0.1.0
#
# Two stages on the same pinned base: the builder makes a wheel of this project and installs
# it with its dependencies (binary wheels only: nothing is compiled) into a virtualenv; the
# final image gets that virtualenv and nothing else from the builder: no pip cache, no
# sources, no build tools. The base image is pinned by its full version tag; both stages must
# use the same one, since the virtualenv links to the base image's interpreter.

FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY watcher/ watcher/

# The project itself is pure Python (built here by setuptools); every dependency must come
# as a binary wheel, so a dependency without one fails the build instead of pulling in a
# compiler.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/registry-watcher \
    && /opt/registry-watcher/bin/pip install --no-cache-dir --only-binary=:all: /wheels/*.whl \
    && /opt/registry-watcher/bin/registry-watcher --version


FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="registry-watcher" \
      org.opencontainers.image.description="Watches container registries and proves, for every pushed digest, who signed it." \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/registry-watcher/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STATE_DIRECTORY=/var/lib/registry-watcher

# An unprivileged user with a fixed UID (Kubernetes runAsUser: 10001) whose home is the state
# directory: the only place it writes (mount a volume there; the root filesystem can be
# read-only).
RUN groupadd --system --gid 10001 watcher \
    && useradd --system --uid 10001 --gid watcher --no-create-home \
       --home-dir /var/lib/registry-watcher --shell /usr/sbin/nologin watcher \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/registry-watcher \
    && install -d -m 0755 /etc/registry-watcher

COPY --from=builder /opt/registry-watcher /opt/registry-watcher

USER 10001:10001
WORKDIR /var/lib/registry-watcher

# server.listen must be 0.0.0.0:8080 (or [::]:8080) in a container's config.
EXPOSE 8080

# Slim images have no curl: the interpreter that is there anyway asks /healthz. urlopen
# raises on anything but 2xx and on no answer, and an uncaught exception exits 1: unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]

ENTRYPOINT ["registry-watcher"]
CMD ["run", "-c", "/etc/registry-watcher/config.yaml"]
