# One image for foursave's own services (sim, collect, ingest, ...).
FROM python:3.11-slim
WORKDIR /app
# Traditional Chinese TrueType font embedded in the report PDFs
RUN apt-get update && apt-get install -y --no-install-recommends fonts-arphic-uming \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml constraints.txt README.md ./
COPY foursave foursave
COPY core core
COPY collector collector
COPY simulators simulators
COPY api api
COPY rules rules
COPY reports reports
COPY dashboards dashboards
COPY config config
RUN pip install --no-cache-dir -c constraints.txt .
ENTRYPOINT ["foursave"]
