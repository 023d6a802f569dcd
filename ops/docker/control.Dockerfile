# syntax=docker/dockerfile:1
# The control plane image: a static meridian-control on an empty base.
#   docker build -f ops/docker/control.Dockerfile -t meridian-control .

# build compiles a static meridian-control.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/meridian-control ./control/cmd/meridian-control \
	&& mkdir -p /out/data

FROM scratch
# System roots for -tls-ca's default.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/meridian-control /usr/local/bin/meridian-control
COPY --from=build --chown=10001:10001 /out/data /var/lib/meridian
USER 10001:10001
VOLUME ["/var/lib/meridian"]
# Management API, Raft, NATS clients, NATS routes.
EXPOSE 7400 7401 4222 6222
ENTRYPOINT ["/usr/local/bin/meridian-control", "-data-dir", "/var/lib/meridian"]
