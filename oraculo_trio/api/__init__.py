"""The operator's API: ``/api/v1`` next to ``/metrics`` (``docs/api.md``).

- :mod:`~oraculo_trio.api.operations`: the questions asked of a store (alerts, history,
  silences, rules) and their JSON answers; shared by the server and by the CLI's
  ``--database-url`` mode;
- :mod:`~oraculo_trio.api.server`: the endpoints, their checks and authorisation, bridged
  from the HTTP threads into the Trio loop;
- :mod:`~oraculo_trio.api.client`: what the CLI (``alerts``, ``silence``, ``health``) talks
  to a running service with.
"""
