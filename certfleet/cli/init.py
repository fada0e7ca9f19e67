"""``certfleet init`` and ``certfleet validate``: start an inventory, check one."""

from __future__ import annotations

from pathlib import Path

from certfleet.cli.base import EXIT_OK, UsageError, load_checked

def cmd_validate(args) -> int:
    from certfleet.blocks import registry
    from certfleet.inventory import InventoryError

    inv = load_checked(args.inventory)
    missing = registry.missing_paths(inv)
    if missing:
        raise InventoryError(missing)
    print(f"{args.inventory}: {len(inv.certificates)} certificates, {len(inv.issuers)} issuers, "
          f"{len(inv.targets)} targets, {len(inv.discovery)} discovery sources: OK")
    return EXIT_OK


SCAFFOLD = """\
# certfleet inventory — what certificates exist, who issues them, where they go,
# and which endpoints must serve them. Reference: docs/inventory.md.
# Check it with:  certfleet validate -i {path}
version: 1

# The store keeps every issued version (certificate + key) and is the source of truth.
# Relative paths are relative to this file. See docs/stores.md (S3, Secrets Manager,
# encryption at rest).
store:
  path: store
  keep_versions: 10
  # encryption_key: {{env: CERTFLEET_STORE_KEY}}   # base64 32-byte key(s), comma separated

# PEM roots that endpoints are verified against (what "valid" means for your users).
# The local CA below keeps its root in ca/root.pem (`certfleet init` creates it).
trust_bundle: ca/root.pem

issuers:
  # A local CA for internal names and first steps, in ./ca (created by `certfleet init`).
  internal:
    kind: local-ca
    directory: ca
    validity_days: 90
  # An ACME CA (Let's Encrypt) with a dns-01 solver; see docs/solvers.md.
  # letsencrypt:
  #   kind: acme
  #   directory_url: https://acme-v02.api.letsencrypt.org/directory
  #   email: ops@example.com
  #   solver:
  #     kind: rfc2136
  #     nameserver: ns1.example.com
  #     tsig_name: acme-key
  #     tsig_secret: {{env: TSIG_SECRET}}   # secrets are references, never inline

targets:
  # Files on this machine, then a config test and a reload; see docs/targets.md
  # (ssh, s3, acm, secrets-manager, kubernetes, webhook).
  web-1:
    kind: file
    fullchain_path: tls/example.pem
    key_path: tls/example.key
    # config_test_command: [nginx, -t]
    # reload_command: [nginx, -s, reload]

certificates:
  - name: example
    domains: [example.internal, www.example.internal]
    issuer: internal
    targets: [web-1]
    # Endpoints are checked from the user's side of the wire: "sni@host:port" or "host:port".
    # endpoints: ["203.0.113.10:443", "www.example.internal@203.0.113.10:443"]

# Where else to look for live certificates (reported as UNMANAGED until adopted);
# see docs/discovery.md.
# discovery:
#   - {{kind: tls, endpoints: ["203.0.113.10:443"]}}
"""


def block_classes() -> list[type]:
    """Every block type certfleet defines: issuers, solvers, targets, stores, discovery, notifiers."""
    from certfleet.blocks import registry
    from certfleet.blocks.aws import AwsCredentials
    from certfleet.blocks.stores.s3 import S3Store
    from certfleet.blocks.stores.secrets_manager import SecretsManagerStore

    classes: list[type] = [AwsCredentials, S3Store, SecretsManagerStore]
    for kinds in (registry._issuer_kinds, registry._solver_kinds, registry._target_kinds, registry._discovery_kinds):
        classes += list(kinds().values())
    try:
        from certfleet.blocks.notifiers.slack import SlackNotifier
        classes.append(SlackNotifier)
    except ImportError:  # notifiers are optional
        pass
    return list(dict.fromkeys(classes))


def register_blocks(classes: list[type] | None = None) -> list[str]:
    """Register certfleet's block types (nested ones too) with the Prefect API; returns their slugs."""
    slugs = []
    for cls in classes or block_classes():
        cls.register_type_and_schema()
        slugs.append(cls.get_block_type_slug())
    return slugs


def cmd_init(args) -> int:
    if args.directory is not None or not args.register_blocks:
        directory = Path(args.directory or ".")
        path = directory / "inventory.yaml"
        if path.exists():
            raise UsageError(f"{path}: already exists; not overwritten (move it away, or edit it)")
        directory.mkdir(parents=True, exist_ok=True)
        with open(path, "x") as f:  # "x": never overwrite, even if it appeared meanwhile
            f.write(SCAFFOLD.format(path=path))
        # Everything the scaffold names exists from the start, so `validate` and `status`
        # pass on it as written: the local CA (its root is the trust bundle) and the
        # file target's directory.
        from certfleet.localca import LocalCA

        LocalCA.load_or_create(directory / "ca")
        (directory / "tls").mkdir(mode=0o700, exist_ok=True)
        print(f"wrote {path} (and the local CA in {directory / 'ca'})\nnext: edit it, then `certfleet validate -i {path}` and `certfleet status -i {path}`")
    if args.register_blocks:
        from prefect.settings import PREFECT_API_URL

        try:
            slugs = register_blocks()
        except Exception as exc:  # noqa: BLE001 - API down, refused, bad URL: one line, exit 2
            where = PREFECT_API_URL.value() or "the temporary local server"
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"init --register-blocks: cannot reach the Prefect API at {where} "
                             f"({type(exc).__name__}: {why}); nothing registered") from None
        where = PREFECT_API_URL.value() or "a temporary local server (set PREFECT_API_URL to register with yours)"
        print(f"registered {len(slugs)} block types with {where}:")
        for s in slugs:
            print(f"  {s}")
    return EXIT_OK


def register(add) -> None:
    sp = add("init", "write a commented inventory.yaml to start from, and/or register certfleet's block types", """
        Examples:
          certfleet init ./fleet                       # writes ./fleet/inventory.yaml (never overwrites)
          certfleet init --register-blocks             # only register the block types with $PREFECT_API_URL
          certfleet init ./fleet --register-blocks     # both

        The scaffold validates as it is: a local CA issuer (created in ./ca by init, so its root, the trust bundle, exists)
        and one file target. Registering block types makes every certfleet block
        (issuers, solvers, targets, stores, discovery, notifiers) configurable in the UI.""",
        cmd_init, inventory=False)
    sp.add_argument("directory", nargs="?", help="directory for inventory.yaml (default: the current one)")
    sp.add_argument("--register-blocks", action="store_true", help="register certfleet's block types with the Prefect API")

    sp = add("validate", "check the inventory and every issuer, target and discovery configuration", """
        Examples:
          certfleet validate -i inventory.yaml

        Every problem is printed on stderr as `file: path.to[0].field: message`, and
        nothing runs. Secret references ({env: NAME}) must resolve.""", cmd_validate)
