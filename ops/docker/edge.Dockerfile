# syntax=docker/dockerfile:1
# The edge image: meridian-edge and the pinned Ollama it supervises.
# Build from the repository root:
#   docker build -f ops/docker/edge.Dockerfile -t meridian-edge .
# OLLAMA_MARCH as for `make ollama`; the default suits most servers since
# 2015 (AVX2), x86-64 runs anywhere.

# build compiles a static meridian-edge.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/meridian-edge ./edge/cmd/meridian-edge

# Ollama exactly as `make ollama` builds it: the version pinned in go.mod,
# by the same script (which installs the headers it needs).

# ollama builds the pinned Ollama.
FROM golang:1.26.8-bookworm AS ollama
ARG OLLAMA_MARCH=x86-64-v3
WORKDIR /src
COPY go.mod go.sum ./
COPY scripts/ollama/build.sh scripts/ollama/build.sh
RUN OLLAMA_MARCH=${OLLAMA_MARCH} BIN=/out scripts/ollama/build.sh

FROM debian:bookworm-slim
# ca-certificates: the edge calls providers over HTTPS.
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ca-certificates \
	&& rm -rf /var/lib/apt/lists/* \
	&& useradd --system --uid 10001 --user-group --home-dir /var/lib/meridian --create-home meridian
COPY --from=build /out/meridian-edge /usr/local/bin/meridian-edge
# Configs name it as local.binary; local.data_dir belongs under
# /var/lib/meridian, the volume.
COPY --from=ollama /out/ollama /usr/local/bin/ollama
USER 10001:10001
WORKDIR /var/lib/meridian
VOLUME ["/var/lib/meridian"]
# API, links (QUIC over UDP) and gossip (TCP and UDP), at their defaults.
EXPOSE 8080 7443/udp 7946 7946/udp
ENTRYPOINT ["/usr/local/bin/meridian-edge"]
CMD ["-config", "/etc/meridian/edge.yaml"]
