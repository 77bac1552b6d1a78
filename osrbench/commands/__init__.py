"""The ``osrbench`` commands, one module per command; each has ``register(subparsers)``.

A command module adds its sub-parser(s) and holds the ``cmd_*`` function(s) they call: it reads
the arguments, calls the library (engine, compare, report, sweep, scaffold...) and prints. Only
commands print; nothing outside this package and :mod:`osrbench.cli` imports a command.
Registering a command imports no torch: what needs it is imported inside the ``cmd_*`` functions.
"""
