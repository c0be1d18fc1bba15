# syntax=docker/dockerfile:1
# Gatehouse container image. The build and install steps are the commands test/install/pack.test.ts runs:
# `npm pack` (its prepack runs `npm run build`: dist/ from src/), then `npm install -g --prefix DIR` of the
# tarball, which builds the kernel relay addon. The running image has the installed package, Node and
# nothing else: no TypeScript, no dev dependency, no compiler. Operations: docs/operations.md ("Container").
#
#   docker build -t gatehouse .
#   docker run -d --name gatehouse -p 1212:1212 -p 1213:1213 \
#     -v /srv/gatehouse/etc:/etc/gatehouse:ro -v gatehouse-state:/var/lib/gatehouse gatehouse
ARG NODE_IMAGE=node:20-slim

# 1. Build: the package tarball from the sources.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Only tsc is needed here; install scripts (the native addon) run where the tarball is installed.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm pack --pack-destination /tmp && mv /tmp/gatehouse-*.tgz /tmp/gatehouse.tgz

# 2. Install: the tarball into /opt/gatehouse, with the compiler the kernel relay addon needs (without it
#    the install still succeeds and the relay uses its JavaScript data path).
FROM ${NODE_IMAGE} AS install
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /tmp/gatehouse.tgz /tmp/gatehouse.tgz
# --allow-scripts approves the install scripts for npm 11's script approval; npm 10 warns and runs them.
RUN npm install -g --prefix /opt/gatehouse --no-audit --no-fund \
      --allow-scripts=gatehouse,bufferutil,smartcard /tmp/gatehouse.tgz

# 3. Run: the installed package on a clean base, as the image's unprivileged `node` user (uid 1000).
FROM ${NODE_IMAGE}
COPY --from=install /opt/gatehouse /opt/gatehouse
COPY contrib/docker/gatehouse.toml /etc/gatehouse/gatehouse.toml
RUN mkdir -p /var/lib/gatehouse \
 && chown node:node /var/lib/gatehouse \
 && chmod 0700 /var/lib/gatehouse
ENV PATH=/opt/gatehouse/bin:$PATH
USER node
WORKDIR /var/lib/gatehouse
# Sealed API keys and client registry, replay cache, monitor socket: keep them across upgrades.
VOLUME ["/var/lib/gatehouse"]
# Relay: WebSocket, TCP (the container config's listeners). The ops listener (9180) stays inside.
EXPOSE 1212 1213
# /healthz of the [ops] listener (contrib/docker/gatehouse.toml: 127.0.0.1:9180); the slim image has no
# curl, so Node's own fetch asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9180/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# SIGTERM (docker stop): stop accepting, drain for shutdown.graceMs, exit 0. Give it longer than graceMs:
# `docker stop --time 30`. SIGHUP (docker kill --signal HUP) reloads certificates, tokens and the registry.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gatehouse"]
CMD ["serve", "--config", "/etc/gatehouse/gatehouse.toml"]
