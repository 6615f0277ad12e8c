# fangd container image: docs/deploy.md.
#   docker build -t fangd .
#   docker run -d -p 4545:4545 -e FANGD_API_KEY=$(openssl rand -hex 24) -v fangd:/var/lib/fangd fangd
#
# Stage 1 builds a static binary (no cgo: Badger, fasthttp and every
# dependency are pure Go), stamped with the version and commit like
# `make build`.
FROM golang:1.26-alpine AS build
WORKDIR /src
# Modules first, so a source change does not refetch them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG BUILD_DATE=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.buildDate=${BUILD_DATE}" \
      -o /out/fangd ./cmd/fangd

# Stage 2: a small runtime. Alpine rather than scratch for busybox wget
# (the health check) and CA certificates (provider and webhook TLS).
FROM alpine:3.22
RUN apk add --no-cache ca-certificates \
 && addgroup -S -g 10001 fangd \
 && adduser -S -D -H -u 10001 -G fangd -h /var/lib/fangd fangd \
 && mkdir -p /var/lib/fangd && chown fangd:fangd /var/lib/fangd && chmod 0700 /var/lib/fangd
COPY --from=build /out/fangd /usr/local/bin/fangd
# The home holds the store, the audit anchor, the vault key and
# config.toml: it must outlive the container.
ENV FANGD_HOME=/var/lib/fangd \
    FANGD_LISTEN=0.0.0.0:4545
VOLUME ["/var/lib/fangd"]
USER 10001:10001
EXPOSE 4545
# /api/ready is public and says whether the store is open and the actors
# started (503 otherwise); it answers on loopback inside the container.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD wget -q -O /dev/null http://127.0.0.1:4545/api/ready || exit 1
# fangd refuses a non-loopback listen address without an API key:
# pass FANGD_API_KEY (>= 16 characters) at `docker run`.
ENTRYPOINT ["/usr/local/bin/fangd"]
CMD ["serve"]
