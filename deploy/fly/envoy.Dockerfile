FROM envoyproxy/envoy:v1.40-latest
COPY envoy.yaml /etc/envoy/envoy.yaml
