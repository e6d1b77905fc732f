# syntax=docker/dockerfile:1
# resizelet: the node agent (the entrypoint) and the CLI, on the official Node 24 slim image.
#   docker build -t resizelet:0.1.0 \
#     --build-arg SOURCE="$(git remote get-url origin)" --build-arg REVISION="$(git rev-parse HEAD)" .
# Expected size: about 225 MB on disk, 77 MB compressed (the node:24-slim base is ~220 MB of it);
# docs/install.md says how that was estimated.
ARG NODE_IMAGE=node:24-slim

# 1. Build with the dev dependencies: scripts/build.mjs bundles bin/resizelet.ts and what it imports, the
#    dependencies included, into dist/bin (only what the agent and the CLI use; no node_modules needed at
#    run time; the demo and the tests stay out). --ignore-scripts: the `node` dev dependency would install a
#    second Node binary, and this image already has the one we run on.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY agent ./agent
COPY cgroup ./cgroup
COPY bin ./bin
COPY scripts ./scripts
RUN node scripts/build.mjs

# 2. The image: Node and the bundle; no node_modules, no compiler, no sources.
FROM ${NODE_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE=""
ARG REVISION=""
LABEL org.opencontainers.image.title="resizelet" \
      org.opencontainers.image.description="Resizes running pods' CPU and memory in place by rewriting their cgroups" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
WORKDIR /app
# dist/bin/package.json (written by the build) makes the bundle's files ES modules.
COPY --from=build /src/dist ./dist
# The CLI for `kubectl exec` and `docker run --entrypoint resizelet`: the launcher finds dist/ here.
COPY bin/resizelet.mjs ./bin/resizelet.mjs
RUN ln -s /app/bin/resizelet.mjs /usr/local/bin/resizelet \
 && ln -s /app/bin/resizelet.mjs /usr/local/bin/kubectl-resizelet
# root on purpose: cgroup files belong to root (deploy/daemonset.yaml explains, and drops every capability
# but two).
USER 0
EXPOSE 9977
ENTRYPOINT ["node", "/app/dist/bin/resizelet.js", "agent"]
