"""A training run on the export path, against DuckDB reading the same files and implicit's raw fit.

    ./dev bench train_export [--sizes 1000000 10000000] [--rounds 5] [--outcome-days 60]

For each size, a synthetic shop's tables (20 events per customer, 80% of them in the customer's
two favourite categories of 40, power-law items within a category; views, carts and purchases
over a year; each customer's profile and recent-activity item, as ingest keeps it) are written
as DynamoDB exports (the format `./dev export` and ExportTableToPointInTime write; not timed).
Then, each in a process of its own so its peak memory (VmHWM) is its own:

1. ours: the whole training run on the export path, stage by stage, in two processes as on AWS:
   the query stage (shared/storage/sql/interactions.sql and ids.sql on DuckDB, as Athena
   runs them there), then the train function's part: `read_nightly_from_exports` (the query's
   output, the users and items exports) and `run_training` (matrix, blend choice, evaluation
   against popularity, final fit, publish). Its time is both together; its peak memory is the
   train function's (what its Lambda or Batch job must hold: the process and the read's child
   processes together); the query's own peak is printed beside it. Then, as the train function
   goes on to the segments, their inputs: the users export read again and the histories decoded
   from its recent-activity items, timed on their own, with the peak of the whole run beside it.
   This is a shop's first night: it chooses the blend and fits cold. Then two later nights, the
   same way over the same files: the night after, which takes the blend this one chose
   (blend_reuse_days, as six nights of seven do), so fits no validation fold, and starts its
   holdout fit from the one this night kept (start_reuse_days); and a night a week on, which
   chooses the blend again, its oldest fold's fit started from the one this night kept. The ratio
   is given for each, and over a week (one night choosing, the six after it taking);
2. raw read: DuckDB reading the same gzipped export files into the columns training needs
   (user, item, type, quantity, time, order) for the window;
3. raw fit: implicit's AlternatingLeastSquares.fit, once, on the very matrix the run built, with the
   run's parameters.
The ratio is ours over raw read + raw fit. With `--rounds N` each size is measured N times over
the same files, each part in a fresh process, and the round with the median ratio is shown whole:
the ALS fits, ours and the raw one alike, vary by up to half between runs on a shared machine.
The gate is off (a synthetic shop's taste says nothing of a real one's): this measures time and
memory, not quality; the run's strategy is printed, to show which fits it made.

Every night the train function also reads the events export for the outcomes of the last
`--outcome-days` (impressions, clicks and purchases: here the purchases), for the attribution
report and the experiments' results: after training, while the segments read their inputs (past
64 MB of files in a child process, below it after them), as the handler does. By default 60, the
report's reach (REPORT_DAYS; an experiment started earlier reaches back to its start); 0 leaves
them out.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.update({"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_SERVICE_NAME": "bench"})
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from shared.training.config import TrainingConfig  # noqa: E402

EVENT_TYPES = np.array(["view", "add_to_cart", "purchase"])
CATEGORIES = 40
CHUNK = 500_000  # events generated and written at a time, so 10M never sit in memory as objects
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
# Time and memory, not quality: the gate is off, and the window may hold every event.
CONFIG = TrainingConfig(min_gain_over_popularity=0, max_interactions=100_000_000)


def write_table(root: Path, table: str, lines: object, count: int) -> None:
    """One full export of `table` under root/table, as DynamoDB lays it out."""
    from shared.storage.exports import file_checksums

    folder = Path("AWSDynamoDB") / "01-bench"
    (root / table / folder / "data").mkdir(parents=True, exist_ok=True)
    files, written = [], 0
    for number, chunk in enumerate(lines):  # type: ignore[attr-defined]
        name = folder / "data" / f"{number:05d}.json.gz"
        with gzip.open(root / table / name, "wt", compresslevel=1) as data:
            data.writelines(chunk)
        files.append({"itemCount": len(chunk), **file_checksums(root / table / name), "dataFileS3Key": str(name)})
        written += len(chunk)
    assert written == count
    (root / table / folder / "manifest-files.json").write_text("".join(json.dumps(f) + "\n" for f in files))
    (root / table / folder / "manifest-summary.json").write_text(json.dumps({
        "exportType": "FULL_EXPORT", "exportTime": NOW.isoformat(), "itemCount": count,
        "manifestFilesS3Key": str(folder / "manifest-files.json"), "outputFormat": "DYNAMODB_JSON"}))


def event_lines(size: int, n_users: int, n_items: int, kept: list, seed: int = 1):  # noqa: ANN201
    """The events' export lines, a chunk at a time; each chunk's columns are added to `kept`."""
    rng = np.random.default_rng(seed)
    # Taste: each customer's events mostly in two favourite categories (item i is in category
    # i % CATEGORIES), items power-law within a category. On random items the validation chose
    # popularity alone, which fits nothing after it; a real shop's run fits the holdout and the
    # final model too, and so does this one.
    per_category = n_items // CATEGORIES
    weights = 1.0 / np.arange(1, per_category + 1) ** 0.9
    favourites = rng.integers(0, CATEGORIES, size=(n_users, 2))
    for start in range(0, size, CHUNK):
        n = min(CHUNK, size - start)
        users = rng.integers(0, n_users, size=n)
        category = np.where(rng.random(n) < 0.8, favourites[users, rng.integers(0, 2, size=n)],
                            rng.integers(0, CATEGORIES, size=n))
        items = rng.choice(per_category, size=n, p=weights / weights.sum()) * CATEGORIES + category
        kinds = EVENT_TYPES[rng.choice(3, size=n, p=[0.6, 0.25, 0.15])]
        seconds = (NOW.timestamp() - rng.uniform(0, 365 * 86_400, size=n)).astype("datetime64[s]")
        stamps = np.datetime_as_string(seconds, unit="us")
        kept.append((users, items, kinds, seconds))
        yield [f'{{"Item":{{"user_id":{{"S":"u{u}"}},"event_id":{{"S":"e{start + k}"}},"item_id":{{"S":"i{i}"}},'
               f'"event_type":{{"S":"{t}"}},"quantity":{{"N":"1"}},"ts":{{"S":"{s}Z"}},"channel":{{"S":"web"}}'
               + (f',"order_id":{{"S":"o{u}-{start + k}"}},"price":{{"N":"9.5"}},"currency":{{"S":"EUR"}}'
                  if t == "purchase" else "") + "}}\n"
               for k, (u, i, t, s) in enumerate(zip(users.tolist(), items.tolist(), kinds.tolist(), stamps.tolist()))]


def user_lines(n_users: int, kept: list):  # noqa: ANN201
    """Each customer's profile and recent-activity item (their newest events, as ingest keeps them:
    shared/recent.py), a chunk of customers at a time."""
    from shared.recent import RecentEvent, bounded

    users, items, kinds, seconds = (np.concatenate(column) for column in zip(*kept))
    order = np.lexsort((-seconds.astype(np.int64), users))
    starts = np.searchsorted(users[order], np.arange(n_users + 1))
    stamps = np.datetime_as_string(seconds, unit="us")
    for first in range(0, n_users, CHUNK):
        lines = []
        for u in range(first, min(first + CHUNK, n_users)):
            newest = order[starts[u]:starts[u + 1]][:500].tolist()
            events, payload = bounded([RecentEvent(f"{stamps[k]}Z", f"i{items[k]}", str(kinds[k]), 1, "web",
                                                   *((9.5, "EUR") if kinds[k] == "purchase" else ()))
                                       for k in newest])
            lines.append(f'{{"Item":{{"user_id":{{"S":"u{u}"}},"country":{{"S":"DE"}}}}}}\n')
            lines.append(json.dumps({"Item": {
                "user_id": {"S": f"u{u}\x00recent"}, "recent_of": {"S": f"u{u}"}, "recent_version": {"N": "1"},
                "count": {"N": str(len(events))}, "events": {"B": base64.b64encode(payload).decode()},
                "erased_at": {"S": ""}}}, separators=(",", ":")) + "\n")
        yield lines


def write_shop(root: Path, size: int) -> None:
    n_users, n_items = max(size // 20, 10), max(size // 50, 100)
    kept: list = []
    write_table(root, "events", event_lines(size, n_users, n_items, kept), size)
    write_table(root, "users", user_lines(n_users, kept), 2 * n_users)
    write_table(root, "items", ([f'{{"Item":{{"item_id":{{"S":"i{i}"}},"category":{{"S":"c{i % CATEGORIES}"}},'
                                 f'"title":{{"S":"Item {i}"}}}}}}\n' for i in range(n_items)],), n_items)


def peak_mib() -> float:
    """This process's peak resident memory. Not ru_maxrss: Linux keeps that across exec, so a part
    would start from the peak of the bench process that started it."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


class TreePeak(threading.Thread):
    """The largest resident memory of this process and its children together, sampled every 100 ms
    (a scan of /proc costs about 2 ms): the nightly read's child processes count against the train
    function's memory too."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stopped = 0.0, threading.Event()

    def run(self) -> None:
        page, me = os.sysconf("SC_PAGE_SIZE"), str(os.getpid())
        while not self.stopped.wait(0.1):
            total = 0
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    if stat.parent.name == me or fields[1] == me:  # this process, or its child
                        total += int(fields[21]) * page  # rss, in pages
                except (OSError, IndexError):  # a process that ended meanwhile
                    continue
            self.peak = max(self.peak, total / 2**20)

    def stop(self) -> float:
        self.stopped.set()
        self.join()
        return self.peak


FIRST, TAKING, CHOOSING = "first", "taking", "choosing"


def part_ours(root: Path, outcomes_since: str | None = None, night: str = FIRST) -> dict:
    """`night`: FIRST, a shop's first run (it chooses the blend and fits cold); TAKING, the night
    after, which takes that blend (blend_reuse_days) and starts from a fit the first kept; CHOOSING,
    a night a week on that chooses again, from a kept fit too (start_reuse_days)."""
    from shared.storage.blobs import LocalBlobs
    from shared.storage.exports import latest_chain
    from shared.storage.models import ModelStore
    from shared.storage.training_data import TableExports, read_nightly_from_exports
    from shared.training.job import run_training

    exports = TableExports(*(latest_chain(root / table) for table in ("events", "users", "items")))
    kept = {}

    config = CONFIG.model_copy(update={"blend_reuse_days": 0}) if night == CHOOSING else CONFIG

    def load(cfg: TrainingConfig, at: datetime):  # noqa: ANN202
        assert (cfg, at) == (config, NOW)  # what part_query queried (blend_reuse_days does not shape it)
        # Every customer has a recent-activity item: nothing is read by Query of the (absent) table.
        read = read_nightly_from_exports(exports, cfg, at, queried(root), "bench-events",
                                         outcomes_since=outcomes_since)
        kept["segments"], kept["data"], kept["outcomes"] = read.segments, read.training_data(), read.outcomes
        return kept["data"]

    models = root / "models"
    if night == FIRST:
        shutil.rmtree(models, ignore_errors=True)
    models.mkdir(exist_ok=True)
    started, memory = time.perf_counter(), TreePeak()
    memory.start()
    manifest = run_training(load, ModelStore(LocalBlobs(models)), config, NOW)
    total, peak = time.perf_counter() - started, max(memory.peak, peak_mib())
    if manifest.status == "failed":
        raise SystemExit(f"training run failed: {manifest.reason}")
    if (night == TAKING) != ("taken again" in manifest.strategy_reason):
        raise SystemExit(f"the run did not {'take' if night == TAKING else 'choose'} the blend: "
                         f"{manifest.strategy_reason}")
    if (night == FIRST) != manifest.fit_start.startswith("cold"):
        raise SystemExit(f"the {night} night's first fit did not start as it should: {manifest.fit_start}")
    data = kept.pop("data")
    shape = (len(data.interactions.user_ids), len(data.interactions.item_ids))
    if night == FIRST:
        save_matrix(root, data)
    del data
    matrix_mib, nnz = json.loads((root / "matrix-size.json").read_text())
    # Then the segments' inputs, as the train function reads them after training, and the outcomes
    # meanwhile (in a child process past a size), taken after them.
    started = time.perf_counter()
    later = kept.pop("outcomes")
    if later is not None:
        later.start()
    try:
        customers = kept["segments"].customers
        histories = time.perf_counter() - started
        outcomes = None if later is None else later.result()
        waited = time.perf_counter() - started - histories
    finally:
        if later is not None:
            later.close()
    timings = {"load": manifest.timings["load"],
               **{stage: seconds for stage, seconds in manifest.timings.items() if stage != "load"}}
    return {"total": total, "timings": timings, "peak": peak, "shape": shape, "nnz": nnz,
            "strategy": manifest.strategy_reason,  # it starts with the strategy
            "fit_start": manifest.fit_start,
            "outcomes": None if outcomes is None else len(outcomes.touches) + len(outcomes.purchases),
            "outcomes_waited": waited,
            "matrix_mib": matrix_mib, "histories": histories, "histories_events": len(customers.histories.events),
            "nightly_peak": max(memory.stop(), peak_mib())}


def part_ours_taking_the_blend(root: Path, outcomes_since: str | None = None) -> dict:
    return part_ours(root, outcomes_since, TAKING)


def part_ours_choosing_again(root: Path, outcomes_since: str | None = None) -> dict:
    return part_ours(root, outcomes_since, CHOOSING)


def save_matrix(root: Path, data) -> None:  # noqa: ANN001
    """The run's confidence matrix, for the raw fit to fit, and its size."""
    from shared.training.matrix import confidence_matrix

    shape = (len(data.interactions.user_ids), len(data.interactions.item_ids))
    matrix = confidence_matrix(data.interactions, CONFIG, data.end, shape)
    np.save(root / "matrix-data.npy", matrix.data)
    np.save(root / "matrix-indices.npy", matrix.indices)
    np.save(root / "matrix-indptr.npy", matrix.indptr)
    (root / "matrix-shape.json").write_text(json.dumps(shape))
    (root / "matrix-size.json").write_text(json.dumps(
        [(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) / 2**20, int(matrix.nnz)]))


def queried(root: Path):  # noqa: ANN201
    from shared.storage.training_data import Queried

    return Queried(*(sorted((root / "queried" / part).iterdir()) for part in ("interactions", "ids")))


def part_query(root: Path) -> dict:
    """The query stage, in a process of its own as Athena is on AWS: its output under root/queried."""
    from shared.storage.exports import latest_chain
    from shared.storage.training_data import query_locally

    started = time.perf_counter()
    query_locally(latest_chain(root / "events"), CONFIG, NOW, root / "queried")
    return {"total": time.perf_counter() - started, "peak": peak_mib()}


def part_raw_read(root: Path) -> dict:
    import duckdb

    from shared.storage.exports import latest_chain

    files = [str(path) for path in latest_chain(root / "events")[0].data_files()]
    fields = ["user_id", "item_id", "event_type", "ts", "order_id"]
    struct = ", ".join(f"{f} STRUCT(S VARCHAR)" for f in fields) + ", quantity STRUCT(N VARCHAR)"
    started = time.perf_counter()
    columns = duckdb.sql(
        f"SELECT Item.user_id.S, Item.item_id.S, Item.event_type.S, CAST(Item.quantity.N AS DOUBLE), Item.ts.S, "
        f"Item.order_id.S FROM read_json({files!r}, format='newline_delimited', columns={{'Item': 'STRUCT({struct})'}}) "
        f"WHERE Item.item_id.S IS NOT NULL AND Item.ts.S >= '2025-12-01'").fetchnumpy()
    seconds = time.perf_counter() - started
    return {"total": seconds, "rows": len(next(iter(columns.values()))), "peak": peak_mib()}


def part_raw_fit(root: Path) -> dict:
    from scipy.sparse import csr_matrix

    from shared.training.pipeline import fit_als

    shape = tuple(json.loads((root / "matrix-shape.json").read_text()))
    matrix = csr_matrix((np.load(root / "matrix-data.npy"), np.load(root / "matrix-indices.npy"),
                         np.load(root / "matrix-indptr.npy")), shape=shape)
    started = time.perf_counter()
    fit_als(matrix, TrainingConfig())
    return {"total": time.perf_counter() - started, "peak": peak_mib()}


# In this order: the first night before the nights that start from its fits, and before the raw
# fit of the matrix it saved.
PARTS = {"query": part_query, "ours": part_ours, "ours_taking_the_blend": part_ours_taking_the_blend,
         "ours_choosing_again": part_ours_choosing_again, "raw_read": part_raw_read, "raw_fit": part_raw_fit}
OURS = ("ours", "ours_taking_the_blend", "ours_choosing_again")  # the parts that read the outcomes


def in_process_of_its_own(part: str, root: Path, outcomes_since: str | None) -> dict:
    since = ["--outcomes-since", outcomes_since] if part in OURS and outcomes_since else []
    result = subprocess.run([sys.executable, __file__, "--part", part, "--root", str(root), *since],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{part} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(size: int, rounds: int, outcomes_since: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        write_shop(root, size)
        print(f"\n{size:,} events as DynamoDB exports in {time.perf_counter() - started:.0f} s (not timed)")
        measured = []
        for _ in range(rounds):
            shutil.rmtree(root / "queried", ignore_errors=True)  # an UNLOAD needs an empty folder
            measured.append({part: in_process_of_its_own(part, root, outcomes_since)  # ours before raw_fit
                             for part in PARTS})
    # The round with the median ratio is shown whole, so its stages add up to the ratio quoted.
    ordered = sorted(measured, key=weekly_ratio)
    median = ordered[(len(ordered) - 1) // 2]
    print_round(median)
    if rounds > 1:
        for number, parts in enumerate(measured, 1):
            print(f"  round {number}: ours {end_to_end(parts):6.1f} s the first night, "
                  f"{end_to_end(parts, CHOOSING_AGAIN):6.1f} s choosing again, {end_to_end(parts, TAKING_PART):6.1f} s "
                  f"taking the blend; raw read {parts['raw_read']['total']:5.1f} s, "
                  f"raw fit {parts['raw_fit']['total']:6.1f} s: ratios {ratio(parts):.2f}, "
                  f"{ratio(parts, CHOOSING_AGAIN):.2f}, {ratio(parts, TAKING_PART):.2f}, "
                  f"over a week {weekly_ratio(parts):.2f}")
        print(f"the median of {rounds} rounds, shown above: over a week {weekly_ratio(median):.2f} (target <= 2); "
              f"its range {weekly_ratio(ordered[0]):.2f} to {weekly_ratio(ordered[-1]):.2f}")


TAKING_PART, CHOOSING_AGAIN = "ours_taking_the_blend", "ours_choosing_again"
# A run takes the blend an earlier one chose while that choice is at most blend_reuse_days old: one
# night in blend_reuse_days + 1 chooses.
WEEK = CONFIG.blend_reuse_days + 1


def end_to_end(parts: dict, ours: str = "ours") -> float:
    return parts["query"]["total"] + parts[ours]["total"]


def ratio(parts: dict, ours: str = "ours") -> float:
    return end_to_end(parts, ours) / (parts["raw_read"]["total"] + parts["raw_fit"]["total"])


def weekly_ratio(parts: dict) -> float:
    """A week of a shop that trains every night: one night chooses the blend, the others take it."""
    return (ratio(parts, CHOOSING_AGAIN) + (WEEK - 1) * ratio(parts, TAKING_PART)) / WEEK


def print_round(parts: dict) -> None:
    query, ours, taking, choosing, read, fit = (parts[part] for part in PARTS)
    users, items = ours["shape"]
    print(f"{users:,} customers x {items:,} items, {ours['nnz']:,} pairs; the matrix is {ours['matrix_mib']:.0f} MiB")
    print(f"  ours: query (DuckDB)  {query['total']:9.1f} s   peak {query['peak']:7,.0f} MiB  (Athena's part on AWS)")
    for stage, seconds in ours["timings"].items():
        print(f"  ours: {stage:<14} {seconds:9.1f} s")
    print(f"    the run's strategy: {ours['strategy']}")
    total = end_to_end(parts)
    print(f"  ours, end to end     {total:9.1f} s   peak {ours['peak']:7,.0f} MiB  (the train function's part)")
    after = ours["histories"] + ours["outcomes_waited"]
    print(f"  then the segments' inputs {ours['histories']:9.1f} s   peak {ours['nightly_peak']:7,.0f} MiB  "
          f"(customers, and histories of {ours['histories_events']:,} events; the nightly run's, after training: "
          f"{total + after:.1f} s)")
    if ours["outcomes"] is not None:
        print(f"    and the outcomes meanwhile: {ours['outcomes']:,} from the events export, "
              f"{ours['outcomes_waited']:.1f} s more waited for them")
    for label, later, part in (("the night after, taking the blend", taking, TAKING_PART),
                               ("a week on, choosing again", choosing, CHOOSING_AGAIN)):
        stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in later["timings"].items())
        print(f"  ours, {label}: {end_to_end(parts, part):.1f} s end to end "
              f"(query {query['total']:.1f} s, {stages})   peak {later['peak']:7,.0f} MiB")
        print(f"    its first fit: {later['fit_start']}")
    print(f"  raw read (DuckDB)    {read['total']:9.1f} s   peak {read['peak']:7,.0f} MiB  ({read['rows']:,} rows)")
    print(f"  raw fit (implicit)   {fit['total']:9.1f} s   peak {fit['peak']:7,.0f} MiB")
    print(f"ratio ours / (raw read + raw fit): {ratio(parts, TAKING_PART):.2f} on a night that takes the blend, "
          f"{ratio(parts, CHOOSING_AGAIN):.2f} on one that chooses it, over a week ({WEEK - 1} of {WEEK} nights "
          f"take it: blend_reuse_days {CONFIG.blend_reuse_days}) {weekly_ratio(parts):.2f} (target <= 2); "
          f"a shop's first night (cold, choosing) {ratio(parts):.2f}; "
          f"peak memory / matrix: {ours['peak'] / ours['matrix_mib']:.0f}x (target <= 3), the nightly run's "
          f"{ours['nightly_peak'] / ours['matrix_mib']:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--rounds", type=int, default=1,
                        help="times each size is measured, over the same files; the round with the median ratio "
                             "(of an even number, the lower middle one) is shown whole")
    parser.add_argument("--outcome-days", type=int,
                        help="the days of outcomes the night reads (default: the attribution report's, 60; "
                             "an experiment started earlier reaches back to its start); 0: none")
    parser.add_argument("--outcomes-since", help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        since = {"outcomes_since": args.outcomes_since} if args.part in OURS else {}
        print(json.dumps(PARTS[args.part](args.root, **since)))
        return
    # Here, not at the top: each part runs this file in a process of its own, and the raw parts'
    # peaks are not to count modules only this one uses.
    from shared.events import format_timestamp
    from shared.experiments.service import REPORT_DAYS

    days = REPORT_DAYS if args.outcome_days is None else args.outcome_days
    since = format_timestamp(NOW - timedelta(days=days)) if days else None
    for size in args.sizes:
        run(size, args.rounds, since)


if __name__ == "__main__":
    main()
