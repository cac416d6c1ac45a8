"""Before any work: is every endpoint there, and does it take the key we will send?

One ``GET <base_url>/models`` per distinct (URL, key), with the key the
requests will carry and no retries, so an endpoint that is down costs one
line at once instead of every request's backoff:

* no answer (refused, unknown host, timeout): :class:`EndpointUnreachable`,
  naming the endpoint, its URL and the error class (``ConnectError``...);
* 401/403: :class:`EndpointRefused`, naming the key variable (and saying it
  is unset when it is);
* any other status (a server without ``/models``): a warning, the run goes on;
* an ``api_key_env`` variable that is not set while the endpoint answers: a
  warning naming the variable (a local vLLM without ``--api-key`` takes any key).
"""

from __future__ import annotations

import os

try:  # the HTTP library under openai (see client.py)
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http

from omnivmed.rejection_sampling.config import CaptionConfig, EndpointConfig

PREFLIGHT_TIMEOUT_S = 10.0


class PreflightError(RuntimeError):
    """An endpoint that cannot be used; the message is one line naming it."""


class EndpointUnreachable(PreflightError):
    pass


class EndpointRefused(PreflightError):
    pass


def _unset_key_env(endpoint: EndpointConfig) -> str | None:
    """The key variable this endpoint names when it is unset (and the config gives no key itself)."""
    if endpoint.api_key or not endpoint.api_key_env:
        return None
    return None if os.environ.get(endpoint.api_key_env) else endpoint.api_key_env


def _key_source(endpoint: EndpointConfig) -> str:
    if endpoint.api_key:
        return "the config's api_key"
    return f"${endpoint.api_key_env}" if endpoint.api_key_env else "no key"


def probe(base_url: str, key: str, timeout_s: float) -> int:
    """The status of ``GET <base_url>/models``; raises the HTTP library's error when nothing answers."""
    url = base_url.rstrip("/") + "/models"
    with _http.Client(timeout=timeout_s) as client:
        return client.get(url, headers={"Authorization": f"Bearer {key}"}).status_code


def preflight(config: CaptionConfig, *, timeout_s: float = PREFLIGHT_TIMEOUT_S) -> list[str]:
    """Check every endpoint of ``config``; the warnings to show, or :class:`PreflightError`."""
    warnings: list[str] = []
    answered: dict[tuple[str, str], int] = {}
    unset_keys: dict[str, list[str]] = {}  # variable -> the endpoints that name it
    for endpoint in config.endpoints():
        where = f"endpoint {endpoint.name} at {endpoint.base_url}"
        ident = (endpoint.base_url, endpoint.resolve_key())
        if ident not in answered:
            try:
                answered[ident] = probe(endpoint.base_url, ident[1], min(timeout_s, endpoint.timeout_s))
            except _http.HTTPError as err:
                reason = str(err).strip() or "no answer"
                raise EndpointUnreachable(
                    f"{where} is unreachable: {type(err).__name__} ({reason}); nothing was sent "
                    "(start the server, or fix base_url in the config)"
                ) from None
            except (_http.InvalidURL, ValueError, TypeError) as err:  # a base_url the HTTP library cannot use
                raise EndpointUnreachable(f"{where}: not a usable URL ({type(err).__name__}: {err})") from None
        status = answered[ident]
        unset = _unset_key_env(endpoint)
        if status in (401, 403):
            if unset:
                raise EndpointRefused(f"{where} answered {status}: it wants a key, and ${unset} is not set (export {unset}=...)")
            raise EndpointRefused(f"{where} answered {status}: it refused the key from {_key_source(endpoint)}")
        if unset:
            unset_keys.setdefault(unset, []).append(f"{endpoint.name} at {endpoint.base_url}")
        if status >= 400:
            warnings.append(f"{where} answered {status} to GET /models; going on (its chat requests will tell)")
    for variable, where in unset_keys.items():
        warnings.append(f"${variable} is not set: {', '.join(where)} get no key (fine for a server started without one)")
    return warnings
