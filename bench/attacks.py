"""What each attack of the hostile-visitor review gets from a public-mode server: its answer, the seconds until
that answer, and the server's peak memory while it ran (above what it held before).

The server runs in this process in public mode over the fake Hub of tests/hub_fake.py serving the attacker's
repos (tests/hostile.py); the visitors' model is the embedded SmolLM2-135M. Stop and the hard limit are timed
on a long importance map of it (48 sentences, every layer, full forwards): from the press, or from the
deadline, to the job's end.

    OMP_NUM_THREADS=1 python bench/attacks.py
    python bench/attacks.py --smoke     # seconds: the visitors' model is the fake Hub's tiny one, no CLI run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradio_client import Client  # noqa: E402



def peak_rss(action: Callable[[], str]) -> tuple[str, float, float]:
    """`action()`'s answer (its message when it raises), its seconds, and this process's peak RSS above the
    start, in MB, sampled every 10 ms while it ran."""
    process, peak, done = psutil.Process(), [0], threading.Event()
    start_rss = process.memory_info().rss

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss - start_rss)
            time.sleep(0.01)
    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.monotonic()
    try:
        answer = str(action())
    except Exception as err:  # noqa: BLE001 - the app's one-line message is the answer
        answer = str(err)
    seconds = time.monotonic() - began
    done.set()
    sampler.join()
    return answer, seconds, peak[0] / 2**20


def stop_after_start(client: Client, args: tuple, api_name: str) -> str:
    """Start a job, press Stop once it reports progress, and return its answer with the seconds from the press."""
    job = client.submit(*args, api_name=api_name)
    while not (job.status().progress_data or [None])[0]:
        time.sleep(0.02)
    pressed = time.monotonic()
    client.predict(api_name=f"/stop_{api_name[1:]}")
    try:
        job.result()
        answer = "finished"
    except Exception as err:  # noqa: BLE001
        answer = str(err)
    return f"{answer} [{time.monotonic() - pressed:.2f} s after Stop]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="seconds: the fake Hub's tiny model, no CLI run")
    args = ap.parse_args()
    from space import limits
    from space.models import CACHE
    from tests.conftest import build_tiny_tokenizer
    from tests.hostile import HUGE, LOOPING, OPEN, hostile_hub
    from tests.hub_fake import public_server

    tmp = Path(tempfile.mkdtemp())
    (tmp / "secret.csv").write_text("layer\nserver-secret\n")
    hub = hostile_hub(tmp, build_tiny_tokenizer(), tmp / "secret.csv")
    model = OPEN if args.smoke else "embedded"
    long_map = (model, 48, "", 128, "neighbour-mean", "one-neighbour", "all")
    count = iter(range(1, 100))

    def client() -> Client:
        return Client(url, verbose=False, headers={"X-Forwarded-For": f"198.51.100.{next(count)}"})

    def cli_endless() -> str:
        done = subprocess.run([sys.executable, "-m", "anatomy", "recovery", "--layers", "1", "--steps",
                               "1000000000", "--out", str(tmp / "cli-run")], capture_output=True, text=True)
        return done.stderr.strip().splitlines()[-1]

    def hard_limit() -> str:
        original = limits.hard_limit
        limits.hard_limit = lambda estimate_s: 2.0
        try:
            return client().predict(*long_map, api_name="/importance")
        finally:
            limits.hard_limit = original

    attacks = {
        "recovery, steps 10^9 (app)": lambda: client().predict(model, 2, "", 32, "1", 10**9, 10, 0.5, 1e-4, 0,
                                                               api_name="/recovery"),
        "recovery, steps 10^9 (CLI)": cli_endless,
        "recovery of every layer, 1,000 steps (in range, over budget)": lambda: client().predict(
            model, 2, "", 32, "all", 20 if args.smoke else 1000, 10, 0.5, 1e-4, 0, api_name="/recovery"),
        "config of 468M parameters over a 2-element file": lambda: client().predict(HUGE, api_name="/load_model"),
        "chat template of two nested range(100000) loops": lambda: client().predict(
            LOOPING, "Hi", "none", "0", 0.5, 0, 4, True, api_name="/generate"),
        "published run naming a server file as its table": lambda: client().predict(
            OPEN, api_name="/published_importance"),
        "published run of another model": lambda: client().predict(OPEN, api_name="/published_spectral"),
        "published text with markup, 20,000 characters": lambda: max(
            (u["value"] for u in client().predict(OPEN, api_name="/published_offers") if u.get("visible")),
            key=len)[:160],
        f"Stop during a long importance map ({model})": lambda: stop_after_start(client(), long_map, "/importance"),
        f"a long importance map past a 2 s hard limit ({model})": hard_limit,
    }
    if args.smoke:
        del attacks["recovery, steps 10^9 (CLI)"]
    with public_server(hub, tmp / "hub-cache", model, {"ANATOMY_ATLAS": "bob/atlas"}) as url:
        CACHE.get(model)
        for name, attack in attacks.items():
            answer, seconds, mb = peak_rss(attack)
            print(f"{name}: {seconds:.2f} s, server peak +{mb:.0f} MB\n    -> {' '.join(answer.split())[:220]}")


if __name__ == "__main__":
    main()
