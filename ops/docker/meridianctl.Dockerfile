# syntax=docker/dockerfile:1
# meridianctl on a small Debian base: it has a shell, so the image also
# provisions the compose demo (ops/docker/provision.sh).
#   docker build -f ops/docker/meridianctl.Dockerfile -t meridianctl .

# build compiles a static meridianctl.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/meridianctl ./control/cmd/meridianctl

FROM debian:bookworm-slim
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ca-certificates \
	&& rm -rf /var/lib/apt/lists/* \
	&& useradd --system --uid 10001 --user-group --home-dir /home/meridian --create-home meridian \
	&& mkdir /provision && chown meridian:meridian /provision
COPY --from=build /out/meridianctl /usr/local/bin/meridianctl
COPY ops/docker/provision.sh /usr/local/bin/meridian-provision
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/meridianctl"]
