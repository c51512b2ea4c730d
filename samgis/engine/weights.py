"""Find, download and verify model weights.

Order: an explicit checkpoint path (`--checkpoint` / `SAMGIS_CHECKPOINT`; a file, or a folder for models
of several files), else a model-storage folder (`AIP_STORAGE_URI`), else the files in the cache
directory, else a download of each file from its official URL with a progress bar, verified (size, then
MD5 or SHA-256) before use.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import httpx
from tqdm import tqdm

from samgis.engine.registry import ModelSpec, WeightFile
from samgis.errors import WeightsUnavailable


def default_cache_dir() -> Path:
    """`$SAMGIS_CACHE_DIR/weights`, else `$XDG_CACHE_HOME/samgis/weights`, else `~/.cache/samgis/weights`."""
    root = os.environ.get("SAMGIS_CACHE_DIR")
    if root:
        return Path(root) / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "samgis" / "weights"


def file_digest(path: Path, algorithm: str, chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_md5(path: Path) -> str:
    return file_digest(path, "md5")


def verify_file(path: Path, wf: WeightFile, model_id: str) -> None:
    """Raise `WeightsUnavailable` when the file's size or digests differ from the registry's."""
    size = path.stat().st_size
    if wf.size_bytes is not None and size != wf.size_bytes:
        raise WeightsUnavailable(
            f"{path} has {size} bytes but {model_id}'s {wf.name} has {wf.size_bytes}; "
            "the file is incomplete or a different model. Delete it and download again."
        )
    for algorithm, want in (("md5", wf.md5), ("sha256", wf.sha256)):
        if want is None:
            continue
        digest = file_digest(path, algorithm)
        if digest != want:
            raise WeightsUnavailable(
                f"{path} has {algorithm.upper()} {digest} but {model_id}'s {wf.name} has {want}; "
                "the file is corrupt or a different model. Delete it and download again."
            )


def how_to_provide(spec: ModelSpec, cache_dir: Path, reason: str) -> str:
    """The one-paragraph message shown when weights are missing."""
    if not spec.files:
        return (f"Weights for model {spec.model_id!r} are not available ({reason}). This model has no download: "
                f"pass its file or folder with `--checkpoint PATH` or the environment variable SAMGIS_CHECKPOINT.")
    if spec.extra.get("gated"):
        return gated_message(spec, reason)
    names = ", ".join(f.name + (f" from {f.url}" if f.url else "") for f in spec.files)
    return (
        f"Weights for model {spec.model_id!r} are not available ({reason}). Provide them in one of these ways: "
        f"(1) download {names} on a machine with internet access and pass the path with `--checkpoint PATH` "
        f"or the environment variable SAMGIS_CHECKPOINT; "
        f"(2) copy the file{'s' if len(spec.files) > 1 else ''} to {cache_dir} "
        f"(the cache directory, set with SAMGIS_CACHE_DIR); "
        f"(3) run `samgis fetch-weights {spec.model_id}` where the download URL is reachable."
    )


def gated_message(spec: ModelSpec, reason: str) -> str:
    """The one paragraph shown when a gated model's download is refused (no token, HTTP 401 / 403).

    A gated spec names its access page in `extra["gated_page"]` and the token variable in `extra["token_env"]`."""
    page = spec.extra.get("gated_page", "the model's page")
    env = spec.extra.get("token_env", "HF_TOKEN")
    names = ", ".join(f.name for f in spec.files)
    return (
        f"Weights for model {spec.model_id!r} are not available ({reason}). Its checkpoint is gated: "
        f"(1) sign in at {page} and request access (the publisher approves each account); "
        f"(2) once access is granted, create a read token (https://huggingface.co/settings/tokens) and set it in "
        f"the environment variable {env} before starting samgis, which then downloads {names} into its cache; "
        f"or (3) download {names} yourself and pass it with `--checkpoint PATH` (or SAMGIS_CHECKPOINT)."
    )


def _auth(spec: ModelSpec) -> tuple[dict, str | None]:
    """Request headers for `spec`'s downloads and the token variable's name when it is unset (gated specs send
    `Authorization: Bearer $<token_env>`)."""
    env = spec.extra.get("token_env")
    token = os.environ.get(env, "").strip() if env else ""
    return ({"Authorization": f"Bearer {token}"} if token else {}), (env if env and not token else None)


def download(spec: ModelSpec, dest: Path, *, wf: WeightFile | None = None, progress: bool = True,
             timeout_s: float = 30.0, client: httpx.Client | None = None) -> Path:
    """Stream one of `spec`'s files (`wf`, default the first) to `dest` (via `dest.part`), verify it, then
    move it into place."""
    wf = wf or (spec.files[0] if spec.files else None)
    if wf is None or not wf.url:
        raise WeightsUnavailable(how_to_provide(spec, dest.parent, "the model has no download URL"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    own = client is None
    client = client or httpx.Client(timeout=timeout_s, follow_redirects=True,
                                    headers={"User-Agent": "samgis-weights/0.1"})
    # httpx drops Authorization on a redirect to another origin (httpx/_client.py `_redirect_headers`): the
    # token goes to huggingface.co only, not to the signed CDN URL it redirects to
    headers, unset_env = _auth(spec)
    try:
        with client.stream("GET", wf.url, headers=headers) as resp:
            if resp.status_code in (401, 403) and spec.extra.get("gated"):
                raise WeightsUnavailable(gated_message(spec, (
                    f"no token is set in {unset_env} and the download answered HTTP {resp.status_code}"
                    if unset_env else f"the download answered HTTP {resp.status_code}: the token in "
                                      f"{spec.extra.get('token_env')} has no access to it (yet)")))
            if resp.status_code != 200:
                raise WeightsUnavailable(how_to_provide(spec, dest.parent,
                                                        f"{wf.url} answered HTTP {resp.status_code}"))
            total = int(resp.headers.get("content-length") or wf.size_bytes or 0) or None
            with open(part, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                             desc=f"{spec.model_id}", disable=not progress,
                                             file=sys.stderr) as bar:
                for chunk in resp.iter_bytes(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise WeightsUnavailable(how_to_provide(spec, dest.parent, f"download failed: {exc}")) from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        if own:
            client.close()
    try:
        verify_file(part, wf, spec.model_id)
    except WeightsUnavailable as exc:
        part.unlink(missing_ok=True)
        raise WeightsUnavailable(f"downloaded file rejected: {exc.message}") from None
    os.replace(part, dest)
    return dest


def storage_checkpoint(spec: ModelSpec, uri: str | None) -> Path | None:
    """Weights inside a model-storage location such as Vertex AI's `AIP_STORAGE_URI`, when it is a local path.

    A file is taken as the checkpoint; in a folder, the model's official file name, else its only `*.pth`
    or `*.pt`; a model without registered files (e.g. an ONNX pair) takes the folder itself otherwise.
    Remote URIs (`gs://…`) are not fetched here: None, and resolution goes on to the cache dir.
    """
    if not uri or "://" in uri and not uri.startswith("file://"):
        return None
    path = Path(uri.removeprefix("file://")).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        return None
    if spec.files and (path / spec.files[0].name).is_file():
        return path / spec.files[0].name
    found = sorted(path.glob("*.pth")) + sorted(path.glob("*.pt"))
    if len(found) == 1:
        return found[0]
    if found:
        raise WeightsUnavailable(how_to_provide(
            spec, path, f"{path} holds several checkpoint files ({', '.join(f.name for f in found)}); "
                        f"name one with --checkpoint"))
    return None if spec.files else path  # a model of several files given as a folder (e.g. an ONNX pair)


def resolve_weights(spec: ModelSpec, checkpoint: str | os.PathLike | None = None, *,
                    cache_dir: Path | None = None, allow_download: bool = True,
                    progress: bool = True) -> Path:
    """Path of verified weights for `spec` (its file; for a model of several files, the folder holding
    them), downloading them when allowed.

    An explicit `checkpoint` is trusted as given (users fine-tune and convert weights); it must exist.
    """
    cache_dir = cache_dir or default_cache_dir()
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise WeightsUnavailable(how_to_provide(spec, cache_dir, f"checkpoint {path} does not exist"))
        return path
    if not spec.files:
        raise WeightsUnavailable(how_to_provide(spec, cache_dir, "no checkpoint was given"))
    for wf in spec.files:
        cached = cache_dir / wf.name
        if cached.is_file():
            size = cached.stat().st_size
            if wf.size_bytes is not None and size != wf.size_bytes:
                raise WeightsUnavailable(how_to_provide(
                    spec, cache_dir, f"{cached} has {size} bytes, expected {wf.size_bytes}: delete it"))
            continue
        if not allow_download:
            raise WeightsUnavailable(how_to_provide(spec, cache_dir, f"{cached} is missing and downloads are off"))
        download(spec, cached, wf=wf, progress=progress)
    return cache_dir / spec.files[0].name if len(spec.files) == 1 else cache_dir

