# samgis service image. Build: docker build -t samgis .
# Run:   docker run -p 8000:8000 -v samgis-cache:/cache samgis
# Weights are downloaded into /cache on first start (or mount a file and set SAMGIS_CHECKPOINT).

# --- web assets -------------------------------------------------------------------------------------
FROM node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# --- service ----------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SAMGIS_CACHE_DIR=/cache \
    SAMGIS_WEB_DIR=/app/web/dist
WORKDIR /app
COPY pyproject.toml README.md ./
COPY samgis/ samgis/
COPY api/ api/
RUN pip install . \
 && pip install 'setuptools==84.2.1' \
 && SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation 'sam2==1.1.0' \
 && pip install --no-deps 'sam3==0.1.4'
COPY --from=web /src/web/dist/ web/dist/
RUN useradd --create-home --uid 1000 samgis && mkdir -p /cache && chown samgis /cache
USER samgis
VOLUME ["/cache"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s CMD python -c "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('AIP_HTTP_PORT', '8000'))"
# Port: $AIP_HTTP_PORT when set (Vertex AI custom containers), else 8000.
CMD ["samgis", "serve", "--host", "0.0.0.0"]
