"""The storage contract, the same assertions on every adapter: local directory, S3 and
Secrets Manager (both on the moto server, over HTTP).

The lease tests use real processes and real signals: a holder that is SIGKILLed, a
holder that is SIGSTOPped past its TTL and then continued (the "paused worker" whose
late write must be refused by its fencing token).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from certfleet.storage import (
    Conflict,
    Keys,
    LeaseLost,
    LocalStorage,
    LockTimeout,
    NotFound,
    Storage,
    StoreError,
)

BACKENDS = ["local"]  # S3 and Secrets Manager adapters join in blocks/stores

# A holder process: builds the storage from a JSON spec, takes the lease, reports its
# token, then obeys commands on stdin ("write <key> <value>": a fenced put).
HOLDER = r"""
import json, sys
spec = json.loads(sys.argv[1])
if spec["kind"] == "local":
    from certfleet.storage import LocalStorage
    storage = LocalStorage(spec["root"])
else:
    import boto3
    client = boto3.client(spec["service"], endpoint_url=spec["endpoint"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    if spec["kind"] == "s3":
        from certfleet.blocks.stores.s3 import S3Storage
        storage = S3Storage(client, spec["bucket"], spec["prefix"])
    else:
        from certfleet.blocks.stores.secrets_manager import SecretsManagerStorage
        storage = SecretsManagerStorage(client, spec["prefix"])
lease = storage.lock(spec["key"], ttl=spec["ttl"], timeout=60)
print("locked", lease.token, flush=True)
for line in sys.stdin:
    cmd, key, value = line.split()
    try:
        storage.put(key, value.encode(), fence=lease)
        print("written", flush=True)
    except Exception as exc:
        print("refused", type(exc).__name__, exc, flush=True)
"""


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    """(storage, spec): a fresh, empty storage of each kind and how a subprocess builds it."""
    if request.param == "local":
        root = tmp_path / "store"
        return LocalStorage(root), {"kind": "local", "root": str(root)}
    aws = request.getfixturevalue("aws")
    if request.param == "s3":
        from certfleet.blocks.stores.s3 import S3Storage

        aws.client("s3").create_bucket(Bucket="certfleet-storage")
        spec = {"kind": "s3", "service": "s3", "endpoint": aws.endpoint_url, "bucket": "certfleet-storage", "prefix": "t/"}
        return S3Storage(aws.client("s3"), "certfleet-storage", "t/"), spec
    from certfleet.blocks.stores.secrets_manager import SecretsManagerStorage

    spec = {"kind": "secrets-manager", "service": "secretsmanager", "endpoint": aws.endpoint_url, "prefix": "t/"}
    return SecretsManagerStorage(aws.client("secretsmanager"), "t/"), spec


def test_get_put_list_delete(backend):
    storage, _ = backend
    assert isinstance(storage, Storage)
    with pytest.raises(NotFound) as missing:
        storage.get("shop/current")
    assert isinstance(missing.value, KeyError) and "shop/current" in str(missing.value)
    v1 = storage.put("shop/current", b"01")
    storage.put("shop/versions/01/meta.json", b"{}")
    storage.put("_ledger/pebble.json", b"[]")
    assert storage.get("shop/current") == b"01"
    item = storage.read("shop/current")
    assert item.value == b"01" and item.version == v1 and 0 <= item.age < 120
    assert storage.stat("shop/current").size == 2
    v2 = storage.put("shop/current", b"02")
    assert v2 != v1 and storage.get("shop/current") == b"02"
    assert storage.list("shop/") == ["shop/current", "shop/versions/01/meta.json"]
    assert storage.list() == ["_ledger/pebble.json", "shop/current", "shop/versions/01/meta.json"]
    storage.delete("shop/versions/01/meta.json")
    storage.delete("shop/versions/01/meta.json")  # absent: fine
    assert storage.list("shop/") == ["shop/current"]
    with pytest.raises(StoreError, match="invalid storage key"):
        storage.put("../etc/passwd", b"x")


def test_compare_and_set(backend):
    storage, _ = backend
    v1 = storage.put("_ledger/x.json", b"1", create_only=True)
    with pytest.raises(Conflict):
        storage.put("_ledger/x.json", b"other", create_only=True)
    v2 = storage.put("_ledger/x.json", b"2", if_match=v1)
    with pytest.raises(Conflict):
        storage.put("_ledger/x.json", b"lost update", if_match=v1)
    assert storage.get("_ledger/x.json") == b"2" and storage.read("_ledger/x.json").version == v2


def test_concurrent_compare_and_set_loses_no_update(backend):
    """Four threads increment one counter by read + compare-and-set: no increment is lost."""
    storage, _ = backend
    storage.put("_ledger/counter", b"0")
    per_thread = 5

    def bump():
        for _ in range(per_thread):
            while True:
                item = storage.read("_ledger/counter")
                try:
                    storage.put("_ledger/counter", str(int(item.value) + 1).encode(), if_match=item.version)
                    break
                except Conflict:
                    continue

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.get("_ledger/counter") == str(4 * per_thread).encode()


def test_local_files_are_private_and_writes_atomic(tmp_path):
    storage = LocalStorage(tmp_path / "store")
    storage.put("shop/versions/01/key.pem", b"k")
    for path in [tmp_path / "store", tmp_path / "store/shop", tmp_path / "store/shop/versions/01"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE((tmp_path / "store/shop/versions/01/key.pem").stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "store/shop/versions/01")) == ["key.pem"]  # no temp file left
    (tmp_path / "store/shop/.lock").write_text("")  # hidden files are not keys
    assert storage.list("shop") == ["shop/versions/01/key.pem"]


def test_local_reads_a_legacy_current_symlink(tmp_path):
    """Stores written before the seam kept current as a symlink: it still reads as the serial."""
    root = tmp_path / "store"
    (root / "shop/versions/0a").mkdir(parents=True)
    os.symlink("versions/0a", root / "shop/current")
    storage = LocalStorage(root)
    assert storage.get("shop/current") == b"0a" and "shop/current" in storage.list("shop/")
    storage.put("shop/current", b"0b")
    assert not (root / "shop/current").is_symlink() and storage.get("shop/current") == b"0b"


def test_lock_is_exclusive_and_tokens_grow(backend):
    storage, _ = backend
    key = Keys.lock("shop")
    with storage.lock(key, ttl=30) as first:
        with pytest.raises(LockTimeout, match="locked by another run"):
            storage.lock(key, ttl=30, timeout=0.3)
        first.check()
    with storage.lock(key, ttl=30) as second:
        assert second.token == first.token + 1
    with pytest.raises(LeaseLost, match="released"):
        second.check()


def test_lease_outlives_its_ttl_while_held(backend):
    """A holder that stays three TTLs keeps the lock: the lease is renewed."""
    storage, _ = backend
    key = Keys.lock("shop")
    ttl = 1.5
    with storage.lock(key, ttl=ttl) as lease:
        started = time.monotonic()
        while time.monotonic() - started < 3 * ttl or lease.renewals < 3:
            with pytest.raises(LockTimeout):
                storage.lock(key, ttl=ttl, timeout=0.2)
        lease.check()
        storage.put("shop/current", b"01", fence=lease)
        assert lease.lost is None
    assert storage.get("shop/current") == b"01"


def _holder(spec: dict, key: str, ttl: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps({**spec, "key": key, "ttl": ttl})],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line[:1] == ["locked"], line
    return proc, int(line[1])


def test_sigkilled_holder_loses_the_lock_after_the_ttl(backend):
    storage, spec = backend
    key = Keys.lock("shop")
    proc, token = _holder(spec, key, ttl=4)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with pytest.raises(LockTimeout):  # the dead holder's lease still runs for up to one TTL
            storage.lock(key, ttl=4, timeout=0)
        with storage.lock(key, ttl=4, timeout=60) as lease:
            assert lease.token == token + 1
    finally:
        proc.kill()
        proc.wait()


def test_a_paused_holder_s_late_write_is_refused_by_its_token(backend):
    """SIGSTOP the holder past its TTL, let another take the lock and write, SIGCONT it:
    its fenced write is refused and the successor's value stays."""
    storage, spec = backend
    key = Keys.lock("shop")
    proc, token = _holder(spec, key, ttl=1.5)
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        with storage.lock(key, ttl=30, timeout=60) as successor:
            assert successor.token == token + 1
            storage.put("shop/current", b"successor", fence=successor)
            os.kill(proc.pid, signal.SIGCONT)
            proc.stdin.write("write shop/current stale\n")
            proc.stdin.flush()
            answer = proc.stdout.readline()
            assert answer.startswith("refused LeaseLost"), answer
            assert storage.get("shop/current") == b"successor"
            successor.check()
    finally:
        proc.kill()
        proc.wait()
