# One image for every atm-risk process: the API (default command), the scheduler and the
# one-shot services (migrate, smtp-certs) of docker-compose.yml. No secret is baked in:
# secrets come from the environment when a container starts (see .env.example).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the package and its dependencies in a virtual environment -------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/atm-risk \
 && /opt/atm-risk/bin/pip install --upgrade "pip>=24" \
 && /opt/atm-risk/bin/pip install .

# --- run: the environment, the shipped data, models, jobs and example routing -------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/atm-risk/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 atm \
 && useradd --system --uid 10001 --gid atm --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin atm
COPY --from=build /opt/atm-risk /opt/atm-risk
WORKDIR /app
COPY data ./data
COPY models ./models
COPY jobs ./jobs
COPY config ./config
COPY deploy/smtp-certs.sh /usr/local/bin/atm-risk-smtp-certs
# var/: SQLite and scratch files; /certs: the SMTP CA volume (owned by the app user, so a
# fresh named volume mounted there is writable by the one-shot certificate service)
RUN install -d -o atm -g atm /app/var /certs
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["atm-risk", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
