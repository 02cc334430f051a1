"""Deploy costs, measured side by side in one run, printed as ratios:

1. a publish (conversion excluded) against copying the same ONNX bytes into the registry with a
   plain file copy (folder) or one boto3 `put_object` (SeaweedFS `weed mini` on 127.0.0.1), and,
   on a folder, against a bare `write()` of the same bytes from memory (what a publish, which
   holds the checked bytes, cannot do with less) (target: ≤ 3× the copy);
2. deploy and rollback time in a registry of 1 model × 5 versions against 1,000 models × 5
   versions, measured in turns (target: within 1.5×), and (2b) against 1 model × 500 versions;
3. `audit verify` throughput on 100,000 records (target: ≥ 100,000 records/s);
4. on S3 behind a proxy that adds 10 ms a round trip: a publish whose independent reads go
   together against the same publish making them one after another;
5. single S3 requests (a small create, a small read, a 1 MB create): the registry's own client
   (`mlops_ci/s3.py`) against boto3, wall time and this process's CPU.

Run: .venv/bin/python bench/deploy.py [--models 1000] [--versions 500] [--records 100000]
     [--repeat 15]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from deploy_models import candidate

from mlops_ci import atomic, audit, deploy, registry, triton
from mlops_ci.deploy import Candidate, Provenance
from mlops_ci.registry import Registry, open_registry

PROV = Provenance(source="local", actor="bench")


def median_s(fn: Callable[[int], object], repeat: int) -> float:
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def in_turns(fns: list[Callable[[int], object]], repeat: int) -> list[float]:
    """Median seconds of each of `fns`, run in turns, so that all meet the same disk and the
    same neighbours; the order rotates, so none always goes first. Each starts with nothing
    left to write back (`os.sync()`, untimed): a deploy runs once, not after fifteen others,
    and once the page cache holds more unwritten data than the kernel allows, it throttles
    whichever writer comes next (a 50 MB publish went from 60 ms to 280 ms from its twelfth
    turn on, while the copies did not)."""
    times: list[list[float]] = [[] for _ in fns]
    for i in range(repeat):
        for k in range(len(fns)):
            j = (i + k) % len(fns)
            os.sync()
            t0 = time.perf_counter()
            fns[j](i)
            times[j].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def side_by_side(
    a: Callable[[int], object], b: Callable[[int], object], repeat: int
) -> tuple[float, float]:
    """`in_turns` of two."""
    first, second = in_turns([a, b], repeat)
    return first, second


def write_file(path: Path, data: bytes) -> None:
    """The bytes written from memory to a new file in 1 MiB calls, nothing else: what a
    publish cannot do with less (it holds the checked bytes in memory, not a file to copy)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        atomic.write_all(fd, data)
    finally:
        os.close(fd)


def big_candidates(name: str, versions: list[str], mb: int) -> list[Candidate]:
    """The iris candidate padded to `mb` MB, as a model with large weights would be, in each
    version (retrained artifacts, the same ONNX bytes). The versions share one bytes object:
    the publish reads memory as hot as the page cache the copy reads, since memory left idle
    here is slow to read again (the machine reclaims cold pages)."""
    import dataclasses

    import onnx

    model = onnx.load_from_string(candidate(name).onnx)
    model.metadata_props.add(key="padding", value="x" * (mb << 20))
    data = model.SerializeToString()
    out = []
    for version in versions:
        small = candidate(name, version, salt=version)
        info = small.onnx_info | {"sha256": hashlib.sha256(data).hexdigest()}
        out.append(dataclasses.replace(small, onnx=data, onnx_info=info))
    return out


def publish_vs_copy(tmp: Path, mb: int, repeat: int, s3_uri: str | None, put: object) -> None:
    cands = big_candidates("m", [f"1.0.{i}" for i in range(repeat)], mb)
    reg = open_registry(tmp / f"fs-{mb}")
    src = tmp / f"src-{mb}.onnx"
    src.write_bytes(cands[0].onnx)
    (tmp / "copies").mkdir(exist_ok=True)
    publish, copy, write = in_turns(
        [
            lambda i: deploy.publish(reg, cands[i], PROV),
            lambda i: shutil.copyfile(src, tmp / "copies" / f"{mb}-{i}.onnx"),
            lambda i: write_file(tmp / "copies" / f"{mb}-{i}.written", cands[0].onnx),
        ],
        repeat,
    )
    print(
        f"  folder, {mb:>3} MB model: publish {publish * 1e3:8.1f} ms   plain copy "
        f"{copy * 1e3:8.1f} ms   ratio {publish / copy:5.2f}×  (target ≤ 3×)   "
        f"beyond the copy {(publish - copy) * 1e3:5.1f} ms   [a plain write() of the bytes: "
        f"{write * 1e3:.1f} ms, publish {publish / write:4.2f}× it]"
    )
    if s3_uri is None:
        return
    s3 = open_registry(f"{s3_uri}-{mb}")
    s3_publish, s3_put = side_by_side(
        lambda i: deploy.publish(s3, cands[i], PROV),
        lambda i: put(f"plain/{mb}-{i}.onnx", cands[0].onnx),  # type: ignore[operator]
        repeat,
    )
    print(
        f"  S3,     {mb:>3} MB model: publish {s3_publish * 1e3:8.1f} ms   put_object "
        f"{s3_put * 1e3:8.1f} ms   ratio {s3_publish / s3_put:5.2f}×  (target ≤ 3×)   "
        f"beyond the put {(s3_publish - s3_put) * 1e3:5.1f} ms"
    )


def populate(root: Path, models: int, versions: int = 5) -> Registry:
    """A registry of `models` × `versions`, written directly (same layout, no per-file fsync)."""
    reg = open_registry(root)
    base = candidate("m0", "1.0.0")
    onnx_sha = base.onnx_sha256
    lines: list[bytes] = []
    prev = audit.GENESIS
    for m in range(models):
        name = f"m{m}"
        for n in range(1, versions + 1):
            record = {
                "action": "deploy",
                "model": name,
                "version": f"1.{n}.0",
                "registry_version": n,
                "prev": prev,
                "seq": len(lines) + 1,
                "time": audit.now(),
                "source": "local",
                "actor": "bench",
                "digests": {"onnx": onnx_sha},
            }
            line = audit.encode(record)
            lines.append(line)
            prev = audit.digest(line)
            folder = root / name / str(n)
            folder.mkdir(parents=True)
            (folder / "model.onnx").write_bytes(base.onnx)
            (folder / "model.yaml").write_bytes(base.manifest_text)
            release = {
                "model": name,
                "version": f"1.{n}.0",
                "registry_version": n,
                "artifact": {"path": "x", "sha256": f"{m:064x}"},
                "onnx": {"sha256": onnx_sha},
                "audit": {"sha256": prev},
            }
            (folder / "release.json").write_text(json.dumps(release))
            (root / name / registry.release_marker(n, f"1.{n}.0")).touch()
        files = deploy.serving_files(reg, name, versions, base.manifest_data)
        for fname, data in files.items():
            (root / name / fname).write_bytes(data)
    (root / ".mlops").mkdir(exist_ok=True)
    (root / ".mlops" / "audit.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (root / ".mlops" / "audit.head").write_text(f"{len(lines)} {prev}\n")
    return reg


def upload(root: Path, uri: str) -> Registry:
    """The folder registry at `root` copied to S3 as a deploy would have written it (the audit
    log in its segments), with 16 uploads at a time."""
    from concurrent.futures import ThreadPoolExecutor

    reg = open_registry(uri)
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    log = files.pop(audit.LOG_KEY).read_bytes().splitlines(keepends=True)
    size = registry.SEGMENT_LINES
    items = [(key, path.read_bytes()) for key, path in files.items() if not key.endswith(".lock")]
    for i in range(0, len(log), size):
        key = audit.LOG_KEY if i == 0 else f"{audit.LOG_KEY}.{i // size:06d}"
        items.append((key, b"".join(log[i : i + size])))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: reg.write_bytes(*item), items))
    return reg


def flatness(
    tmp: Path, models: int, versions: int, repeat: int, s3_uri: str | None, target: str
) -> None:
    """Deploy and rollback in a registry of 1 model × 5 versions and in one of `models` ×
    `versions`, both populated first, then measured in turns (as `side_by_side`), so both meet
    the same load."""
    backends = [("folder", None)] + ([("S3", s3_uri)] if s3_uri else [])
    small, big = "1 model × 5 versions", f"{models:,} model{'s' * (models > 1)} × {versions}"
    if versions > 1:
        big += " versions"
    for label, uri in backends:
        regs = []
        for count, n in ((1, 5), (models, versions)):
            root = tmp / f"flat-{label}-{models}x{versions}-{count}x{n}"
            regs.append(populate(root, count, n))
            if uri is not None:
                t0 = time.perf_counter()
                regs[-1] = upload(root, f"{uri}-{root.name}")
                took = time.perf_counter() - t0
                if count * n > 5:
                    print(f"  (uploaded {big} to S3 in {took:.0f} s)")
        os.sync()  # the populated files' write-back must not land inside the measurement
        (d1, r1), (dn, rn) = _in_turns(regs[0], regs[1], repeat)
        for what, one, many in (("deploy", d1, dn), ("rollback", r1, rn)):
            print(
                f"  {label:6s} {what + ':':9s} {one * 1e3:6.1f} ms with {small}, "
                f"{many * 1e3:6.1f} ms with {big}   ratio {many / one:4.2f}×  {target}"
            )


def _in_turns(small: Registry, big: Registry, repeat: int) -> list[tuple[float, float]]:
    """(deploy, rollback) median seconds in each registry, the two measured in turns."""
    cands = [[candidate("m0", f"2.0.{i}", salt=f"f{n}-{i}") for i in range(repeat)] for n in (0, 1)]
    deploys = side_by_side(
        lambda i: deploy.publish(small, cands[0][i], PROV),
        lambda i: deploy.publish(big, cands[1][i], PROV),
        repeat,
    )
    rollbacks = side_by_side(
        lambda i: deploy.rollback(small, "m0", 1 + i % 5, "bench", PROV),
        lambda i: deploy.rollback(big, "m0", 1 + i % 5, "bench", PROV),
        repeat,
    )
    assert audit.verify(small).ok and audit.verify(big).ok
    return [(deploys[0], rollbacks[0]), (deploys[1], rollbacks[1])]


def round_trips(endpoint: str, bucket: str, repeat: int, delay_s: float = 0.005) -> None:
    """An S3 publish where each round trip costs 2 × delay_s more (a proxy in between, as a
    store across a network): the reads a publish decides on together (`Registry.gather`)
    against one after another, and how many requests a publish makes."""
    from urllib.parse import urlparse

    from latency_proxy import LatencyProxy

    port = urlparse(endpoint).port
    assert port is not None
    proxy = LatencyProxy(port, delay_s)
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
    try:
        together = open_registry(f"s3://{bucket}/latency-together")
        in_turn = open_registry(f"s3://{bucket}/latency-in-turn")
        in_turn.store.concurrent = False  # type: ignore[misc]
        requests: list[str] = []
        client = together.store.client  # type: ignore[attr-defined]
        send = client.request

        def counted(method: str, *args: object, **kwargs: object) -> object:
            requests.append(method)
            return send(method, *args, **kwargs)

        client.request = counted
        cands = [candidate("m", f"1.0.{i}", salt=f"rt{i}") for i in range(repeat + 1)]
        deploy.publish(together, cands[0], PROV)  # the first makes the model's folder
        deploy.publish(in_turn, cands[0], PROV)
        requests.clear()
        fast, slow = side_by_side(
            lambda i: deploy.publish(together, cands[i + 1], PROV),
            lambda i: deploy.publish(in_turn, cands[i + 1], PROV),
            repeat,
        )
    finally:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        proxy.stop()
    print(
        f"  S3 with {2 * delay_s * 1e3:.0f} ms added per round trip: publish {fast * 1e3:6.1f} ms "
        f"with its reads together, {slow * 1e3:6.1f} ms one after another "
        f"({slow / fast:4.2f}× faster; {len(requests) / repeat:.0f} requests a publish)"
    )


def verify_rate(records: int) -> None:
    prev, lines = audit.GENESIS, []
    for i in range(records):
        record = {
            "action": "deploy",
            "actor": "alice",
            "approvers": [
                {
                    "login": "bob",
                    "review_id": 100 + i,
                    "commit": "a" * 40,
                    "time": "2026-11-30T15:00:00Z",
                }
            ],
            "commit": "b" * 40,
            "digests": {"artifact": "c" * 64, "onnx": "d" * 64},
            "model": f"model-{i % 1000}",
            "prev": prev,
            "pull_request": {
                "number": i,
                "url": "https://github.com/acme/models/pull/1",
                "head_sha": "e" * 40,
            },
            "reason": None,
            "registry_version": i // 1000 + 1,
            "seq": i + 1,
            "source": "github",
            "time": audit.now(),
            "version": "1.0.0",
        }
        line = audit.encode(record)
        lines.append(line)
        prev = audit.digest(line)
    data = b"\n".join(lines) + b"\n"
    head = f"{records} {prev}\n".encode()
    seconds = median_s(lambda _: audit.verify_log(data, head), 3)
    assert audit.verify_log(data, head).ok
    print(
        f"  audit verify: {records:,} records ({len(data) / 1e6:.0f} MB) in {seconds:.2f} s = "
        f"{records / seconds:,.0f} records/s  (target ≥ 100,000/s; "
        f"{records / seconds / 1e5:.1f}× the target)"
    )


def client_vs_boto3(bucket: str, boto: object, repeat: int) -> None:
    """The registry's S3 client (`mlops_ci/s3.py`) against boto3 on the same requests, one
    after the other for each case: a small conditional create, a small read, and a 1 MB
    create, each timed (median wall) and its CPU in this process counted (time.process_time
    over all its runs)."""
    from mlops_ci import s3

    server = os.environ["AWS_ENDPOINT_URL"]
    ours = s3.Client(bucket, os.environ.get("AWS_REGION", "us-east-1"), server)
    small, big = b"x" * 300, os.urandom(1 << 20)
    ours.put("cmp/read", small)
    n = max(repeat, 40)

    def timed(fn: Callable[[int], object]) -> tuple[float, float]:
        fn(-1)  # connections opened, not timed
        cpu0, walls = time.process_time(), []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)
            walls.append(time.perf_counter() - t0)
        return statistics.median(walls), (time.process_time() - cpu0) / n

    cases: list[tuple[str, Callable[[int], object], Callable[[int], object]]] = [
        (
            "create 300 B (If-None-Match)",
            lambda i: ours.put(f"cmp/o{i}-{time.time_ns()}", small, if_none_match=True),
            lambda i: boto.put_object(  # type: ignore[attr-defined]
                Bucket=bucket, Key=f"cmp/b{i}-{time.time_ns()}", Body=small, IfNoneMatch="*"
            ),
        ),
        (
            "read 300 B",
            lambda i: ours.get("cmp/read").body,
            lambda i: boto.get_object(Bucket=bucket, Key="cmp/read")["Body"].read(),  # type: ignore[attr-defined]
        ),
        (
            "create 1 MB (If-None-Match)",
            lambda i: ours.put(f"cmp/O{i}-{time.time_ns()}", big, if_none_match=True),
            lambda i: boto.put_object(  # type: ignore[attr-defined]
                Bucket=bucket, Key=f"cmp/B{i}-{time.time_ns()}", Body=big, IfNoneMatch="*"
            ),
        ),
    ]
    for label, mine, theirs in cases:
        (w1, c1), (w2, c2) = timed(mine), timed(theirs)
        print(
            f"  {label:28s} mlops_ci.s3 {w1 * 1e3:5.2f} ms ({c1 * 1e3:4.2f} ms CPU)   boto3 "
            f"{w2 * 1e3:5.2f} ms ({c2 * 1e3:4.2f} ms CPU)   {w2 / w1:4.2f}× faster, "
            f"{c2 / c1:4.2f}× less CPU"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=500, help="of one model, for 2b")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-s3", action="store_true", help="skip SeaweedFS")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1, 10, 50], help="model sizes in MB"
    )
    args = parser.parse_args()
    triton.model_config_pb2()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        weed, uri, put = None, None, None
        if not args.no_s3:
            from s3servers import SeaweedFS

            weed = SeaweedFS(tmp / "weed")
            server = weed.start()
            os.environ.update(server.env())
            bucket = server.new_bucket()
            uri = f"s3://{bucket}/registry"
            client = server.client()

            def put(key: str, data: bytes) -> None:
                client.put_object(Bucket=bucket, Key=key, Body=data)

        try:
            print("1. a deploy against copying the same bytes (median of", args.repeat, "runs)")
            for mb in args.sizes:
                publish_vs_copy(tmp, mb, args.repeat, uri, put)
            print("2. deploy and rollback time against registry size")
            flatness(tmp, args.models, 5, args.repeat, uri, "(target ≤ 1.5×)")
            print("2b. deploy and rollback time against the number of a model's versions")
            flatness(tmp, 1, args.versions, args.repeat, uri, "(no target)")
            print("3. audit verify")
            verify_rate(args.records)
            if uri is not None:
                print("4. round trips on S3")
                round_trips(server.endpoint, bucket, args.repeat)
                print("5. one request: the registry's S3 client against boto3 (SeaweedFS)")
                client_vs_boto3(bucket, client, args.repeat)
        finally:
            if weed is not None:
                weed.stop()


if __name__ == "__main__":
    main()
