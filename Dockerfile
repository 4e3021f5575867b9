# One image for every process of the control plane (discoverer, xds-server, xdsctl)
# and for the demo stand-ins (tools/dns_server.py, tools/tls_backend.py).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared shared
COPY discoverer discoverer
COPY xds_server xds_server
COPY xdsctl xdsctl
RUN pip install --no-cache-dir --prefix=/install . cryptography

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin xds
COPY --from=build /install /usr/local
WORKDIR /app
COPY tools tools
USER 10001:10001
ENV PYTHONUNBUFFERED=1
EXPOSE 18000 9100
CMD ["xds-server", "--listen", "0.0.0.0:18000"]
