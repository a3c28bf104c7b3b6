"""devstack: run the service on one machine, no Docker, no AWS account.

    devstack up [--port 3000]      start DynamoDB Local + tables + local API gateway (background)
    devstack down                  stop them
    devstack status                what runs where
    devstack demo                  start (or reuse) the stack and run the demo job
    devstack import-csv FILE       send a CSV of order lines (Online Retail, Ta-Feng, --mapping) through the API
    devstack token USER_ID         a signed-in customer's bearer token for the local stack
    devstack credentials           curl options that sign requests as the shop's backend
    devstack call METHOD PATH [BODY]  one request signed as the shop's backend, its JSON answer printed
    devstack secret                the x-devstack-secret header value that opens the stack's /dev/ helpers
    devstack bus [-n 20]           the local event bus's last entries (triggers, docs/triggers.md)
    devstack export                the tables in DynamoDB's export format (TRAINING_PATH=export trains from them)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any, Callable

from devstack import stack
from devstack.api_client import ApiClient, ApiError, SendTotals, bearer, signed_with_aws_credentials
from devstack.local_auth import LOCAL_REGION


def progress_printer(label: str, total: int) -> Callable[[int], None]:
    """Progress of a long load on stderr: one updating line on a terminal, a line per 10% in logs."""
    started = time.monotonic()
    interactive = sys.stderr.isatty()
    shown_tenths = -1

    def show(done: int) -> None:
        nonlocal shown_tenths
        tenths = 10 * done // max(total, 1)
        if not interactive and tenths == shown_tenths:
            return
        shown_tenths = tenths
        rate = done / max(time.monotonic() - started, 1e-9)
        line = f"  {label}: {done:,}/{total:,} ({100 * done // max(total, 1)}%, {rate:,.0f}/s)"
        if interactive:
            print(f"\r{line}", end="\n" if done >= total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    return show


def wait_with_progress(label: str, work: Callable[[], Any], every: float = 5.0) -> Any:
    """work(), saying every few seconds that it is still going (one HTTP call gives no progress)."""
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(work)
        while True:
            try:
                return future.result(timeout=every)
            except FuturesTimeout:
                print(f"  {label}: still running after {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def report_totals(label: str, totals: SendTotals) -> None:
    print(f"  {label}: {totals.accepted:,} accepted, {totals.duplicates:,} duplicates, "
          f"{len(totals.rejected):,} rejected")
    for rejection in totals.rejected[:5]:
        print(f"    rejected #{rejection['index']}: {rejection['errors']}")


def ensure_up(args: argparse.Namespace) -> stack.StackState:
    state, started = stack.up(args.port, args.state_dir)
    print(f"local stack {'started' if started else 'already running'} at {state.url}")
    return state


def cmd_up(args: argparse.Namespace) -> int:
    state, started = stack.up(args.port, args.state_dir, persist=args.persist)
    if not started:
        print(f"the local stack is already running at {state.url} (pid {state.pid}); "
              "stop it with ./dev down")
        return 0
    print(f"local stack running at {state.url}\n  DynamoDB Local: {state.dynamodb_endpoint}\n"
          f"  tables: {', '.join(state.tables.values())}\n  logs: {args.state_dir}/stack.log\n"
          "  stop with ./dev down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state = stack.down(args.state_dir)
    print("local stack stopped" if state else "no local stack is running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = stack.read_state(args.state_dir)
    if state and stack.alive(state.pid):
        print(f"running at {state.url} (pid {state.pid}), DynamoDB Local at {state.dynamodb_endpoint}")
        return 0
    print("not running")
    return 3


def cmd_serve(args: argparse.Namespace) -> int:
    stack.serve(args.port, args.state_dir, persist=args.persist)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from devstack.demo_data import generate_shop

    ensure_up(args)
    api = ApiClient.for_stack(args.state_dir)
    shop = generate_shop(seed=args.seed, n_users=args.users, n_items=args.items)
    print(f"demo shop: {len(shop.items):,} items, {len(shop.users):,} customers, "
          f"{len(shop.events):,} events over a year, {len(shop.messages):,} messages sent")
    report_totals("catalog", api.put_items(shop.items, progress=progress_printer("items", len(shop.items))))
    started = time.monotonic()
    api.put_users(shop.users)
    print(f"  profiles: {len(shop.users):,} stored in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    everything = shop.all_events()  # by time: each message sent before the sessions that answer it
    totals = api.send_events(everything, progress=progress_printer("events", len(everything)))
    seconds = time.monotonic() - started
    report_totals("events", totals)
    print(f"  ingest rate over HTTP: {len(everything) / seconds:,.0f} events/s")

    again = api.send_events(shop.events[:1000])
    print(f"  the first 1,000 events sent again: {again.accepted} accepted, "
          f"{again.duplicates} duplicates (idempotent)")
    show_customer(api, shop)
    show_training(api)
    show_recommendations(api, shop)
    show_segments(api, shop)
    user_id = next(iter(shop.archetypes))
    print(f"\nThe stack keeps running at {api.base_url}; try, as {user_id} signed in:\n"
          f"  curl -H \"authorization: Bearer $(./dev token {user_id})\" {api.base_url}/users/{user_id}/recommendations\n"
          f"or as the shop's backend:\n  curl $(./dev credentials) {api.base_url}/segments\n"
          "Stop it with ./dev down")
    return 0


def show_customer(api: ApiClient, shop: Any) -> None:
    by_archetype: dict[str, str] = {}
    for user_id, archetype in shop.archetypes.items():
        by_archetype.setdefault(archetype, user_id)
    print("\none customer of each kind, as the service now knows them:")
    for archetype, user_id in sorted(by_archetype.items()):
        user = api.request("GET", f"/users/{user_id}").body
        summary = user.get("summary", {}) if isinstance(user, dict) else {}
        spend = ", ".join(f"{float(amount):,.2f} {currency}" for currency, amount in summary.get("spend", {}).items())
        print(f"  {archetype:>10} {user_id}: {summary.get('purchase_count', 0)} purchases, "
              f"spent {spend or 'nothing'}, last {summary.get('last_purchase_at') or 'never'}")


def show_training(api: ApiClient) -> None:
    print("\ntraining a model on the stored history (POST /models/train, then GET /models until it is done) ...",
          flush=True)
    manifest = wait_with_progress("training", api.train_and_wait)
    print(f"  version {manifest['version']}: {manifest['status']} ({manifest['reason']})")
    for name, metrics in manifest.get("metrics", {}).items():
        print(f"  {name:>10}: NDCG@10 {metrics['ndcg']:.3f}, precision@10 {metrics['precision']:.3f}, "
              f"MAP@10 {metrics['map']:.3f}, coverage {metrics['coverage']:.2f}")
    timings = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in manifest.get("timings", {}).items())
    print(f"  active: {manifest['active']}; {timings}")


def show_recommendations(api: ApiClient, shop: Any) -> None:
    loyal = next(user for user, kind in shop.archetypes.items() if kind == "loyal")
    customer = api.as_customer(loyal)
    print(f"\n{loyal}, signed in, asks for recommendations (GET /users/{loyal}/recommendations?limit=5):")
    answer = print_recommendations(customer, loyal)
    other = next(user for user in shop.archetypes if user != loyal)
    denied = customer.request("GET", f"/users/{other}/recommendations")
    print(f"  {loyal} asking for {other}'s: HTTP {denied.status} {denied.body['error']['message']}")
    if not answer["items"]:
        return
    bought = answer["items"][0]
    api.request("POST", "/events", {"events": [{
        "event_id": f"demo-{int(time.time())}", "user_id": loyal, "item_id": bought["item_id"],
        "event_type": "purchase", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quantity": 1, "price": float(bought["price"] or 0), "currency": bought["currency"] or "EUR",
        "channel": "web"}]})
    print(f"\n{loyal} buys {bought['title']} ({bought['item_id']}); the next answer, no retraining:")
    print_recommendations(customer, loyal)
    popular = api.request("GET", "/popular", query={"limit": 3}).body
    print("\npopular for anonymous visitors (GET /popular?limit=3, no credentials): "
          + ", ".join(f"{i['title']} ({i['item_id']})" for i in popular["items"]))
    show_visitor(api, [i["item_id"] for i in answer["items"][1:3]])


def show_visitor(api: ApiClient, viewed: list[str]) -> None:
    """A logged-out visitor, as the web kit makes one: a token, two views, their own answer."""
    anonymous = ApiClient(api.base_url, None, api.timeout, api.retries_on_503, api.auth)
    visitor = anonymous.request("POST", "/visitors").body
    as_visitor = ApiClient(api.base_url, bearer(visitor["token"]), api.timeout, api.retries_on_503, api.auth)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    as_visitor.request("POST", f"/visitors/{visitor['visitor_id']}/events", {"events": [
        {"event_id": f"demo-view-{n}", "item_id": item_id, "event_type": "view", "timestamp": now, "channel": "web"}
        for n, item_id in enumerate(viewed)]})
    answer = as_visitor.request("GET", f"/visitors/{visitor['visitor_id']}/recommendations",
                                query={"limit": 3}).body
    print(f"\na logged-out visitor ({visitor['visitor_id']}, POST /visitors) views {', '.join(viewed)}; "
          f"their next answer ({answer['strategy']}):")
    for item in answer["items"]:
        print(f"  {item['item_id']:>10}  {item['title']:<28} {item['category']:<10} {item['reason']['text']}")
    print("  (the storefront at /shop does the same through the web kit, clients/js/shop-recs.js)")


def show_segments(api: ApiClient, shop: Any) -> None:
    listing = api.request("GET", "/segments", query={"family": "rfm"}).body
    rfm = [s for s in listing["segments"] if not s["name"].startswith("R")]
    print(f"\nsegments materialized in run {listing['run']}: {sum(listing['families'].values())} segments; RFM sizes:")
    print("  " + ", ".join(f"{s['name']} {s['members']}" for s in sorted(rfm, key=lambda s: -s["members"])))
    loyal = next(user for user, kind in shop.archetypes.items() if kind == "loyal")
    tags = api.request("GET", f"/users/{loyal}/segments").body["tags"]
    print(f"{loyal}'s tags (GET /users/{loyal}/segments):")
    for tag in tags[:8]:
        print(f"  {tag['family']:>13}: {tag['name']:<22} {tag['reason']}")


def print_recommendations(api: ApiClient, user_id: str) -> dict[str, Any]:
    answer = api.request("GET", f"/users/{user_id}/recommendations", query={"limit": 5}).body
    print(f"  model {answer['model_version']}, strategy {answer['strategy']}")
    for item in answer["items"]:
        print(f"  {item['item_id']:>10}  {item['title']:<28} {item['category']:<10} {item['reason']['text']}")
    return answer


def cmd_import_csv(args: argparse.Namespace) -> int:
    from devstack.retail_csv import PRESETS, OrderLines, detect_mapping, read_order_lines

    if args.url:
        api = ApiClient(args.url, signed_with_aws_credentials(args.region))
    else:
        ensure_up(args)
        api = ApiClient.for_stack(args.state_dir)
    started = time.monotonic()
    if args.mapping in PRESETS:
        mapping = PRESETS[args.mapping]
    elif args.mapping:
        text = Path(args.mapping).read_text() if Path(args.mapping).is_file() else args.mapping
        mapping = OrderLines.from_dict(json.loads(text))
    else:
        mapping = detect_mapping(args.file)
    if args.currency:
        mapping = dataclasses.replace(mapping, currency=args.currency)
    data = read_order_lines(args.file, mapping, limit_rows=args.limit)
    print(f"read {data.rows:,} rows ({data.mapping}) in {time.monotonic() - started:.1f} s: "
          f"{len(data.events):,} purchases, {len(data.returns):,} returns "
          f"({data.returns_matched:,} netted against their order, {data.returns_unmatched:,} without it), "
          f"{len(data.users):,} customers, {len(data.items):,} products")
    for reason, count in sorted(data.skipped.items(), key=lambda kv: -kv[1]):
        print(f"  skipped {count:,} rows: {reason}")
    report_totals("catalog", api.put_items(data.items, progress=progress_printer("items", len(data.items))))
    api.put_users(data.users)
    print(f"  profiles: {len(data.users):,} stored")
    events = data.all_events()
    report_totals("events", api.send_events(events, progress=progress_printer("events", len(events))))
    return 0


def cmd_backfill_bought_sets(args: argparse.Namespace) -> int:
    from devstack.backfill import main as backfill

    return _on_local_tables(args, backfill)


def cmd_backfill_recent_activity(args: argparse.Namespace) -> int:
    from devstack.backfill_recent import main as backfill

    return _on_local_tables(args, backfill)


def _on_local_tables(args: argparse.Namespace, migration: Callable[[list[str]], int]) -> int:
    """A one-off migration's main (EVENTS USERS) on the local stack's tables."""
    import os

    from devstack.dynamodb_local import LOCAL_CREDENTIALS

    state = ensure_up(args)
    os.environ.update({**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL_DYNAMODB": state.dynamodb_endpoint})
    return migration([state.tables["EventsTable"], state.tables["UsersTable"]])


def cmd_export(args: argparse.Namespace) -> int:
    """The local tables in DynamoDB's export format, where TRAINING_PATH=export reads them."""
    import os

    from devstack.dynamodb_local import LOCAL_CREDENTIALS
    from shared.storage.exports import write_export

    state = ensure_up(args)
    os.environ.update({**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL_DYNAMODB": state.dynamodb_endpoint})
    for logical_id in stack.EXPORTED_TABLES:
        table = state.tables[logical_id]
        export = write_export(table, stack.export_dir(args.state_dir) / table)
        print(f"{table}: {export.summary['itemCount']:,} items in {export.root / export.summary['manifestFilesS3Key']}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    _, auth = stack.running(args.state_dir)
    print(auth.issue_token(args.user_id, args.expires_in))
    return 0


def cmd_sam_env(args: argparse.Namespace) -> int:
    """The --env-vars file for `sam local start-api`: the local stack's issuer key, so that
    `./dev token` tokens open the customer routes there (shared/sam_local.py), and a visitor
    token key. sam local runs the functions against the AWS account and tables of your
    credentials: point them at a development stack's tables by adding their names."""
    _, auth = stack.running(args.state_dir)
    path = args.state_dir / "sam-env.json"
    key_file = args.state_dir / "sam-visitor-key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48))
        key_file.chmod(0o600)
    path.write_text(json.dumps({"Parameters": {
        "LOCAL_ISSUER_JWKS": json.dumps(auth.jwks()),
        "VISITOR_TOKEN_SECRET_ARN": "", "VISITOR_TOKEN_SECRET": key_file.read_text()}}, indent=2))
    path.chmod(0o600)
    print(path)
    return 0


def cmd_credentials(args: argparse.Namespace) -> int:
    _, auth = stack.running(args.state_dir)
    # Unquoted on purpose, for $(./dev credentials): neither value has spaces.
    print(f"--aws-sigv4 aws:amz:{LOCAL_REGION}:execute-api --user {auth.access_key_id}:{auth.secret_access_key}")
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    """One request as the shop's backend. SigV4 as AWS computes it: curl's --aws-sigv4 (7.x) does
    not encode a ':' in the path, which every segment id has, so its signature never matches."""
    response = ApiClient.for_stack(args.state_dir).request(
        args.method.upper(), args.path, json.loads(args.body) if args.body else None)
    print(f"HTTP {response.status}", file=sys.stderr)
    print(json.dumps(response.body, indent=2, ensure_ascii=False))
    return 0 if response.status < 400 else 1


def cmd_secret(args: argparse.Namespace) -> int:
    _, auth = stack.running(args.state_dir)
    print(auth.dev_secret)
    return 0


def cmd_bus(args: argparse.Namespace) -> int:
    """The local bus's last entries, through the gateway's GET /dev/bus, one line each."""
    import urllib.parse
    import urllib.request

    state, auth = stack.running(args.state_dir)
    query = urllib.parse.urlencode({"limit": args.n, **({"detail_type": args.detail_type} if args.detail_type else {})})
    request = urllib.request.Request(f"{state.url}/dev/bus?{query}", headers={"x-devstack-secret": auth.dev_secret})
    with urllib.request.urlopen(request, timeout=30) as response:
        entries = json.loads(response.read())["entries"]
    for entry in entries:
        print(entry["Time"], entry["DetailType"], entry["Detail"])
    if not entries:
        print("the local bus is empty", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="devstack", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = main.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--port", type=int, default=stack.DEFAULT_PORT, help="gateway port")
        sub.add_argument("--state-dir", type=Path, default=stack.DEFAULT_STATE_DIR)
        sub.set_defaults(handler=handler)
        return sub

    for name, handler, help_text in (("up", cmd_up, "start the local stack"),
                                     ("serve", cmd_serve, "run the stack in the foreground")):
        command(name, handler, help_text).add_argument(
            "--persist", action="store_true", help="keep DynamoDB data across restarts")
    command("down", cmd_down, "stop the local stack")
    command("status", cmd_status, "is the local stack running?")
    demo = command("demo", cmd_demo, "load demo data and show what the service does")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--users", type=int, default=2000)
    demo.add_argument("--items", type=int, default=500)
    importer = command("import-csv", cmd_import_csv, "import a CSV of order lines (.csv or .csv.gz): "
                       "Online Retail (I, II), Ta-Feng, or any with --mapping")
    importer.add_argument("file", type=Path)
    importer.add_argument("--url", help="the trusted API's base URL on AWS, signed with your AWS "
                          "credentials (default: the local stack)")
    importer.add_argument("--region", default=None, help="the API's AWS region (with --url)")
    importer.add_argument("--currency", default=None, help="overrides the mapping's (GBP, TWD for Ta-Feng)")
    importer.add_argument("--mapping", default=None, help="a preset (online_retail, online_retail_ii, ta_feng) "
                          "or a JSON mapping (text or file): {\"user\": COL, \"item\": COL, \"quantity\": COL, "
                          "\"timestamp\": COL, \"price\" or \"line_total\": COL, \"order\", \"title\", "
                          "\"category\", \"country\": COL, \"date_format\": \"%%d/%%m/%%Y\", \"timezone\", "
                          "\"currency\"}; default: the preset whose columns the file has")
    importer.add_argument("--limit", type=int, help="read at most this many rows")
    command("backfill-bought-sets", cmd_backfill_bought_sets,
            "give customers stored before the bought set their item and order keys (devstack/backfill.py)")
    command("backfill-recent-activity", cmd_backfill_recent_activity,
            "give customers whose events predate the recent-activity item their item (devstack/backfill_recent.py)")
    command("export", cmd_export, "write the tables in DynamoDB's export format, the input of TRAINING_PATH=export")
    token = command("token", cmd_token, "print a customer's bearer token for the local stack")
    token.add_argument("user_id")
    token.add_argument("--expires-in", type=int, default=3600, help="seconds")
    command("credentials", cmd_credentials, "print curl options signing as the shop's backend")
    call = command("call", cmd_call, "send one request signed as the shop's backend; print the JSON answer")
    call.add_argument("method", help="GET, POST, PUT, DELETE")
    call.add_argument("path", help="with its query string, e.g. '/segments/rfm:champions/members?limit=1000'")
    call.add_argument("body", nargs="?", default=None, help="a JSON body")
    command("sam-env", cmd_sam_env, "write the --env-vars file for sam local start-api (prints its path)")
    command("secret", cmd_secret, "print the secret the local stack's /dev/ helpers want (x-devstack-secret)")
    bus = command("bus", cmd_bus, "print the local event bus's last entries (triggers)")
    bus.add_argument("-n", type=int, default=20, help="how many, the newest (1 to 1000)")
    bus.add_argument("--detail-type", default=None, help='only these, e.g. "Segment Entered"')
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except (stack.StackError, ApiError) as error:
        print(f"devstack: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
