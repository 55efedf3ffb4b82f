"""Whether a hub id can be had now: is it in the local Hugging Face cache, and does the hub answer?

The hub client retries a file it cannot reach five times, backing off 1, 2, 4, 8 and 8 s, and logs each
try: without network an uncached id costs half a minute and a dozen lines before transformers gives up.
``load_model`` asks once instead (`reach`): one request to the endpoint, bounded by ``PROBE_SECONDS``
(name resolution included: it runs in a thread that is waited for no longer), before any download.
Unreachable, a cached model is read from the cache alone and an uncached one is one line (`unreachable`).

Torch and transformers are not needed here; huggingface_hub is imported inside the functions.
"""
from __future__ import annotations

import importlib
import os
import threading
import time

from kneuron.models.registry import CARDS, ModelLoadError
from kneuron.store.atomic import one_line

PROBE_SECONDS = 3.0           # any answer (even 404) means reachable; a hub slower than this to answer is down
REUSE_SECONDS = 30.0          # the endpoint's answer is asked again after this (one command asks once)
_asked: dict[str, tuple[float, str | None]] = {}


_TRUE = {"1", "on", "yes", "true"}


def offline() -> bool:
    """Whether the environment asks for no network: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to 1."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def endpoint() -> str:
    """The hub's address, as the hub client will use it (HF_ENDPOINT, read when huggingface_hub is imported)."""
    from huggingface_hub import constants
    return constants.ENDPOINT


def cached(repo_id: str) -> bool:
    """Whether the local cache holds ``repo_id``'s config (the first file a load reads)."""
    from huggingface_hub import try_to_load_from_cache
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:                 # not a valid repo id: the hub client will say so
        return False


def network_errors() -> tuple[type[BaseException], ...]:
    """What the hub's HTTP client raises for a transport failure besides OSError (httpx2 / httpx / requests)."""
    out: list = []
    for mod in ("httpx", "httpx2", "requests"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        err = getattr(m, "HTTPError", None) or getattr(m, "RequestException", None)
        if isinstance(err, type) and issubclass(err, BaseException):
            out.append(err)
    return tuple(out)


def reach(url: str | None = None, seconds: float = PROBE_SECONDS) -> str | None:
    """None when ``url`` (default: the endpoint) answers one HEAD request within ``seconds``, else why not
    (one line). The request goes through the hub client's own session (its proxies and certificates) and is
    never retried. The default endpoint's answer is reused for REUSE_SECONDS (the command line asks before it
    imports torch, ``load_model`` again after)."""
    if url is None:
        url = endpoint()
        when, why = _asked.get(url, (float("-inf"), None))
        if time.monotonic() - when < REUSE_SECONDS:
            return why
        why = reach(url, seconds)
        _asked[url] = (time.monotonic(), why)
        return why
    found: list[str | None] = []

    def ask() -> None:
        from huggingface_hub.utils import get_session
        try:
            get_session().head(url, timeout=seconds)
            found.append(None)
        except (OSError, *network_errors()) as e:
            found.append(one_line(e) or type(e).__name__)
    t = threading.Thread(target=ask, name="kneuron-hub-probe", daemon=True)
    t.start()
    t.join(seconds)
    return found[0] if found else f"no answer within {seconds:g} s"


def looks_like_path(name: str) -> bool:
    """A name that can only be a directory: hub ids are 'name' or 'owner/name'."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name or name in (".", "..")


def is_hub_id(name: str) -> bool:
    """Whether ``load_model`` fetches ``name`` from the hub: not a bundled name, a .gguf file, a directory or a
    path."""
    return not (name in CARDS or name.endswith(".gguf") or os.path.isdir(name) or looks_like_path(name))


def check(name: str, no_network: bool | None = None) -> str | None:
    """Before a hub id is fetched: None when it is not a hub id, downloads are off, or the hub answers; else
    why the hub is down, when the model is cached (it is then read from the cache alone, without the hub
    client's half minute of retries). Down and not cached: the one-line error (``unreachable``).
    ``no_network``: downloads off (default: the environment's, ``offline``)."""
    if (offline() if no_network is None else no_network) or not is_hub_id(name):
        return None
    why = reach()
    if why is not None and not cached(name):
        raise unreachable(name, why)
    return why


def unreachable(name: str, why: str) -> ModelLoadError:
    """The one line for a hub id that is not cached while the hub cannot be reached."""
    return ModelLoadError(
        f"cannot get model {name!r}: the Hugging Face hub at {endpoint()} cannot be reached ({why}) and the model "
        f"is not in the local cache; connect to the network (or set HF_ENDPOINT to a mirror), copy a cache that "
        f"holds it (`hf download {name}` elsewhere), or use a bundled name ({', '.join(CARDS)}) or a local "
        f"directory")

