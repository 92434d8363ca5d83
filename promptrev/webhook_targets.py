"""Where webhooks may be sent (public addresses only, unless the operator widens it), and
the one way to get there: to the address that was checked.

An admin chooses a webhook's URL and the server POSTs to it, so a URL on loopback, on the
private network or on the link-local metadata address (``169.254.169.254``) would let an
admin make the server call services that only it can reach (server-side request forgery).
So a target is checked twice:

* **when a hook is added or enabled**, a host that is an address in any spelling the
  system's resolver accepts (``127.1``, ``0x7f000001``, ``2130706433``, ``0177.0.0.1``,
  ``[::1]``, ``[::ffff:127.0.0.1]``) or a ``localhost`` name is checked at once, with an
  error that names the address and its class;
* **at every delivery**, the host is resolved, *every* address it resolves to is checked,
  and the connection goes to one of the addresses that were checked (the deliverer
  keeps the name in the ``Host`` header and in TLS's SNI and certificate check), so a name
  whose answer changes between the check and the connection (DNS rebinding) cannot reach a
  refused address. Redirects are never followed.

Refused classes: unspecified, loopback, link-local, multicast, private, site-local,
reserved, and any other address that is not globally routable ("non-public": the shared
``100.64.0.0/10``, documentation ranges…). An IPv4 address carried inside IPv6 (mapped
``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) is judged as that IPv4
address.

Operators widen the rule with ``allow_private`` (loopback, private, site-local, reserved and
non-public addresses; link-local, unspecified and multicast stay refused, so the cloud
metadata address needs an explicit network) and ``allow_networks`` (addresses inside any
listed network are allowed whatever their class).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Union
from urllib.parse import urlsplit

from .errors import InvalidRequest, TargetRefused

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_CLASSES = (("unspecified", "is_unspecified"), ("loopback", "is_loopback"),
            ("link-local", "is_link_local"), ("multicast", "is_multicast"),
            ("private", "is_private"), ("site-local", "is_site_local"),
            ("reserved", "is_reserved"))
WIDENED = frozenset({"loopback", "private", "site-local", "reserved", "non-public"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMBER_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
ALLOW_HINT = ("an operator may allow such targets with PROMPTREV_WEBHOOK_ALLOW_PRIVATE=1 "
              "or PROMPTREV_WEBHOOK_ALLOW_NETWORKS")


def address_class(address: Address) -> str | None:
    """The class that keeps ``address`` from being a webhook target, or None if public."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return address_class(embedded)
    for name, test in _CLASSES:
        if getattr(address, test, False):
            return name
    return None if address.is_global else "non-public"


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None or address.sixtofour is not None:
        return address.ipv4_mapped or address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def literal_address(host: str) -> Address | None:
    """The address a URL's host spells by itself, or None when it is a name.

    Besides the usual forms it reads what ``inet_aton`` reads (and so what the resolver
    connects to): one to four parts, each decimal, octal (``0177``) or hex (``0x7f``), the
    last one filling the remaining bytes (``127.1``, ``2130706433``). A host made of such
    parts that is no address (``08.0.0.1``, ``256.1.1.1``) is an error, not a name.
    """
    host = host.strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMBER_PART.match(p) for p in parts):
        return None
    try:
        numbers = [int(p[2:] or "0", 16) if p.startswith("0x") else int(p, 8)
                   if len(p) > 1 and p.startswith("0") else int(p) for p in parts]
    except ValueError:
        numbers = []
    last_limit = 256 ** (5 - len(parts))
    if not numbers or any(n > 255 for n in numbers[:-1]) or numbers[-1] >= last_limit:
        raise InvalidRequest(f"webhook URL host {host[:60]!r} looks like an IPv4 address but is "
                             "not one")
    value = 0
    for n in numbers[:-1]:
        value = value * 256 + n
    return ipaddress.IPv4Address(value * (256 ** (5 - len(parts))) + numbers[-1])


def _spelled(address: Address) -> str:
    embedded = _embedded_ipv4(address)
    return f"{address} (IPv4 {embedded})" if embedded is not None else str(address)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, as the system's resolver answers (in order)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


@dataclass(frozen=True)
class TargetPolicy:
    """Which addresses a webhook may reach; the default allows public addresses only."""

    allow_private: bool = False
    allow_networks: tuple[Network, ...] = ()
    resolve: Callable[[str, int], list[str]] = resolve_host  # DNS; a test may stand in

    @classmethod
    def from_settings(cls, settings: Any) -> TargetPolicy:
        """The operator's policy: ``webhook_allow_private`` and ``webhook_allow_networks``."""
        return cls(allow_private=bool(settings.webhook_allow_private),
                   allow_networks=networks(settings.webhook_allow_networks))

    def refusal(self, address: Address) -> str | None:
        """The class that refuses ``address`` under this policy, or None if it is allowed."""
        candidates = [address, _embedded_ipv4(address)]
        if any(a is not None and a.version == net.version and a in net
               for a in candidates for net in self.allow_networks):
            return None
        found = address_class(address)
        if found is None or (self.allow_private and found in WIDENED):
            return None
        return found

    def check_url(self, url: str) -> None:
        """Refuse, when a hook is added, a URL whose host is a refused address by itself
        (any spelling) or a ``localhost`` name; other names are checked at each delivery."""
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
        if host == "localhost" or host.endswith(".localhost"):
            if self.refusal(ipaddress.ip_address("127.0.0.1")):
                raise TargetRefused(f"webhook URL host {host[:60]!r} names this machine, a "
                                    f"loopback address; webhooks go to public addresses only "
                                    f"({ALLOW_HINT})", details={"class": "loopback"})
            return
        address = literal_address(host)
        found = self.refusal(address) if address is not None else None
        if found:
            raise TargetRefused(f"webhook URL host {host[:60]!r} is {_spelled(address)}, "
                                f"{_article(found)} {found} address; webhooks go to public "
                                f"addresses only ({ALLOW_HINT})", details={"class": found})

    def checked_addresses(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``, in the resolver's order: every address
        it resolves to, each checked (connect to them, not to the name, so that nothing can
        change between the check and the connection).

        Raises :class:`TargetRefused` when any address is refused, and :class:`OSError`
        when the name does not resolve.
        """
        found = self.resolve(host, port)
        if not found:
            raise OSError(f"{host} resolves to no address")
        for text in found:
            address = ipaddress.ip_address(text)
            refused = self.refusal(address)
            if refused:
                how = "is" if text == host else "resolves to"
                raise TargetRefused(f"{host[:100]} {how} {_spelled(address)}, "
                                    f"{_article(refused)} "
                                    f"{refused} address; nothing was sent ({ALLOW_HINT})",
                                    details={"class": refused})
        return found


# ---- getting there: to the checked address, keeping the name -------------------------
def pinned(url: Any, policy: TargetPolicy) -> list[tuple[Any, dict[str, str]]]:
    """An ``httpx.URL`` on each address its host resolves to, once every one was checked,
    with the request extensions that keep the name for TLS (SNI, certificate check)."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    return [(url.copy_with(host=address),
             {"sni_hostname": host} if url.scheme == "https" and address != host else {})
            for address in policy.checked_addresses(host, port)]


def send(client: Any, addresses: list[tuple[Any, dict[str, str]]], body: bytes,
         headers: dict[str, str], read: int) -> tuple[int, bytes]:
    """POST ``body`` with an ``httpx.Client`` to the checked addresses in turn until one
    connects (the ``Host`` header carries the name); its status and at most about ``read``
    bytes of its answer. Redirects are the client's to refuse."""
    import httpx  # only deliverers need it

    for n, (target, extensions) in enumerate(addresses, 1):
        try:
            with client.stream("POST", target, content=body, headers=headers,
                               extensions=extensions) as response:
                kept = b""
                for chunk in response.iter_bytes():  # the start of the answer is enough
                    kept += chunk
                    if len(kept) >= read:
                        break
                return response.status_code, kept
        except httpx.ConnectError:  # nothing was sent: the next address, if any
            if n == len(addresses):
                raise
    raise OSError("no address to send to")


def excerpt(answer: bytes, limit: int) -> str:
    """What a log keeps of a target's answer: its start, printable, on one line."""
    return _clean(answer.decode("utf-8", "replace"), limit)


def scrub(text: str, url: str) -> str:
    """An error for a log: printable, short, without the URL's password."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return _clean(text.replace(password, "***") if password else text, 300)


def _clean(text: str, limit: int) -> str:
    printable = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(printable.split())[:limit]


def networks(values: Iterable[Any]) -> tuple[Network, ...]:
    """Networks from CIDR strings (``10.0.0.0/8``, ``fd00::/8``, ``192.0.2.7``)."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise InvalidRequest(f"webhook allowed network {str(value)[:60]!r} is not an IP "
                                 "network such as 10.0.0.0/8 or fd00::/8") from None
    return tuple(out)
