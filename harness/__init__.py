"""The harness: real parts of flyxds started by their public command lines, for tests, bench, soak and demo.

- ``harness.plane``: ``Plane`` (a whole system, region by region) and ``Spec``/``Region``;
- ``harness.host``: ``Host`` (the address a part binds, the prefix that runs it), ``free_port``;
- ``harness.procs``: ``Proc``/``ProcGroup`` (a process, its log, a bounded stop);
- ``harness.redis``, ``harness.redis_ha``, ``harness.dns``, ``harness.envoy``: one part each;
- ``harness.wait``: ``wait_until``/``async_wait_until``, the one polling helper;
- ``harness.writer``: ``Writer``, the one fenced writer of the builder set;
- ``harness.metrics``: reading a process's Prometheus /metrics.

Every wait is bounded and waits on an event, never on time passing; every process started
here dies with the process that started it.
"""
