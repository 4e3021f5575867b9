"""Protocol tests of the ADS server (xds_server) with a real gRPC client and a real Redis."""
