# syntax=docker/dockerfile:1
# resizelet: the node agent (the entrypoint) and the CLI, on the official Node 24 slim image.
#   docker build -t resizelet:0.1.0 \
#     --build-arg SOURCE="$(git remote get-url origin)" --build-arg REVISION="$(git rev-parse HEAD)" .
# Expected size: about 275 MB on disk, 85 MB compressed (the node:24-slim base is ~220 MB of it);
# docs/install.md says how that was estimated.
ARG NODE_IMAGE=node:24-slim

# 1. Compile the TypeScript with the dev dependencies. --ignore-scripts: the `node` dev dependency would
#    install a second Node binary, and this image already has the one we run on.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY agent ./agent
COPY cgroup ./cgroup
COPY bin ./bin
# From the entry point, so only what `resizelet` imports is built (not the demo, which needs the test
# fakes), with tsconfig.json's options (tsc ignores the file when given one), emitting JavaScript with the
# `.ts` import suffixes rewritten to `.js`.
RUN node node_modules/typescript/bin/tsc bin/resizelet.ts --outDir dist --rootDir . \
      --rewriteRelativeImportExtensions --allowImportingTsExtensions --verbatimModuleSyntax --isolatedModules \
      --module nodenext --moduleResolution nodenext --target es2023 --lib es2023 --types node \
      --strict --noUncheckedIndexedAccess --noImplicitOverride --skipLibCheck --esModuleInterop --resolveJsonModule

# 2. Production dependencies only, less what Node never loads: source maps and type declarations (they
#    are 40 of the 94 MB; @kubernetes/client-node alone ships 35 MB of them).
FROM ${NODE_IMAGE} AS deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force \
 && find node_modules -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \) -delete

# 3. The image: Node, the production dependencies and the compiled JavaScript; no compiler, no sources.
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
# package.json says "type": "module", which makes dist/**/*.js ES modules.
COPY package.json ./
COPY --from=deps /src/node_modules ./node_modules
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
