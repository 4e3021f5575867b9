"""The flyxds Grafana dashboard as code (grafana-foundation-sdk): ``python -m deploy.grafana`` writes
deploy/grafana/flyxds.json; ``python -m deploy.grafana --check`` exits 1 when that file is stale."""
