"""Static checks of untrusted model archives, run before any framework loader sees the bytes.

Pickle-carrying formats are never trusted to a loader as they are: every pickle stream inside is
walked opcode by opcode (nothing is executed) and every global it would import must be on an
allow-list; TorchScript code and torch.export graphs must not call operators that touch files.
"""

from __future__ import annotations

import ast
import io
import json
import pickletools
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mlops_ci.errors import CheckFailed

#: Archives bigger than this when unpacked are refused (zip bombs); real models are far smaller.
MAX_UNPACKED_BYTES = 8 << 30
PICKLE_FIX = (
    "save the model in a format that holds no code: skops (skops.io.dump) for scikit-learn, "
    "the native JSON/UBJ or text format for XGBoost/LightGBM, torch.export.save (.pt2) or "
    "torch.jit.save for PyTorch, or ONNX"
)

# Operators that read or write files: a model has no business calling them.
_FILE_OPERATORS = frozenset({"save", "from_file", "load_tensor", "_save_for_mobile", "load"})

Allowed = Callable[[str], bool]


def read_head(path: Path, n: int = 8) -> bytes:
    with path.open("rb") as fh:
        return fh.read(n)


def looks_like_pickle(head: bytes) -> bool:
    """Pickle protocol 2+ starts with PROTO (0x80); protocols 0/1 usually with '(' or ']' or 'c'."""
    return head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}", b"c")


def open_zip(path: Path, what: str) -> zipfile.ZipFile:
    """The archive, or CheckFailed saying what the file is instead (e.g. a renamed pickle)."""
    head = read_head(path)
    if not zipfile.is_zipfile(path):
        found = "a pickle stream" if looks_like_pickle(head) else "not a zip archive"
        raise CheckFailed(
            f"not a {what}: the file is {found}. Pickle files are refused because loading one "
            f"runs code; {PICKLE_FIX}",
            path=path,
        )
    archive = zipfile.ZipFile(path)
    total = sum(info.file_size for info in archive.infolist())
    if total > MAX_UNPACKED_BYTES:
        archive.close()
        raise CheckFailed(f"{what} unpacks to {total:,} bytes; refusing (zip bomb?)", path=path)
    return archive


def pickle_globals(stream: bytes) -> tuple[list[str], str | None]:
    """Every `module.name` a pickle stream would import, and why scanning stopped early, if so.

    The walk tracks string values through the memo so STACK_GLOBAL operands that come from
    BINGET are resolved; an operand it cannot resolve is reported as '?' (and so refused).
    Scanning continues up to STOP; a malformed tail is reported, since an unpickler would have
    executed everything before it.
    """
    found: list[str] = []
    memo: dict[int, object] = {}
    recent: list[object] = []  # values pushed by the most recent ops, for STACK_GLOBAL
    unknown = object()
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(stream)):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.append(f"{module}.{attr}")
                recent.append(unknown)
            elif name == "STACK_GLOBAL":
                if len(recent) >= 2 and all(isinstance(v, str) for v in recent[-2:]):
                    found.append(f"{recent[-2]}.{recent[-1]}")
                else:
                    found.append("?.? (a global whose name is computed at load time)")
                recent = [unknown]
            elif name in ("EXT1", "EXT2", "EXT4"):
                found.append(f"copyreg extension #{arg}")
                recent.append(unknown)
            elif "UNICODE" in name or name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                recent.append(str(arg))
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                recent.append(memo.get(int(arg or 0), unknown))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg or 0)] = recent[-1] if recent else unknown
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else unknown
            elif name in ("FRAME", "PROTO"):
                pass
            elif name == "STOP":
                return found, None
            else:
                recent.append(unknown)
            del recent[:-2]
    except ValueError as exc:
        return found, f"malformed pickle ({exc})"
    return found, "pickle stream has no STOP"


def check_pickle(stream: bytes, allowed: Allowed, *, where: str, path: Path) -> None:
    """Refuse a pickle stream that would import anything off the allow-list."""
    names, problem = pickle_globals(stream)
    bad = sorted({n for n in names if not allowed(n)})
    if bad:
        raise CheckFailed(
            f"refusing to load: {where} would import {', '.join(bad)}, which "
            f"{'is' if len(bad) == 1 else 'are'} not on the allow-list of data-only types "
            f"(a pickle that imports arbitrary callables can run code when loaded); {PICKLE_FIX}",
            path=path,
        )
    if problem:
        raise CheckFailed(f"refusing to load: {where} is a {problem}", path=path)


# --- torch archives ------------------------------------------------------------------------------
#
# torch reads its zip archives through miniz, which finds a record by name without regard to
# case, in every path segment, and relative to the archive's top folder. The scan therefore
# indexes members the same way (folded, top folder dropped), refuses an archive where two
# members fold to one name (torch and the scanner could pick different ones), and classifies
# every member by what torch does with it. A member it cannot classify as data is treated as
# something torch may unpickle: it must be a torch.save archive whose pickle passes the scan.

#: Members torch reads as plain text or numbers, never as a pickle (folded, top folder dropped).
_TORCH_METADATA = frozenset(
    {
        "archive_format",
        "archive_version",
        "version",
        ".data/version",
        "byteorder",
        ".data/serialization_id",
        ".format_version",
        ".storage_alignment",
    }
)
_ZIP_MAGIC = b"PK\x03\x04"
#: torch.export loads constants of these kinds with torch._C._pickle_load_obj / pickle.loads.
_OBJECT_PREFIXES = ("custom_obj", "opaque_obj")


def fold(name: str) -> str:
    """A member name as torch's zip reader matches it: case folded, every path segment."""
    return name.casefold()


def _index(archive: zipfile.ZipFile, where: str, path: Path) -> dict[str, zipfile.ZipInfo]:
    """Members by the name torch looks them up with; names that collide once folded refused."""
    index: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        key = fold(info.filename.split("/", 1)[1] if "/" in info.filename else info.filename)
        if key in index:
            raise CheckFailed(
                f"refusing to load: {where} holds members {index[key].filename!r} and "
                f"{info.filename!r}, one name once case is ignored; torch matches names without "
                "case, so what it loads need not be what was scanned",
                path=path,
            )
        index[key] = info
    return index


def torch_allowed() -> Allowed:
    """torch's own weights-only allow-list, plus TorchScript's class namespace.

    `__torch__.*` names are resolved by TorchScript's C++ unpickler against the archive's compiled
    classes, never imported from Python.
    """
    from torch import _weights_only_unpickler as wou

    names = set(wou._get_allowed_globals())
    names |= {
        "torch.jit._pickle." + n
        for n in (
            "build_intlist",
            "build_tensorlist",
            "build_doublelist",
            "build_boollist",
            "build_tensor_from_id",
            "restore_type_tag",
        )
    }

    def allowed(name: str) -> bool:
        return name in names or name.startswith("__torch__.")

    return allowed


def _check_torch_save(
    data: bytes, allowed: Allowed, *, where: str, path: Path, depth: int = 0
) -> None:
    """A blob torch.load may read: a torch.save zip whose data.pkl imports allowed names only.

    torch.load also reads the legacy format (several pickles in a row, the first of which runs
    before anything checks the rest), so a bare pickle is refused whatever it imports.
    """
    if data[:4] != _ZIP_MAGIC:
        check_pickle(data, allowed, where=where, path=path)
        raise CheckFailed(
            f"refusing to load: {where} is a bare pickle (or not a torch.save archive) where "
            "torch would unpickle it; re-save the model with torch.export.save from a current "
            "torch",
            path=path,
        )
    if depth >= 3:  # torch nests one level; deeper nesting is an attack on the scanner
        raise CheckFailed(
            f"refusing to load: {where} nests zip archives more than 3 deep", path=path
        )
    with zipfile.ZipFile(io.BytesIO(data)) as inner:
        if sum(i.file_size for i in inner.infolist()) > MAX_UNPACKED_BYTES:
            raise CheckFailed(f"refusing to load: {where} unpacks to too many bytes", path=path)
        index = _index(inner, where, path)
        if "data.pkl" not in index:
            raise CheckFailed(f"refusing to load: {where} is a zip without data.pkl", path=path)
        for key, info in index.items():
            blob_where = f"{where}!{info.filename}"
            if key.endswith(".pkl"):
                check_pickle(inner.read(info), allowed, where=blob_where, path=path)
            elif key.startswith("data/") or key in _TORCH_METADATA:
                continue  # storages, read as raw bytes through data.pkl's persistent ids
            elif _looks_serialised(inner, info):
                _check_torch_save(
                    inner.read(info), allowed, where=blob_where, path=path, depth=depth + 1
                )


def _looks_serialised(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Whether a member starts like a pickle or a zip archive (torch.save's two formats): its
    first four bytes only, so a large member is decompressed once at most, when it is scanned."""
    with archive.open(info) as fh:
        head = fh.read(4)
    return head[:1] == b"\x80" or head == _ZIP_MAGIC


def _payload_configs(
    archive: zipfile.ZipFile, index: dict[str, zipfile.ZipInfo], path: Path
) -> tuple[set[str], set[str]]:
    """(members torch.export.load unpickles, members it reads as raw tensor bytes), per the
    archive's weights and constants configs; constants that are not plain tensors refused."""
    pickled: set[str] = set()
    raw: set[str] = set()
    for key, info in index.items():
        kind = "constants" if key.endswith("_constants_config.json") else "weights"
        if not key.endswith(("_weights_config.json", "_constants_config.json")):
            continue
        try:
            config = json.loads(archive.read(info)).get("config", {})
        except (ValueError, AttributeError, RecursionError):
            raise CheckFailed(
                f"refusing to load: {info.filename} is not a payload config", path=path
            ) from None
        folder = key.rsplit("/", 1)[0] if "/" in key else ""
        for fqn, entry in config.items() if isinstance(config, dict) else ():
            name = entry.get("path_name") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                raise CheckFailed(
                    f"refusing to load: {info.filename} entry {fqn!r} has no path_name", path=path
                )
            # torch.export picks the loader by this prefix, case-sensitively; anything but a
            # plain tensor is a custom or opaque object, which it unpickles with no allow-list
            if kind == "constants" and not name.startswith("tensor_"):
                raise CheckFailed(
                    f"refusing to load: constant {fqn!r} ({name}) is not a plain tensor; torch "
                    "loads custom and opaque objects with a bare pickle.loads. Export the model "
                    "without script or opaque objects",
                    path=path,
                )
            member = fold(f"{folder}/{name}" if folder else name)
            (pickled if entry.get("use_pickle") else raw).add(member)
    return pickled, raw - pickled


def check_torch_export(path: Path) -> None:
    """Refuse a torch.export archive with pickled code, custom objects or file operators."""
    allowed = torch_allowed()
    with open_zip(path, "torch.export archive (.pt2)") as archive:
        index = _index(archive, "the archive", path)
        pickled, raw = _payload_configs(archive, index, path)
        for key, info in index.items():
            where = f"member {info.filename}"
            base = key.rsplit("/", 1)[-1]
            if key.startswith("data/constants/") and base.startswith(_OBJECT_PREFIXES):
                raise CheckFailed(
                    f"refusing to load: the archive holds a pickled custom object "
                    f"({info.filename}); mlops-ci loads tensors only. Export the model without "
                    "script or opaque objects.",
                    path=path,
                )
            if key.startswith(("data/aotinductor/", "data/executorch/", "data/mtia/")):
                raise CheckFailed(
                    f"refusing to load: {where} is compiled code (AOTInductor or another "
                    "backend), which torch.export.load would run; save the exported program only",
                    path=path,
                )
            if key in raw or key in _TORCH_METADATA or key.startswith("extra/"):
                continue  # read as raw tensor bytes or text, never unpickled
            if key not in pickled and key.endswith(".json"):
                if key.startswith("models/"):
                    _check_export_graph(archive.read(info), info.filename, path)
                continue
            # pickled per a config, or a member mlops-ci cannot place: torch may load it
            _check_torch_save(archive.read(info), allowed, where=where, path=path)


def _check_export_graph(data: bytes, member: str, path: Path) -> None:
    # torch's deserializer resolves "torch.a.b" by getattr from the torch module, so a crafted
    # graph could name torch.os.system: only operator overloads and plain arithmetic may appear.
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # json recurses once per level of nesting
        raise CheckFailed(f"refusing to load: {member} is not JSON ({exc})", path=path) from None
    for target in _targets(doc):
        parts = target.split(".")
        ok = (
            target.startswith("torch.ops.") and len(parts) > 3 and parts[3] not in _FILE_OPERATORS
        ) or (re.fullmatch(r"(_operator|math)\.[a-z_]+", target) is not None)
        if not ok:
            raise CheckFailed(
                f"refusing to load: the exported graph calls {target!r}, which is not an ONNX-"
                "exportable operator (only torch.ops.* operators, _operator.* and math.* are "
                "allowed)",
                path=path,
            )


def _targets(node: object) -> Iterator[str]:
    # a loop, not recursion: the document's nesting is the archive's to choose
    pending = [node]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "target" and isinstance(value, str):
                    yield value
                else:
                    pending.append(value)
        elif isinstance(item, list):
            pending.extend(item)


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_torchscript_code(data: bytes, member: str, path: Path) -> None:
    # TorchScript code is compiled at load time and `__setstate__` runs during loading; code
    # that reads or writes files is refused before either happens.
    text = data.decode("utf-8", "replace")
    words = set(_IDENT.findall(text))
    # getattr(torch, "from" "_file") names an operator by a string literal, which TorchScript
    # joins and unescapes first: the words of every literal's value count too. TorchScript
    # code is Python syntax, and Python decodes every literal TorchScript accepts the same way
    # (TorchScript knows no escapes Python lacks), so what cannot be parsed is refused.
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise CheckFailed(
            f"refusing to load: TorchScript code in {member} cannot be read as Python syntax "
            f"({type(exc).__name__}: {exc}), so what it calls cannot be checked",
            path=path,
        ) from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            words.update(_IDENT.findall(node.value))
    bad = sorted(words & (_FILE_OPERATORS | {"__setstate__"}))
    if bad:
        raise CheckFailed(
            f"refusing to load: TorchScript code in {member} uses {', '.join(bad)} (file access "
            "or code run during loading); export the model with torch.export instead",
            path=path,
        )


def check_torchscript(path: Path) -> None:
    """Refuse a TorchScript archive with foreign pickle globals, file operators or __setstate__."""
    allowed = torch_allowed()
    with open_zip(path, "TorchScript archive") as archive:
        index = _index(archive, "the archive", path)
        # storages live in a folder named after the pickle that references them (data.pkl ->
        # data/0, constants.pkl -> constants/0) and are read as raw bytes
        storage_folders = {k[: -len(".pkl")] + "/" for k in index if k.endswith(".pkl")}
        for key, info in index.items():
            where = f"member {info.filename}"
            if key.endswith(".py"):
                _check_torchscript_code(archive.read(info), info.filename, path)
            elif key.endswith((".pkl", ".debug_pkl")):
                check_pickle(archive.read(info), allowed, where=where, path=path)
            elif key.startswith(tuple(storage_folders)) or key in _TORCH_METADATA:
                continue
            elif key.startswith("extra/") or key.endswith(".json"):
                continue  # handed to the caller as bytes, or read as JSON
            elif _looks_serialised(archive, info):
                _check_torch_save(archive.read(info), allowed, where=where, path=path)
