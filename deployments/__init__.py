"""certfleet's deployments as data: prefect.yaml ships in the wheel (certfleet.deployments),
so ``certfleet deploy`` can create them from an install with no checkout."""
