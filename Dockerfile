# One image for every process of the scale-out shape (docs/deployment.md):
#   worker (default):  python -m worker
#   API:               python -m api   (FLEET_API_HOST/PORT, FLEET_TLS_*: docs/deployment.md)
#   one-shot setup:    python -m core.register
#   demo fleet:        python -m simulator ...
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid fleet --home-dir /app --shell /usr/sbin/nologin fleet

WORKDIR /app

# Dependencies first, read from pyproject.toml, so that a change to the code alone reuses this
# layer instead of reinstalling every wheel.
COPY pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["postgres"]))' \
    > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY models ./models
COPY core ./core
COPY inventory ./inventory
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY simulator ./simulator
COPY devstack ./devstack
COPY worker.py README.md ./
# The project itself, against the dependencies installed above (same pyproject.toml).
# hadolint ignore=DL3013
RUN pip install ".[postgres]" && rm -rf build ./*.egg-info

# Only for a run without FLEET_DATABASE_URL (the SQLite default lives under .data/).
RUN mkdir -p /app/.data && chown fleet:fleet /app/.data

USER 10001:10001

EXPOSE 8080
CMD ["python", "-m", "worker"]
