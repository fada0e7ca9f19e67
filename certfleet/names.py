"""Is a name fit to be put in a certificate? Pure checks, one reason each.

- no trailing dot (``shop.test.``): a CA refuses it, and it never matches SNI;
- no IP literal in ``domains`` unless the issuer can issue IP SANs (no certfleet
  issuer does today: CSRs carry DNS names only);
- no wildcard directly under a public suffix (``*.co.uk``, ``*.com``): no CA issues it,
  and a client must not honour it.

Public suffixes come from the Public Suffix List the machine already has (Debian's
``publicsuffix`` package, ``/usr/share/publicsuffix/public_suffix_list.dat``, pulled in
by libpsl); without it, from the conservative built-in list below: every single-label
name (a TLD) plus common multi-label registry suffixes. Nothing is downloaded.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

PSL_PATHS = (Path("/usr/share/publicsuffix/public_suffix_list.dat"),)

#: Used when no Public Suffix List file is installed. Single labels are always suffixes.
BUILTIN_SUFFIXES = frozenset("""
co.uk org.uk ac.uk gov.uk me.uk net.uk ltd.uk plc.uk sch.uk nhs.uk
com.au net.au org.au edu.au gov.au asn.au id.au
co.nz net.nz org.nz govt.nz ac.nz
co.jp ne.jp or.jp ac.jp go.jp ad.jp ed.jp gr.jp lg.jp
com.br net.br org.br gov.br edu.br
com.cn net.cn org.cn gov.cn edu.cn ac.cn
co.in net.in org.in gov.in ac.in edu.in firm.in gen.in ind.in
co.za org.za gov.za ac.za net.za web.za
com.mx org.mx gob.mx edu.mx net.mx
com.ar com.tr com.tw com.hk com.sg com.my com.ph com.pk com.eg com.sa com.ua com.pl
co.kr or.kr go.kr ac.kr ne.kr co.il org.il ac.il gov.il co.id or.id ac.id go.id
github.io gitlab.io herokuapp.com appspot.com cloudfront.net azurewebsites.net
blogspot.com netlify.app vercel.app pages.dev workers.dev web.app firebaseapp.com
s3.amazonaws.com elasticbeanstalk.com
""".split())


@lru_cache(maxsize=1)
def _psl() -> tuple[frozenset[str], frozenset[str], frozenset[str]] | None:
    """(rules, wildcard parents, exceptions) from the system's list, or None."""
    for path in PSL_PATHS:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        rules, wild, exc = set(), set(), set()
        for line in text.splitlines():
            rule = line.strip().split(" ")[0].lower()
            if not rule or rule.startswith("//"):
                continue
            if rule.startswith("!"):
                exc.add(rule[1:])
            elif rule.startswith("*."):
                wild.add(rule[2:])
            else:
                rules.add(rule)
        if rules:
            return frozenset(rules), frozenset(wild), frozenset(exc)
    return None


def is_public_suffix(name: str) -> bool:
    """Whether ``name`` is a public suffix (a TLD, ``co.uk``, ``github.io``, ...)."""
    name = name.lower().strip(".")
    if "." not in name:
        return True  # every TLD, known or not (the list's default rule "*")
    psl = _psl()
    if psl is None:
        return name in BUILTIN_SUFFIXES
    rules, wild, exc = psl
    if name in exc:
        return False
    return name in rules or name.split(".", 1)[1] in wild


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


def name_problem(name: str, *, allow_ip: bool = False) -> tuple[str, str] | None:
    """``(reason, message)`` when ``name`` must not go into a certificate, else None."""
    if is_ip_literal(name):
        if allow_ip:
            return None
        return ("IP_LITERAL", f"'{name}' is an IP address; this issuer issues DNS names only "
                              "(certificates for IP addresses need an issuer that supports IP identifiers)")
    if name.endswith("."):
        return ("TRAILING_DOT", f"'{name}' ends with a dot; write '{name.rstrip('.')}'")
    if name.startswith("*.") and is_public_suffix(name[2:]):
        return ("WILDCARD_PUBLIC_SUFFIX", f"'{name}' is a wildcard directly under the public suffix "
                                          f"'{name[2:]}'; no CA issues it and clients refuse it")
    return None
