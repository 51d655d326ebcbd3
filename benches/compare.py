"""plumbline's Lambda functions against the Powertools peer, side by side in one run.

Run through `benches/compare` (which makes the venv and builds the binaries). For each side:
the same signed Stripe webhooks through the ingress, then the messages that ingress enqueued,
in SQS batches of ten, through the delivery; both against one moto server and one loopback
target. `plumbline-coldstart` is the Lambda Runtime API and the stopwatch; moto's request
recorder counts the AWS calls. Prints a table, writes JSON, and compares against a saved result.

The warm runs keep their connections, as a warm function does against AWS and a real target:
moto's server closes every connection after its answer, so `plumbline-coldstart --front
keep-alive` stands before it, and the target keeps its connections. `--reconnecting` measures
as the runs before 2026-12-03 did, a new connection per request. Cold starts open their first
connections either way.
"""

import argparse
import base64
import collections
import hashlib
import hmac
import http.server
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "benches" / "peers" / "powertools"
SECRET = "whsec_compare_stripe"
MEMORY_MB = 256  # infra/template.yaml's MemorySize for ingress and delivery; the peer gets the same.
BATCH = 10  # the template's BatchSize

# Published on-demand list prices, us-east-1, as of 2026-11 (USD).
PRICE = {
    "apigw_http_per_million": 1.00,
    "lambda_requests_per_million": 0.20,
    "lambda_arm64_gb_second": 0.0000133334,
    "dynamodb_wru_per_million": 0.625,
    "dynamodb_rru_per_million": 0.125,
    "sqs_requests_per_million": 0.40,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Target(http.server.BaseHTTPRequestHandler):
    """The loopback target: answers 200 and counts requests per Idempotency-Key."""

    keys: collections.Counter = collections.Counter()
    lock = threading.Lock()
    # Its answer goes out in two writes (head, then body): on a kept connection Nagle's
    # algorithm would hold the second until the client's delayed ACK, about 40 ms each.
    disable_nagle_algorithm = True

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.lock:
            self.keys[(self.path, self.headers.get("idempotency-key", ""))] += 1
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def start_moto(venv: Path, recording: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, MOTO_RECORDER_FILEPATH=str(recording))
    proc = subprocess.Popen(
        [str(venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("moto's server did not start")


def recorder(moto: str, action: str) -> str:
    method = "GET" if action == "download-recording" else "POST"
    req = urllib.request.Request(f"{moto}/moto-api/recorder/{action}", method=method, data=None if method == "GET" else b"")
    with urllib.request.urlopen(req) as r:
        return r.read().decode()


def operations(recording: str) -> list[tuple[str, dict]]:
    """(service.Operation, request body) for every AWS request moto recorded."""
    out = []
    for line in recording.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        target = headers.get("x-amz-target", "")
        if target:
            service, op = target.split(".", 1)
            service = "DynamoDB" if service.startswith("DynamoDB") else "SQS" if "SQS" in service else service
        else:
            params = dict(p.split("=", 1) for p in body.split("&") if "=" in p)
            service, op = "SQS", params.get("Action", "?")
        try:
            doc = json.loads(body) if body.startswith("{") else {}
        except ValueError:
            doc = {}
        out.append((f"{service}.{op}", doc))
    return out


def table_schema() -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "infra" / "template.yaml").read_text(), Loader=Loader)
    props = template["Resources"]["EventsTable"]["Properties"]
    return {
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "GlobalSecondaryIndexes": [
            {k: g[k] for k in ("IndexName", "KeySchema", "Projection")} for g in props["GlobalSecondaryIndexes"]
        ],
    }


def item_size(value) -> int:
    """DynamoDB's item size rules (names plus values), for write and read unit arithmetic."""
    if isinstance(value, dict) and len(value) == 1:
        (kind, v), = value.items()
        if kind == "S":
            return len(v.encode())
        if kind == "N":
            return len(v.lstrip("-").replace(".", "")) // 2 + 2
        if kind == "B":
            # boto3 hands back bytes; the recorded requests carry base64 text.
            return len(v) if isinstance(v, (bytes, bytearray)) else len(base64.b64decode(v))
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "M":
            return 3 + sum(len(k.encode()) + 1 + item_size(x) for k, x in v.items())
        if kind == "L":
            return 3 + sum(1 + item_size(x) for x in v)
        if kind in ("SS", "NS", "BS"):
            return sum(len(str(x)) for x in v)
    return sum(len(k.encode()) + item_size(v) for k, v in value.items())


def signed_webhooks(count: int, prefix: str, per_payment: int = 1) -> list[str]:
    """API Gateway (HTTP API v2) events carrying Stripe webhooks signed now. With `per_payment`
    1, each is a new payment that succeeded; with more, the payments take that many events each
    (`processing`, …, then `succeeded`), in rounds, so a payment's events are far apart in the
    stream as in live traffic, never in one batch."""
    fixture = json.loads((ROOT / "tests/fixtures/stripe/payment_intent.succeeded.json").read_text())
    apigw = json.loads((ROOT / "tests/fixtures/apigw/post-webhook.json").read_text())
    now = int(time.time())
    payments = math.ceil(count / per_payment)
    lines = []
    for i in range(count):
        last = i + payments >= count  # no later event about this payment
        fixture["id"] = f"evt_{prefix}_{i:06}"
        fixture["type"] = "payment_intent.succeeded" if last else "payment_intent.processing"
        fixture["created"] = now
        fixture["data"]["object"]["id"] = f"pi_{prefix}_{i % payments:06}"
        fixture["data"]["object"]["status"] = "succeeded" if last else "processing"
        body = json.dumps(fixture, separators=(",", ":"))
        mac = hmac.new(SECRET.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
        apigw["headers"]["stripe-signature"] = f"t={now},v1={mac}"
        apigw["headers"]["content-type"] = "application/json"
        apigw["body"] = body
        lines.append(json.dumps(apigw))
    return lines


def sqs_batches(sqs, queue_url: str, expected: int, size: int = BATCH) -> list[str]:
    """The queue's messages as Lambda SQS events of `size` records, as the event source mapping
    would hand them over (its receive and delete calls are added to the cost separately)."""
    template = json.loads((ROOT / "tests/fixtures/lambda/sqs-record.json").read_text())
    records = []
    while len(records) < expected:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=3600,
            MessageAttributeNames=["All"], AttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            break
        for m in got:
            r = dict(template)
            r["messageId"], r["receiptHandle"], r["body"] = m["MessageId"], m["ReceiptHandle"], m["Body"]
            r["messageAttributes"] = {
                k: {"stringValue": v.get("StringValue"), "dataType": v["DataType"], "stringListValues": [], "binaryListValues": []}
                for k, v in m.get("MessageAttributes", {}).items()
            }
            records.append(r)
    if len(records) != expected:
        raise SystemExit(f"{queue_url}: {len(records)} messages, expected {expected}")
    return [json.dumps({"Records": records[i : i + size]}) for i in range(0, len(records), size)]


def harness(coldstart: Path, bootstrap: list[str], events: Path, envs: dict, cwd: Path | None, warm: bool, runs: int = 10, warmup: int = 20, front: bool = False) -> dict:
    cmd = [str(coldstart), "--bin", bootstrap[0], "--events", str(events), "--json", "--memory-mb", str(MEMORY_MB),
           "--stderr", str(events.with_suffix(".stderr.log"))]
    if front:
        # moto's server closes every connection after its answer; AWS keeps them open, and a
        # warm function reuses its SDK's pooled connections. The front keeps the function's.
        cmd += ["--front", "keep-alive"]
    for a in bootstrap[1:]:
        cmd += ["--arg", a]
    if cwd:
        cmd += ["--cwd", str(cwd)]
    cmd += ["--warm", "--warmup", str(warmup)] if warm else ["--runs", str(runs)]
    for k, v in envs.items():
        cmd += ["--env", f"{k}={v}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Name the bootstrap, not where this machine keeps it.
    for field in ("bootstrap", "binary"):
        if field in result:
            result[field] = " ".join([Path(bootstrap[0]).name, *bootstrap[1:]])
    return result


def cost_per_million(side: dict) -> dict:
    """USD per million webhooks: API Gateway, Lambda (requests + GB-s at the measured durations),
    DynamoDB units from measured item sizes, SQS requests (ingress sends + the event source
    mapping's receive and delete per batch)."""
    gb = MEMORY_MB / 1024
    ingress_ms = math.ceil(side["ingress"]["warm"]["wall_ms"]["mean"])
    batch_ms = math.ceil(side["delivery"]["warm"]["wall_ms"]["mean"])
    invocations = 1 + 1 / BATCH
    lambda_gb_s = gb * (ingress_ms + batch_ms / BATCH) / 1000
    sqs_requests = side["requests"]["sqs_per_event"] + 2 / BATCH
    parts = {
        "api_gateway": PRICE["apigw_http_per_million"],
        "lambda_requests": invocations * PRICE["lambda_requests_per_million"],
        "lambda_duration": lambda_gb_s * 1e6 * PRICE["lambda_arm64_gb_second"],
        "dynamodb_writes": side["requests"]["wru_per_event"] * PRICE["dynamodb_wru_per_million"],
        "dynamodb_reads": side["requests"]["rru_per_event"] * PRICE["dynamodb_rru_per_million"],
        "sqs": sqs_requests * PRICE["sqs_requests_per_million"],
    }
    parts["total"] = sum(parts.values())
    parts["inputs"] = {
        "ingress_billed_ms": ingress_ms,
        "delivery_batch_billed_ms": batch_ms,
        "memory_mb": MEMORY_MB,
        "lambda_gb_s_per_event": lambda_gb_s,
        "sqs_requests_per_event": sqs_requests,
    }
    return parts


def index_entry_after(kind: str, doc: dict, attrs: set):
    """The key of the item's entry in the index whose key attributes are `attrs` after this
    write: a tuple of their values, False when the item has none, or None when the write leaves
    the index alone. An update that sets a key attribute is taken to change it (the index keys
    plumbline's updates write are times), so its key is a value no other write has."""
    if kind == "Put":
        item = doc.get("Item", {})
        if not all(a in item for a in attrs):
            return False
        return tuple(json.dumps(item[a], sort_keys=True) for a in sorted(attrs))
    if kind == "Delete":
        return False
    if kind != "Update":
        return None
    names = doc.get("ExpressionAttributeNames", {})
    expr = re.sub(r"#\w+", lambda m: names.get(m.group(0), m.group(0)), doc.get("UpdateExpression", ""))
    clauses = dict.fromkeys(("SET", "REMOVE"), "")
    for verb, body in re.findall(r"\b(SET|REMOVE|ADD|DELETE)\b(.*?)(?=\b(?:SET|REMOVE|ADD|DELETE)\b|$)", expr, re.I | re.S):
        clauses[verb.upper()] = clauses.get(verb.upper(), "") + body
    def names_a_key(clause: str) -> bool:
        return any(re.search(rf"\b{re.escape(a)}\b", clause) for a in attrs)

    if names_a_key(clauses["REMOVE"]):
        return False
    if names_a_key(clauses["SET"]):
        return (object(),)
    return None


def units(ops: list[tuple[str, dict]], sizes: dict[tuple, int], indexes: dict[str, set]) -> tuple[float, float]:
    """DynamoDB write and read units of the recorded calls. Writes: ceil(KB) of the item's
    stored size (twice inside a transaction), plus, per secondary index, one to put an item's
    entry, one to delete it, two to move it (a delete and a put) when the write changes its key
    attributes' values, and none when it writes them again unchanged. Reads: ceil(size / 4 KB)
    per item asked for (BatchGetItem: per key), halved when eventually consistent."""
    wru = rru = 0.0

    def key_of(table, doc):
        item = doc.get("Key") or doc.get("Item") or {}
        return (table, json.dumps({k: item[k] for k in sorted(item) if k in ("pk", "sk", "id")}))

    # Each item's entry in each index (its key attribute values), as the recorded writes leave
    # them.
    entries = {}

    def write(table, doc, factor, kind):
        nonlocal wru
        key = key_of(table, doc)
        size = sizes.get(key) or item_size(doc.get("Item") or doc.get("Key") or {})
        wru += factor * max(1, math.ceil(size / 1024))
        for i, attrs in enumerate(indexes.get(table, [])):
            after = index_entry_after(kind, doc, attrs)
            if after is None:
                continue
            entry = (key, i)
            before = entries.get(entry)
            if before and after:
                if before != after:
                    wru += 2  # moved (its key attributes written with new values): a delete and a put
                # written again with the same key attribute values: no index write at all
            elif before or after:
                wru += 1  # a new entry's put, or a dropped one's delete
            if after:
                entries[entry] = after
            else:
                entries.pop(entry, None)

    for op, doc in ops:
        name = op.split(".", 1)[1]
        table = doc.get("TableName", "")
        if name in ("PutItem", "UpdateItem", "DeleteItem"):
            write(table, doc, 1, name.removesuffix("Item"))
        elif name == "TransactWriteItems":
            for item in doc.get("TransactItems", []):
                for kind in ("Put", "Update", "Delete", "ConditionCheck"):
                    if kind in item:
                        write(item[kind].get("TableName", ""), item[kind], 2, kind)
        elif name == "BatchWriteItem":
            for table, requests in doc.get("RequestItems", {}).items():
                for r in requests:
                    kind = "Put" if "PutRequest" in r else "Delete"
                    write(table, r.get("PutRequest") or r.get("DeleteRequest") or {}, 1, kind)
        elif name in ("GetItem", "Query", "Scan"):
            size = sizes.get(key_of(table, doc), 1)
            rru += max(1, math.ceil(size / 4096)) * (1 if doc.get("ConsistentRead") else 0.5)
        elif name == "BatchGetItem":
            # Each key is read as by GetItem: a key with no item still costs the minimum unit.
            for table, wanted in doc.get("RequestItems", {}).items():
                factor = 1 if wanted.get("ConsistentRead") else 0.5
                for key in wanted.get("Keys", []):
                    size = sizes.get(key_of(table, {"Key": key}), 1)
                    rru += max(1, math.ceil(size / 4096)) * factor
    return wru, rru


def scan_sizes(ddb, tables: list[str]) -> dict[tuple, int]:
    sizes = {}
    for table in tables:
        pager = ddb.get_paginator("scan")
        for page in pager.paginate(TableName=table):
            for item in page["Items"]:
                key = json.dumps({k: item[k] for k in sorted(item) if k in ("pk", "sk", "id")})
                sizes[(table, key)] = item_size(item)
    return sizes


def run_side(name, args, moto, ddb, sqs, events_file, events_count, ingress_cmd, delivery_cmd, envs, cwd, table_names, indexes, queue_url, target_path):
    print(f"{name}: ingress, {events_count} webhooks", file=sys.stderr)
    recorder(moto, "reset-recording")
    recorder(moto, "start-recording")
    front = not args.reconnecting
    ingress = harness(args.coldstart, ingress_cmd, events_file, envs, cwd, warm=True, warmup=args.warmup, front=front)
    recorder(moto, "stop-recording")
    recording = recorder(moto, "download-recording")
    events_file.with_name(f"{name}-ingress-requests.jsonl").write_text(recording)
    ingress_ops = operations(recording)
    batches = sqs_batches(sqs, queue_url, events_count)
    batch_file = events_file.with_name(f"{name}-batches.jsonl")
    batch_file.write_text("\n".join(batches) + "\n")
    print(f"{name}: delivery, {len(batches)} batches", file=sys.stderr)
    recorder(moto, "reset-recording")
    recorder(moto, "start-recording")
    delivery = harness(args.coldstart, delivery_cmd, batch_file, envs, cwd, warm=True, warmup=max(2, args.warmup // BATCH), front=front)
    recorder(moto, "stop-recording")
    recording = recorder(moto, "download-recording")
    events_file.with_name(f"{name}-delivery-requests.jsonl").write_text(recording)
    delivery_ops = operations(recording)
    delivered = {k for (path, k), n in Target.keys.items() if path == target_path}
    if len(delivered) != events_count:
        raise SystemExit(f"{name}: {len(delivered)} distinct keys delivered, expected {events_count}")
    sizes = scan_sizes(ddb, table_names)
    ops = ingress_ops + delivery_ops
    by_op = collections.Counter(op for op, _ in ops)
    wru, rru = units(ops, sizes, indexes)
    per_event = {op: n / events_count for op, n in sorted(by_op.items())}
    side = {
        "ingress": {"warm": ingress},
        "delivery": {"warm": delivery},
        "requests": {
            "by_operation_per_event": per_event,
            "function_requests_per_event": sum(per_event.values()),
            "sqs_per_event": sum(v for k, v in per_event.items() if k.startswith("SQS.")),
            "wru_per_event": wru / events_count,
            "rru_per_event": rru / events_count,
            "max_item_bytes": max(sizes.values(), default=0),
        },
    }
    return side


def local_throughput(args, work: Path) -> dict:
    """`plumbline dev` (release, SQLite, durable commits) under `plumbline-load`: as fast as it
    answers from 64 connections, and at a fixed 1,000/s; a fresh data directory for each."""
    out = {}
    for label, load_args in (("max", ["--max", "--connections", "64"]), ("rate_1000", ["--rate", "1000"])):
        port, target = free_port(), free_port()
        config = work / f"local-{label}.toml"
        config.write_text((ROOT / "docs/examples/bench.toml").read_text().replace("127.0.0.1:9999", f"127.0.0.1:{target}"))
        env = dict(os.environ, PLUMBLINE_DEMO_STRIPE_SECRET="whsec_plumbline_demo_stripe")
        dev = subprocess.Popen(
            [str(args.release_dir / "plumbline"), "dev", "--config", str(config), "--data-dir", str(work / f"local-{label}"),
             "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            run = subprocess.run(
                [str(args.release_dir / "plumbline-load"), "--url", f"http://127.0.0.1:{port}", "--duration", str(args.local_seconds),
                 "--receive", f"127.0.0.1:{target}", "--json", *load_args],
                check=True, capture_output=True, text=True,
            )
            out[label] = json.loads(run.stdout.strip().splitlines()[-1])
        finally:
            dev.terminate()
            dev.wait()
    return out


def cold_starts(args, cmd, events_file, envs, cwd):
    return harness(args.coldstart, cmd, events_file, envs, cwd, warm=False, runs=args.cold_runs)


def fresh_cold_starts(args, name, ingress_cmd, delivery_cmd, env, cwd, sqs, queues, work: Path) -> dict:
    """Cold starts on a table and queue of the side's own that hold only what these runs put
    there: each ingress run takes a new webhook; each delivery run gets a one-record batch of
    a message those runs enqueued, so it delivers for the first time (ingress -> delivery, as
    on a fresh deployment), rather than finding it delivered."""
    if name == "plumbline":
        env = dict(env, PLUMBLINE_TABLE="plumbline-cold", PLUMBLINE_QUEUE_URL=queues["plumbline-cold-delivery"],
                   PLUMBLINE_DLQ_URL=queues["plumbline-cold-dlq"])
        queue = queues["plumbline-cold-delivery"]
    else:
        env = dict(env, IDEMPOTENCY_TABLE="peer-cold-idempotency", QUEUE_URL=queues["peer-cold-delivery"])
        queue = queues["peer-cold-delivery"]
    webhooks = work / f"{name}-fresh-webhooks.jsonl"
    webhooks.write_text("\n".join(signed_webhooks(args.cold_runs, f"{name}fresh")) + "\n")
    ingress = cold_starts(args, ingress_cmd, webhooks, env, cwd)
    batches = work / f"{name}-fresh-batches.jsonl"
    batches.write_text("\n".join(sqs_batches(sqs, queue, args.cold_runs, size=1)) + "\n")
    delivery = cold_starts(args, delivery_cmd, batches, env, cwd)
    return {"ingress": ingress, "delivery_one_record": delivery}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--venv", type=Path, required=True)
    p.add_argument("--release-dir", type=Path, required=True)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--cold-runs", type=int, default=10)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--compare", type=Path, default=None, help="a saved result to compare against")
    p.add_argument("--hmac-floor-ns", type=float, default=None)
    p.add_argument("--local-seconds", type=int, default=10)
    p.add_argument("--events-per-payment", type=int, default=1,
                   help="events about each payment (the first ones `processing`, the last `succeeded`); 1: every event a new payment")
    p.add_argument("--only", choices=["plumbline", "powertools"], default=None, help="measure one side (no table)")
    p.add_argument("--reconnecting", action="store_true",
                   help="warm runs without the keep-alive front and with a target that closes every "
                        "connection: each AWS request and delivery opens a new one (the runs before 2026-12-03)")
    args = p.parse_args()
    # Warm runs reuse connections as they would against AWS and a real target (both sides).
    Target.protocol_version = "HTTP/1.0" if args.reconnecting else "HTTP/1.1"
    args.coldstart = args.release_dir / "plumbline-coldstart"

    work = Path(tempfile.mkdtemp(prefix="plumbline-compare-"))
    moto_proc, moto = start_moto(args.venv, work / "recording.jsonl")
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    target_url = f"http://127.0.0.1:{target.server_address[1]}"
    os.environ.update(
        AWS_ENDPOINT_URL=moto, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing", AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
    )
    os.environ.pop("AWS_PROFILE", None)
    try:
        ddb, sqs = boto3.client("dynamodb"), boto3.client("sqs")
        schema = table_schema()
        ddb.create_table(TableName="plumbline-events", BillingMode="PAY_PER_REQUEST", **schema)
        # Reconcile's cold start is measured on a deployment's first scheduled run: a table and
        # queues of its own, empty but for what the earlier runs of the ten leave behind.
        ddb.create_table(TableName="plumbline-reconcile", BillingMode="PAY_PER_REQUEST", **schema)
        # Ingress and delivery cold starts are also measured on tables and queues of their own:
        # moto's answers slow down as a table fills (DynamoDB's do not), and a deployment's
        # cold starts do not wait for its table to be large.
        ddb.create_table(TableName="plumbline-cold", BillingMode="PAY_PER_REQUEST", **schema)
        for table in ("peer-idempotency", "peer-cold-idempotency"):
            ddb.create_table(
                TableName=table, BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            )
        queues = {n: sqs.create_queue(QueueName=n)["QueueUrl"] for n in (
            "plumbline-delivery", "plumbline-dlq", "peer-delivery", "reconcile-delivery", "reconcile-dlq",
            "plumbline-cold-delivery", "plumbline-cold-dlq", "peer-cold-delivery")}
        indexes = {
            "plumbline-events": [
                {a["AttributeName"] for a in g["KeySchema"]} for g in schema["GlobalSecondaryIndexes"]
            ]
        }
        config = work / "plumbline.toml"
        config.write_text(
            f'[sources.stripe]\nkind = "stripe"\nsecrets = ["env:STRIPE_WEBHOOK_SECRET"]\n\n'
            f'[targets.erp]\nkind = "http"\nurl = "{target_url}/plumbline"\n\n'
            f'[[routes]]\nevents = ["payment.*"]\ntargets = ["erp"]\n'
        )
        plumbline_env = {
            "PLUMBLINE_CONFIG": str(config), "PLUMBLINE_TABLE": "plumbline-events",
            "PLUMBLINE_QUEUE_URL": queues["plumbline-delivery"], "PLUMBLINE_DLQ_URL": queues["plumbline-dlq"],
            "STRIPE_WEBHOOK_SECRET": SECRET,
        }
        peer_env = {
            "IDEMPOTENCY_TABLE": "peer-idempotency", "QUEUE_URL": queues["peer-delivery"],
            "STRIPE_WEBHOOK_SECRET": SECRET, "TARGET_URL": f"{target_url}/peer",
            "POWERTOOLS_LOG_LEVEL": "ERROR", "PYTHONDONTWRITEBYTECODE": "1",
        }
        python = str(args.venv / "bin" / "python")
        total = args.events + args.warmup
        result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}, "events": args.events, "events_per_payment": args.events_per_payment,
                  "warm_connections": RECONNECTING if args.reconnecting else "kept (keep-alive front before moto; keep-alive target)"}
        for name, ingress_cmd, delivery_cmd, env, cwd, tables, queue, path in (
            ("plumbline", [str(args.release_dir / "plumbline-ingress")], [str(args.release_dir / "plumbline-delivery")],
             plumbline_env, None, ["plumbline-events"], queues["plumbline-delivery"], "/plumbline"),
            ("powertools", [python, "-m", "awslambdaric", "ingress.handler"], [python, "-m", "awslambdaric", "delivery.handler"],
             peer_env, PEER, ["peer-idempotency"], queues["peer-delivery"], "/peer"),
        ):
            if args.only and name != args.only:
                continue
            events = work / f"{name}-webhooks.jsonl"
            events.write_text("\n".join(signed_webhooks(total, name, args.events_per_payment)) + "\n")
            side = run_side(name, args, moto, ddb, sqs, events, total, ingress_cmd, delivery_cmd, env, cwd, tables, indexes, queue, path)
            cold_events = work / f"{name}-cold.jsonl"
            cold_events.write_text("\n".join(signed_webhooks(args.cold_runs, f"{name}cold")) + "\n")
            side["ingress"]["cold"] = cold_starts(args, ingress_cmd, cold_events, env, cwd)
            # Batches already delivered: each side's cold start ends in its own "done before" path.
            side["delivery"]["cold"] = cold_starts(args, delivery_cmd, work / f"{name}-batches.jsonl", env, cwd)
            side["cold_fresh"] = fresh_cold_starts(args, name, ingress_cmd, delivery_cmd, env, cwd, sqs, queues, work)
            side["cost_per_million"] = cost_per_million(side)
            result[name] = side
        scheduled = work / "scheduled.json"
        scheduled.write_text(json.dumps({"version": "0", "id": "bench", "detail-type": "Scheduled Event", "source": "aws.events",
                                         "account": "123456789012", "time": "2026-11-23T00:00:00Z", "region": "us-east-1",
                                         "resources": [], "detail": {}}) + "\n")
        reconcile_cmd = [str(args.release_dir / "plumbline-reconcile")]
        if args.only in (None, "plumbline"):
            reconcile_env = dict(plumbline_env, PLUMBLINE_TABLE="plumbline-reconcile",
                                 PLUMBLINE_QUEUE_URL=queues["reconcile-delivery"], PLUMBLINE_DLQ_URL=queues["reconcile-dlq"])
            # Its first run's requests, by operation: against moto, which answers them one at a
            # time, they are most of its cold start.
            recorder(moto, "reset-recording")
            recorder(moto, "start-recording")
            reconcile_cold = cold_starts(args, reconcile_cmd, scheduled, reconcile_env, None)
            recorder(moto, "stop-recording")
            by_operation: dict[str, int] = {}
            for op, _ in operations(recorder(moto, "download-recording")):
                by_operation[op] = by_operation.get(op, 0) + 1
            reconcile_cold["requests_per_run_by_operation"] = {
                op: n / args.cold_runs for op, n in sorted(by_operation.items())
            }
            result["plumbline"]["reconcile"] = {
                "cold": reconcile_cold,
                # The same first run over the table this run filled: a full sweep of its entities.
                "first_run_over_table": cold_starts(args, reconcile_cmd, scheduled, plumbline_env, None),
            }
        if args.only:
            print(json.dumps(result, indent=2))
            return
        if args.hmac_floor_ns:
            result["hmac_floor_us"] = args.hmac_floor_ns / 1000
        print("plumbline dev: local throughput", file=sys.stderr)
        result["plumbline"]["local"] = local_throughput(args, work)
    except BaseException:
        print(f"benches/compare: this run's files (moto's recording, data directories) are kept in {work}", file=sys.stderr)
        raise
    finally:
        moto_proc.terminate()
        moto_proc.wait()
        target.shutdown()
    shutil.rmtree(work, ignore_errors=True)

    print_table(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwritten: {args.out}")
    if args.compare:
        sys.exit(compare(result, json.loads(args.compare.read_text()), args.compare))


def print_table(r: dict) -> None:
    pl, pt = r["plumbline"], r["powertools"]
    rows = [
        ("ingress CPU per event (ms)", pl["ingress"]["warm"]["cpu_ms_per_invocation"], pt["ingress"]["warm"]["cpu_ms_per_invocation"]),
        ("delivery CPU per event (ms)", pl["delivery"]["warm"]["cpu_ms_per_invocation"] / BATCH, pt["delivery"]["warm"]["cpu_ms_per_invocation"] / BATCH),
        ("ingress wall per event, p50 (ms)", pl["ingress"]["warm"]["wall_ms"]["p50"], pt["ingress"]["warm"]["wall_ms"]["p50"]),
        ("ingress wall per event, p99 (ms)", pl["ingress"]["warm"]["wall_ms"]["p99"], pt["ingress"]["warm"]["wall_ms"]["p99"]),
        ("delivery wall per batch of 10, p50 (ms)", pl["delivery"]["warm"]["wall_ms"]["p50"], pt["delivery"]["warm"]["wall_ms"]["p50"]),
        ("ingress cold start, median (ms)", pl["ingress"]["cold"]["ms"]["median"], pt["ingress"]["cold"]["ms"]["median"]),
        ("delivery cold start, median (ms)", pl["delivery"]["cold"]["ms"]["median"], pt["delivery"]["cold"]["ms"]["median"]),
        ("ingress init (spawn to first poll), median (ms)", pl["ingress"]["cold"]["init_ms"]["median"], pt["ingress"]["cold"]["init_ms"]["median"]),
        ("delivery init (spawn to first poll), median (ms)", pl["delivery"]["cold"]["init_ms"]["median"], pt["delivery"]["cold"]["init_ms"]["median"]),
        ("ingress cold start, fresh table, median (ms)", pl["cold_fresh"]["ingress"]["ms"]["median"], pt["cold_fresh"]["ingress"]["ms"]["median"]),
        ("delivery cold start, fresh, 1 record, median (ms)", pl["cold_fresh"]["delivery_one_record"]["ms"]["median"], pt["cold_fresh"]["delivery_one_record"]["ms"]["median"]),
        ("peak RSS, ingress (MB)", pl["ingress"]["warm"]["peak_rss_kb"] / 1024, pt["ingress"]["warm"]["peak_rss_kb"] / 1024),
        ("peak RSS, delivery (MB)", pl["delivery"]["warm"]["peak_rss_kb"] / 1024, pt["delivery"]["warm"]["peak_rss_kb"] / 1024),
        ("AWS requests per event (functions)", pl["requests"]["function_requests_per_event"], pt["requests"]["function_requests_per_event"]),
        ("DynamoDB WRU per event", pl["requests"]["wru_per_event"], pt["requests"]["wru_per_event"]),
        ("DynamoDB RRU per event", pl["requests"]["rru_per_event"], pt["requests"]["rru_per_event"]),
        ("cost per million webhooks (USD)", pl["cost_per_million"]["total"], pt["cost_per_million"]["total"]),
    ]
    print(f"\nwarm runs' connections: {r.get('warm_connections', RECONNECTING)}")
    print(f"{'measure':<50} {'plumbline':>12} {'powertools':>12} {'ratio':>8}")
    for label, a, b in rows:
        ratio = f"{b / a:.1f}x" if a else "-"
        print(f"{label:<50} {a:>12.3f} {b:>12.3f} {ratio:>8}")
    rc, full = pl["reconcile"]["cold"], pl["reconcile"]["first_run_over_table"]
    print(
        f"reconcile: init {rc['init_ms']['median']:.1f} ms; cold start (first run, fresh table) {rc['ms']['median']:.1f} ms; "
        f"first run over this run's table {full['ms']['median']:.1f} ms (medians)"
    )
    if "requests_per_run_by_operation" in rc:
        ops = rc["requests_per_run_by_operation"]
        print(f"reconcile's first run: {sum(ops.values()):.1f} requests ({', '.join(f'{k} {v:.1f}' for k, v in ops.items())})")
    if "hmac_floor_us" in r:
        own = pl["ingress"]["warm"]["cpu_ms_per_invocation"] * 1000
        print(f"HMAC-SHA256 floor: {r['hmac_floor_us']:.2f} us; ingress CPU per event is {own / r['hmac_floor_us']:.0f}x that")
    for label, run in pl.get("local", {}).items():
        print(
            f"plumbline dev, {run['mode']}: {run['accepted_per_sec']:.0f} accepted/s, p50 {run['latency_ms']['p50']:.2f} ms, "
            f"p99 {run['latency_ms']['p99']:.2f} ms, {run['errors']} errors, delivered {run['delivered']} ({run['delivered_per_sec'] or 0:.0f}/s)"
        )
    for side in ("plumbline", "powertools"):
        ops = ", ".join(f"{k} {v:.2f}" for k, v in r[side]["requests"]["by_operation_per_event"].items())
        print(f"{side} requests per event: {ops}")


# `warm_connections` of a run whose requests each open a connection (and of results saved
# before the field existed).
RECONNECTING = "new per request"

# A measure regresses when it grows by more than this share against the saved result.
TOLERANCE = 0.25
WATCHED = [
    ("ingress CPU per event", ("plumbline", "ingress", "warm", "cpu_ms_per_invocation")),
    ("delivery CPU per batch", ("plumbline", "delivery", "warm", "cpu_ms_per_invocation")),
    ("ingress cold start", ("plumbline", "ingress", "cold", "ms", "median")),
    ("delivery cold start", ("plumbline", "delivery", "cold", "ms", "median")),
    ("ingress init", ("plumbline", "ingress", "cold", "init_ms", "median")),
    ("ingress cold, fresh table", ("plumbline", "cold_fresh", "ingress", "ms", "median")),
    ("delivery cold, fresh, 1 rec", ("plumbline", "cold_fresh", "delivery_one_record", "ms", "median")),
    ("reconcile cold start", ("plumbline", "reconcile", "cold", "ms", "median")),
    ("requests per event", ("plumbline", "requests", "function_requests_per_event")),
    ("cost per million", ("plumbline", "cost_per_million", "total")),
]
# Higher is better for these: a regression is a drop by more than TOLERANCE.
WATCHED_UP = [
    ("local accepted/s (max)", ("plumbline", "local", "max", "accepted_per_sec")),
]


def compare(now: dict, saved: dict, path: Path) -> int:
    """Where the peer measured the same thing in both runs, plumbline's change is judged against
    the peer's: the machine (a shared 2-vCPU VM) can be a third slower from one day to the next,
    and both sides move with it. Measures without a peer counterpart are judged as they are."""

    def get(doc, keys):
        for k in keys:
            doc = doc[k]
        return doc

    mix = (now.get("events_per_payment", 1), saved.get("events_per_payment", 1))
    if mix[0] != mix[1]:
        print(f"\nagainst {path}: not comparable (events per payment {mix[0]} here, {mix[1]} there)")
        return 2
    modes = (now.get("warm_connections", RECONNECTING), saved.get("warm_connections", RECONNECTING))
    if modes[0] != modes[1]:
        print(f"\nagainst {path}: not comparable (warm runs' connections: {modes[0]} here, {modes[1]} there; "
              "--reconnecting measures as the earlier runs did)")
        return 2
    print(f"\nagainst {path} (a regression is > {TOLERANCE:.0%} worse; relative to the peer where it has the measure):")
    worse = 0
    for label, keys, higher_is_better in [(l, k, False) for l, k in WATCHED] + [(l, k, True) for l, k in WATCHED_UP]:
        try:
            a, b = get(saved, keys), get(now, keys)
        except KeyError:
            print(f"  {label:<26} not in both results")
            continue
        change = (b - a) / a if a else 0.0
        judged, context = change, ""
        try:
            pa, pb = get(saved, ("powertools", *keys[1:])), get(now, ("powertools", *keys[1:]))
        except KeyError:
            pa = pb = None
        if pa and pb:
            machine = pb / pa
            judged = (b / machine - a) / a if a else 0.0
            context = f"; peer {machine - 1:+.0%}, relative {judged:+.0%}"
        regressed = judged < -TOLERANCE if higher_is_better else judged > TOLERANCE
        worse += regressed
        print(f"  {label:<26} {a:>10.3f} -> {b:>10.3f} ({change:+.0%}{context}) {'REGRESSION' if regressed else 'ok'}")
    return 1 if worse else 0


if __name__ == "__main__":
    main()
