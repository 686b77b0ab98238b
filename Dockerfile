# The control-plane image docker-compose.yml runs (`edgeloop serve`). Not built in CI here (no registry access);
# the commands it runs are tested as processes by tests/deploy/test_compose_topology.py.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY control_plane control_plane
COPY edge_agent edge_agent
COPY agents agents
COPY evals evals
COPY prompts prompts
RUN pip install --no-cache-dir '.[server]'
# uid 1883 = the eclipse-mosquitto image's user: api-1 rewrites the broker's auth files and signals the broker
# (a process may signal only its own uid's processes), see docker-compose.yml.
RUN useradd --system --uid 1883 --home /var/lib/edgeloop edgeloop && mkdir -p /var/lib/edgeloop && chown edgeloop /var/lib/edgeloop
USER edgeloop
EXPOSE 8000
CMD ["edgeloop", "serve"]
