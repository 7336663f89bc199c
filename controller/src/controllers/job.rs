//! Jobs: replicas run to completion, `parallelism` at a time, until
//! `completions` succeeded; `backoffLimit` failures or
//! `activeDeadlineSeconds` end it as Failed, which is final.

use std::time::{Duration, SystemTime};

use crate::manifest::types::JobSpec;
use crate::object::ApiObject;
use crate::status::{Condition, ConditionType, JobStatus, PodPhase, PodStatus, condition, set_condition};
use crate::store::Op;

use super::workload::{Template, ordinal, replica, status_op, template_hash};
use super::{Budget, Requeue};

/// When a Job's pass must run again with nothing changed: while it has an
/// active deadline and replicas still running.
pub fn requeue(job: &ApiObject) -> Requeue {
    let timed = job.spec_ref::<JobSpec>().is_some_and(|s| s.active_deadline_seconds.is_some());
    if timed && job.typed_status::<JobStatus>().active > 0 { Requeue::CLOCK } else { Requeue::OnChange }
}

/// One pass over a Job.
pub fn reconcile(job: &ApiObject, owned: &[&ApiObject], now: SystemTime, budget: &mut Budget, ops: &mut Vec<Op>) {
    let Some(spec) = job.spec::<JobSpec>() else { return };
    let hash = template_hash(&spec.template);
    let completions = spec.completions.unwrap_or(1).max(0) as u32;
    let parallelism = spec.parallelism.unwrap_or(1).max(0) as u32;
    let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0) as u32;
    let phase = |p: &&&ApiObject| p.typed_status::<PodStatus>().phase;
    let succeeded = owned.iter().filter(|p| phase(p) == PodPhase::Succeeded).count() as u32;
    let failed = owned.iter().filter(|p| phase(p) == PodPhase::Failed).count() as u32;
    let active: Vec<_> = owned.iter().filter(|p| !p.typed_status::<PodStatus>().is_finished()).collect();
    let previous: JobStatus = job.status();
    let start_time = if previous.start_time.is_empty() {
        humantime::format_rfc3339_seconds(now).to_string()
    } else {
        previous.start_time.clone()
    };
    let running_for = humantime::parse_rfc3339_weak(&start_time)
        .ok()
        .and_then(|start| now.duration_since(start).ok())
        .unwrap_or_default();
    let deadline = spec.active_deadline_seconds.map(|s| Duration::from_secs(s.max(0) as u64));
    let already_failed = condition(&previous.conditions, ConditionType::Failed).is_some_and(|c| c.is_true());
    let mut status = JobStatus {
        observed_generation: job.metadata.generation,
        active: active.len() as u32,
        succeeded,
        failed,
        start_time,
        conditions: previous.conditions,
    };
    if succeeded >= completions {
        set_condition(&mut status.conditions, Condition::new(ConditionType::Complete, true, "Completed", ""));
    } else if already_failed {
        // Failed is final: what still runs is stopped, nothing new starts.
        for pod in &active {
            ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
        }
        status.active = 0;
    } else if let Some(deadline) = deadline.filter(|d| running_for > *d) {
        let message = format!("active for more than activeDeadlineSeconds ({} s)", deadline.as_secs());
        set_condition(&mut status.conditions, Condition::new(ConditionType::Failed, true, "DeadlineExceeded", message));
        for pod in &active {
            ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
        }
        status.active = 0;
    } else if failed > backoff_limit {
        let message = format!("{failed} replicas failed; backoffLimit is {backoff_limit}");
        set_condition(
            &mut status.conditions,
            Condition::new(ConditionType::Failed, true, "BackoffLimitExceeded", message),
        );
        for pod in &active {
            ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
        }
        status.active = 0;
    } else {
        let mut next = owned.iter().filter_map(|p| ordinal(&p.metadata.name)).max().map_or(0, |m| m + 1);
        let mut running = active.len() as u32;
        let template = Template::new(&spec.template);
        while running < parallelism && succeeded + running < completions && budget.create() {
            let name = format!("{}-{hash}-{next}", job.metadata.name);
            ops.push(Op::Create(replica(job, &template, &hash, name, None)));
            next += 1;
            running += 1;
        }
        status.active = running;
    }
    status_op(job, &status, ops);
}
