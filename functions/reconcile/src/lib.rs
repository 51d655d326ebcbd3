//! The reconcile Lambda function's adapter: an EventBridge scheduled event (a rule's, or an
//! EventBridge Scheduler input shaped like it) in, one bounded run of the reconciliation, the
//! report out.

use std::time::{Duration, Instant};

use plumbline::ports::{
    Clock, CrmReadBack, DeadLetters, EventQueue, Intake, ProviderEvents, QueueStats, Target,
};
use plumbline::reconcile::{Reconciler, Report, Storage};
use plumbline::telemetry::Metrics;

/// Time kept back from the invocation's deadline to save the report and answer.
pub const MARGIN: Duration = Duration::from_secs(5);

/// Runs once within `remaining` (the Lambda context's time left). The event's content is not
/// needed: every shape the schedule may send starts the same run.
pub async fn handle<S, Q, D, P, C, M, K>(
    reconciler: &Reconciler<S, Q, D, P, C, M, K>,
    remaining: Duration,
) -> Report
where
    S: Storage + Intake<Q>,
    Q: EventQueue + QueueStats,
    D: QueueStats + DeadLetters,
    P: ProviderEvents,
    C: Clock,
    M: Metrics,
    K: CrmReadBack + Target,
{
    let deadline = Instant::now() + remaining.saturating_sub(MARGIN);
    reconciler.run(deadline).await
}
