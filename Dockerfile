# signalbox: an MQTT broker and rules engine in one process.
# Build: docker build -t signalbox .   Run: see docker-compose.yml and the README.

# --- build: compile TypeScript and the better-sqlite3 native module ---
FROM node:20-bookworm-slim AS build
# better-sqlite3 builds from source when no prebuilt binary fits the platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the package's own `prepare` (a build) needs the sources, copied below;
# better-sqlite3's install script is then run on its own.
RUN npm ci --ignore-scripts && npm rebuild better-sqlite3
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev --ignore-scripts

# --- run: the same base image, so the native module matches; no compilers ---
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The database lives in /app/data (a volume), owned by the unprivileged `node` user of the image.
RUN mkdir -p /app/data /app/config && chown node:node /app/data
USER node
VOLUME ["/app/data"]
EXPOSE 1883
CMD ["node", "dist/cli/main.js", "run", "--config", "/app/config/signalbox.yaml"]
