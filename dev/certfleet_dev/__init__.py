"""certfleet's development tools, shipped apart from the runtime package.

Launchers that start real services on free loopback ports for the tests, the
benchmarks and ``certfleet demo`` (Pebble + challtestsrv, nginx, Knot, sshd), and the
demo fleet itself. A production install (``pip install certfleet``) has none of this;
``pip install certfleet-dev`` (from a checkout: ``pip install -e ./dev``) adds it.
"""
