# syntax=docker/dockerfile:1
# The mock paid providers of the compose demo (scripts/mockprovider).
#   docker build -f ops/docker/mockprovider.Dockerfile -t meridian-mockprovider .

# build compiles a static mockprovider.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/mockprovider ./scripts/mockprovider

FROM scratch
COPY --from=build /out/mockprovider /usr/local/bin/mockprovider
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["/usr/local/bin/mockprovider", "-addr", "0.0.0.0:9100"]
