"""Benchmark: N visitors at once on one model, each in its own gradio_client session against a real server.

Every visitor runs an importance map (2 sentences, 2 layers) and then a side-by-side generation with two
layers zeroed, back to back; all N start together. A job's wait is the time from its submission until it
starts on the model (its first progress step that is not "waiting for your turn"), which includes gradio's
queue, the turns and the model's lock; its latency is submission to result. Prints, for each N, the
completed jobs, p50/p95 wait, p50/p95 latency, throughput (jobs/s over the whole run), and whether any
client was shown a queue position. The model's weights are fingerprinted before and after.

`--hostile` runs the app in public mode (each visitor anonymous, with an address of its own) twice: six
visitors, then the same six beside two hostile ones that attack for as long as the six run: one asks again
and again for an endless job (recovery of every layer for 1,000 steps), the other generates again and again
on a model whose chat template loops (a tiny model served by the fake Hub of tests/hub_fake.py, the only
part replaced). It prints the six visitors' p95 wait in both runs and `hostile wait ratio: X` (the target is
at most 2), and what each attack got.

    OMP_NUM_THREADS=1 python bench/load.py                 # N = 1, 4, 8 on the embedded model
    OMP_NUM_THREADS=1 python bench/load.py --visitors 8    # one N
    OMP_NUM_THREADS=1 python bench/load.py --hostile       # 6 visitors, then 6 beside 2 hostile ones
    OMP_NUM_THREADS=1 python bench/load.py --smoke         # seconds: N = 1, 2 on a tiny random model
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradio_client import Client  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from bench.smoke import SMOKE_HELP, tiny_model_folder  # noqa: E402

WAITING = "waiting for your turn"
LOOPING = "mallory/looping"  # tests/hostile.py's model whose chat template loops
PROMPT = "The capital of France is"


@dataclass
class JobRecord:
    """One job as its visitor saw it: times since submission, queue positions shown, the result or error."""

    visitor: int
    kind: str
    submitted: float
    started: float | None = None
    finished: float | None = None
    ranks: list[int] = field(default_factory=list)
    outputs: tuple | None = None
    error: str | None = None

    @property
    def wait(self) -> float:
        return (self.started if self.started is not None else self.finished) - self.submitted

    @property
    def latency(self) -> float:
        return self.finished - self.submitted


def watch(client: Client, record: JobRecord, *args, api_name: str) -> JobRecord:
    """Submit, poll the job's status (queue rank, progress) until it ends, and fill `record`."""
    job = client.submit(*args, api_name=api_name)
    while not job.done():
        status = job.status()
        if status.code == Status.IN_QUEUE and status.rank is not None:
            record.ranks.append(status.rank)
        described = [unit.desc or "" for unit in status.progress_data or []]
        record.ranks += [int(d.removeprefix(WAITING + ": ").split()[0]) for d in described
                         if d.startswith(WAITING + ": ")]  # the app's own line: jobs ahead of this one
        if record.started is None and described and not any(WAITING in d for d in described):
            record.started = time.monotonic()
        time.sleep(0.02)
    record.finished = time.monotonic()
    try:
        record.outputs = tuple(job.result())
    except Exception as err:  # noqa: BLE001 - the app's message is the record
        record.error = str(err)
    return record


def client_for(url: str, index: int) -> Client:
    """A visitor's own session and address (a header value from the documentation range, never dialled)."""
    return Client(url, verbose=False, headers={"X-Forwarded-For": f"198.51.100.{index + 1}"})


def visitor(url: str, index: int, spec: str, layers: str, generate_layers: str,
            client: Client | None = None) -> list[JobRecord]:
    """One visitor's session: importance, then generate with `generate_layers` zeroed."""
    client = client or Client(url, verbose=False)
    importance = watch(client, JobRecord(index, "importance", time.monotonic()),
                       spec, 2, "", 32, "zero", "one-neighbour", layers, api_name="/importance")
    generate = watch(client, JobRecord(index, "generate", time.monotonic()),
                     spec, PROMPT, "zero", generate_layers, 0.5, 0, 8, api_name="/generate")
    return [importance, generate]


def attacker(url: str, index: int, spec: str, kind: str, until: threading.Event) -> list[JobRecord]:
    """A hostile visitor: the same attack again and again until the other visitors are done (at most 50)."""
    client, records = client_for(url, index), []
    while not until.is_set() and len(records) < 50:
        record = JobRecord(index, kind, time.monotonic())
        if kind == "endless":
            watch(client, record, spec, 2, "", 32, "all", 1000, 10, 0.5, 1e-4, 0, api_name="/recovery")
        else:
            watch(client, record, LOOPING, PROMPT, "none", "0", 0.5, 0, 4, True, api_name="/generate")
        records.append(record)
    return records


def run_load(url: str, visitors: int, spec: str, layers: str = "0-1", generate_layers: str = "0-1",
             hostile: int = 0) -> tuple[list[JobRecord], float, list[JobRecord]]:
    """All visitors at once (their clients made first, so they start together), and `hostile` attackers beside
    them while they run; the visitors' records, elapsed seconds, and the attackers' records."""
    clients = [client_for(url, i) for i in range(visitors)]
    start, done = threading.Barrier(visitors + hostile), threading.Event()

    def one(index: int) -> list[JobRecord]:
        start.wait()
        return visitor(url, index, spec, layers, generate_layers, clients[index])

    def bad(index: int) -> list[JobRecord]:
        start.wait()
        return attacker(url, visitors + index, spec, ("endless", "looping template")[index % 2], done)

    began = time.monotonic()
    with ThreadPoolExecutor(visitors + hostile) as pool:
        attacks = [pool.submit(bad, i) for i in range(hostile)]
        records = [r for rs in pool.map(one, range(visitors)) for r in rs]
        elapsed = time.monotonic() - began
        done.set()
        attacked = [r for a in attacks for r in a.result()]
    return records, elapsed, attacked


def summary(records: list[JobRecord], elapsed: float) -> dict:
    waits = np.array([r.wait for r in records])
    latencies = np.array([r.latency for r in records])
    done = [r for r in records if r.error is None]
    return {"completed": len(done), "failed": len(records) - len(done),
            "wait_p50_s": float(np.percentile(waits, 50)), "wait_p95_s": float(np.percentile(waits, 95)),
            "latency_p50_s": float(np.percentile(latencies, 50)), "latency_p95_s": float(np.percentile(latencies, 95)),
            "throughput_jobs_per_s": len(done) / elapsed, "queue_positions_shown": any(r.ranks for r in records)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded", help="model spec served by the app (default embedded)")
    ap.add_argument("--visitors", type=int, nargs="+", default=[1, 4, 8], help="N values (default 1 4 8)")
    ap.add_argument("--hostile", action="store_true", help="public mode: 6 visitors, then 6 beside 2 hostile ones")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP} (N = 1, 2)")
    args = ap.parse_args()
    if args.hostile:
        hostile_bench(args.model)
        return
    if args.smoke:
        args.model, args.visitors = tiny_model_folder(), [1, 2]

    from anatomy.interventions import fingerprint
    from space import build_demo
    from space.models import CACHE

    demo = build_demo(args.model)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        with CACHE.use(args.model) as loaded:  # loaded once here, so no N pays the load
            before = fingerprint(loaded.model)
        print(f"model {args.model}; each visitor: importance (2 sentences, layers 0-1) then generate (8 tokens, "
              "layers 0-1 zeroed); app concurrency ANATOMY_CONCURRENCY, one lock per model")
        for n in args.visitors:
            records, elapsed, _ = run_load(url, n, args.model)
            s = summary(records, elapsed)
            print(f"N={n}: completed {s['completed']}/{len(records)} jobs, wait p50 {s['wait_p50_s']:.2f} s "
                  f"p95 {s['wait_p95_s']:.2f} s, latency p50 {s['latency_p50_s']:.2f} s p95 "
                  f"{s['latency_p95_s']:.2f} s, throughput {s['throughput_jobs_per_s']:.2f} jobs/s, "
                  f"queue positions shown: {s['queue_positions_shown']}")
            for r in records:
                if r.error:
                    print(f"  visitor {r.visitor} {r.kind}: {r.error}")
        with CACHE.use(args.model) as loaded:
            print("weights unchanged after all runs:", fingerprint(loaded.model) == before)
    finally:
        demo.close()


def print_run(label: str, records: list[JobRecord], elapsed: float) -> dict:
    s = summary(records, elapsed)
    print(f"{label}: completed {s['completed']}/{len(records)} jobs, wait p50 {s['wait_p50_s']:.2f} s p95 "
          f"{s['wait_p95_s']:.2f} s, latency p50 {s['latency_p50_s']:.2f} s p95 {s['latency_p95_s']:.2f} s, "
          f"throughput {s['throughput_jobs_per_s']:.2f} jobs/s")
    for r in records:
        if r.error:
            print(f"  visitor {r.visitor} {r.kind}: {r.error}")
    return s


def hostile_bench(spec: str) -> None:
    """Public mode, six visitors alone and then beside two attackers; the fake Hub serves the looping model."""
    import tempfile

    from anatomy.interventions import fingerprint
    from space.models import CACHE
    from tests.conftest import build_tiny_tokenizer
    from tests.hostile import hostile_hub
    from tests.hub_fake import public_server

    tmp = Path(tempfile.mkdtemp())
    hub = hostile_hub(tmp, build_tiny_tokenizer(), tmp / "none.csv")
    with public_server(hub, tmp / "hub-cache", spec) as url:
        with CACHE.use(spec) as loaded:
            before = fingerprint(loaded.model)
        print(f"public mode, model {spec}; each visitor: importance (2 sentences, layers 0-1) then generate (8 "
              "tokens, layers 0-1 zeroed); attackers: recovery of every layer x 1,000 steps, again and again; "
              "generate on a model whose chat template loops, again and again")
        alone = print_run("6 visitors", *run_load(url, 6, spec)[:2])
        records, elapsed, attacked = run_load(url, 6, spec, hostile=2)
        beside = print_run("6 visitors beside 2 hostile", records, elapsed)
        for kind in ("endless", "looping template"):
            mine = [r for r in attacked if r.kind == kind]
            said = sorted({(r.error or "ran")[:110] for r in mine})
            print(f"  {kind}: {len(mine)} attempts, latency p50 {np.median([r.latency for r in mine]):.2f} s; "
                  f"got: {said}")
        print(f"hostile wait ratio: {beside['wait_p95_s'] / max(alone['wait_p95_s'], 1e-9):.2f} (p95 wait beside "
              "two hostile visitors / alone; target <= 2)")
        with CACHE.use(spec) as loaded:
            print("weights unchanged after all runs:", fingerprint(loaded.model) == before)


if __name__ == "__main__":
    main()
