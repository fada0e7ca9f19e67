"""Test configuration: real services start once per session, on free loopback ports.

Each service's fixtures live in one plugin module under tests/plugins/.
"""

from certfleet import prefect_defaults

prefect_defaults.apply()

pytest_plugins = [
    "tests.plugins.prefect",
    "tests.plugins.pebble",
    "tests.plugins.nginx",
    "tests.plugins.knot",
    "tests.plugins.sshd",
    "tests.plugins.moto",
    "tests.plugins.fleet",
]
