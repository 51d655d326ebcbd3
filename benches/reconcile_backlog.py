"""Reconciliation over a backlog of stuck events: one scheduled run of each reconcile bootstrap
given, on a table of its own holding N claims that were never enqueued (claimed an hour ago),
against moto's server, optionally behind a proxy that delays every chunk each way by D ms (a
region's round trip, which moto alone does not have). Prints, per bootstrap, the run's time
(spawn to answer, under plumbline-coldstart) and its AWS requests by operation.

    python benches/reconcile_backlog.py --venv PEER_VENV --release-dir RELEASE_DIR \
        [--stuck 100] [--delay-ms 2] BOOTSTRAP [BOOTSTRAP ...]

RELEASE_DIR holds plumbline-coldstart and plumbline-ingress (which makes the claims); the
venv is benches/compare's (moto's server, boto3). Not part of the test suite.
"""
import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as c  # noqa: E402  (the comparison's moto, recorder and harness helpers)


def start_delay_proxy(target_port: int, delay_s: float) -> int:
    """A TCP proxy on a free port that delays each chunk each way, connections independent."""
    port = c.free_port()

    async def pump(reader, writer):
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(delay_s)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w):
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))

    ready = threading.Event()

    def serve():
        async def main():
            await asyncio.start_server(handle, "127.0.0.1", port)
            ready.set()
            await asyncio.Event().wait()
        asyncio.run(main())

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(10)
    return port


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--venv", type=Path, required=True)
    p.add_argument("--release-dir", type=Path, required=True)
    p.add_argument("--stuck", type=int, default=100)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("bootstraps", nargs="+", type=Path)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="plumbline-backlog-"))
    moto_proc, moto = c.start_moto(args.venv, work / "recording.jsonl")
    os.environ.update(AWS_ENDPOINT_URL=moto, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_SESSION_TOKEN="testing", AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_PROFILE", None)
    endpoint = moto
    if args.delay_ms:
        endpoint = f"http://127.0.0.1:{start_delay_proxy(int(moto.rsplit(':', 1)[1]), args.delay_ms / 1000)}"
    harness = argparse.Namespace(coldstart=args.release_dir / "plumbline-coldstart", cold_runs=1)
    config = work / "plumbline.toml"
    config.write_text(f'[sources.stripe]\nkind = "stripe"\nsecrets = ["env:STRIPE_WEBHOOK_SECRET"]\n\n'
                      f'[targets.erp]\nkind = "http"\nurl = "http://127.0.0.1:9/erp"\n\n'
                      f'[[routes]]\nevents = ["payment.*"]\ntargets = ["erp"]\n')
    scheduled = work / "scheduled.json"
    scheduled.write_text(json.dumps({"version": "0", "id": "backlog", "detail-type": "Scheduled Event",
                                     "source": "aws.events", "account": "123456789012", "time": "2026-12-02T00:00:00Z",
                                     "region": "us-east-1", "resources": [], "detail": {}}) + "\n")
    try:
        import boto3
        ddb, sqs = boto3.client("dynamodb"), boto3.client("sqs")
        for n, bootstrap in enumerate(args.bootstraps):
            table = f"backlog-{n}"
            ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **c.table_schema())
            queue, dlq = (sqs.create_queue(QueueName=f"{q}-{n}")["QueueUrl"] for q in ("backlog", "backlog-dlq"))
            env = {"PLUMBLINE_CONFIG": str(config), "PLUMBLINE_TABLE": table, "PLUMBLINE_QUEUE_URL": queue,
                   "PLUMBLINE_DLQ_URL": dlq, "STRIPE_WEBHOOK_SECRET": c.SECRET}
            # Claims made through the ingress, then aged past the stuck horizon, their messages dropped:
            # what a crash between claim and enqueue leaves, N times.
            webhooks = work / f"webhooks-{n}.jsonl"
            webhooks.write_text("\n".join(c.signed_webhooks(args.stuck, f"backlog{n}")) + "\n")
            c.harness(harness.coldstart, [str(args.release_dir / "plumbline-ingress")], webhooks, env, None,
                      warm=True, warmup=0)
            sqs.purge_queue(QueueUrl=queue)
            hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
            for item in ddb.scan(TableName=table)["Items"]:
                if item["sk"]["S"] == "EVENT":
                    ddb.update_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]},
                                    UpdateExpression="SET claimed_at = :t, pending_since = :t",
                                    ExpressionAttributeValues={":t": {"S": hour_ago}})
            c.recorder(moto, "start-recording")
            run = c.cold_starts(harness, [str(bootstrap)], scheduled, dict(env, AWS_ENDPOINT_URL=endpoint), None)
            c.recorder(moto, "stop-recording")
            ops = c.operations(c.recorder(moto, "download-recording"))
            c.recorder(moto, "reset-recording")
            report = next(json.loads(d["Item"]["report"]["S"]) for o, d in reversed(ops)
                          if o == "DynamoDB.PutItem" and d["Item"]["pk"]["S"] == "RUN")
            stuck = report["checks"]["stuck_events"]
            print(json.dumps({
                "bootstrap": bootstrap.name, "stuck": args.stuck, "delay_ms_each_way": args.delay_ms,
                "run_ms": round(run["ms"]["median"], 1), "requests": len(ops),
                "by_operation": dict(sorted(collections.Counter(o for o, _ in ops).items())),
                "found": stuck["found"], "repaired": stuck["repaired"],
            }))
    finally:
        moto_proc.terminate()


if __name__ == "__main__":
    main()
