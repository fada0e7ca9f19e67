# certfleet's runtime image, for Docker and Kubernetes work pools (docs/kubernetes.md).
#
#   docker build -t registry.example.com/certfleet:0.1.0 .
#
# The wheel is built from this checkout and installed with every dependency pinned by
# constraints.txt (the versions the test suite ran with). No checkout, no dev tools
# (certfleet-dev) and no build tools end up in the final image: flows are imported from
# the installed package (certfleet.flows.*), as deployments/prefect.yaml's entry points say.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY certfleet ./certfleet
COPY flows ./flows
COPY tasks ./tasks
COPY blocks ./blocks
COPY deployments ./deployments
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir -c /tmp/constraints.txt /wheels/certfleet-*.whl \
    && rm -rf /wheels /tmp/constraints.txt
RUN useradd --create-home --uid 10001 certfleet
USER certfleet
WORKDIR /home/certfleet
# A Prefect worker's flow-run container runs `prefect flow-run execute`; the CLI is here too.
CMD ["certfleet", "--help"]
