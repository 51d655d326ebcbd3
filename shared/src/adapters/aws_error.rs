//! Classifies AWS SDK errors without flattening them: the error codes that mean "slow down"
//! are told apart from everything else, and the source is kept.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;

const THROTTLING: [&str; 6] = [
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "Throttling",
    "TooManyRequestsException",
    "RequestThrottled",
];

/// The service's error code, if the service answered with one.
pub fn code<E: ProvideErrorMetadata>(
    err: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<&str> {
    err.as_service_error().and_then(ProvideErrorMetadata::code)
}

pub fn is_throttling(code: Option<&str>) -> bool {
    code.is_some_and(|c| THROTTLING.contains(&c))
}
