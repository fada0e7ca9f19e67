"""A small, Prefect-free ACME (RFC 8555) client on top of the ``acme`` package.

Why not ``acme.client.ClientV2`` alone: it retries ``badNonce`` only once (and every
poll is a POST, so a CA that rejects some good nonces breaks long runs), it sleeps a
full second before its first poll, and its errors do not say whether trying again can
help. This module adds three things around it:

* ``badNonce`` retried on every request, transient failures (5xx, connection errors,
  ``rateLimited`` with Retry-After) retried per step with exponential backoff + jitter;
* polling of authorizations and orders at short, growing intervals with a deadline;
* one error type, :class:`AcmeError`, with ``transient`` set, and the CA's problem
  detail in the message — never any key material.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import josepy as jose
import requests
from acme import challenges, crypto_util, errors, messages
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certfleet import ari
from certfleet.httputil import retry_after_seconds
from certfleet.challenges import DNS01, HttpSolver, describe, dns01_info, supported_types
from certfleet.contracts import DnsSolver, IssuanceRequest, Issued

log = logging.getLogger(__name__)

T = TypeVar("T")

# Problem types worth trying again: the CA said "not now", not "no".
_TRANSIENT_PROBLEMS = {"badNonce", "serverInternal", "rateLimited"}
_PENDING = {"pending", "processing"}


class _NewOrder(messages.NewOrder):
    """newOrder with RFC 9773's ``replaces``: the certID of the certificate being renewed.

    ``acme``'s ``NewOrder`` has no such field; an ARI-aware CA uses it to exempt the
    renewal from rate limits and to know the old certificate may be revoked/retired.
    """

    replaces: str | None = jose.field("replaces", omitempty=True)


class AcmeError(Exception):
    """An ACME operation failed. ``transient`` says whether retrying later can help.

    Retry ownership: every CA failure is retried *here*, per protocol step (badNonce on
    every request, 5xx / connection errors / ``rateLimited`` with backoff and
    Retry-After), so an ``AcmeError`` that reaches a caller has already had its retries
    (``retried_by_client``). Callers must not retry it again: layers multiply (5 tries
    inside 4 task attempts made 20 requests to a CA that was down).

    ``problem_type`` is the RFC 8555 short code (``rateLimited``, ``unauthorized``...)
    when the CA sent a problem document, ``detail`` the CA's own words, ``retry_after``
    seconds the CA asked us to wait (or ``None``). For rate-limit bookkeeping:
    ``order_url`` is set when the failure came after a new order was placed, and
    ``identifier`` names the domain whose validation the CA rejected.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        problem_type: str | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
        order_url: str | None = None,
        identifier: str | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.problem_type = problem_type
        self.detail = detail
        self.retry_after = retry_after
        self.order_url = order_url
        self.identifier = identifier

    #: The client's own retry layer has run for this error; callers add none.
    retried_by_client = True


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one ACME step is retried before a transient error is raised.

    ``attempts`` counts tries of a step (not only retries). Delays double from
    ``base_delay`` up to ``max_delay`` with "equal jitter". A Retry-After longer than
    ``max_retry_after`` is not slept inside the client: the error goes to the caller,
    which can reschedule instead of holding a worker. ``nonce_attempts`` bounds the
    per-request ``badNonce`` loop.
    """

    attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    nonce_attempts: int = 10

    def delay(self, attempt: int) -> float:
        """Backoff before try number ``attempt + 1`` (attempt counts from 0)."""
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class _Published:
    """One challenge a solver was asked to publish, and how to take it down again."""

    kind: str
    domain: str
    cleanup: Callable[[], None]


@dataclass(frozen=True)
class PollPolicy:
    """Polling of authorizations and orders: start fast, back off, give up at a deadline."""

    first: float = 0.05
    factor: float = 1.6
    max_interval: float = 1.0
    timeout: float = 120.0


def generate_account_key() -> bytes:
    """A new ACME account key: EC P-256 (ES256, which josepy and every CA support), PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_account_key(pem: bytes) -> tuple[jose.JWK, jose.JWASignature]:
    """JWK and signing algorithm for an EC (P-256/384/521) or RSA account key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise AcmeError("account key is not an unencrypted PEM private key", transient=False) from None
    if isinstance(key, rsa.RSAPrivateKey):
        return jose.JWKRSA(key=key), jose.RS256
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": jose.ES256, "secp384r1": jose.ES384, "secp521r1": jose.ES512}
        if key.curve.name in algs:
            return jose.JWKEC(key=key), algs[key.curve.name]
    raise AcmeError("account key must be RSA or EC P-256/P-384/P-521", transient=False)


class _Network(ClientNetwork):
    """``ClientNetwork`` that retries badNonce on every POST and remembers the last reply.

    The last status code and Retry-After are kept because ``acme``'s problem objects do
    not carry the HTTP response, and both decide whether (and when) to retry.
    """

    def __init__(self, *args: Any, nonce_attempts: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nonce_attempts = nonce_attempts
        self.last_status: int | None = None
        self.last_retry_after: str | None = None
        self.last_problem: dict | None = None  # problem document of the last error reply
        self.nonce_retries = 0  # how often the CA rejected a nonce (observability, tests)

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_status, self.last_retry_after, self.last_problem = None, None, None
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_status = response.status_code
        self.last_retry_after = response.headers.get("Retry-After")
        if not response.ok and "problem+json" in response.headers.get("Content-Type", ""):
            try:  # kept because acme turns a 409 into a ConflictError without the problem
                self.last_problem = response.json()
            except ValueError:
                pass
        if not response.ok and self.REPLAY_NONCE_HEADER in response.headers:
            self._add_nonce(response)  # error replies carry a fresh nonce: saves a HEAD
        return response

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(self.nonce_attempts):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt == self.nonce_attempts - 1:
                    raise
                self.nonce_retries += 1
                log.debug("badNonce from the CA, retrying with a fresh nonce (%d)", attempt + 1)
        raise AssertionError("unreachable")


class AcmeClient:
    """One ACME account at one CA: register or look up the account, issue, revoke.

    Nothing touches the network until the first call, so building a client is free and
    cannot fail because the CA is down.
    """

    def __init__(
        self,
        directory_url: str,
        account_key_pem: bytes,
        *,
        email: str | None = None,
        verify: str | bool = True,
        eab_kid: str | None = None,
        eab_hmac_key: str | None = None,
        user_agent: str = "certfleet",
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        network_timeout: float = 30.0,
    ) -> None:
        self.directory_url = directory_url
        self.email = email
        self._eab = (eab_kid, eab_hmac_key) if eab_kid and eab_hmac_key else None
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollPolicy()
        self._key, alg = _load_account_key(account_key_pem)
        self._net = _Network(
            key=self._key,
            alg=alg,
            verify_ssl=verify,
            user_agent=user_agent,
            timeout=network_timeout,  # type: ignore[arg-type]
            nonce_attempts=self.retry.nonce_attempts,
        )
        self._acme: ClientV2 | None = None
        self._regr: messages.RegistrationResource | None = None

    # ---- account -----------------------------------------------------------------

    @property
    def account_url(self) -> str | None:
        """The account's URL once registered or looked up (the ``kid`` of every JWS)."""
        return self._regr.uri if self._regr else None

    def register_or_fetch(self) -> str:
        """Return the account URL, creating the account only if the CA does not know the key.

        Looks up first (``onlyReturnExisting``) so a renewal never re-registers, and
        caches the result for the life of this client.
        """
        if self._regr is not None:
            return self._regr.uri
        client = self._client()
        regr = self._lookup_account(client)
        if regr is None:
            regr = self._create_account(client)
        self._net.account = regr
        self._regr = regr
        return regr.uri

    def _lookup_account(self, client: ClientV2) -> messages.RegistrationResource | None:
        """The existing account for this key, or ``None`` when the CA has none."""
        query = messages.NewRegistration(only_return_existing=True)
        try:
            response = self._call("account lookup", lambda: self._post(client, client.directory["newAccount"], query))
        except AcmeError as exc:
            if exc.problem_type == "accountDoesNotExist":
                return None
            raise
        uri = response.headers["Location"]
        log.debug("acme: using existing account %s", uri)
        return messages.RegistrationResource(body=messages.Registration.from_json(response.json()), uri=uri)

    def _create_account(self, client: ClientV2) -> messages.RegistrationResource:
        """Register a new account, agreeing to the CA's terms, with EAB when configured."""
        eab = None
        if self._eab:
            kid, hmac_key = self._eab
            eab = messages.ExternalAccountBinding.from_data(self._key.public_key(), kid, hmac_key, client.directory)
        body = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True, external_account_binding=eab
        )

        def create() -> messages.RegistrationResource | None:
            try:
                return client.new_account(body)
            except errors.ConflictError:  # raced with another registration of this key
                return None

        regr = self._call("account creation", create)
        if regr is None:
            return self._lookup_account(client)  # type: ignore[return-value]
        log.info("acme: created account %s", regr.uri)
        return regr

    # ---- issuance ----------------------------------------------------------------

    def issue(self, request: IssuanceRequest, solver: DnsSolver | HttpSolver) -> Issued:
        """Run one order to a certificate; whatever the solver published is always removed.

        The challenge type is the solver's: dns-01 for a ``DnsSolver``, http-01 for an
        ``HttpSolver`` (dns-01 first when it is both). Authorizations the CA already
        holds as valid (reuse) are skipped, so a renewal may publish nothing at all.
        """
        self._check_request(request)
        types = self._solver_types(solver)
        self.register_or_fetch()
        client = self._client()
        order = self._new_order(client, request)
        log.debug("acme: order %s for %s (%s)", order.uri, request.name, ", ".join(request.domains))
        try:
            fullchain = self._authorize_and_finalize(client, order, solver, types)
        except AcmeError as exc:
            exc.order_url = order.uri  # the order counts against the CA's new-orders limit
            raise
        log.info("acme: issued %s (order %s)", request.name, order.uri)
        return Issued(fullchain_pem=fullchain.encode(), issuer_name=self.directory_url, detail=f"order {order.uri}")

    def _new_order(self, client: ClientV2, request: IssuanceRequest) -> messages.OrderResource:
        """Place the order, with ``replaces`` when asked for and the CA offers ARI.

        A CA that refuses the ``replaces`` (already replaced by another order, or a
        certID it does not know for this account) gets the order once more without it:
        the renewal matters more than the hint.
        """
        replaces = request.replaces if request.replaces and self.offers_ari() else None
        if replaces is None:
            return self._call("new order", lambda: self._place_order(client, request.csr_pem, None))
        try:
            return self._call("new order", lambda: self._place_order(client, request.csr_pem, replaces))
        except AcmeError as exc:
            if not _refuses_replaces(exc):
                raise
            log.warning("acme: the CA refused replaces=%s for %s (%s); ordering again without it",
                        replaces, request.name, exc)
        return self._call("new order", lambda: self._place_order(client, request.csr_pem, None))

    def _place_order(self, client: ClientV2, csr_pem: bytes, replaces: str | None) -> messages.OrderResource:
        """``ClientV2.new_order`` with the optional ``replaces`` field."""
        csr = x509.load_pem_x509_csr(csr_pem)
        dns_names, ips = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in dns_names]
        identifiers += [messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(ip)) for ip in ips]
        if replaces:
            log.debug("acme: new order replaces %s", replaces)
        response = self._post(client, client.directory["newOrder"], _NewOrder(identifiers=identifiers, replaces=replaces))
        body = messages.Order.from_json(response.json())
        authorizations = [
            messages.AuthorizationResource(
                body=messages.Authorization.from_json(self._post_as_get(client, url).json()), uri=url)
            for url in body.authorizations
        ]
        return messages.OrderResource(body=body, uri=response.headers.get("Location"),
                                      authorizations=authorizations, csr_pem=csr_pem)

    def _authorize_and_finalize(self, client: ClientV2, order, solver, types: list[str]) -> str:
        """Publish, validate, always clean up, then finalize: the part of an order after its creation."""
        published: list[_Published] = []
        try:
            pending = self._present_all(order, solver, types, published)
            self._validate(client, pending)
        finally:
            self._cleanup_all(published)
        return self._finalize(client, order)

    @staticmethod
    def _solver_types(solver: object) -> list[str]:
        """Refuse, before any order, a solver that answers no challenge type we know."""
        types = supported_types(solver)
        if not types:
            raise AcmeError(
                f"solver {describe(solver)} implements neither present/cleanup (dns-01) "
                "nor present_http/cleanup_http (http-01)",
                transient=False,
            )
        return types

    def _check_request(self, request: IssuanceRequest) -> None:
        """The CSR's names must be the names asked for: no surprise SANs reach the CA."""
        try:
            csr = x509.load_pem_x509_csr(request.csr_pem)
        except ValueError:
            raise AcmeError(f"{request.name}: csr_pem is not a PEM certificate request", transient=False) from None
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = set(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            sans = set()
        if request.domains and sans != set(request.domains):
            raise AcmeError(
                f"{request.name}: CSR names {sorted(sans)} differ from requested {sorted(request.domains)}",
                transient=False,
            )

    def _present_all(
        self,
        order: messages.OrderResource,
        solver: DnsSolver | HttpSolver,
        types: list[str],
        published: list[_Published],
    ) -> list[tuple[messages.AuthorizationResource, messages.ChallengeBody, challenges.ChallengeResponse]]:
        """Publish one challenge per authorization that still needs one.

        Each publication is appended to ``published`` *before* the solver is called, so
        the caller's ``finally`` undoes exactly what may exist, even after a failure.
        """
        pending = []
        for authz in order.authorizations:
            domain = authz.body.identifier.value
            if authz.body.status == messages.STATUS_VALID:
                log.debug("acme: %s already authorized, skipping validation", domain)
                continue
            challb = self._pick_challenge(authz, types)
            response = challb.response(self._key)
            key_authorization = challb.chall.key_authorization(self._key)
            # dns-01: name and TXT value from the one helper every solver shares (lego's
            # GetChallengeInfo); http-01 serves the key authorization itself.
            validation = (dns01_info(domain, key_authorization).value if challb.chall.typ == DNS01
                          else key_authorization)
            log.debug("acme: presenting %s for %s", challb.chall.typ, domain)
            self._publish(solver, challb, domain, validation, published)
            pending.append((authz, challb, response))
        return pending

    @staticmethod
    def _publish(solver, challb: messages.ChallengeBody, domain: str, validation: str, published: list[_Published]) -> None:
        """Hand one challenge to the solver: a TXT value (dns-01) or token + key authorization (http-01)."""
        if challb.chall.typ == DNS01:
            present = lambda: solver.present(domain, validation)  # noqa: E731
            undo = lambda: solver.cleanup(domain, validation)  # noqa: E731
        else:
            token = challb.chall.encode("token")
            present = lambda: solver.present_http(domain, token, validation)  # noqa: E731
            undo = lambda: solver.cleanup_http(domain, token, validation)  # noqa: E731
        published.append(_Published(challb.chall.typ, domain, undo))
        present()

    def _pick_challenge(self, authz: messages.AuthorizationResource, types: list[str]) -> messages.ChallengeBody:
        """The CA's challenge of the solver's most preferred type (http-01 never covers a wildcard)."""
        offered = {challb.chall.typ: challb for challb in authz.body.challenges}
        for kind in types:
            if kind in offered:
                return offered[kind]
        domain = authz.body.identifier.value
        if authz.body.wildcard:
            domain = f"*.{domain}"
        raise AcmeError(
            f"the CA offers no {' or '.join(types)} challenge for {domain} (offered: {', '.join(sorted(offered)) or 'none'})",
            transient=False,
        )

    def _validate(self, client: ClientV2, pending: list) -> None:
        """Answer every challenge, then poll each authorization until valid or invalid."""
        for _, challb, response in pending:
            self._call("answer challenge", lambda: client.answer_challenge(challb, response))
        deadline = time.monotonic() + self.poll.timeout
        for authz, _, _ in pending:
            final = self._poll_until(
                f"authorization {authz.body.identifier.value}",
                lambda authz=authz: client.poll(authz)[0],
                lambda a: a.body.status.name not in _PENDING,
                deadline,
            )
            self._require_valid_authz(final)

    def _require_valid_authz(self, authz: messages.AuthorizationResource) -> None:
        """Raise the CA's own reason when validation failed (wrong TXT, NXDOMAIN, CAA...)."""
        domain = authz.body.identifier.value
        if authz.body.status == messages.STATUS_VALID:
            log.debug("acme: %s validated", domain)
            return
        problems = [c.error for c in authz.body.challenges if c.error is not None]
        problem = problems[0] if problems else None
        raise AcmeError(
            f"validation of {domain} failed: {_describe(problem) if problem else authz.body.status.name}",
            transient=False,
            problem_type=problem.code if problem else None,
            detail=problem.detail if problem else None,
            identifier=domain,
        )

    def _finalize(self, client: ClientV2, order: messages.OrderResource) -> str:
        """Wait for "ready", send the CSR, wait for "valid", download the full chain."""
        deadline = time.monotonic() + self.poll.timeout
        body = self._poll_order(client, order, deadline, until={"ready", "valid"})
        if body.status.name == "ready":
            self._begin_finalization(client, order)
            body = self._poll_order(client, order, deadline, until={"valid"})
        log.debug("acme: downloading certificate for order %s", order.uri)
        response = self._call("certificate download", lambda: self._post_as_get(client, body.certificate))
        return response.text

    def _begin_finalization(self, client: ClientV2, order: messages.OrderResource) -> None:
        """Send the CSR. ``orderNotReady`` after a retried finalize means the first one landed."""
        log.debug("acme: finalizing order %s", order.uri)
        try:
            self._call("finalize", lambda: client.begin_finalization(order))
        except AcmeError as exc:
            if exc.problem_type != "orderNotReady":
                raise

    def _poll_order(self, client: ClientV2, order: messages.OrderResource, deadline: float, until: set[str]):
        """Poll the order until its status is in ``until``; "invalid" raises the CA's reason."""

        def fetch() -> messages.Order:
            return messages.Order.from_json(self._post_as_get(client, order.uri).json())

        def done(body: messages.Order) -> bool:
            return body.status.name in until or body.status == messages.STATUS_INVALID

        body = self._poll_until(f"order {order.uri}", fetch, done, deadline)
        if body.status == messages.STATUS_INVALID:
            problem = body.error
            raise AcmeError(
                f"order {order.uri} is invalid: {_describe(problem) if problem else 'no reason given'}",
                transient=False,
                problem_type=problem.code if problem else None,
                detail=problem.detail if problem else None,
            )
        return body

    def _poll_until(self, what: str, fetch: Callable[[], T], done: Callable[[T], bool], deadline: float) -> T:
        """Fetch until ``done``: first after ``poll.first`` s, growing to ``poll.max_interval``."""
        interval = self.poll.first
        while True:
            time.sleep(interval)
            current = self._call(f"poll {what}", fetch)
            if done(current):
                return current
            if time.monotonic() + interval > deadline:
                raise AcmeError(f"{what} still pending after {self.poll.timeout:.0f}s", transient=True)
            interval = min(self.poll.max_interval, interval * self.poll.factor)

    def _post_as_get(self, client: ClientV2, url: str) -> requests.Response:
        return self._post(client, url, None)

    def _post(self, client: ClientV2, url: str, obj: Any) -> requests.Response:
        """A signed POST through the badNonce-retrying network (``None`` = POST-as-GET)."""
        return self._net.post(url, obj, new_nonce_url=client.directory["newNonce"])

    def _cleanup_all(self, published: list[_Published]) -> None:
        """Undo every publication; a failing cleanup is logged, never masks the result."""
        for item in published:
            try:
                item.cleanup()
                log.debug("acme: cleaned up %s for %s", item.kind, item.domain)
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real outcome
                log.warning("acme: cleanup of %s for %s failed: %s", item.kind, item.domain, exc)

    # ---- revocation ----------------------------------------------------------------

    def revoke(self, cert_pem: bytes, reason: int = 0) -> None:
        """Revoke with this account. Already revoked counts as done (idempotent)."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise AcmeError("cert_pem is not a PEM certificate", transient=False) from None
        self.register_or_fetch()
        client = self._client()
        serial = format(cert.serial_number, "x")
        log.info("acme: revoking serial %s (reason %d)", serial, reason)
        try:
            self._call("revoke", lambda: client.revoke(cert, reason))
        except AcmeError as exc:
            if exc.problem_type != "alreadyRevoked":
                raise
            log.info("acme: serial %s was already revoked", serial)

    # ---- renewal information (RFC 9773) --------------------------------------------

    def offers_ari(self) -> bool:
        """Whether the CA's directory has a ``renewalInfo`` endpoint."""
        return bool(self.directory().to_partial_json().get("renewalInfo"))

    def renewal_window(self, cert_pem: bytes) -> ari.AriWindow | None:
        """The CA's suggested renewal window for ``cert_pem`` (leaf first), with its
        Retry-After hint; ``None`` when the CA offers no ARI. Unauthenticated GET,
        transient failures retried like every other step."""
        directory = self.directory().to_partial_json()
        try:
            return ari.fetch_window(directory, cert_pem,
                                    lambda url: self._call("renewal info", lambda: self._net.get(url)))
        except ari.AriError as exc:
            raise AcmeError(f"renewal info at {self.directory_url}: {exc}", transient=False) from None

    def renewal_info(self, cert_pem: bytes) -> tuple[dt.datetime, dt.datetime] | None:
        """``(start, end)`` of the suggested window, ``None`` without ARI (RenewalInfoProvider)."""
        window = self.renewal_window(cert_pem)
        return (window.start, window.end) if window else None

    # ---- plumbing ------------------------------------------------------------------

    def directory(self) -> messages.Directory:
        """The CA's directory (endpoints, terms of service, EAB/ARI support), fetched once."""
        return self._client().directory

    def _client(self) -> ClientV2:
        """The ``ClientV2`` for this CA, fetching the directory on first use."""
        if self._acme is None:
            log.debug("acme: fetching directory %s", self.directory_url)
            directory = self._call("directory", lambda: ClientV2.get_directory(self.directory_url, self._net))
            self._acme = ClientV2(directory, self._net)
        return self._acme

    def _call(self, step: str, fn: Callable[[], T]) -> T:
        """Run one protocol step, retrying transient failures with backoff + jitter."""
        for attempt in range(self.retry.attempts):
            try:
                return fn()
            except (errors.Error, requests.RequestException, jose.DeserializationError) as exc:
                err = self._classify(step, exc)
            wait = self._wait_before_retry(err, attempt)
            if wait is None:
                raise err
            log.info("acme: %s failed (%s), retry %d in %.2fs", step, err, attempt + 1, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _wait_before_retry(self, err: AcmeError, attempt: int) -> float | None:
        """Seconds to wait before the next try, or ``None`` when ``err`` should be raised."""
        if not err.transient or attempt == self.retry.attempts - 1:
            return None
        if err.retry_after is not None and err.retry_after > self.retry.max_retry_after:
            return None
        return max(self.retry.delay(attempt), err.retry_after or 0.0)

    def _classify(self, step: str, exc: BaseException) -> AcmeError:
        """Map whatever ``acme``/``requests`` raised to an :class:`AcmeError`."""
        status, retry_after = self._net.last_status, retry_after_seconds(self._net.last_retry_after)
        where = f"{step} at {self.directory_url}"
        if isinstance(exc, messages.Error):
            code = exc.code or exc.typ
            transient = code in _TRANSIENT_PROBLEMS or (status is not None and status >= 500)
            return AcmeError(
                f"{where}: {_describe(exc)}",
                transient=transient,
                problem_type=code,
                detail=exc.detail,
                retry_after=retry_after if code == "rateLimited" or status in (429, 503) else None,
            )
        if isinstance(exc, errors.ConflictError) and self._net.last_problem:
            problem = self._net.last_problem  # 409: acme dropped the problem document, we kept it
            code = str(problem.get("type", "")).rsplit(":", 1)[-1] or None
            detail = problem.get("detail")
            return AcmeError(f"{where}: {code}: {detail}" if detail else f"{where}: {code}",
                             transient=False, problem_type=code, detail=detail)
        if isinstance(exc, requests.RequestException):
            return AcmeError(f"{where}: cannot reach the CA ({type(exc).__name__})", transient=True)
        if isinstance(exc, (errors.MissingNonce, errors.BadNonce)):
            return AcmeError(f"{where}: CA sent no usable nonce", transient=True, problem_type="badNonce")
        if isinstance(exc, errors.ClientError) and status is not None and (status >= 500 or status == 429):
            return AcmeError(f"{where}: HTTP {status} from the CA", transient=True, retry_after=retry_after)
        return AcmeError(f"{where}: {type(exc).__name__}: {exc}", transient=False)


def _refuses_replaces(exc: AcmeError) -> bool:
    """The CA said no to ``replaces`` (RFC 9773 §5): alreadyReplaced, or malformed about it."""
    code = (exc.problem_type or "").rsplit(":", 1)[-1]
    if code == "alreadyReplaced":
        return True
    return code == "malformed" and "replace" in (exc.detail or str(exc)).lower()


def _describe(problem: messages.Error) -> str:
    """``rateLimited: too many orders`` — the code and the CA's own detail."""
    code = problem.code or problem.typ or "error"
    return f"{code}: {problem.detail}" if problem.detail else str(code)

