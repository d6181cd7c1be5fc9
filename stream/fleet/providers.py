"""Who runs each worker: one provider may hold one worker, active or standby.

The split protects a frame only against workers that do not pool what they see, and two workers
run by one provider are one party. So every worker off this machine names its provider
(``--workers HOST:PORT@PROVIDER,...``, or ``provider`` in a ``[[workers]]`` entry of the config
file), and two workers or standbys at one provider are refused. A worker on loopback (tests,
demos, ``--local-workers``) without a provider counts as its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pedsam.stream.errors import ConfigError

__all__ = ["check_providers", "split_provider"]


def split_provider(entry: str) -> tuple[str, str | None]:
    """``"HOST:PORT@PROVIDER"`` -> ``("HOST:PORT", "PROVIDER")``; without ``@``, no provider.

    Raises:
        ConfigError: an empty address or provider around the ``@``.
    """
    address, at, provider = entry.strip().partition("@")
    address, provider = address.strip(), provider.strip()
    if not address or (at and not provider):
        raise ConfigError(f"worker {entry.strip()!r}: give HOST:PORT or HOST:PORT@PROVIDER")
    return address, (provider or None)


def check_providers(workers: Sequence[str], providers: Mapping[str, str]) -> dict[str, str]:
    """Every worker's provider, checked: one per provider, named for every worker off loopback.

    Args:
        workers: every worker's address, active ones then standby.
        providers: address -> provider, for the workers that name one.

    Returns:
        address -> provider of every worker (a loopback worker without one: its own address).

    Raises:
        ConfigError: a provider for no listed worker, a worker off this machine without a
            provider, or two workers at one provider.
    """
    from pedsam.stream.fleet.transport import is_loopback_address  # grpc: not at the command line's start

    stray = sorted(set(providers) - set(workers))
    if stray:
        raise ConfigError(f"a provider is given for {', '.join(stray)}, which is not a worker")
    found: dict[str, str] = {}
    holder: dict[str, str] = {}
    for address in workers:
        provider = providers.get(address)
        if provider is None:
            if not is_loopback_address(address):
                raise ConfigError(
                    f"worker {address} is off this machine and names no provider: give --workers "
                    f"{address}@PROVIDER (or provider in its [[workers]] entry), so that two workers at one "
                    "provider are refused"
                )
            provider = address
        if provider in holder:
            raise ConfigError(
                f"workers {holder[provider]} and {address} are both at provider {provider!r}: one party would "
                "see both their shares; put them at different providers"
            )
        holder[provider] = address
        found[address] = provider
    return found
