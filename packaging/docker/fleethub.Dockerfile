# syntax=docker/dockerfile:1
# fleethub container image: `fleethub serve`, a static binary on distroless,
# as the unprivileged user nonroot (65532).
#
#   docker build -f packaging/docker/fleethub.Dockerfile \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" -t modelfleet/fleethub .
#
# The API listens on 0.0.0.0:8400 in the container, so it requires a token:
#   docker run -d --name fleethub -p 127.0.0.1:8400:8400 \
#     -e MODELFLEET_HUB_MQTT_BROKERS=tcp://broker:1883 -e MODELFLEET_API_TOKEN=… \
#     -v /srv/fleethub/keys:/etc/modelfleet/keys:ro \
#     -v fleethub-data:/var/lib/modelfleet/hub modelfleet/fleethub
# The key directory must be readable by uid 65532 (private keys are 0600).

ARG GO_VERSION=1.26
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/modelfleet/modelfleet/internal/buildinfo.Version=${VERSION}" \
      -o /out/usr/bin/fleethub ./cmd/fleethub \
 && mkdir -p /out/var/lib/modelfleet/hub

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/usr /usr
COPY --from=build --chown=nonroot:nonroot /out/var/lib/modelfleet /var/lib/modelfleet
ENV MODELFLEET_HUB_STORE_PATH=/var/lib/modelfleet/hub/hub.db \
    MODELFLEET_HUB_KEY_DIR=/etc/modelfleet/keys \
    MODELFLEET_API_ADDR=0.0.0.0:8400
USER nonroot
VOLUME ["/var/lib/modelfleet/hub"]
EXPOSE 8400
ENTRYPOINT ["/usr/bin/fleethub"]
CMD ["serve"]
