# syntax=docker/dockerfile:1
# fleetagent container image: the agent on distroless (glibc + libstdc++ for
# ONNX Runtime), as the unprivileged user nonroot (65532).
#
#   make deps    # puts the checksum-verified libonnxruntime.so.1 in .deps/lib
#   docker build -f packaging/docker/fleetagent.Dockerfile \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" -t modelfleet/fleetagent .
#
# Run with MODELFLEET_* variables or a mounted /etc/modelfleet/agent.yaml,
# and always a device ID (a container's hostname changes):
#   docker run -d --name fleetagent -e MODELFLEET_DEVICE_ID=press-01 \
#     -e MODELFLEET_MQTT_BROKERS=tcp://broker:1883 -e MODELFLEET_S3_ENDPOINT=https://s3.example.com \
#     -v /etc/modelfleet/root.json:/etc/modelfleet/root.json:ro \
#     -v fleetagent-data:/var/lib/modelfleet/agent modelfleet/fleetagent
# packaging/README.md has more (GPUs, the inference API).

ARG GO_VERSION=1.26
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# cgo: ONNX Runtime and NVML are loaded with dlopen.
RUN CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" \
    go build -trimpath \
      -ldflags "-s -w -X github.com/modelfleet/modelfleet/internal/buildinfo.Version=${VERSION}" \
      -o /out/usr/bin/fleetagent ./cmd/fleetagent \
 && mkdir -p /out/var/lib/modelfleet/agent \
 && install -D -m 0644 .deps/lib/libonnxruntime.so.1 /out/usr/lib/modelfleet/libonnxruntime.so.1 \
 && install -D -m 0644 packaging/licenses/onnxruntime-LICENSE /out/usr/share/doc/fleetagent/onnxruntime-LICENSE

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr /usr
COPY --from=build --chown=nonroot:nonroot /out/var/lib/modelfleet /var/lib/modelfleet
ENV MODELFLEET_ORT_LIB=/usr/lib/modelfleet/libonnxruntime.so.1 \
    MODELFLEET_DATA_DIR=/var/lib/modelfleet/agent \
    MODELFLEET_TRUST_ROOT=/etc/modelfleet/root.json
USER nonroot
VOLUME ["/var/lib/modelfleet/agent"]
ENTRYPOINT ["/usr/bin/fleetagent"]
CMD ["run"]
