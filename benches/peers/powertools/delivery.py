"""The peer's delivery: SQS batches through Powertools' BatchProcessor, each record idempotent on
the Stripe event id (DynamoDB persistence layer), POSTed to the target with an Idempotency-Key;
failed records are reported as partial batch failures.
"""

import json
import os

import requests
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="peer-delivery")
metrics = Metrics(namespace="PowertoolsPeer", service="peer-delivery")
processor = BatchProcessor(event_type=EventType.SQS)
persistence = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"])
config = IdempotencyConfig(event_key_jmespath="id", raise_on_no_idempotency_key=True)
session = requests.Session()
TARGET_URL = os.environ["TARGET_URL"]


@idempotent_function(data_keyword_argument="event", config=config, persistence_store=persistence)
def deliver(event: dict) -> dict:
    document = {"id": event["id"], "type": event["type"], "object": event["data"]["object"]}
    response = session.post(
        TARGET_URL,
        json=document,
        headers={"Idempotency-Key": f"stripe:{event['id']}"},
        timeout=10,
    )
    response.raise_for_status()
    return {"status": response.status_code}


def record_handler(record: SQSRecord) -> None:
    deliver(event=json.loads(record.body))
    metrics.add_metric(name="Delivered", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    config.register_lambda_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
