"""The fleet-wide TLS probe: what does each endpoint serve, seen from the user's side?

"Renewed" is not success; "every endpoint serves serial X with a valid chain" is. So the
probe connects like a client (TCP to host:port, SNI = the name users type), takes the
chain the server *sends* — without letting OpenSSL reject it, because a broken chain is
exactly what we must describe — and validates it with :func:`certfleet.pki.verify_chain`.

Design choices, each for a reason:

* The handshake runs over ``ssl.MemoryBIO`` in a tiny asyncio protocol instead of
  ``start_tls``: it needs no stream machinery, it sees the first raw bytes (so a plain
  HTTP server is named as such), and connect and handshake get separate timeouts, so a
  server that accepts and stays silent costs ``handshake_timeout`` and blocks no one.
* One ``CERT_NONE`` context is shared by every connection of a scan.
* Every failure becomes a :class:`ProbeStatus` and a sentence naming the endpoint; the
  probe never raises for a bad endpoint.
* Large scans can shard over processes (``processes=``): handshakes are CPU-bound
  (ECDHE + signature checks), and a fleet scan should use every core.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pickle
import socket
import ssl
import sys
import threading
import time
import warnings
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet import pki
from certfleet.models import CertificateInfo, Endpoint, ProbeResult, ProbeStatus

#: Below this many endpoints a worker process costs more (~0.25 s interpreter start) than
#: it saves; measured with bench/probe.py on 2 cores (1,000 names: 2 processes ≈ 1.2x one).
SHARD_THRESHOLD = 500

_VERIFY_REASONS = {s.value for s in ProbeStatus}


# --------------------------------------------------------------------------- contexts


def probe_context() -> ssl.SSLContext:
    """A client context that completes the handshake whatever the server sends.

    Verification happens afterwards, in Python, so that an expired or self-signed
    certificate is *reported* (with its serial) instead of aborting the connection.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@lru_cache(maxsize=1)
def _shared_context() -> ssl.SSLContext:
    """One context per process: contexts are costly to build and safe to share."""
    return probe_context()


def _verifying_context(roots: list[x509.Certificate]) -> ssl.SSLContext:
    """A client context trusting exactly ``roots``, checking the host name.

    Shared per set of roots (contexts are safe to share between threads and loops):
    loading a trust store costs more than a handshake, and a fan-out verifies each
    target's endpoints with the same roots a thousand times over."""
    key = tuple(roots)
    with _verifying_lock:
        ctx = _verifying_contexts.get(key)
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=pki.to_pem(roots).decode())
        with _verifying_lock:
            if len(_verifying_contexts) >= 8:
                _verifying_contexts.clear()
            _verifying_contexts[key] = ctx
    return ctx


_verifying_contexts: dict[tuple, ssl.SSLContext] = {}
_verifying_lock = threading.Lock()


@lru_cache(maxsize=1)
def system_roots() -> tuple[x509.Certificate, ...]:
    """The trust store a default client on this machine uses (OpenSSL's, else certifi)."""
    paths = ssl.get_default_verify_paths()
    for cafile in (paths.cafile, paths.openssl_cafile, _certifi_file()):
        if cafile and os.path.exists(cafile):
            with open(cafile, "rb") as f, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # some distro roots have RFC-breaking serials
                return tuple(pki.load_certs(f.read()))
    return ()


def _certifi_file() -> str | None:
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


# --------------------------------------------------------------------------- handshake


class _Handshake(asyncio.Protocol):
    """Drives one TLS client handshake over memory BIOs; ``done`` gets the DER chain."""

    def __init__(self, ctx: ssl.SSLContext, sni: str | None) -> None:
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._in, self._out, server_hostname=sni or None)
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.first_bytes = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._step()

    def data_received(self, data: bytes) -> None:
        if not self.first_bytes:
            self.first_bytes = data[:16]
        self._in.write(data)
        self._step()

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError(errno.ECONNRESET, "connection closed by peer"))
        return False

    def connection_lost(self, exc) -> None:
        self._fail(exc or ConnectionResetError(errno.ECONNRESET, "connection closed by peer"))

    def close(self) -> None:
        """Close cleanly after a handshake (close_notify is already queued); else abort."""
        if self.transport is None:
            return
        if not self.done.done():
            self.done.cancel()
        if self.done.cancelled() or self.done.exception() is not None:
            self.transport.abort()
        else:
            self.transport.close()

    def _step(self) -> None:
        if self.done.done():
            return
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._flush()
            self._fail(exc)
            return
        chain = _served_chain(self._tls)
        self._send_close_notify()
        self._flush()  # client Finished + close_notify leave in one segment
        self.done.set_result(chain)

    def _send_close_notify(self) -> None:
        """We have what we came for: say goodbye properly so servers log no error."""
        try:
            self._tls.unwrap()
        except ssl.SSLError:  # SSLWantReadError: the peer's close_notify is not awaited
            pass

    def _flush(self) -> None:
        data = self._out.read()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


def _served_chain(tls: ssl.SSLObject) -> list[bytes]:
    """The certificates the server sent, leaf first, as DER — whether or not valid.

    Python 3.13 has the public ``get_unverified_chain()``; 3.10–3.12 keep it on the
    private ``_sslobj`` (returning ``_ssl.Certificate`` objects).
    """
    getter = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain
    chain = getter() or []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]


# --------------------------------------------------------------------------- probe


class _Scan:
    """Per-scan state: the shared context, the trust roots, one clock, a verdict cache.

    The cache is keyed by (served chain, SNI): a fleet serves the same certificate from
    many hosts behind one name, and re-verifying identical bytes is wasted CPU.
    """

    def __init__(self, roots, ssl_context, at: datetime | None) -> None:
        self.ctx = ssl_context or _shared_context()
        self.roots_given = roots is not None
        self.roots = list(roots) if roots is not None else list(system_roots())
        self.at = at
        self.verdicts: dict[tuple, tuple] = {}
        # Fast path for the common case, a healthy endpoint: OpenSSL verifies chain and
        # name in C during the handshake (as the user's client does). Only endpoints
        # that fail it are probed again without verification, to say exactly why.
        # Not with a caller's context or a clock of its own (OpenSSL uses "now").
        self.verify_ctx = _verifying_context(self.roots) if (ssl_context is None and at is None and self.roots) else None


async def probe(endpoint: Endpoint, *, roots: list[x509.Certificate] | None,
                connect_timeout: float = 3.0, handshake_timeout: float = 5.0,
                ssl_context: ssl.SSLContext | None = None,
                at: datetime | None = None) -> ProbeResult:
    """Probe one endpoint. ``roots=None`` means this machine's default trust store."""
    scan = _Scan(roots, ssl_context, at)
    return await _probe(endpoint, scan, connect_timeout, handshake_timeout)


async def _probe(endpoint: Endpoint, scan: _Scan, connect_timeout: float,
                 handshake_timeout: float) -> ProbeResult:
    started = time.perf_counter()
    if scan.verify_ctx is not None:
        try:
            chain = await _fetch_chain(endpoint, scan.verify_ctx, connect_timeout, handshake_timeout)
            return _verified(endpoint, chain, time.perf_counter() - started)
        except _ProbeFailure as failure:
            if not failure.verification:
                return ProbeResult(endpoint, failure.status.value, failure.reason,
                                   elapsed=time.perf_counter() - started)
            # The handshake was refused on the chain or the name: look again, unverified.
    try:
        chain = await _fetch_chain(endpoint, scan.ctx, connect_timeout, handshake_timeout)
    except _ProbeFailure as failure:
        return ProbeResult(endpoint, failure.status.value, failure.reason,
                           elapsed=time.perf_counter() - started)
    return _judge(endpoint, chain, scan, time.perf_counter() - started)


class _ProbeFailure(Exception):
    def __init__(self, status: ProbeStatus, reason: str, verification: bool = False) -> None:
        super().__init__(reason)
        self.status, self.reason, self.verification = status, reason, verification


def _verified(endpoint: Endpoint, chain: list[bytes], elapsed: float) -> ProbeResult:
    """OpenSSL accepted chain and name during the handshake: describe the leaf, done."""
    info = _describe(chain[0])
    if not pki.san_covers(info.sans, endpoint.sni):  # OpenSSL may match the CN; we do not
        raise _ProbeFailure(ProbeStatus.HOSTNAME_MISMATCH, "", verification=True)
    return ProbeResult(endpoint=endpoint, status=ProbeStatus.OK.value,
                       reason=f"{endpoint}: serves serial {info.serial}: valid for {endpoint.sni} until "
                              f"{info.not_after:%Y-%m-%d %H:%M:%SZ}",
                       leaf=info, chain_pem=tuple(_pem(der) for der in chain),
                       chain_valid=True, hostname_valid=True, elapsed=elapsed)


async def _fetch_chain(endpoint: Endpoint, ctx: ssl.SSLContext, connect_timeout: float,
                       handshake_timeout: float) -> list[bytes]:
    """Connect, handshake, return the served DER chain; raise _ProbeFailure otherwise."""
    loop = asyncio.get_running_loop()
    proto = _Handshake(ctx, endpoint.sni)
    try:
        await asyncio.wait_for(
            loop.create_connection(lambda: proto, endpoint.host, endpoint.port),
            connect_timeout)
    except Exception as exc:  # any connect error is a verdict on this endpoint only
        raise _connect_failure(endpoint, exc, connect_timeout) from None
    try:
        chain = await asyncio.wait_for(proto.done, handshake_timeout)
    except asyncio.TimeoutError:
        raise _ProbeFailure(ProbeStatus.TIMEOUT, (
            f"{endpoint}: TCP connection accepted but no TLS handshake completed "
            f"within {handshake_timeout:g}s")) from None
    except (ssl.SSLError, OSError) as exc:
        raise _handshake_failure(endpoint, exc, proto.first_bytes) from None
    finally:
        proto.close()
    if not chain:
        raise _ProbeFailure(ProbeStatus.HANDSHAKE_FAILED,
                            f"{endpoint}: TLS handshake completed but no certificate was served")
    return chain


def _connect_failure(endpoint: Endpoint, exc: BaseException, timeout: float) -> _ProbeFailure:
    if isinstance(exc, asyncio.TimeoutError):
        return _ProbeFailure(ProbeStatus.TIMEOUT,
                             f"{endpoint}: no TCP connection within {timeout:g}s")
    if isinstance(exc, ConnectionRefusedError):
        return _ProbeFailure(ProbeStatus.REFUSED,
                             f"{endpoint}: connection refused (nothing listens on that port)")
    if isinstance(exc, ConnectionError):
        return _ProbeFailure(ProbeStatus.RESET, f"{endpoint}: connection reset while connecting ({exc})")
    if isinstance(exc, socket.gaierror):
        return _ProbeFailure(ProbeStatus.UNREACHABLE, f"{endpoint}: cannot resolve {endpoint.host} ({exc})")
    return _ProbeFailure(ProbeStatus.UNREACHABLE, f"{endpoint}: cannot connect ({exc})")


def _handshake_failure(endpoint: Endpoint, exc: BaseException, first_bytes: bytes) -> _ProbeFailure:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _ProbeFailure(ProbeStatus.UNTRUSTED_CHAIN, str(exc), verification=True)
    """Name what the server did instead of TLS: spoke HTTP, hung up, or sent an alert."""
    if first_bytes.startswith(b"HTTP/"):
        return _ProbeFailure(ProbeStatus.PLAIN_HTTP, (
            f"{endpoint}: the server answered in plain HTTP, not TLS "
            f"(is 'ssl' missing on this listener?)"))
    if isinstance(exc, (ConnectionError, ssl.SSLEOFError)) or (
            isinstance(exc, ssl.SSLError) and exc.reason == "UNEXPECTED_EOF_WHILE_READING"):
        return _ProbeFailure(ProbeStatus.RESET,
                             f"{endpoint}: connection closed by the server during the TLS handshake")
    detail = getattr(exc, "reason", None) or str(exc)
    if isinstance(exc, ssl.SSLError) and exc.reason == "WRONG_VERSION_NUMBER":
        detail = f"the server does not speak TLS (first bytes {first_bytes[:8]!r})"
    return _ProbeFailure(ProbeStatus.HANDSHAKE_FAILED,
                         f"{endpoint}: TLS handshake failed: {detail}")


def _judge(endpoint: Endpoint, chain: list[bytes], scan: _Scan, elapsed: float) -> ProbeResult:
    """Turn the served chain into a verdict, reusing one for identical (chain, SNI)."""
    key = (tuple(chain), endpoint.sni)
    if key not in scan.verdicts:
        scan.verdicts[key] = _verdict(chain, endpoint.sni, scan)
    status, message, leaf, chain_valid, hostname_valid = scan.verdicts[key]
    return ProbeResult(
        endpoint=endpoint,
        status=status.value,
        reason=f"{endpoint}: {message}",
        leaf=leaf,
        chain_pem=tuple(_pem(der) for der in chain) if leaf else (),
        chain_valid=chain_valid,
        hostname_valid=hostname_valid,
        elapsed=elapsed,
    )


def _verdict(chain: list[bytes], sni: str, scan: _Scan) -> tuple:
    try:
        return _validate(chain, sni, scan)
    except Exception as exc:  # a malformed served certificate must not abort the scan
        return (ProbeStatus.UNTRUSTED_CHAIN,
                f"served certificate cannot be parsed or validated ({type(exc).__name__}: {exc})",
                None, False, False)


def _validate(chain: list[bytes], sni: str, scan: _Scan) -> tuple:
    certs = [_load_der(der) for der in chain]
    leaf, intermediates = certs[0], certs[1:]
    info = _describe(chain[0])
    if not scan.roots:
        why = "no trust roots given" if scan.roots_given else "no system trust store found"
        return (ProbeStatus.UNTRUSTED_CHAIN, f"cannot validate serial {info.serial}: {why}",
                info, False, pki.san_covers(info.sans, sni))
    at = scan.at or datetime.now(timezone.utc)
    check = pki.verify_chain(leaf, intermediates, scan.roots, sni, at)
    status = ProbeStatus(check.reason) if check.reason in _VERIFY_REASONS else ProbeStatus.UNTRUSTED_CHAIN
    hostname_valid = pki.san_covers(info.sans, sni)
    chain_valid = check.ok or _chain_valid_ignoring_host(leaf, intermediates, info, scan.roots, at, check.reason)
    message = f"serves serial {info.serial}: {check.message}" if check.ok else check.message
    return status, message, info, chain_valid, hostname_valid


def _chain_valid_ignoring_host(leaf, intermediates, info: CertificateInfo, roots, at, reason) -> bool:
    """For HOSTNAME_MISMATCH, say whether the chain itself is good (check a name it has)."""
    if reason != "HOSTNAME_MISMATCH" or not info.sans:
        return False
    return pki.verify_chain(leaf, intermediates, roots, info.sans[0], at).ok


@lru_cache(maxsize=4096)
def _load_der(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


@lru_cache(maxsize=4096)
def _describe(der: bytes) -> CertificateInfo:
    return pki.describe(_load_der(der))


@lru_cache(maxsize=4096)
def _pem(der: bytes) -> str:
    return _load_der(der).public_bytes(serialization.Encoding.PEM).decode()


# --------------------------------------------------------------------------- many


async def probe_many(endpoints, *, roots: list[x509.Certificate] | None,
                     concurrency: int = 200, connect_timeout: float = 3.0,
                     handshake_timeout: float = 5.0, ssl_context: ssl.SSLContext | None = None,
                     at: datetime | None = None, processes: int | None = None) -> list[ProbeResult]:
    """Probe every endpoint, at most ``concurrency`` at a time; results in input order.

    ``processes=None`` picks: one process below :data:`SHARD_THRESHOLD` endpoints, else
    one per core. Sharding needs the default context (an SSLContext cannot be pickled).
    """
    endpoints = list(endpoints)
    processes = _choose_processes(len(endpoints), processes, ssl_context)
    timeouts = dict(connect_timeout=connect_timeout, handshake_timeout=handshake_timeout)
    if processes > 1:
        return await _probe_sharded(endpoints, roots, processes, concurrency, at, timeouts)
    scan = _Scan(roots, ssl_context, at)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(endpoint: Endpoint) -> ProbeResult:
        async with gate:
            return await _probe(endpoint, scan, **timeouts)

    return list(await asyncio.gather(*(one(e) for e in endpoints)))


def probe_sync(endpoints, **kw) -> list[ProbeResult]:
    """Blocking :func:`probe_many` for callers without an event loop (CLI, sync tasks)."""
    kw.setdefault("roots", None)
    return asyncio.run(probe_many(endpoints, **kw))


def _choose_processes(count: int, processes: int | None, ssl_context) -> int:
    if ssl_context is not None:
        return 1
    if processes is None:
        processes = (os.cpu_count() or 1) if count >= SHARD_THRESHOLD else 1
    return max(1, min(processes, count))


async def _probe_sharded(endpoints, roots, processes, concurrency, at, timeouts) -> list[ProbeResult]:
    """Interleave endpoints over processes: this one probes shard 0, children the rest.

    Children are plain ``python -c`` subprocesses fed a pickle on stdin, not
    ``multiprocessing``: no fork of a threaded parent (a Prefect worker), and no
    re-import of the caller's ``__main__`` (a script without a main guard still works).
    """
    shards = [endpoints[i::processes] for i in range(processes)]
    per_process = max(1, concurrency // processes)
    job = dict(roots_pem=pki.to_pem(list(roots)) if roots is not None else None,
               concurrency=per_process, at=at, **timeouts)
    parts = await asyncio.gather(
        probe_many(shards[0], roots=roots, concurrency=per_process, at=at, processes=1, **timeouts),
        *(_run_child(shard, job) for shard in shards[1:]))
    results: list[ProbeResult | None] = [None] * len(endpoints)
    for i, part in enumerate(parts):
        results[i::processes] = part
    return results


async def _run_child(shard: list[Endpoint], job: dict) -> list[ProbeResult]:
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from certfleet.probe import _child_main; _child_main()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await child.communicate(pickle.dumps(dict(job, endpoints=shard)))
    if child.returncode != 0:
        raise RuntimeError(f"probe worker process failed ({child.returncode}): "
                           f"{err.decode(errors='replace')[-1000:]}")
    return pickle.loads(out)


def _child_main() -> None:
    """Worker-process entry point: pickled job on stdin, pickled results on stdout."""
    job = pickle.loads(sys.stdin.buffer.read())
    roots_pem = job.pop("roots_pem")
    roots = pki.load_certs(roots_pem) if roots_pem is not None else None
    results = asyncio.run(probe_many(job.pop("endpoints"), roots=roots, processes=1, **job))
    sys.stdout.buffer.write(pickle.dumps(results))
