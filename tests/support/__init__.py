"""Real servers and processes for tests, each bounded in time.

- ``procs``: free_port(), wait_until(), Proc (our console scripts as subprocesses).
- ``redis``: RedisServer, the venv's real redis-server on 127.0.0.1.
- ``dns``: DnsProcess, tools/dns_server.py as a subprocess with a zone file.
"""
