"""Static checks of untrusted model archives, run before any framework loader sees the bytes.

Pickle-carrying formats are never trusted to a loader as they are: every pickle stream inside is
walked opcode by opcode (nothing is executed) and every global it would import must be on an
allow-list; TorchScript code and torch.export graphs must not call operators that touch files.
"""

from __future__ import annotations

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


def _members(archive: zipfile.ZipFile) -> Iterator[tuple[str, bytes]]:
    for info in archive.infolist():
        if not info.is_dir():
            yield info.filename, archive.read(info)


def _nested(name: str, data: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """A member, and the members of a zip stored inside it (torch.save output inside a .pt2)."""
    yield name, data
    if data[:4] != b"PK\x03\x04":
        return
    if depth >= 3:  # torch nests one level; deeper nesting is an attack on the scanner
        raise CheckFailed(f"refusing to load: {name} nests zip archives more than 3 deep")
    with zipfile.ZipFile(io.BytesIO(data)) as inner:
        if sum(i.file_size for i in inner.infolist()) > MAX_UNPACKED_BYTES:
            raise CheckFailed(f"refusing to load: {name} unpacks to too many bytes (zip bomb?)")
        for inner_name, inner_data in _members(inner):
            yield from _nested(f"{name}!{inner_name}", inner_data, depth + 1)


def _is_pickle_member(name: str) -> bool:
    # By name only: raw tensor bytes can start with any byte, 0x80 included.
    return name.endswith((".pkl", ".debug_pkl"))


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


def _pickled_members(archive: zipfile.ZipFile) -> set[str]:
    """Members that torch.export.load hands to an unpickler, per the archive's payload configs."""
    names = set()
    for name in archive.namelist():
        if name.endswith(("_weights_config.json", "_constants_config.json")):
            folder = name.rsplit("/", 1)[0]
            try:
                config = json.loads(archive.read(name)).get("config", {})
            except (ValueError, AttributeError):
                continue
            for entry in config.values() if isinstance(config, dict) else ():
                if isinstance(entry, dict) and entry.get("use_pickle"):
                    names.add(f"{folder}/{entry.get('path_name')}")
        elif name.rsplit("/", 2)[-2:-1] in (["weights"], ["constants"]) and name.endswith(".pt"):
            names.add(name)  # the legacy layout: one torch.save file of all weights
    return names


def check_torch_export(path: Path) -> None:
    """Refuse a torch.export archive with pickled code, custom objects or file operators."""
    allowed = torch_allowed()
    with open_zip(path, "torch.export archive (.pt2)") as archive:
        pickled = _pickled_members(archive)
        for name, data in _members(archive):
            base = name.rsplit("/", 1)[-1]
            if "/data/constants/" in name and base.startswith(("custom_obj", "opaque_obj")):
                raise CheckFailed(
                    f"refusing to load: the archive holds a pickled custom object ({name}); "
                    "mlops-ci loads tensors only. Export the model without script objects.",
                    path=path,
                )
            if (name in pickled or name.endswith(".pt")) and data[:4] != b"PK\x03\x04":
                # torch.load would unpickle it in the legacy format: say what it imports, and
                # refuse it even if that looks harmless (the legacy format chains pickles)
                check_pickle(data, allowed, where=f"member {name}", path=path)
                raise CheckFailed(
                    f"refusing to load: member {name} is a bare pickle, not a torch.save archive; "
                    "re-save the model with torch.export.save from a current torch",
                    path=path,
                )
            for inner, blob in _nested(name, data):
                if _is_pickle_member(inner):
                    check_pickle(blob, allowed, where=f"member {inner}", path=path)
            if "/models/" in name and name.endswith(".json"):
                _check_export_graph(data, name, path)


def _check_export_graph(data: bytes, member: str, path: Path) -> None:
    # torch's deserializer resolves "torch.a.b" by getattr from the torch module, so a crafted
    # graph could name torch.os.system: only operator overloads and plain arithmetic may appear.
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise CheckFailed(f"refusing to load: {member} is not JSON ({exc})", path=path) from None
    for target in _targets(doc):
        ok = (target.startswith("torch.ops.") and target.split(".")[3] not in _FILE_OPERATORS) or (
            re.fullmatch(r"(_operator|math)\.[a-z_]+", target) is not None
        )
        if not ok:
            raise CheckFailed(
                f"refusing to load: the exported graph calls {target!r}, which is not an ONNX-"
                "exportable operator (only torch.ops.* operators, _operator.* and math.* are "
                "allowed)",
                path=path,
            )


def _targets(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "target" and isinstance(value, str):
                yield value
            else:
                yield from _targets(value)
    elif isinstance(node, list):
        for item in node:
            yield from _targets(item)


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_torchscript(path: Path) -> None:
    """Refuse a TorchScript archive with foreign pickle globals, file operators or __setstate__."""
    allowed = torch_allowed()
    with open_zip(path, "TorchScript archive") as archive:
        for name, data in _members(archive):
            if _is_pickle_member(name):
                check_pickle(data, allowed, where=f"member {name}", path=path)
            elif name.endswith(".py"):
                # TorchScript code is compiled at load time and `__setstate__` runs during
                # loading; code that reads or writes files is refused before either happens.
                words = set(_IDENT.findall(data.decode("utf-8", "replace")))
                bad = sorted(words & (_FILE_OPERATORS | {"__setstate__"}))
                if bad:
                    raise CheckFailed(
                        f"refusing to load: TorchScript code in {name} uses {', '.join(bad)} "
                        "(file access or code run during loading); export the model with "
                        "torch.export instead",
                        path=path,
                    )
