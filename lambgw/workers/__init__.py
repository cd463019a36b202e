"""Several gateway processes on one machine, sharing the S3 listeners: ``--workers N``.

:mod:`~lambgw.workers.launch` says which a process is (from ``make_service``);
:mod:`~lambgw.workers.supervisor` is the process twistd runs; :mod:`~lambgw.workers.worker`
is what each gateway process it starts adds to itself; :mod:`~lambgw.workers.sockets`,
:mod:`~lambgw.workers.logs` and :mod:`~lambgw.workers.admin` carry the listeners, the log
and the admin pages between them.  ``docs/workers.md`` says what is shared and how.
"""
