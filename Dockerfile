# One image for foursave's own services (sim, collect, ingest, ...).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY collector collector
COPY simulators simulators
COPY api api
COPY rules rules
COPY dashboards dashboards
COPY config config
RUN pip install --no-cache-dir .
ENTRYPOINT ["foursave"]
