"""The peer's ingress: a Stripe webhook behind API Gateway (HTTP API, payload v2).

Verifies the signature with the stripe SDK, makes the enqueue idempotent on the Stripe event id
with Powertools' DynamoDB persistence layer, and sends the event to SQS. Logger and Metrics as
Powertools' documentation sets them up.
"""

import base64
import json
import os

import boto3
import stripe
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="peer-ingress")
metrics = Metrics(namespace="PowertoolsPeer", service="peer-ingress")
persistence = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"])
config = IdempotencyConfig(event_key_jmespath="id", raise_on_no_idempotency_key=True)
sqs = boto3.client("sqs")
QUEUE_URL = os.environ["QUEUE_URL"]
WEBHOOK_SECRET = os.environ["STRIPE_WEBHOOK_SECRET"]


def answer(status: int, body: dict) -> dict:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


@idempotent_function(data_keyword_argument="event", config=config, persistence_store=persistence)
def enqueue(event: dict) -> dict:
    sqs.send_message(
        QueueUrl=QUEUE_URL,
        MessageBody=event["payload"],
        MessageAttributes={"event_type": {"DataType": "String", "StringValue": event["type"]}},
    )
    return {"id": event["id"]}


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    config.register_lambda_context(context)
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8")
    signature = (event.get("headers") or {}).get("stripe-signature", "")
    try:
        webhook = stripe.Webhook.construct_event(body, signature, WEBHOOK_SECRET)
    except ValueError:
        metrics.add_metric(name="Rejected", unit=MetricUnit.Count, value=1)
        return answer(400, {"error": "malformed body"})
    except stripe.SignatureVerificationError:
        metrics.add_metric(name="SignatureFailures", unit=MetricUnit.Count, value=1)
        return answer(401, {"error": "bad signature"})
    enqueue(event={"id": webhook.id, "type": webhook.type, "payload": body})
    metrics.add_metric(name="Accepted", unit=MetricUnit.Count, value=1)
    logger.info("accepted", extra={"event_id": webhook.id, "event_type": webhook.type})
    return answer(200, {"received": True})
