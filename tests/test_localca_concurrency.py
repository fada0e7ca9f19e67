"""The local CA under concurrency: revocations from 20 threads all land, and two
processes creating the CA at once end up with one CA."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from certfleet.blocks.issuers.local_ca import LocalCAIssuer
from certfleet.localca import LocalCA


def test_twenty_concurrent_revocations_are_all_recorded(tmp_path):
    issuer = LocalCAIssuer(directory=str(tmp_path / "ca"))
    ca = LocalCA.load_or_create(tmp_path / "ca")
    leaves = [ca.issue([f"h{i}.shop.test"])[0] for i in range(20)]
    barrier = threading.Barrier(20)
    errors = []

    def revoke(pem):
        barrier.wait()
        try:
            issuer.revoke(pem, 1)
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=revoke, args=(p,)) for p in leaves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    from certfleet import pki

    expected = {pki.serial_hex(pki.load_certs(p)[0]) for p in leaves}
    recorded = json.loads((tmp_path / "ca" / "revoked.json").read_text())
    assert set(recorded) == expected and len(recorded) == 20
    assert issuer.revoked() == recorded


def test_two_processes_creating_the_ca_at_once_get_one_ca(tmp_path):
    code = ("import sys; from certfleet.localca import LocalCA; "
            "sys.stdin.readline(); print(LocalCA.load_or_create(sys.argv[1]).root_cert.serial_number)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ca")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:  # all imported and waiting: release them together
        p.stdin.write("go\n")
        p.stdin.flush()
    serials = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(serials) == 1  # every process uses the same root
    assert str(LocalCA.load(tmp_path / "ca").root_cert.serial_number) in serials
