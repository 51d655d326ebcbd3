"""The stack as `sam build && sam deploy` makes it, deployed into moto's CloudFormation, and the
built bootstraps run against what it created.

What `sam deploy` does, done here step by step because moto's CloudFormation does not run
SAM's transform itself: the secrets the bundled configuration references are put in SSM (the
README's `aws ssm put-parameter`), each function's built directory and the configuration layer
are zipped into S3 (`sam package`), the template is expanded by aws-sam-translator (the library
behind CloudFormation's `AWS::Serverless-2016-10-31` transform) and the stack is created.

Then it checks what a deployment relies on: the functions' environment names the table and
queues the stack made, the delivery queue redrives to the dead-letter queue (which keeps 14
days) and hides a message for at least six delivery timeouts, the event source mapping reports
batch item failures, the table has the indexes the code queries. Last, the ingress, delivery and
reconcile bootstraps `sam build` made run under `plumbline-coldstart` (a local Lambda Runtime
API) with the environment the stack gave their functions and the configuration from the layer: a
signed Stripe webhook is claimed in the stack's table and enqueued on its queue, delivery takes
the message and records its attempt at the configured target (unreachable from here, so a
retry); aged past the stuck threshold, the claim is re-enqueued by a scheduled reconciliation, which
saves its report, and, at `reconcile.max_requeues`, given up on with a dead letter; `plumbline events list` and
`events show` with `--aws` find the event and its attempt in the stack's table. The bootstraps
run where they were built for this machine's architecture, or under the emulator that
`PLUMBLINE_EMULATOR` names (a command and its arguments before the bootstrap, e.g.
`qemu-aarch64 -L /usr/aarch64-linux-gnu` for arm64 bootstraps on x86_64: benches/arm64). Not covered: what moto's
CloudFormation does not model (it names them: the HTTP API, the alarms, the schedule;
tests/integration/template.rs checks those in the template), and Lambda running the bootstraps
itself. moto does not enforce IAM, so moto's recorder lists each function's requests while it
runs and every one (action and resource) is held against that function's role policy as the
stack created it.

Usage: deploy.py BUILD_DIR COLDSTART ARCH (the environment points the SDK at moto; the
`plumbline` binary is taken from beside COLDSTART).
"""

import ast
import base64
import calendar
import fnmatch
import hashlib
import hmac
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.parse
import urllib.request
import zipfile
from datetime import datetime
from pathlib import Path

import boto3
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
STACK = "plumbline-deploy-check"
# Lambda's application log levels, least severe first.
LAMBDA_LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
BUCKET = "plumbline-deploy-check-artifacts"


class Policies:
    """The AWS managed policies SAM's transform may attach to a role it makes, as IAM would list
    them. The template's functions have roles of their own, so it attaches none (checked below)."""

    def load(self):
        names = ["AWSLambdaBasicExecutionRole", "AWSLambdaSQSQueueExecutionRole"]
        return {n: f"arn:aws:iam::aws:policy/service-role/{n}" for n in names}


def fail(message: str) -> None:
    print(f"tests/deploy.py: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def zipped(directory: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(str(path.relative_to(directory)))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                z.writestr(info, path.read_bytes())
    return buf.getvalue()


def ssm_references(config: dict) -> list[str]:
    refs = []
    for section in ("sources", "targets"):
        for entry in config.get(section, {}).values():
            for key in ("secrets", "secret", "token", "api_key"):
                value = entry.get(key)
                for ref in value if isinstance(value, list) else [value]:
                    if isinstance(ref, str) and ref.startswith("ssm:"):
                        refs.append(ref.removeprefix("ssm:"))
    return refs


def package(build_dir: Path, template: dict, s3) -> Path:
    """Uploads what `sam build` made, as `sam package` does; returns the layer's directory."""
    s3.create_bucket(Bucket=BUCKET)
    layer_dir = None
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            key = f"{name}.zip"
            s3.put_object(Bucket=BUCKET, Key=key, Body=zipped(build_dir / props["CodeUri"]))
            props["CodeUri"] = f"s3://{BUCKET}/{key}"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            layer_dir = (build_dir / props["ContentUri"]).resolve()
            key = f"{name}.zip"
            s3.put_object(Bucket=BUCKET, Key=key, Body=zipped(layer_dir))
            props["ContentUri"] = f"s3://{BUCKET}/{key}"
    check(layer_dir is not None, "the template has no configuration layer")
    return layer_dir


def recorder(action: str) -> str:
    """moto's request recorder: what the functions asked of AWS while it ran."""
    method = "GET" if action == "download-recording" else "POST"
    url = f"{os.environ['AWS_ENDPOINT_URL']}/moto-api/recorder/{action}"
    request = urllib.request.Request(url, method=method, data=None if method == "GET" else b"")
    with urllib.request.urlopen(request) as answer:
        return answer.read().decode()


def requested(recording: str, arns: dict) -> list[tuple[str, str]]:
    """(IAM action, resource ARN) of every recorded request. The SDK speaks JSON to DynamoDB,
    SQS and SSM: the target header names the operation, the body its resource."""
    out = []
    for line in filter(str.strip, recording.splitlines()):
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        target = headers.get("x-amz-target")
        check(target is not None, f"a request moto recorded without an operation: {entry.get('url')}")
        prefix, operation = target.split(".", 1)
        doc = json.loads(body) if body.startswith("{") else {}
        if prefix.startswith("DynamoDB"):
            tables = [doc["TableName"]] if "TableName" in doc else list(doc.get("RequestItems", {}))
            for table in tables:
                resource = arns["table"](table)
                if "IndexName" in doc:
                    resource += f"/index/{doc['IndexName']}"
                out.append((f"dynamodb:{operation}", resource))
        elif "SQS" in prefix:
            out.append((f"sqs:{operation}", arns["queue"](doc["QueueUrl"])))
        elif prefix == "AmazonSSM":
            for name in doc.get("Names") or [doc["Name"]]:
                out.append((f"ssm:{operation}", arns["parameter"](name)))
        else:
            out.append((f"{prefix.lower()}:{operation}", "*"))
    return out


def allowed(statements: list[dict], action: str, resource: str) -> bool:
    listify = lambda v: v if isinstance(v, list) else [v]
    return any(
        s.get("Effect") == "Allow"
        and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in listify(s.get("Action", [])))
        and any(fnmatch.fnmatchcase(resource, r) for r in listify(s.get("Resource", [])))
        for s in statements
    )


def role_statements(iam, role: str) -> list[dict]:
    """The statements of a role's inline policies: the ones the template writes."""
    statements = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):
            text = urllib.parse.unquote(document)
            # moto's CloudFormation keeps a template's inline policy as Python's repr of it.
            document = json.loads(text) if text.lstrip().startswith('{"') else ast.literal_eval(text)
        statements.extend(document["Statement"] if isinstance(document["Statement"], list) else [document["Statement"]])
    return statements


def elf_machine(path: Path) -> str:
    """The architecture an ELF executable is built for, as Lambda names it."""
    header = path.read_bytes()[:20]
    check(header[:4] == b"\x7fELF", f"{path} is not an ELF executable")
    machine = int.from_bytes(header[18:20], "little")
    return {0x3E: "x86_64", 0xB7: "arm64"}.get(machine, hex(machine))


def run_function(coldstart: Path, bootstrap: Path, event: dict, env: dict, scratch: Path, emulator: list[str]) -> dict:
    event_file = scratch / f"{bootstrap.parent.name}.json"
    event_file.write_text(json.dumps(event))
    program = emulator + [str(bootstrap)]
    cmd = [str(coldstart), "--bin", program[0], *(f"--arg={a}" for a in program[1:]), "--event", str(event_file),
           "--runs", "1", "--json", "--stderr", str(scratch / f"{bootstrap.parent.name}.log"),
           "--stdout", str(scratch / f"{bootstrap.parent.name}.stdout")]
    for k, v in env.items():
        cmd += ["--env", f"{k}={v}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    log = scratch / f"{bootstrap.parent.name}.log"
    check(out.returncode == 0, f"{bootstrap.parent.name}: {out.stderr.strip()}\n{log.read_text() if log.exists() else ''}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def json_object(line: str) -> dict | None:
    try:
        parsed = json.loads(line)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def lambda_level(line: dict) -> str:
    """The level Lambda's JSON log filtering gives a line of a custom runtime: its `level` when
    Lambda knows it and the line has a valid RFC 3339 `timestamp`, else INFO."""
    level, stamp = str(line.get("level", "")).upper(), line.get("timestamp")
    try:
        valid = isinstance(stamp, str) and datetime.fromisoformat(stamp.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        valid = False
    return level if level in LAMBDA_LEVELS and valid else "INFO"


def resolved(value, template: dict, parameters: dict):
    """A property's value in the stack: a `Ref` to a parameter becomes what the stack was given,
    else the parameter's default."""
    if isinstance(value, dict) and "Ref" in value and value["Ref"] in template.get("Parameters", {}):
        return parameters.get(value["Ref"], template["Parameters"][value["Ref"]].get("Default"))
    return value


def main() -> None:
    build_dir, coldstart, arch = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    cf, s3, ssm = boto3.client("cloudformation"), boto3.client("s3"), boto3.client("ssm")
    lam, sqs, ddb = boto3.client("lambda"), boto3.client("sqs"), boto3.client("dynamodb")
    iam, logs, sns, kms = boto3.client("iam"), boto3.client("logs"), boto3.client("sns"), boto3.client("kms")

    # The README's deploy steps: the referenced secrets first.
    config = tomllib.loads((ROOT / "infra/config/plumbline.toml").read_text())
    refs = ssm_references(config)
    check(refs, "infra/config/plumbline.toml references no SSM parameter")
    secrets = {name: f"whsec_{hashlib.sha256(name.encode()).hexdigest()[:24]}" for name in refs}
    for name, value in secrets.items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)

    template = yaml_parse((build_dir / "template.yaml").read_text())
    layer_dir = package(build_dir, template, s3)
    parameters = {"Architecture": arch, "AlarmEmail": "ops@example.com"}
    expanded = transform(template, parameters, Policies())
    # A moto server kept between runs may still hold the last run's stack.
    if any(s["StackStatus"] != "DELETE_COMPLETE" for s in cf.list_stacks()["StackSummaries"] if s["StackName"] == STACK):
        cf.delete_stack(StackName=STACK)
    cf.create_stack(
        StackName=STACK, TemplateBody=json.dumps(expanded),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    stack = cf.describe_stacks(StackName=STACK)["Stacks"][0]
    check(stack["StackStatus"] == "CREATE_COMPLETE", f"stack {stack['StackStatus']}: {stack.get('StackStatusReason')}")
    created = [r for r in cf.list_stack_resources(StackName=STACK)["StackResourceSummaries"] if r.get("ResourceType")]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in created}
    # moto's CloudFormation passes over the resource types it does not model; name them.
    skipped = sorted({r["Type"] for n, r in expanded["Resources"].items() if n not in physical})
    table, queue_url, dlq_url = physical["EventsTable"], physical["DeliveryQueue"], physical["DeadLetterQueue"]
    arn = lambda url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_arn, dlq_arn = arn(queue_url), arn(dlq_url)

    # What the functions are given, and what Lambda gives them from their logging configuration.
    functions, lambda_logging, roles = {}, {}, {}
    for logical in ("IngressFunction", "DeliveryFunction", "ReconcileFunction"):
        f = lam.get_function(FunctionName=physical[logical])["Configuration"]
        env = f["Environment"]["Variables"]
        # moto's CloudFormation drops a function's Architectures (its functions all say x86_64), so
        # the architecture is read where it is decided: the template given to CloudFormation, and
        # the bootstrap's own ELF header.
        given = [parameters[a["Ref"]] if isinstance(a, dict) else a
                 for a in expanded["Resources"][logical]["Properties"].get("Architectures", [])]
        check(given == [arch], f"{logical}: the template gives architectures {given}, not [{arch}]")
        machine = elf_machine(build_dir / logical / "bootstrap")
        check(machine == arch, f"{logical}: the bootstrap is built for {machine}, not {arch}")
        check(env.get("PLUMBLINE_TABLE") == table, f"{logical}: PLUMBLINE_TABLE {env.get('PLUMBLINE_TABLE')} is not the stack's table {table}")
        check(env.get("PLUMBLINE_QUEUE_URL") == queue_url, f"{logical}: PLUMBLINE_QUEUE_URL is not the stack's queue")
        check(env.get("PLUMBLINE_DLQ_URL") == dlq_url, f"{logical}: PLUMBLINE_DLQ_URL is not the stack's dead-letter queue")
        check(env.get("PLUMBLINE_CONFIG") == "/opt/plumbline.toml", f"{logical}: PLUMBLINE_CONFIG {env.get('PLUMBLINE_CONFIG')}")
        functions[logical] = env
        # moto's Lambda keeps no logging configuration: it is read from the template given to
        # CloudFormation, and its log group from what the stack created.
        logging = expanded["Resources"][logical]["Properties"].get("LoggingConfig", {})
        check(logging.get("LogFormat") == "JSON", f"{logical}: logs in {logging.get('LogFormat')}, not JSON")
        group = physical.get(logging.get("LogGroup", {}).get("Ref"))
        found = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] if group else []
        retention = resolved({"Ref": "LogRetentionDays"}, expanded, parameters)
        check([g.get("retentionInDays") for g in found if g["logGroupName"] == group] == [retention],
              f"{logical}: its log group {group} is not the stack's, kept {retention} days: {found}")
        lambda_logging[logical] = {"AWS_LAMBDA_LOG_FORMAT": "JSON",
                                   "AWS_LAMBDA_LOG_LEVEL": resolved(logging.get("ApplicationLogLevel"), expanded, parameters)}
        role = roles[logical] = f["Role"].rsplit("/", 1)[-1]
        attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        check(not attached, f"{logical}: its role has managed policies attached: {attached}")
    check((layer_dir / "plumbline.toml").is_file(), "the configuration layer has no plumbline.toml")

    delivery_timeout = lam.get_function(FunctionName=physical["DeliveryFunction"])["Configuration"]["Timeout"]
    queue_attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    check(int(queue_attributes["VisibilityTimeout"]) >= 6 * delivery_timeout,
          f"the delivery queue's visibility timeout {queue_attributes['VisibilityTimeout']} s is under 6 × the delivery timeout ({delivery_timeout} s)")
    retention = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["MessageRetentionPeriod"])["Attributes"]["MessageRetentionPeriod"]
    check(int(retention) == 14 * 86400, f"the dead-letter queue keeps messages {retention} s, not 14 days")
    redrive = json.loads(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"])
    check(redrive["deadLetterTargetArn"] == dlq_arn, f"the delivery queue redrives to {redrive['deadLetterTargetArn']}")
    mappings = lam.list_event_source_mappings(FunctionName=physical["DeliveryFunction"])["EventSourceMappings"]
    check(len(mappings) == 1 and mappings[0]["EventSourceArn"] == queue_arn, f"delivery's event source mappings: {mappings}")
    check(mappings[0].get("FunctionResponseTypes") == ["ReportBatchItemFailures"], "the event source mapping does not report batch item failures")
    indexes = {g["IndexName"] for g in ddb.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])}
    check(indexes == {"pending", "changed", "kept"}, f"the table's indexes: {sorted(indexes)}")
    # The alarms' topic is encrypted with the stack's own key, which CloudWatch alarms may use.
    topic_key = sns.get_topic_attributes(TopicArn=physical["AlarmTopic"])["Attributes"].get("KmsMasterKeyId")
    check(topic_key == physical["AlarmTopicKey"], f"the alarm topic's key is {topic_key}, not the stack's AlarmTopicKey")
    key_policy = kms.get_key_policy(KeyId=topic_key, PolicyName="default")["Policy"]
    # moto hands back the policy a template gave as it was given, not as a JSON string.
    key_policy = json.loads(key_policy) if isinstance(key_policy, str) else key_policy
    check(any(st.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com" for st in key_policy["Statement"]),
          "the alarm topic's key policy does not let CloudWatch alarms use it")
    check(kms.get_key_rotation_status(KeyId=topic_key)["KeyRotationEnabled"], "the alarm topic's key is not rotated")
    # Reconciliation's scheduled runs are neither retried nor run late: what SAM's transform made of
    # the function's EventInvokeConfig (moto does not model it, so it is read where it is decided).
    invoke = [r["Properties"] for r in expanded["Resources"].values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    check([(i["FunctionName"], i["Qualifier"], i["MaximumRetryAttempts"], i["MaximumEventAgeInSeconds"]) for i in invoke]
          == [({"Ref": "ReconcileFunction"}, "$LATEST", 0, 900)], f"the asynchronous invocation settings: {invoke}")
    # The dashboard's log widgets read the stack's log groups, by their names.
    dashboard = json.loads(boto3.client("cloudwatch").get_dashboard(DashboardName=physical["Dashboard"])["DashboardBody"])
    queries = [w["properties"]["query"] for w in dashboard["widgets"] if w["type"] == "log"]
    groups = {physical[g] for g in ("IngressLogs", "DeliveryLogs", "ReconcileLogs")}
    read = {source.split("'")[1] for q in queries for source in q.split(" | ") if source.startswith("SOURCE '")}
    check(queries and read == groups, f"the dashboard's log widgets read {sorted(read)}, not the functions' {sorted(groups)}")
    # Its alarm widget names every alarm by the ARN the alarm's name gives it (moto models no alarms).
    shown = sorted(a for w in dashboard["widgets"] if w["type"] == "alarm" for a in w["properties"]["alarms"])
    account = boto3.client("sts").get_caller_identity()["Account"]
    region = os.environ.get("AWS_REGION", "us-east-1")
    alarms = sorted(f"arn:aws:cloudwatch:{region}:{account}:alarm:{STACK}-{name}"
                    for name, r in expanded["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm")
    check(shown == alarms, f"the dashboard's alarm widget shows {shown}, not the stack's alarms {alarms}")
    # The built bootstraps against the stack's resources, with the layer's configuration.
    host = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
    emulator = shlex.split(os.environ.get("PLUMBLINE_EMULATOR", ""))
    if arch != host and not emulator:
        print(f"tests/deploy.py: stack {STACK} created in moto; {arch} bootstraps do not run on this {platform.machine()} machine")
        return
    scratch = Path(tempfile.mkdtemp(prefix="plumbline-deploy-"))
    aws_env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    run_env = lambda logical: {**functions[logical], **lambda_logging[logical], **aws_env,
                               "PLUMBLINE_CONFIG": str(layer_dir / "plumbline.toml")}
    # moto does not enforce IAM: each function's requests, as the recorder saw them, are held
    # against its role's policy instead, action by action and resource by resource.
    arns = {
        "table": lambda name: f"arn:aws:dynamodb:{region}:{account}:table/{name}",
        "queue": lambda url: f"arn:aws:sqs:{region}:{account}:{url.rstrip('/').rsplit('/', 1)[-1]}",
        "parameter": lambda name: f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}",
    }
    permitted = {}

    def run(logical: str, event: dict) -> dict:
        recorder("reset-recording")
        recorder("start-recording")
        try:
            answer = run_function(coldstart, build_dir / logical / "bootstrap", event, run_env(logical), scratch, emulator)
        finally:
            recorder("stop-recording")
        made = requested(recorder("download-recording"), arns)
        check(made, f"{logical} made no AWS request")
        statements = role_statements(iam, roles[logical])
        for action, resource in made:
            check(allowed(statements, action, resource),
                  f"{logical} called {action} on {resource}, which its role's policy does not allow")
        permitted[logical] = sorted({action for action, _ in made})
        # What Lambda would pass on to the function's log group. In JSON format it takes a custom
        # runtime's lines as they are and keeps those at or above the application log level, a
        # line without a level counting as INFO; the metric lines (EMF) must be among them.
        stdout = scratch / f"{logical}.stdout"
        lines = [json_object(line) for line in stdout.read_text().splitlines() if line.strip()]
        check(lines and None not in lines, f"{logical} wrote lines that are not JSON objects: {stdout}")
        check(all(lambda_level(line) == line["level"] for line in lines if "level" in line),
              f"{logical}: Lambda would not read some lines' own level (a level it knows and an RFC 3339 timestamp): {stdout}")
        floor = LAMBDA_LEVELS.index(lambda_logging[logical]["AWS_LAMBDA_LOG_LEVEL"])
        kept = [line for line in lines if LAMBDA_LEVELS.index(lambda_level(line)) >= floor]
        check(any("level" in line for line in kept) and any("_aws" in line for line in kept),
              f"{logical}: Lambda would keep no log line with a level, or no metric line, of {stdout}")
        stdout.unlink()
        return answer

    stripe_secret = next(value for name, value in secrets.items() if "stripe" in name)
    webhook = json.loads((ROOT / "tests/fixtures/stripe/payment_intent.succeeded.json").read_text())
    event_id = f"evt_deploy_check_{int(time.time() * 1000)}"
    webhook["id"] = event_id
    body = json.dumps(webhook, separators=(",", ":"))
    now = int(time.time())
    mac = hmac.new(stripe_secret.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
    request = json.loads((ROOT / "tests/fixtures/apigw/post-webhook.json").read_text())
    request["headers"]["stripe-signature"] = f"t={now},v1={mac}"
    request["headers"]["content-type"] = "application/json"
    request["body"] = body
    answer = run("IngressFunction", request)
    check(answer.get("errors") == 0, f"the ingress answered with an error: {answer}; log in {scratch}")
    item = ddb.get_item(TableName=table, Key={"pk": {"S": f"EVT#stripe#{event_id}"}, "sk": {"S": "EVENT"}}, ConsistentRead=True).get("Item")
    check(item is not None and item["status"]["S"] == "received", f"the webhook's claim in {table}: {item}")
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    check(any(event_id in m["Body"] for m in messages), f"the delivery queue holds {len(messages)} messages, none the webhook's")

    # Delivery takes the message as the event source mapping hands it over. erp.example.com is
    # not reachable from here: the attempt is recorded as retrying and the item reported failed,
    # for SQS to hand back after its backoff.
    message = next(m for m in messages if event_id in m["Body"])
    record = json.loads((ROOT / "tests/fixtures/lambda/sqs-record.json").read_text())
    record.update(messageId=message["MessageId"], receiptHandle=message["ReceiptHandle"], body=message["Body"],
                  eventSourceARN=queue_arn)
    answer = run("DeliveryFunction", {"Records": [record]})
    check(answer.get("errors") == 1, f"delivery should report its one item failed: {answer}; log in {scratch}")
    item = ddb.get_item(TableName=table, Key={"pk": {"S": f"EVT#stripe#{event_id}"}, "sk": {"S": "EVENT"}}, ConsistentRead=True)["Item"]
    check(item.get("d:erp:state", {}).get("S") == "retrying", f"erp's delivery record: { {k: v for k, v in item.items() if k.startswith('d:')} }")

    # What a runbook tells an operator to run, against the stack: the event awaits delivery
    # (the `pending` index), and its timeline shows erp's attempt.
    def plumbline(*args: str):
        out = subprocess.run([str(coldstart.parent / "plumbline"), *args, "--aws", "--json"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PLUMBLINE_TABLE": table, "PLUMBLINE_QUEUE_URL": queue_url,
                                              "PLUMBLINE_DLQ_URL": dlq_url})
        check(out.returncode == 0, f"plumbline {' '.join(args)}: {out.stderr}")
        return json.loads(out.stdout)
    listed = [row["key"] for row in plumbline("events", "list", "--status", "received")]
    check(listed == [f"EVT#stripe#{event_id}"], f"plumbline events list --aws --status received: {listed}")
    shown = plumbline("events", "show", f"stripe:{event_id}")
    erp = [(d["target"], d["state"]) for d in shown.get("deliveries", [])]
    check(erp == [("erp", "retrying")], f"plumbline events show: deliveries {erp}")

    # The preflight on the stack the template made: every function's secrets fetched and used,
    # the table's key and indexes, the queue's redrive. moto's CloudFormation leaves the
    # table's time to live off (the template's test holds the template to it), so that is the
    # one problem it may report, and only where moto says so too.
    out = subprocess.run([str(coldstart.parent / "plumbline"), "config", "check", str(layer_dir / "plumbline.toml"),
                          "--aws", "--json"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PLUMBLINE_TABLE": table, "PLUMBLINE_QUEUE_URL": queue_url,
                              "PLUMBLINE_DLQ_URL": dlq_url})
    preflight = json.loads(out.stdout or "{}").get("aws", {})
    refused = {f["function"]: [p["key"] for p in f["problems"]] for f in preflight.get("functions", [])}
    check(refused == {"ingress": [], "delivery": [], "reconcile": []},
          f"plumbline config check --aws: the functions' secrets: {refused}; {out.stderr}")
    resources = {r["resource"]: [p["key"] for p in r["problems"]] for r in preflight.get("resources", [])}
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    ttl_on = ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and ttl.get("AttributeName") == "expires_at"
    check(resources == {f"table {table}": [] if ttl_on else ["table.ttl"], f"queue {queue_url}": []},
          f"plumbline config check --aws: the stack's resources: {resources} (time to live: {ttl})")
    check(out.returncode == (0 if ttl_on else 1), f"plumbline config check --aws exited {out.returncode}: {out.stderr}")

    # A claim the pipeline lost track of, as after a crash between the claim and the send: the
    # webhook's claim aged past reconcile.stuck_after_secs (the seconds kept as written, so the
    # sweep's conditional refresh matches them), and no message for it visible on the queue
    # (the one delivery took is still hidden). Reconcile re-enqueues it, with its own role.
    stamp = item["claimed_at"]["S"]
    seconds = time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    aged = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(calendar.timegm(seconds) - 3600)) + stamp[19:]
    ddb.update_item(TableName=table, Key={"pk": {"S": f"EVT#stripe#{event_id}"}, "sk": {"S": "EVENT"}},
                    UpdateExpression="SET claimed_at = :aged, pending_since = :aged",
                    ExpressionAttributeValues={":aged": {"S": aged}})
    visible = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    check(not visible, f"the delivery queue shows {len(visible)} messages before reconcile")

    scheduled = {"version": "0", "id": "deploy-check", "detail-type": "Scheduled Event", "source": "aws.scheduler",
                 "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "region": os.environ.get("AWS_REGION", "us-east-1"), "resources": [], "detail": {}}
    answer = run("ReconcileFunction", scheduled)
    check(answer.get("errors") == 0, f"reconcile answered with an error: {answer}; log in {scratch}")
    runs = ddb.query(TableName=table, KeyConditionExpression="pk = :run", ExpressionAttributeValues={":run": {"S": "RUN"}})["Items"]
    check(len(runs) == 1, f"{len(runs)} reconciliation reports in {table}")
    requeued = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    check([event_id in m["Body"] for m in requeued] == [True],
          f"after reconcile the delivery queue shows {len(requeued)} messages, not the stuck event once")
    check("sqs:SendMessage" in permitted["ReconcileFunction"], f"reconcile's requests: {permitted['ReconcileFunction']}")
    item = ddb.get_item(TableName=table, Key={"pk": {"S": f"EVT#stripe#{event_id}"}, "sk": {"S": "EVENT"}}, ConsistentRead=True)["Item"]
    check(item.get("requeues", {}).get("N") == "1", f"the re-enqueue is not counted on the claim: {item.get('requeues')}")

    # The same claim aged again, as if every copy since had crashed delivery, at the bundled
    # configuration's reconcile.max_requeues (3): reconcile gives up on it, with a dead letter
    # its role may send, and settles it dead_lettered.
    ddb.update_item(TableName=table, Key={"pk": {"S": f"EVT#stripe#{event_id}"}, "sk": {"S": "EVENT"}},
                    UpdateExpression="SET claimed_at = :aged, pending_since = :aged, requeues = :n",
                    ExpressionAttributeValues={":aged": {"S": aged}, ":n": {"N": "3"}})
    answer = run("ReconcileFunction", scheduled)
    check(answer.get("errors") == 0, f"reconcile answered with an error: {answer}; log in {scratch}")
    letters = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  MessageAttributeNames=["All"]).get("Messages", [])
    reasons = [m.get("MessageAttributes", {}).get("reason", {}).get("StringValue", "") for m in letters]
    check(len(letters) == 1 and event_id in letters[0]["Body"] and reasons[0].startswith("not settled after 3 re-enqueues"),
          f"after giving up, the dead-letter queue holds {len(letters)} letters, reasons {reasons}")
    item = ddb.get_item(TableName=table, Key={"pk": {"S": f"EVT#stripe#{event_id}"}, "sk": {"S": "EVENT"}}, ConsistentRead=True)["Item"]
    check(item["status"]["S"] == "dead_lettered" and "pending_shard" not in item,
          f"the given-up event: status {item['status']['S']}, still pending: {'pending_shard' in item}")

    # The preflight on the stack's functions, found by the stack's outputs: each one's
    # configuration in Lambda names the table and queues checked, and delivery's event source
    # and retries fit the delivery queue. Then what a function deployed another way (the
    # cargo-lambda path) tends to lack, made so on this stack, and a source secret read from the
    # ingress's own environment (`env:`), which the check reads from its configuration.
    # The stack's outputs name them, and the table and queues, for PLUMBLINE_STACK: the check
    # below is given the stack's name alone.
    variables = ("PLUMBLINE_TABLE", "PLUMBLINE_QUEUE_URL", "PLUMBLINE_DLQ_URL")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cf.describe_stacks(StackName=STACK)["Stacks"][0].get("Outputs", [])}
    names = {f"PLUMBLINE_{logical[:-len('Function')].upper()}_FUNCTION": outputs.get(f"{logical}Name")
             for logical in ("IngressFunction", "DeliveryFunction", "ReconcileFunction")}
    check(names == {f"PLUMBLINE_{logical[:-len('Function')].upper()}_FUNCTION": physical[logical]
                    for logical in ("IngressFunction", "DeliveryFunction", "ReconcileFunction")},
          f"the stack's outputs name the functions {names}")
    given = tuple(outputs.get(o) for o in ("EventsTableName", "DeliveryQueueUrl", "DeadLetterQueueUrl"))
    check(given == (table, queue_url, dlq_url), f"the stack's outputs name the table and queues {given}")

    # moto's CloudFormation keeps a Number parameter given to a function's environment
    # (PLUMBLINE_MAX_RECEIVES) as a number, which neither Lambda nor the SDK's model of its
    # answer allows: every value is a string in Lambda, and is made one here.
    for logical in ("IngressFunction", "DeliveryFunction", "ReconcileFunction"):
        functions[logical] = {k: str(v) for k, v in functions[logical].items()}
        lam.update_function_configuration(FunctionName=physical[logical], Environment={"Variables": functions[logical]})

    def preflight(config_file: Path, naming: dict | None = None) -> tuple[int, dict, dict, str]:
        """The check by the stack's name alone, or by the variables `naming` gives instead; the
        problems of each function's start-up, and of each resource (the functions' only, unless
        `naming` is given)."""
        out = subprocess.run([str(coldstart.parent / "plumbline"), "config", "check", str(config_file), "--aws", "--json"],
                             capture_output=True, text=True, timeout=60,
                             env={**{k: v for k, v in os.environ.items() if k not in names and k not in variables},
                                  **(naming if naming is not None else {"PLUMBLINE_STACK": STACK})})
        report = json.loads(out.stdout or "{}").get("aws", {})
        started = {f["function"]: [p["key"] for p in f["problems"]] for f in report.get("functions", [])}
        found = {r["resource"]: [p["key"] for p in r["problems"]] for r in report.get("resources", [])
                 if naming is not None or r["resource"].startswith("function ")}
        return out.returncode, started, found, out.stdout + out.stderr

    of = lambda logical: f"function {physical[logical]} ({logical[:-len('Function')].lower()})"
    code, started, found, said = preflight(layer_dir / "plumbline.toml")
    check(found == {of(f): [] for f in ("IngressFunction", "DeliveryFunction", "ReconcileFunction")},
          f"plumbline config check --aws on the stack's functions: {found}; {said}")
    check(code == (0 if ttl_on else 1), f"plumbline config check --aws with the functions exited {code}: {said}")

    site_secret = f"whsec_{hashlib.sha256(b'site-env').hexdigest()[:24]}"
    by_env = scratch / "plumbline-env.toml"
    by_env.write_text((layer_dir / "plumbline.toml").read_text().replace(
        '"ssm:/plumbline/sources/site-webhook"', '"env:PLUMBLINE_SITE_WEBHOOK_SECRET"'))
    os.environ.pop("PLUMBLINE_SITE_WEBHOOK_SECRET", None)
    delivery_env = {k: v for k, v in functions["DeliveryFunction"].items() if k != "PLUMBLINE_MAX_RECEIVES"}
    lam.update_function_configuration(FunctionName=physical["DeliveryFunction"], Environment={"Variables": delivery_env})
    lam.update_event_source_mapping(UUID=mappings[0]["UUID"], FunctionResponseTypes=[])
    # A reservation under the mapping's MaximumConcurrency (the template's DeliveryMaxConcurrency).
    lam.put_function_concurrency(FunctionName=physical["DeliveryFunction"], ReservedConcurrentExecutions=2)
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": str(delivery_timeout)})
    lam.update_function_configuration(FunctionName=physical["IngressFunction"],
                                      Environment={"Variables": {**functions["IngressFunction"], "PLUMBLINE_TABLE": f"{table}-old"}})
    code, started, found, said = preflight(by_env)
    check(code == 1 and started == {"ingress": ["sources.site.secrets[0]"], "delivery": [], "reconcile": []},
          f"plumbline config check --aws with an env: secret the ingress lacks: exit {code}, {started}; {said}")
    check(found == {of("IngressFunction"): ["environment.PLUMBLINE_TABLE"],
                    of("DeliveryFunction"): ["environment.PLUMBLINE_MAX_RECEIVES", "queue.visibility_timeout", "concurrency", "event_source"],
                    of("ReconcileFunction"): []},
          f"plumbline config check --aws on functions deployed without what they need: {found}; {said}")
    check(site_secret not in said and f"{table}-old" in said, f"plumbline config check --aws printed: {said}")
    # Named by the functions alone (no stack, no table or queues in the shell): the table and
    # queues delivery's environment names are the ones checked, and the ingress's other table
    # is found against them.
    code, started, found, said = preflight(by_env, {k: v for k, v in names.items() if "RECONCILE" not in k})
    check(code == 1 and found == {f"table {table}": [] if ttl_on else ["table.ttl"], f"queue {queue_url}": [],
                                  of("IngressFunction"): ["environment.PLUMBLINE_TABLE"],
                                  of("DeliveryFunction"): ["environment.PLUMBLINE_MAX_RECEIVES", "queue.visibility_timeout", "concurrency", "event_source"]},
          f"plumbline config check --aws by the functions' names alone: exit {code}, {found}; {said}")

    lam.update_function_configuration(FunctionName=physical["IngressFunction"],
                                      Environment={"Variables": {**functions["IngressFunction"], "PLUMBLINE_SITE_WEBHOOK_SECRET": site_secret}})
    code, started, found, said = preflight(by_env)
    check(started == {"ingress": [], "delivery": [], "reconcile": []} and found[of("IngressFunction")] == [],
          f"plumbline config check --aws with the env: secret in the ingress's configuration: {started}, {found}; {said}")
    check(site_secret not in said, f"plumbline config check --aws printed the ingress's secret: {said}")

    print(f"tests/deploy.py: stack {STACK} created in moto ({len(physical)} resources; moto does not "
          f"model {', '.join(skipped)}); the ingress claimed and enqueued a signed webhook, delivery "
          f"recorded its attempt at erp, the CLI listed and showed it, its preflight passed on the stack's secrets, indexes, redrive and functions (and found what functions deployed without the template's settings lack), reconcile re-enqueued it once aged "
          f"past the stuck threshold and saved its report, then gave up on it at max_requeues with a "
          f"dead letter; "
          f"every request each made is allowed by its role: {permitted}")


if __name__ == "__main__":
    main()
