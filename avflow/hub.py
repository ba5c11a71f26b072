"""Model weights: a local cache, checksummed downloads on request, one-time conversion to safetensors.

Layout under `$AVFLOW_HOME` (default `$XDG_CACHE_HOME/avflow` or `~/.cache/avflow`):
  raw/NAME                 the file as published (kept so checksums can be re-verified)
  weights/STEM.safetensors the converted state dict that avflow loads
  urls/KEY/NAME            a file named by its URL (KEY from the URL), NAME.sha256 its digest at download
Nothing is fetched unless the user asks (`avflow download MODEL`, or `allow_download=True`). With
`AVFLOW_OFFLINE=1` or `HF_HUB_OFFLINE=1`, a missing file is an immediate error that says what to download.
Files one already has (an MMAudio checkout's `weights/` and `ext_weights/`, a Hugging Face cache) are taken from a
folder instead (`avflow download MODEL --from DIR`: `find_local`, `import_local`), checked as a download is. A file
of one's own on the Hugging Face Hub is named `hf://ORG/NAME/PATH` (`hf://ORG/NAME@REVISION/PATH`) where a command
takes a weights file: naming it is the request (`hub_file`); huggingface_hub keeps and verifies it, and offline only
its cached copy is used. A file at a URL (`https://HOST/PATH/NAME`, optionally pinned as `...#sha256=HEX`) is taken
the same way (`url_file`): downloaded once into urls/, its SHA-256 recorded then and compared with the pin on every use.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from avflow.errors import WeightsError, first_line

MMAUDIO_HF = "https://huggingface.co/hkchengrex/MMAudio/resolve/main/weights/"
MMAUDIO_GH = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1/"


@dataclass(frozen=True)
class Asset:
    """One published weight file: where it lives, its checksum and where the state dict sits inside it."""

    name: str  # file name as published
    url: str = ""  # direct URL, or empty when `hf_repo` is used
    hf_repo: str = ""  # Hugging Face repo id (its files carry sha256 ETags that huggingface_hub verifies)
    hf_file: str = ""
    md5: str = ""  # published MD5, verified after download
    subkey: str = ""  # the state dict sits under this key of the loaded object (e.g. "generator")

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]


ASSETS: dict[str, Asset] = {
    a.stem: a
    for a in (
        Asset("mmaudio_small_16k.pth", MMAUDIO_HF + "mmaudio_small_16k.pth", md5="af93cde404179f58e3919ac085b8033b"),
        Asset("mmaudio_small_44k.pth", MMAUDIO_HF + "mmaudio_small_44k.pth", md5="babd74c884783d13701ea2820a5f5b6d"),
        Asset("mmaudio_medium_44k.pth", MMAUDIO_HF + "mmaudio_medium_44k.pth", md5="5a56b6665e45a1e65ada534defa903d0"),
        Asset("mmaudio_large_44k.pth", MMAUDIO_HF + "mmaudio_large_44k.pth", md5="fed96c325a6785b85ce75ae1aafd2673"),
        Asset(
            "mmaudio_large_44k_v2.pth", MMAUDIO_HF + "mmaudio_large_44k_v2.pth", md5="01ad4464f049b2d7efdaa4c1a59b8dfe"
        ),
        Asset("v1-16.pth", MMAUDIO_GH + "v1-16.pth", md5="69f56803f59a549a1a507c93859fd4d7"),
        Asset("v1-44.pth", MMAUDIO_GH + "v1-44.pth", md5="fab020275fa44c6589820ce025191600"),
        Asset("best_netG.pt", MMAUDIO_GH + "best_netG.pt", md5="eeaf372a38a9c31c362120aba2dde292", subkey="generator"),
        Asset(
            "synchformer_state_dict.pth",
            MMAUDIO_GH + "synchformer_state_dict.pth",
            md5="5b2f5594b0730f70e41e549b7c94390c",
        ),
        Asset(
            "bigvgan_v2_44khz_128band_512x.pt",
            hf_repo="nvidia/bigvgan_v2_44khz_128band_512x",
            hf_file="bigvgan_generator.pt",
            subkey="generator",
        ),
        Asset(
            "dfn5b_clip_vit_h_14_384.safetensors",
            hf_repo="apple/DFN5B-CLIP-ViT-H-14-384",
            hf_file="open_clip_model.safetensors",
        ),
    )
}

_COMMON_16K = ["v1-16", "best_netG", "synchformer_state_dict", "dfn5b_clip_vit_h_14_384"]
_COMMON_44K = ["v1-44", "bigvgan_v2_44khz_128band_512x", "synchformer_state_dict", "dfn5b_clip_vit_h_14_384"]

# What each user-facing model needs.
MODELS: dict[str, list[str]] = {
    "small_16k": ["mmaudio_small_16k", *_COMMON_16K],
    "small_44k": ["mmaudio_small_44k", *_COMMON_44K],
    "medium_44k": ["mmaudio_medium_44k", *_COMMON_44K],
    "large_44k": ["mmaudio_large_44k", *_COMMON_44K],
    "large_44k_v2": ["mmaudio_large_44k_v2", *_COMMON_44K],
}


def home() -> Path:
    """The cache root: $AVFLOW_HOME, else $XDG_CACHE_HOME/avflow, else ~/.cache/avflow."""
    if os.environ.get("AVFLOW_HOME"):
        return Path(os.environ["AVFLOW_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "avflow"


def offline() -> bool:
    return os.environ.get("AVFLOW_OFFLINE", "") == "1" or os.environ.get("HF_HUB_OFFLINE", "") == "1"


def converted_path(asset: Asset, root: Path | None = None) -> Path:
    return (root or home()) / "weights" / f"{asset.stem}.safetensors"


def raw_path(asset: Asset, root: Path | None = None) -> Path:
    return (root or home()) / "raw" / asset.name


def _download(asset: Asset, dest: Path) -> None:
    import shutil

    from avflow.weights import atomic_write

    if asset.hf_repo:
        from huggingface_hub import hf_hub_download

        what = f"{asset.hf_repo}/{asset.hf_file}"
        if (host := _unreachable_hub()) is not None:
            raise WeightsError(f"could not download {what}: no network (cannot resolve {host}); run `avflow download "
                               "MODEL` with network access, or `avflow download MODEL --from DIR` where DIR holds "
                               "the official files")  # fmt: skip
        try:
            with _quiet_hub():
                got = hf_hub_download(asset.hf_repo, asset.hf_file)
        except Exception as exc:  # network, auth, missing file: all end here
            raise WeightsError(f"could not download {what}: {first_line(exc)}") from None
        with open(got, "rb") as source:  # a full disk leaves nothing half-copied in raw/
            atomic_write(dest, lambda out: shutil.copyfileobj(source, out, 1 << 22))
        return
    _download_url(asset.url, dest, asset.name)


def _unreachable_hub(wait: float = 5.0) -> str | None:
    """The Hugging Face host's name where it cannot be resolved (no network: huggingface_hub would retry for
    half a minute before failing), else None. Waits at most `wait` seconds for the resolver. Behind a proxy (an
    https or all-traffic proxy set in the environment) the proxy resolves names, so nothing is checked here."""
    import concurrent.futures
    import socket
    import urllib.parse
    import urllib.request

    from huggingface_hub import constants

    if {"https", "all"} & set(urllib.request.getproxies()):
        return None

    host = urllib.parse.urlsplit(constants.ENDPOINT).hostname or "huggingface.co"
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        pool.submit(socket.getaddrinfo, host, 443).result(timeout=wait)
    except (OSError, concurrent.futures.TimeoutError):
        return host
    finally:
        pool.shutdown(wait=False)
    return None


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub's log level raised to errors while in use: its retries print a warning each (a dozen lines
    before the one-line error avflow gives)."""
    import logging

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _download_url(url: str, dest: Path, label: str) -> str:
    """Stream `url` into `dest` atomically (a progress bar named `label`; a failed download leaves nothing) and
    return the file's SHA-256."""
    import hashlib
    import http.client
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    from avflow.weights import atomic_write

    digest = hashlib.sha256()

    def write(out) -> None:
        with urllib.request.urlopen(url, timeout=60) as resp:
            kind = resp.headers.get("Content-Type", "")
            if kind.startswith(("text/html", "application/xhtml")):  # a login or error page served with 200
                raise WeightsError(f"could not download {url}: the server sent a web page ({kind}), not a file")
            total = int(resp.headers.get("Content-Length") or 0)
            got = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=label) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    got += len(block)
                    bar.update(len(block))
            if total and got != total:  # the connection closed early: read() does not say so
                raise WeightsError(f"could not download {url}: {got} of its {total} bytes came (the connection "
                                   "closed early); nothing kept")  # fmt: skip
            if got == 0:
                raise WeightsError(f"could not download {url}: the server sent an empty file")

    try:
        atomic_write(dest, write)
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError, ValueError) as exc:
        raise WeightsError(f"could not download {url}: {first_line(exc)}") from None
    return digest.hexdigest()


# What the official files without a published checksum hold, by a few keys and their shapes: a file of other
# weights handed to `--from` is refused rather than converted and called ready. A pinned SHA-256 would be stronger;
# it is not here because it could not be learned from the Hub without network access when this was written.
SIGNATURES: dict[str, tuple[tuple[str, tuple[int, ...]], ...]] = {
    # BigVGAN v2 44 kHz 128 bands: conv_pre (upsample_initial_channel 1536, mel bins 128, kernel 7), as weight norm's
    # weight_v, a parametrization's original1 or a plain weight
    "bigvgan_v2_44khz_128band_512x": (("conv_pre.", (1536, 128, 7)), ("conv_post.", ()), ("resblocks.", ())),
    # DFN5B-CLIP-ViT-H-14-384 (open_clip layout): 14-pixel patches of width 1280, text width 1024, 49408 tokens
    "dfn5b_clip_vit_h_14_384": (("visual.conv1.weight", (1280, 3, 14, 14)), ("token_embedding.weight", (49408, 1024)),
                                ("visual.proj", (1280, 1024))),
}  # fmt: skip


def check_signature(asset: Asset, state: dict, path: Path) -> None:
    """A one-line WeightsError unless `state` (real or meta tensors) has the keys and shapes `SIGNATURES` lists for
    `asset` (assets with a published MD5 are checked by it instead)."""
    for key, shape in SIGNATURES.get(asset.stem, ()):
        shapes = [tuple(v.shape) for k, v in state.items() if k.startswith(key) and hasattr(v, "shape")]
        if not shapes or (shape and shape not in shapes):
            want = f"{key} of shape {shape}" if shape else f"{key}* keys"
            got = f"shapes {', '.join(map(str, shapes[:3]))}" if shapes else "no such key"
            raise WeightsError(f"{path}: does not hold {asset.name}'s weights (no {want}: {got})")


def convert(asset: Asset, root: Path | None = None, verify: bool = True, source: Path | None = None) -> Path:
    """Verify the raw file's (or `source`'s) checksum, or its keys where none is published, and write its state dict
    as safetensors (atomically). Returns the path."""
    from avflow.weights import md5_file, read_state_dict, save_safetensors

    raw = source or raw_path(asset, root)
    if verify and asset.md5:
        got = md5_file(raw)
        if got != asset.md5:
            raise WeightsError(f"{raw}: MD5 {got} is not the published {asset.md5}")
    state = read_state_dict(raw, subkey=asset.subkey)
    check_signature(asset, state, raw)
    return save_safetensors(state, converted_path(asset, root), metadata={"source": asset.name})


def fetch(asset: Asset | str, root: Path | None = None, *, allow_download: bool = False, verify: bool = True) -> Path:
    """The converted safetensors path of an asset, converting or downloading (on request) as needed."""
    if isinstance(asset, str):
        if asset not in ASSETS:
            raise WeightsError(f"unknown weight file {asset!r}; known: {', '.join(ASSETS)}")
        asset = ASSETS[asset]
    dest = converted_path(asset, root)
    if dest.exists() and _readable_safetensors(dest):
        return dest
    dest.unlink(missing_ok=True)  # cut short or damaged: made again from raw/
    raw = raw_path(asset, root)
    if not raw.exists():
        if not allow_download or offline():
            require(asset, root)
        _download(asset, raw)
    try:
        return convert(asset, root, verify=verify)
    except WeightsError as exc:  # a raw file that is not the asset stays no longer: the next download replaces it
        raw.unlink(missing_ok=True)
        again = "with network access, or with --from DIR" if offline() else "again"
        raise WeightsError(f"{raw} was not usable and is removed from the cache; run `avflow download MODEL` "
                           f"{again} ({exc})") from None


def _readable_safetensors(path: Path) -> bool:
    """Whether a converted file's header reads and its data is all there (cheap: the tensors are not read)."""
    from avflow.weights import read_metadata  # lazy: the command parsers import this module without torch

    try:
        read_metadata(path)
        return True
    except WeightsError:
        return False


def cache_state(asset: Asset, root: Path | None = None) -> str:
    """What the cache holds of an asset, in words (`avflow download --list`): a readable converted file, the
    published file only (converted when first used), a damaged converted file (made again from the published one,
    or not without it), or nothing. Reads headers only."""
    converted, raw = converted_path(asset, root), raw_path(asset, root)
    if converted.exists():
        if _readable_safetensors(converted):
            return "cached"
        return "damaged (made again from the published file when used)" if raw.exists() else (
            "damaged (run `avflow download MODEL` again)"
        )  # fmt: skip
    return "published file (converted when first used)" if raw.exists() else "missing"


def require(asset: Asset | str, root: Path | None = None) -> None:
    """A one-line WeightsError unless the asset is in the cache (converted or as published); reads no weights."""
    if isinstance(asset, str):
        if asset not in ASSETS:
            raise WeightsError(f"unknown weight file {asset!r}; known: {', '.join(ASSETS)}")
        asset = ASSETS[asset]
    if converted_path(asset, root).exists() or raw_path(asset, root).exists():
        return
    why = "offline mode is on" if offline() else "downloads happen only on request"
    raise WeightsError(
        f"{asset.name} is not in the cache {root or home()} ({why}); run `avflow download MODEL` "
        f"with network access, or `avflow download MODEL --from DIR` where DIR holds the official files"
    )


def fetch_model(
    model: str,
    root: Path | None = None,
    *,
    allow_download: bool = False,
    local: Path | None = None,
    report: Callable[[str, Path, str], None] | None = None,
) -> dict[str, Path]:
    """All converted files a model needs, by asset stem; a file not in the cache yet is taken from the folder
    `local` where it is there (`find_local`, `import_local`), else fetched. `report(stem, path, how)` hears of each
    file as it is ready (a download of gigabytes takes a while)."""
    if model not in MODELS:
        raise WeightsError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    paths = {}
    for stem in MODELS[model]:
        asset = ASSETS[stem]
        found = None
        if local is not None and not converted_path(asset, root).exists() and not raw_path(asset, root).exists():
            found = find_local(asset, local)  # a published file already in the cache is used first
        if found is not None:
            paths[stem] = import_local(asset, found, root)
            how = f"from {found}, " + (
                "MD5 checked" if asset.md5 else "keys and shapes checked, no published MD5" if stem in SIGNATURES
                else "no published MD5 to check"
            )  # fmt: skip
        else:
            try:
                paths[stem], how = fetch(stem, root, allow_download=allow_download), ""
            except WeightsError as exc:  # the command to run, named
                raise WeightsError(str(exc).replace("avflow download MODEL", f"avflow download {model}")) from None
        if report is not None:
            report(stem, paths[stem], how)
    return paths


def find_local(asset: Asset, folder: Path) -> Path | None:
    """A copy of `asset` under `folder`, found by name without reading it: its published name (MMAudio's
    `weights/` and `ext_weights/`), or for a Hugging Face file its name in the repo inside the repo's folder of a
    Hugging Face cache (`models--ORG--NAME/snapshots/*/FILE`). The first in path order, or None."""
    found = sorted(p for p in Path(folder).rglob(asset.name) if p.is_file())
    if not found and asset.hf_repo:
        repo_folder = "models--" + asset.hf_repo.replace("/", "--")
        found = sorted(p for p in Path(folder).rglob(asset.hf_file) if p.is_file() and repo_folder in p.parts)
    return found[0] if found else None


def import_local(asset: Asset, source: Path, root: Path | None = None) -> Path:
    """`source` (a copy of `asset` one already has) into the cache as if downloaded: its published MD5 checked
    first, or its keys and shapes where none is published (`SIGNATURES`); hard-linked beside raw/ where the file
    system allows (no second copy of gigabytes), else copied; converted from there and moved into raw/ only once
    the conversion succeeded. A copy that is not the asset is a one-line error and replaces nothing in the cache.
    Returns the converted path."""
    import shutil

    from avflow.weights import md5_file, read_state_dict

    given = Path(source)
    source = given.resolve()  # a Hugging Face cache's files are relative links into its blobs/
    if asset.md5 and (got := md5_file(source)) != asset.md5:
        raise WeightsError(f"{given}: MD5 {got} is not the published {asset.md5} of {asset.name}; not taken")
    try:  # where there is no MD5: the keys and shapes, from the headers only where the format allows
        if not asset.md5 and (meta := read_state_dict(source, subkey=asset.subkey, meta=True)) is not None:
            check_signature(asset, meta, given)
    except (WeightsError, OSError) as exc:
        raise _not_taken(given, asset, exc) from None
    raw = raw_path(asset, root)
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = raw.with_name(f".{raw.name}.import{os.getpid()}")
    try:
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, tmp)
        try:
            converted = convert(asset, root, verify=False, source=tmp)
        except WeightsError as exc:  # not the asset after all (no published MD5 to tell): nothing enters the cache
            raise _not_taken(given, asset, exc) from None
        os.replace(tmp, raw)
    finally:
        tmp.unlink(missing_ok=True)
    return converted


def _not_taken(source: Path, asset: Asset, exc: BaseException) -> WeightsError:
    """The one-line refusal of a `--from` copy: the user's file, what it should be, and why not (the reason
    without the path of the file it names, which may be a temporary one)."""
    reason = first_line(exc, 400)
    for path in {str(source), str(source.resolve())}:
        reason = reason.replace(f"{path}: ", "")
    reason = reason.split(": ", 1)[1] if reason.startswith(("/", ".")) and ": " in reason else reason
    if len(reason) > 120:
        reason = reason[:120].rsplit(" ", 1)[0] + " ..."
    return WeightsError(f"{source}: not a usable copy of {asset.name} ({reason}); not taken")


HUB_SCHEME = "hf://"


def is_hub_file(ref: str | Path) -> bool:
    """Whether a weights reference names a file on the Hugging Face Hub (`hf://...`)."""
    return str(ref).startswith(HUB_SCHEME)


def parse_hub_file(ref: str) -> tuple[str, str, str | None]:
    """(repo id, path in the repo, revision or None) of `hf://ORG/NAME/PATH` or `hf://ORG/NAME@REVISION/PATH`."""
    parts = str(ref)[len(HUB_SCHEME) :].split("/")
    if len(parts) < 3 or not all(parts):
        raise WeightsError(f"{ref}: a Hub file is named hf://ORG/NAME/PATH (or hf://ORG/NAME@REVISION/PATH)")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", "/".join(parts[2:]), revision or None


def hub_file(ref: str, *, download: bool = True) -> Path:
    """The local copy of a Hub file (`hf://...`), downloaded on this request where it is not cached yet (not with
    `download=False`, nor in offline mode: then a missing copy is a one-line error naming the file)."""
    from huggingface_hub import hf_hub_download

    repo, filename, revision = parse_hub_file(ref)
    cached_only = offline() or not download
    host = None if cached_only else _unreachable_hub()
    try:
        with _quiet_hub():
            return Path(hf_hub_download(repo, filename, revision=revision,
                                        local_files_only=cached_only or host is not None))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - not cached, network, auth, missing file: all end here
        if host is not None:
            raise WeightsError(f"could not download {ref}: no network (cannot resolve {host}) and no copy in the "
                               "Hugging Face cache; download it once with network access") from None  # fmt: skip
        if cached_only:
            why = "offline mode is on" if offline() else "not downloaded yet"
            raise WeightsError(f"{ref}: not in the Hugging Face cache ({why})") from None
        raise WeightsError(f"could not download {ref}: {first_line(exc, 200)}") from None


URL_SCHEMES = ("https://", "http://")


def is_url_file(ref: str | Path) -> bool:
    """Whether a weights reference names a file at a URL (`https://...`)."""
    return str(ref).lower().startswith(URL_SCHEMES)


def is_remote_file(ref: str | Path) -> bool:
    """Whether a weights reference names a file to download on request: on the Hub (`hf://`) or at a URL."""
    return is_hub_file(ref) or is_url_file(ref)


def parse_url_file(ref: str) -> tuple[str, str, str | None]:
    """(the URL without its fragment, the file's name, the pinned SHA-256 or None) of
    `https://HOST/PATH/NAME[?QUERY][#sha256=HEX]`."""
    import posixpath
    import re
    import urllib.parse

    url, _, fragment = str(ref).partition("#")
    parts = urllib.parse.urlsplit(url)
    name = posixpath.basename(urllib.parse.unquote(parts.path))
    if not parts.netloc or not name or name in (".", ".."):
        raise WeightsError(f"{ref}: a URL of a weights file is https://HOST/PATH/NAME (optionally #sha256=HEX)")
    key, _, value = fragment.partition("=")
    if fragment and (key.lower() != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", value)):
        raise WeightsError(f"{ref}: the one fragment a weights URL takes is #sha256= and 64 hex digits")
    return url, name, value.lower() if fragment else None


def url_cache_path(ref: str, root: Path | None = None) -> Path:
    """Where the file at a URL is kept: urls/KEY/NAME, KEY from the URL without its fragment."""
    import hashlib

    url, name, _ = parse_url_file(ref)
    return (root or home()) / "urls" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def url_file(ref: str, *, download: bool = True, root: Path | None = None) -> Path:
    """The local copy of the file at a URL, downloaded on this request where it is not in the cache yet (not with
    `download=False`, nor in offline mode: then a missing copy is a one-line error naming the URL). Its SHA-256,
    recorded at download beside it (NAME.sha256), must equal the URL's pin where it has one; a download without a
    pin says the digest to pin it with (a WeightsWarning note)."""
    import warnings

    from avflow.errors import WeightsWarning

    url, name, pin = parse_url_file(ref)
    dest = url_cache_path(ref, root)
    record = dest.with_name(dest.name + ".sha256")
    if not (dest.is_file() and record.is_file()):
        if offline() or not download:
            why = "offline mode is on" if offline() else "not downloaded yet"
            raise WeightsError(f"{url}: not in the cache {dest.parent} ({why})")
        digest = _download_url(url, dest, name)
        if pin is not None and digest != pin:
            dest.unlink()
            record.unlink(missing_ok=True)
            if not any(dest.parent.iterdir()):
                dest.parent.rmdir()
            raise WeightsError(f"{url}: the download's SHA-256 {digest} is not the {pin} the URL pins; nothing kept")
        from avflow.weights import atomic_write

        atomic_write(record, lambda f: f.write(digest.encode()))
        if pin is None:
            warnings.warn(WeightsWarning(f"downloaded {url} (SHA-256 {digest}; end the URL with #sha256={digest} "
                                         "to have later uses checked)"), stacklevel=2)  # fmt: skip
    digest = record.read_text().strip()
    if pin is not None and digest == pin:  # a pin is checked against the bytes there, not only the record
        from avflow.weights import sha256_file

        digest = sha256_file(dest)
    if pin is not None and digest != pin:
        why = "the file at the URL changed, or the pin is wrong"
        raise WeightsError(f"{url}: the cached copy's SHA-256 {digest} is not the {pin} the URL pins ({why}); "
                           f"delete {dest.parent} to download it again")  # fmt: skip
    return dest


def remote_file(ref: str, *, download: bool = True) -> Path:
    """The local copy of a Hub file (`hub_file`) or of a file at a URL (`url_file`)."""
    return hub_file(ref, download=download) if is_hub_file(ref) else url_file(ref, download=download)
