//! Unit tests of the job queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize};

use aetherv_hyperv::ops::{
    GoldenImage, HostCall, HostFacts, HostReply, Inventory, MockHyperVHost, PowerAction,
    PowerOutcome, ProvisioningIso, RemovedPath, Vm, VmState,
};
use aetherv_hyperv::psjson::Timestamp;
use aetherv_inventory::{RefreshConfig, Refresher};
use aetherv_provision::delete::DeleteRequest;
use aetherv_provision::schema::JobRequest;
use tokio::sync::{Notify, oneshot};
use tokio::time::timeout;

use super::*;
use crate::*;

/// Upper bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

fn vm_id(n: u128) -> VmId {
    VmId(uuid::Uuid::from_u128(n))
}

/// A call inside a mock that blocks until the test opens the gate. Only the first call blocks;
/// later calls pass straight through.
#[derive(Clone)]
struct Gate {
    entered: Arc<Notify>,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl Gate {
    fn new() -> (Self, oneshot::Sender<()>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                entered: Arc::new(Notify::new()),
                release: Arc::new(Mutex::new(Some(rx))),
            },
            tx,
        )
    }

    /// Called from inside a mock expectation (mockall answers synchronously): signals that
    /// the call started, then blocks this worker thread until the gate opens (or its sender is
    /// dropped).
    fn pass(&self) {
        let rx = self.release.lock().unwrap().take();
        self.entered.notify_one();
        if let Some(rx) = rx {
            let _ = tokio::task::block_in_place(|| futures::executor::block_on(rx));
        }
    }

    async fn entered(&self) {
        timeout(WAIT, self.entered.notified())
            .await
            .expect("the gated host call started");
    }
}

/// Expects calls of one operation on a mock host.
macro_rules! on {
    ($host:expr, $pattern:pat) => {
        $host.expect_call().withf(|c| matches!(c, $pattern))
    };
}

fn mock(name: &str) -> MockHyperVHost {
    let mut host = MockHyperVHost::new();
    host.expect_host_name().return_const(name.to_owned());
    host
}

/// A `remove_path` that found nothing to remove.
fn removed_nothing(call: HostCall) -> aetherv_hyperv::Result<HostReply> {
    match call {
        HostCall::RemovePath(path) => Ok(HostReply::RemovedPath(RemovedPath {
            path,
            removed: false,
        })),
        other => panic!("{other:?}"),
    }
}

fn outcome(id: VmId, action: PowerAction) -> PowerOutcome {
    let state = match action {
        PowerAction::Start | PowerAction::Resume | PowerAction::Restart => VmState::Running,
        PowerAction::Shutdown | PowerAction::TurnOff => VmState::Off,
        PowerAction::Save => VmState::Saved,
        PowerAction::Pause => VmState::Paused,
    };
    PowerOutcome {
        id,
        name: format!("vm-{}", id.0.as_u128()),
        previous_state: VmState::Off,
        state,
    }
}

/// A host whose power calls succeed; the first one waits for `gate` when given. `calls`
/// counts power calls; `before_each` runs at the start of every call.
fn power_host(
    name: &str,
    gate: Option<Gate>,
    calls: Arc<AtomicUsize>,
    before_each: impl Fn() + Send + Sync + 'static,
) -> MockHyperVHost {
    let mut host = mock(name);
    on!(host, HostCall::Power(..)).returning(move |call| {
        before_each();
        calls.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &gate {
            gate.pass();
        }
        match call {
            HostCall::Power(id, action) => Ok(HostReply::Power(outcome(id, action))),
            other => panic!("{other:?}"),
        }
    });
    host
}

fn hosts(list: Vec<(&str, MockHyperVHost)>) -> Arc<HostMap> {
    Arc::new(
        list.into_iter()
            .map(|(name, host)| (name.to_owned(), Arc::new(host) as Arc<dyn HyperVHost>))
            .collect(),
    )
}

fn queue(config: QueueConfig, list: Vec<(&str, MockHyperVHost)>) -> JobQueue {
    JobQueue::new(config, hosts(list), None, Arc::new(NoObserver))
}

fn config(concurrency: usize, per_host: usize, history: usize) -> QueueConfig {
    QueueConfig {
        concurrency,
        per_host,
        history,
        step_timeout: Duration::from_secs(5),
        refresh_timeout: Duration::from_secs(5),
        ..QueueConfig::default()
    }
}

fn power_job(host: &str, vm: VmId, action: PowerAction) -> NewJob {
    NewJob {
        requested_by: crate::Requester::default(),
        work: JobWork::Power { vm, action },
        host: host.to_owned(),
        vm_id: Some(vm),
        vm_name: Some(format!("vm-{}", vm.0.as_u128())),
        parameters: serde_json::json!({ "vm_id": vm, "action": action.as_str() }),
    }
}

/// Waits (bounded) until job `id` satisfies `cond`, woken by the job's own change signal.
async fn wait_until(
    queue: &JobQueue,
    id: &str,
    what: &str,
    cond: impl Fn(&JobView) -> bool,
) -> JobView {
    let mut follower = queue.follow(id).expect("the job exists");
    let waited = timeout(WAIT, async {
        loop {
            let view = queue.get(id).expect("the job exists");
            if cond(&view) {
                return view;
            }
            if follower.next().await.is_none() {
                let view = queue.get(id).expect("the job exists");
                assert!(cond(&view), "job {id} ended without being {what}: {view:?}");
                return view;
            }
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("timed out waiting for job {id} to be {what}"))
}

async fn wait_end(queue: &JobQueue, id: &str) -> JobView {
    wait_until(queue, id, "finished", |v| v.status.is_final()).await
}

#[tokio::test]
async fn a_power_job_succeeds_and_records_its_outcome() {
    let calls = Arc::new(AtomicUsize::new(0));
    let q = queue(
        config(4, 2, 100),
        vec![("hv01", power_host("hv01", None, Arc::clone(&calls), || {}))],
    );
    let vm = vm_id(1);
    let submitted = q.submit(power_job("HV01", vm, PowerAction::Start)).unwrap();
    assert_eq!(submitted.status, JobStatus::Queued);
    assert_eq!(
        submitted.target_host, "hv01",
        "the configured host name is used"
    );
    assert_eq!(submitted.job_type, JobType::Power);
    assert_eq!(submitted.action, Some(JobAction::Start));

    let done = wait_end(&q, &submitted.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!(done.percent, 100);
    assert_eq!(done.error, None);
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert_eq!(
        done.result.as_ref().unwrap()["state"],
        2,
        "Running is state 2"
    );
    assert_eq!(done.steps.len(), 1);
    assert_eq!(done.steps[0].name, "Power.Apply");
    assert_eq!(done.steps[0].status, StepStatus::Succeeded);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(q.busy_job(vm), None, "the VM is free again");
    let (lines, status) = q.lines(&submitted.id).unwrap();
    assert_eq!(status, JobStatus::Succeeded);
    assert_eq!(lines.last().unwrap().message, "job succeeded");
    assert!(lines.iter().enumerate().all(|(i, l)| l.seq == i as u64));
    assert_eq!(q.active_counts(), (0, 0));
    // The status query answers for jobs in the history only.
    assert_eq!(q.status(&submitted.id), Some(JobStatus::Succeeded));
    assert_eq!(q.status("no-such-job"), None);
}

#[tokio::test]
async fn a_failing_power_job_is_failed_with_the_host_error() {
    let mut host = mock("hv01");
    on!(host, HostCall::Power(..)).returning(|_| {
        Err(aetherv_hyperv::Error::ScriptFailed {
            host: "hv01".to_owned(),
            operation: "power",
            code: "Boom".to_owned(),
            message: "the hypervisor refused".to_owned(),
        })
    });
    let q = queue(config(4, 2, 100), vec![("hv01", host)]);
    let vm = vm_id(2);
    let job = q.submit(power_job("hv01", vm, PowerAction::Pause)).unwrap();
    let done = wait_end(&q, &job.id).await;
    assert_eq!(done.status, JobStatus::Failed);
    let error = done.error.clone().expect("an error text");
    assert!(error.contains("the hypervisor refused"), "{error}");
    assert!(error.contains("hv01"), "{error}");
    assert_eq!(done.steps.last().unwrap().status, StepStatus::Failed);
    assert_eq!(done.result, None);
    let (lines, _) = q.lines(&job.id).unwrap();
    let last = lines.last().unwrap();
    assert_eq!(last.level, LineLevel::Error);
    assert!(last.message.contains("the hypervisor refused"), "{last:?}");
    assert_eq!(q.busy_job(vm), None);
}

#[tokio::test]
async fn unknown_hosts_are_refused() {
    let q = queue(config(1, 1, 10), vec![("hv01", mock("hv01"))]);
    let err = q
        .submit(power_job("hv09", vm_id(1), PowerAction::Start))
        .unwrap_err();
    assert_eq!(err, SubmitError::UnknownHost("hv09".to_owned()));
    assert!(q.list(&JobFilter::default()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_global_bound_holds_jobs_of_other_hosts() {
    let (gate, release) = Gate::new();
    let released = Arc::new(AtomicBool::new(false));
    let early = Arc::new(AtomicBool::new(false));
    let a_calls = Arc::new(AtomicUsize::new(0));
    let b_calls = Arc::new(AtomicUsize::new(0));
    let (r, e) = (Arc::clone(&released), Arc::clone(&early));
    let q = queue(
        config(1, 2, 100),
        vec![
            (
                "hv-a",
                power_host("hv-a", Some(gate.clone()), Arc::clone(&a_calls), || {}),
            ),
            (
                "hv-b",
                power_host("hv-b", None, Arc::clone(&b_calls), move || {
                    if !r.load(Ordering::SeqCst) {
                        e.store(true, Ordering::SeqCst);
                    }
                }),
            ),
        ],
    );
    let first = q
        .submit(power_job("hv-a", vm_id(1), PowerAction::Start))
        .unwrap();
    gate.entered().await;
    assert_eq!(q.get(&first.id).unwrap().status, JobStatus::Running);

    let second = q
        .submit(power_job("hv-b", vm_id(2), PowerAction::Start))
        .unwrap();
    // A negative check: give the second job every chance to start, then look.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = q.get(&second.id).unwrap();
    assert_eq!(waiting.status, JobStatus::Queued, "{waiting:?}");
    assert_eq!(waiting.started_at, None);
    assert_eq!(b_calls.load(Ordering::SeqCst), 0);
    assert_eq!(q.active_counts(), (1, 1));

    released.store(true, Ordering::SeqCst);
    release.send(()).unwrap();
    let first = wait_end(&q, &first.id).await;
    let second = wait_end(&q, &second.id).await;
    assert_eq!(first.status, JobStatus::Succeeded);
    assert_eq!(second.status, JobStatus::Succeeded);
    assert!(
        !early.load(Ordering::SeqCst),
        "the second host was called while the only global slot was taken"
    );
    assert_eq!(
        (
            a_calls.load(Ordering::SeqCst),
            b_calls.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_per_host_bound_holds_jobs_of_the_same_host_only() {
    let (gate, release) = Gate::new();
    let released = Arc::new(AtomicBool::new(false));
    let early = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let other_calls = Arc::new(AtomicUsize::new(0));
    let (r, e) = (Arc::clone(&released), Arc::clone(&early));
    let q = queue(
        config(4, 1, 100),
        vec![
            (
                "hv01",
                power_host("hv01", Some(gate.clone()), Arc::clone(&calls), move || {
                    if !r.load(Ordering::SeqCst) {
                        e.fetch_add(1, Ordering::SeqCst);
                    }
                }),
            ),
            (
                "hv02",
                power_host("hv02", None, Arc::clone(&other_calls), || {}),
            ),
        ],
    );
    let first = q
        .submit(power_job("hv01", vm_id(1), PowerAction::Start))
        .unwrap();
    gate.entered().await;
    let second = q
        .submit(power_job("hv01", vm_id(2), PowerAction::Start))
        .unwrap();
    // Another host is not held back by hv01's bound.
    let other = q
        .submit(power_job("hv02", vm_id(3), PowerAction::Start))
        .unwrap();
    let other = wait_end(&q, &other.id).await;
    assert_eq!(other.status, JobStatus::Succeeded);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(q.get(&second.id).unwrap().status, JobStatus::Queued);
    assert_eq!(
        early.load(Ordering::SeqCst),
        1,
        "only the first job called hv01 before the release"
    );

    released.store(true, Ordering::SeqCst);
    release.send(()).unwrap();
    assert_eq!(wait_end(&q, &first.id).await.status, JobStatus::Succeeded);
    let second = wait_end(&q, &second.id).await;
    assert_eq!(second.status, JobStatus::Succeeded);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(early.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_job_per_vm_and_per_new_name() {
    let (gate, release) = Gate::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut host = power_host("hv01", Some(gate.clone()), Arc::clone(&calls), || {});
    on!(host, HostCall::Facts).returning(|_| {
        Err(aetherv_hyperv::Error::ScriptFailed {
            host: "hv01".to_owned(),
            operation: "facts",
            code: "Unavailable".to_owned(),
            message: "host is busy".to_owned(),
        })
    });
    on!(host, HostCall::Inventory)
        .returning(|_| Ok(HostReply::Inventory(inventory("hv01", Vec::new()))));
    on!(host, HostCall::RemovePath(_)).returning(removed_nothing);
    // per_host 1 keeps the provisioning jobs queued behind the blocked power job.
    let q = queue(config(4, 1, 100), vec![("hv01", host)]);
    let vm = vm_id(7);
    let first = q.submit(power_job("hv01", vm, PowerAction::Start)).unwrap();
    gate.entered().await;
    assert_eq!(q.busy_job(vm), Some(first.id.clone()));
    let err = q
        .submit(power_job("hv01", vm, PowerAction::Shutdown))
        .unwrap_err();
    assert_eq!(
        err,
        SubmitError::Busy {
            vm: "vm-7".to_owned(),
            job: first.id.clone()
        }
    );

    let provision = |name: &str| {
        let body = serde_json::json!({
            "vm_name": name, "hyperv_host": "hv01", "image_name": "Ubuntu 24.04",
            "gb_ram": 4, "cpu_cores": 2, "guest_la_uid": "admin", "guest_la_pw": "pw-Secret-1"
        });
        let validated = JobRequest::from_flat_json(&body.to_string()).unwrap();
        NewJob {
            requested_by: crate::Requester::default(),
            parameters: validated.redacted(),
            work: JobWork::Provision(Box::new(validated)),
            host: "hv01".to_owned(),
            vm_id: None,
            vm_name: Some(name.to_owned()),
        }
    };
    let new = q.submit(provision("web-01")).unwrap();
    let err = q.submit(provision("WEB-01")).unwrap_err();
    assert!(
        matches!(&err, SubmitError::Busy { job, .. } if *job == new.id),
        "{err:?}"
    );
    // Another name on the same host is fine.
    let other = q.submit(provision("web-02")).unwrap();

    release.send(()).unwrap();
    for id in [&first.id, &new.id, &other.id] {
        assert!(wait_end(&q, id).await.status.is_final());
    }
    // Once the jobs ended, the VM and the name are free again.
    let again = q.submit(provision("web-01")).unwrap();
    wait_end(&q, &again.id).await;
    let again = q
        .submit(power_job("hv01", vm, PowerAction::Shutdown))
        .unwrap();
    assert_eq!(wait_end(&q, &again.id).await.status, JobStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_queued_job_ends_it_at_once() {
    let (gate, release) = Gate::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let q = queue(
        config(1, 1, 100),
        vec![(
            "hv01",
            power_host("hv01", Some(gate.clone()), Arc::clone(&calls), || {}),
        )],
    );
    let running = q
        .submit(power_job("hv01", vm_id(1), PowerAction::Start))
        .unwrap();
    gate.entered().await;
    let queued = q
        .submit(power_job("hv01", vm_id(2), PowerAction::Start))
        .unwrap();
    let vm = vm_id(2);
    assert_eq!(q.busy_job(vm), Some(queued.id.clone()));

    let view = q.cancel(&queued.id).unwrap();
    assert!(view.cancel_requested);
    // A queued job ends within the cancel call itself and frees its VM at once.
    assert_eq!(view.status, JobStatus::Cancelled);
    assert_eq!(q.busy_job(vm), None);
    // The running job still holds the only slot: the cancelled one ends without it.
    let done = wait_end(&q, &queued.id).await;
    assert_eq!(done.status, JobStatus::Cancelled);
    let error = done.error.unwrap();
    assert!(error.contains("nothing was changed"), "{error}");
    assert_eq!(done.started_at, None);
    assert_eq!(q.get(&running.id).unwrap().status, JobStatus::Running);
    assert_eq!(q.busy_job(vm), None, "the cancelled job released its VM");
    let (lines, _) = q.lines(&queued.id).unwrap();
    assert!(lines.iter().any(|l| l.message == "cancellation requested"));

    release.send(()).unwrap();
    assert_eq!(wait_end(&q, &running.id).await.status, JobStatus::Succeeded);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the cancelled job never ran"
    );
}

#[tokio::test]
async fn cancelling_a_finished_or_unknown_job_is_refused() {
    let calls = Arc::new(AtomicUsize::new(0));
    let q = queue(
        config(4, 2, 100),
        vec![("hv01", power_host("hv01", None, calls, || {}))],
    );
    let job = q
        .submit(power_job("hv01", vm_id(1), PowerAction::Start))
        .unwrap();
    wait_end(&q, &job.id).await;
    assert_eq!(
        q.cancel(&job.id).unwrap_err(),
        CancelError::Finished {
            id: job.id.clone(),
            status: JobStatus::Succeeded
        }
    );
    assert!(!q.get(&job.id).unwrap().cancel_requested);
    assert_eq!(
        q.cancel("no-such-job").unwrap_err(),
        CancelError::NotFound("no-such-job".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_history_keeps_the_newest_finished_jobs_and_every_running_one() {
    let (gate, release) = Gate::new();
    let q = queue(
        config(4, 2, 10),
        vec![
            (
                "hv01",
                power_host(
                    "hv01",
                    Some(gate.clone()),
                    Arc::new(AtomicUsize::new(0)),
                    || {},
                ),
            ),
            (
                "hv02",
                power_host("hv02", None, Arc::new(AtomicUsize::new(0)), || {}),
            ),
        ],
    );
    let running = q
        .submit(power_job("hv01", vm_id(1000), PowerAction::Start))
        .unwrap();
    gate.entered().await;
    let mut finished = Vec::new();
    for n in 0..15 {
        let job = q
            .submit(power_job("hv02", vm_id(n), PowerAction::Start))
            .unwrap();
        assert_eq!(wait_end(&q, &job.id).await.status, JobStatus::Succeeded);
        finished.push(job.id);
    }
    let all = q.list(&JobFilter::default());
    assert_eq!(all.len(), 10, "the history bound");
    assert_eq!(
        q.get(&running.id).unwrap().status,
        JobStatus::Running,
        "the oldest job is running and stays"
    );
    for id in &finished[..6] {
        assert!(q.get(id).is_none(), "job {id} should have left the history");
    }
    for id in &finished[6..] {
        assert!(q.get(id).is_some(), "job {id} should still be there");
    }

    release.send(()).unwrap();
    wait_end(&q, &running.id).await;
    // Without a running job, a plain 15 → 10.
    let q = queue(
        config(4, 2, 10),
        vec![(
            "hv02",
            power_host("hv02", None, Arc::new(AtomicUsize::new(0)), || {}),
        )],
    );
    let mut ids = Vec::new();
    for n in 0..15 {
        let job = q
            .submit(power_job("hv02", vm_id(n), PowerAction::Start))
            .unwrap();
        wait_end(&q, &job.id).await;
        ids.push(job.id);
    }
    let listed: Vec<String> = q
        .list(&JobFilter::default())
        .into_iter()
        .map(|j| j.id)
        .collect();
    let newest: Vec<String> = ids[5..].iter().rev().cloned().collect();
    assert_eq!(listed, newest, "the ten newest, newest first");
}

/// Drains a follower; returns the lines and how many `End` items came (and checks that nothing
/// comes after the end).
async fn drain(follower: &mut Follower) -> (Vec<LogLine>, usize, Option<JobView>) {
    let mut lines = Vec::new();
    let mut ends = 0;
    let mut last = None;
    timeout(WAIT, async {
        while let Some(item) = follower.next().await {
            match item {
                FollowItem::Lines { lines: batch, .. } => {
                    assert_eq!(ends, 0, "lines after the end");
                    lines.extend(batch);
                }
                FollowItem::End(view) => {
                    ends += 1;
                    last = Some(*view);
                }
            }
        }
    })
    .await
    .expect("the follower ends");
    (lines, ends, last)
}

#[tokio::test]
async fn following_a_finished_job_yields_every_line_then_one_end() {
    let q = queue(
        config(4, 2, 100),
        vec![(
            "hv01",
            power_host("hv01", None, Arc::new(AtomicUsize::new(0)), || {}),
        )],
    );
    let job = q
        .submit(power_job("hv01", vm_id(1), PowerAction::Start))
        .unwrap();
    wait_end(&q, &job.id).await;
    let mut follower = q.follow(&job.id).unwrap();
    let (lines, ends, last) = drain(&mut follower).await;
    assert_eq!(ends, 1);
    assert_eq!(lines, q.lines(&job.id).unwrap().0);
    assert_eq!(last.unwrap().status, JobStatus::Succeeded);
    assert!(follower.next().await.is_none());
    assert!(q.follow("no-such-job").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn following_a_job_that_ends_meanwhile_yields_every_line_then_one_end() {
    let (gate, release) = Gate::new();
    let q = queue(
        config(4, 2, 100),
        vec![(
            "hv01",
            power_host(
                "hv01",
                Some(gate.clone()),
                Arc::new(AtomicUsize::new(0)),
                || {},
            ),
        )],
    );
    let job = q
        .submit(power_job("hv01", vm_id(1), PowerAction::Start))
        .unwrap();
    let mut follower = q.follow(&job.id).unwrap();
    let first = timeout(WAIT, follower.next()).await.unwrap().unwrap();
    let FollowItem::Lines {
        lines: mut seen, ..
    } = first
    else {
        panic!("a fresh job starts with lines: {first:?}");
    };
    assert_eq!(seen[0].seq, 0);
    assert!(seen[0].message.contains("queued"), "{:?}", seen[0]);
    gate.entered().await;
    release.send(()).unwrap();
    let (rest, ends, last) = drain(&mut follower).await;
    seen.extend(rest);
    assert_eq!(ends, 1, "exactly one end");
    let last = last.unwrap();
    assert_eq!(last.status, JobStatus::Succeeded);
    assert_eq!(
        seen,
        q.lines(&job.id).unwrap().0,
        "every line, once, in order"
    );
    assert!(seen.iter().enumerate().all(|(i, l)| l.seq == i as u64));
    assert_eq!(seen.last().unwrap().message, "job succeeded");
    assert!(follower.next().await.is_none());
}

#[tokio::test]
async fn list_filters_by_status_type_host_vm_and_limit() {
    let mut failing = mock("hv02");
    on!(failing, HostCall::Power(..)).returning(|_| {
        Err(aetherv_hyperv::Error::ScriptFailed {
            host: "hv02".to_owned(),
            operation: "power",
            code: "Boom".to_owned(),
            message: "no".to_owned(),
        })
    });
    on!(failing, HostCall::Vm(_)).returning(|call| {
        Err(aetherv_hyperv::Error::UnknownVm {
            host: "hv02".to_owned(),
            vm: call.vm_id().map(|id| id.to_string()).unwrap_or_default(),
        })
    });
    let q = queue(
        config(4, 2, 100),
        vec![
            (
                "hv01",
                power_host("hv01", None, Arc::new(AtomicUsize::new(0)), || {}),
            ),
            ("hv02", failing),
        ],
    );
    let a = q
        .submit(power_job("hv01", vm_id(1), PowerAction::Start))
        .unwrap();
    wait_end(&q, &a.id).await;
    let b = q
        .submit(power_job("hv02", vm_id(2), PowerAction::Start))
        .unwrap();
    wait_end(&q, &b.id).await;
    let c = q
        .submit(NewJob {
            requested_by: crate::Requester {
                subject: "sub-alice".to_owned(),
                name: Some("alice@corp.example".to_owned()),
                roles: vec!["writer".to_owned()],
                reason: Some("cleanup".to_owned()),
                ticket: Some("CHG-7".to_owned()),
            },
            work: JobWork::Delete(DeleteRequest::new(vm_id(3))),
            host: "hv02".to_owned(),
            vm_id: Some(vm_id(3)),
            vm_name: Some("vm-3".to_owned()),
            parameters: serde_json::json!({}),
        })
        .unwrap();
    wait_end(&q, &c.id).await;

    let ids =
        |filter: JobFilter| -> Vec<String> { q.list(&filter).into_iter().map(|j| j.id).collect() };
    assert_eq!(
        ids(JobFilter::default()),
        vec![c.id.clone(), b.id.clone(), a.id.clone()],
        "newest first"
    );
    assert_eq!(
        ids(JobFilter {
            status: Some(JobStatus::Succeeded),
            ..JobFilter::default()
        }),
        vec![a.id.clone()]
    );
    assert_eq!(
        ids(JobFilter {
            status: Some(JobStatus::Failed),
            ..JobFilter::default()
        }),
        vec![c.id.clone(), b.id.clone()]
    );
    assert_eq!(
        ids(JobFilter {
            job_type: Some(JobType::Delete),
            ..JobFilter::default()
        }),
        vec![c.id.clone()]
    );
    assert_eq!(
        ids(JobFilter {
            host: Some("HV02".to_owned()),
            ..JobFilter::default()
        }),
        vec![c.id.clone(), b.id.clone()]
    );
    assert_eq!(
        ids(JobFilter {
            vm_id: Some(vm_id(1)),
            ..JobFilter::default()
        }),
        vec![a.id.clone()]
    );
    assert_eq!(
        ids(JobFilter {
            limit: Some(2),
            ..JobFilter::default()
        }),
        vec![c.id.clone(), b.id.clone()]
    );
    // Who asked: by subject or name, case-insensitive; the record keeps reason and ticket.
    for who in ["sub-alice", "ALICE@corp.example"] {
        assert_eq!(
            ids(JobFilter {
                requested_by: Some(who.to_owned()),
                ..JobFilter::default()
            }),
            vec![c.id.clone()],
            "{who}"
        );
    }
    assert!(
        ids(JobFilter {
            requested_by: Some("bob".to_owned()),
            ..JobFilter::default()
        })
        .is_empty()
    );
    let record = q.get(&c.id).unwrap();
    assert_eq!(record.requested_by.ticket.as_deref(), Some("CHG-7"));
    assert_eq!(record.requested_by.roles, vec!["writer".to_owned()]);
    assert_eq!(
        ids(JobFilter {
            host: Some("hv02".to_owned()),
            job_type: Some(JobType::Power),
            status: Some(JobStatus::Failed),
            ..JobFilter::default()
        }),
        vec![b.id.clone()]
    );
    assert!(
        ids(JobFilter {
            status: Some(JobStatus::Running),
            ..JobFilter::default()
        })
        .is_empty()
    );
}

fn facts(name: &str) -> HostFacts {
    HostFacts {
        name: name.to_owned(),
        fqdn: format!("{name}.lab.example"),
        cluster: None,
        os_version: Some("10.0.20348".to_owned()),
        logical_processors: 16,
        memory_total_bytes: 64 << 30,
        memory_available_bytes: 48 << 30,
        vm_path: "C:\\VMs".to_owned(),
        storage: Vec::new(),
        switches: Vec::new(),
        images: vec![GoldenImage {
            name: "Ubuntu 24.04".to_owned(),
            os_family: "linux".to_owned(),
            path: "C:\\Images\\ubuntu.vhdx".to_owned(),
            size_bytes: 1000,
            max_size_bytes: None,
            root: None,
        }],
        provisioning_isos: vec![ProvisioningIso {
            os_family: "linux".to_owned(),
            path: "C:\\ISO\\linux.iso".to_owned(),
            size_bytes: 10,
            version: Some("1.0.0".to_owned()),
        }],
        scripts_version: None,
        host_resources: None,
        maintenance: None,
        cluster_node_state: None,
    }
}

fn inventory(host: &str, vms: Vec<Vm>) -> Inventory {
    Inventory {
        host: host.to_owned(),
        collected_at: Timestamp::from_unix_millis(1_700_000_000_000),
        vms,
        digest: None,
        unchanged: false,
    }
}

#[tokio::test]
async fn records_never_contain_the_guest_password() {
    const SECRET: &str = "Very-S3cret-Passw0rd!";
    let mut host = mock("hv01");
    on!(host, HostCall::Facts).returning(|_| Ok(HostReply::Facts(Box::new(facts("hv01")))));
    on!(host, HostCall::Inventory)
        .returning(|_| Ok(HostReply::Inventory(inventory("hv01", Vec::new()))));
    let copies = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&copies);
    on!(host, HostCall::CopyImage(_)).returning(move |call| {
        counted.fetch_add(1, Ordering::SeqCst);
        let HostCall::CopyImage(request) = call else {
            panic!("{call:?}")
        };
        Err(aetherv_hyperv::Error::ScriptFailed {
            host: "hv01".to_owned(),
            operation: "copy_image",
            code: "DiskFull".to_owned(),
            message: format!("no room for {}", request.vm_name),
        })
    });
    on!(host, HostCall::RemovePath(_)).returning(removed_nothing);
    let q = queue(config(4, 2, 100), vec![("hv01", host)]);
    let body = serde_json::json!({
        "vm_name": "web-01", "hyperv_host": "hv01", "image_name": "Ubuntu 24.04",
        "gb_ram": 4, "cpu_cores": 2, "guest_la_uid": "admin", "guest_la_pw": SECRET
    });
    let validated = JobRequest::from_flat_json(&body.to_string()).unwrap();
    let job = q
        .submit(NewJob {
            requested_by: crate::Requester::default(),
            parameters: validated.redacted(),
            work: JobWork::Provision(Box::new(validated)),
            host: "hv01".to_owned(),
            vm_id: None,
            vm_name: Some("web-01".to_owned()),
        })
        .unwrap();
    let queued = serde_json::to_string(&job).unwrap();
    assert!(!queued.contains(SECRET), "{queued}");
    let done = wait_end(&q, &job.id).await;
    assert_eq!(done.status, JobStatus::Failed, "{done:?}");
    assert!(
        done.error
            .as_deref()
            .unwrap()
            .contains("no room for web-01"),
        "{done:?}"
    );
    assert_eq!(
        copies.load(Ordering::SeqCst),
        1,
        "the job got as far as the copy"
    );
    assert_eq!(done.parameters["values"]["guest_la_pw"], "***");
    let record = serde_json::to_string(&q.get(&job.id).unwrap()).unwrap();
    assert!(!record.contains(SECRET), "{record}");
    let (lines, _) = q.lines(&job.id).unwrap();
    assert!(lines.len() > 3, "the pipeline logged its steps: {lines:?}");
    let text = serde_json::to_string(&lines).unwrap();
    assert!(!text.contains(SECRET), "{text}");
    let debug = format!("{:?}", q.list(&JobFilter::default()));
    assert!(!debug.contains(SECRET));
}

#[tokio::test]
async fn a_job_ends_after_its_host_inventory_shows_the_effect() {
    let id = vm_id(42);
    let vms = Arc::new(Mutex::new(vec![Vm {
        id,
        name: "db-01".to_owned(),
        state: VmState::Off,
        generation: 2,
        version: None,
        path: None,
        processor_count: 2,
        memory_startup_bytes: 4 << 30,
        memory_assigned_bytes: 0,
        memory_minimum_bytes: 0,
        memory_maximum_bytes: 0,
        dynamic_memory: false,
        uptime: Duration::ZERO,
        creation_time: None,
        notes: String::new(),
        clustered: false,
        disks: Vec::new(),
        dvd_drives: Vec::new(),
        nics: Vec::new(),
        integration_services: Default::default(),
        config: Default::default(),
        checkpoints: Vec::new(),
        merge_percent: None,
    }]));
    let mut host = mock("hv01");
    on!(host, HostCall::Facts).returning(|_| Ok(HostReply::Facts(Box::new(facts("hv01")))));
    let listed = Arc::clone(&vms);
    on!(host, HostCall::Inventory).returning(move |_| {
        Ok(HostReply::Inventory(inventory(
            "hv01",
            listed.lock().unwrap().clone(),
        )))
    });
    let changed = Arc::clone(&vms);
    on!(host, HostCall::Power(..)).returning(move |call| {
        let HostCall::Power(id, action) = call else {
            panic!("{call:?}")
        };
        let mut vms = changed.lock().unwrap();
        let vm = vms.iter_mut().find(|v| v.id == id).unwrap();
        let out = outcome(id, action);
        vm.state = out.state;
        Ok(HostReply::Power(out))
    });
    let map = hosts(vec![("hv01", host)]);
    let refresher = Refresher::start(
        &*map,
        RefreshConfig {
            interval: Duration::from_secs(3600),
            ..RefreshConfig::default()
        },
        CancellationToken::new(),
    );
    let handle = refresher.handle();
    let first = timeout(WAIT, handle.refresh_all()).await.unwrap();
    assert!(first.iter().all(|(_, r)| r.is_ok()), "{first:?}");
    assert_eq!(handle.snapshot().vm(id).unwrap().vm.state, VmState::Off);

    let q = JobQueue::new(
        config(4, 2, 100),
        map,
        Some(handle.clone()),
        Arc::new(NoObserver),
    );
    let job = q.submit(power_job("hv01", id, PowerAction::Start)).unwrap();
    let done = wait_end(&q, &job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(
        handle.snapshot().vm(id).unwrap().vm.state,
        VmState::Running,
        "the refresh is published before the job ends"
    );
    refresher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_refuses_jobs_beyond_its_bound() {
    let (gate, release) = Gate::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut cfg = config(1, 1, 100);
    cfg.max_queued = 2;
    let q = queue(
        cfg,
        vec![(
            "hv01",
            power_host("hv01", Some(gate.clone()), Arc::clone(&calls), || {}),
        )],
    );
    let running = q
        .submit(power_job("hv01", vm_id(1), PowerAction::Start))
        .unwrap();
    gate.entered().await;
    q.submit(power_job("hv01", vm_id(2), PowerAction::Start))
        .unwrap();
    q.submit(power_job("hv01", vm_id(3), PowerAction::Start))
        .unwrap();
    assert_eq!(
        q.submit(power_job("hv01", vm_id(4), PowerAction::Start))
            .unwrap_err(),
        SubmitError::QueueFull(2)
    );
    release.send(()).unwrap();
    assert_eq!(wait_end(&q, &running.id).await.status, JobStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_vm_being_provisioned_is_busy_by_name() {
    let (gate, release) = Gate::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let q = queue(
        config(1, 1, 100),
        vec![(
            "hv01",
            power_host("hv01", Some(gate.clone()), Arc::clone(&calls), || {}),
        )],
    );
    // Occupy the only slot so the job holding the name stays queued.
    let running = q
        .submit(power_job("hv01", vm_id(1), PowerAction::Start))
        .unwrap();
    gate.entered().await;
    let mut provision = power_job("hv01", vm_id(9), PowerAction::Start);
    provision.vm_id = None;
    provision.vm_name = Some("Web-07".to_owned());
    let holder = q.submit(provision).unwrap();
    let mut power = power_job("hv01", vm_id(7), PowerAction::Start);
    power.vm_name = Some("web-07".to_owned());
    assert!(
        matches!(q.submit(power).unwrap_err(), SubmitError::Busy { job, .. } if job == holder.id),
        "a VM of that name on that host is being worked on"
    );
    assert_eq!(q.cancel(&holder.id).unwrap().status, JobStatus::Cancelled);
    release.send(()).unwrap();
    assert_eq!(wait_end(&q, &running.id).await.status, JobStatus::Succeeded);
}

fn provision_job(image: &str) -> NewJob {
    let body = serde_json::json!({
        "vm_name": "web-01", "hyperv_host": "hv01", "image_name": image,
        "gb_ram": 4, "cpu_cores": 2, "guest_la_uid": "admin", "guest_la_pw": "pw-Secret-1"
    });
    let validated = JobRequest::from_flat_json(&body.to_string()).unwrap();
    NewJob {
        requested_by: crate::Requester::default(),
        parameters: validated.redacted(),
        work: JobWork::Provision(Box::new(validated)),
        host: "hv01".to_owned(),
        vm_id: None,
        vm_name: Some("web-01".to_owned()),
    }
}

fn step_statuses(view: &JobView) -> Vec<(String, StepStatus)> {
    view.steps
        .iter()
        .map(|s| (s.name.clone(), s.status))
        .collect()
}

/// The steps a provisioning (not clustered) plans after its pre-checks.
const PLANNED_AFTER_PRE_CHECKS: [&str; 10] = [
    "Provisioning.CopyImage",
    "Provisioning.CopyProvisioningISO",
    "Provisioning.RegisterVM",
    "Provisioning.WaitForProvisioningKey",
    "Provisioning.PublishProvisioningData",
    "Provisioning.WaitForGuest",
    "Provisioning.RemoveProvisioningKeys",
    "Provisioning.RemoveDvdDrive",
    "Provisioning.RemoveProvisioningISO",
    "Provisioning.MarkProvisioned",
];

#[tokio::test]
async fn a_provision_failed_in_pre_checks_says_so_and_is_not_at_100() {
    let mut host = mock("hv01");
    on!(host, HostCall::Facts).returning(|_| Ok(HostReply::Facts(Box::new(facts("hv01")))));
    let q = queue(config(4, 2, 100), vec![("hv01", host)]);
    let job = q
        .submit(provision_job("Ubuntu 99.04 (not on the host)"))
        .unwrap();
    let done = wait_end(&q, &job.id).await;
    assert_eq!(done.status, JobStatus::Failed, "{done:?}");
    // The failed step says failed; the planned steps never reached say skipped; the
    // compensation after them (nothing to remove) succeeded.
    let mut expected = vec![("Provisioning.PreChecks".to_owned(), StepStatus::Failed)];
    expected.extend(
        PLANNED_AFTER_PRE_CHECKS
            .iter()
            .map(|s| ((*s).to_owned(), StepStatus::Skipped)),
    );
    expected.push(("Provisioning.Compensate".to_owned(), StepStatus::Succeeded));
    assert_eq!(step_statuses(&done), expected, "{done:?}");
    assert!(done.percent < 100, "{done:?}");
    // A step that ran has both times; a skipped one has neither.
    for step in &done.steps {
        let skipped = step.status == StepStatus::Skipped;
        assert_eq!(step.started_at.is_none(), skipped, "{step:?}");
        assert_eq!(step.finished_at.is_none(), skipped, "{step:?}");
    }
}

#[tokio::test]
async fn a_provision_failed_in_a_later_step_keeps_the_earlier_ones_succeeded() {
    let mut host = mock("hv01");
    on!(host, HostCall::Facts).returning(|_| Ok(HostReply::Facts(Box::new(facts("hv01")))));
    on!(host, HostCall::Inventory)
        .returning(|_| Ok(HostReply::Inventory(inventory("hv01", Vec::new()))));
    on!(host, HostCall::CopyImage(_)).returning(|_| {
        Err(aetherv_hyperv::Error::ScriptFailed {
            host: "hv01".to_owned(),
            operation: "copy_image",
            code: "DiskFull".to_owned(),
            message: "no room".to_owned(),
        })
    });
    let q = queue(config(4, 2, 100), vec![("hv01", host)]);
    let job = q.submit(provision_job("Ubuntu 24.04")).unwrap();
    let done = wait_end(&q, &job.id).await;
    assert_eq!(done.status, JobStatus::Failed, "{done:?}");
    assert_eq!(
        step_statuses(&done),
        [
            ("Provisioning.PreChecks".to_owned(), StepStatus::Succeeded),
            ("Provisioning.CopyImage".to_owned(), StepStatus::Failed),
        ]
        .into_iter()
        .chain(
            PLANNED_AFTER_PRE_CHECKS[1..]
                .iter()
                .map(|s| ((*s).to_owned(), StepStatus::Skipped))
        )
        .chain([("Provisioning.Compensate".to_owned(), StepStatus::Succeeded)])
        .collect::<Vec<_>>(),
        "{done:?}"
    );
    assert!(done.percent < 100, "{done:?}");
}

#[tokio::test]
async fn a_cancelled_provision_says_which_step_was_cancelled_and_is_not_at_100() {
    use aetherv_hyperv::ops::{CopiedImage, CopiedIso, DeletedVm, GuestKvp};
    let vm = vm_id(7);
    let mut host = mock("hv01");
    on!(host, HostCall::Facts).returning(|_| Ok(HostReply::Facts(Box::new(facts("hv01")))));
    on!(host, HostCall::Inventory)
        .returning(|_| Ok(HostReply::Inventory(inventory("hv01", Vec::new()))));
    on!(host, HostCall::CopyImage(_)).returning(|_| {
        Ok(HostReply::CopiedImage(CopiedImage {
            vm_folder: "C:\\VMs\\web-01".to_owned(),
            vhdx_path: "C:\\VMs\\web-01\\web-01.vhdx".to_owned(),
            size_bytes: 1000,
            max_size_bytes: None,
        }))
    });
    on!(host, HostCall::CopyIso(_)).returning(|_| {
        Ok(HostReply::CopiedIso(CopiedIso {
            iso_path: "C:\\VMs\\web-01\\linux.iso".to_owned(),
            size_bytes: 10,
        }))
    });
    on!(host, HostCall::RegisterVm(_)).returning(move |_| {
        let mut registered: Vm = serde_json::from_value(serde_json::json!({
            "id": vm, "name": "web-01", "state": 2, "processor_count": 2,
            "memory_startup_bytes": 4u64 << 30
        }))
        .unwrap();
        registered.notes = "aetherv-job:x".to_owned();
        Ok(HostReply::Registered(Box::new(registered)))
    });
    on!(host, HostCall::KvpWriteHost(..)).returning(|_| Ok(HostReply::Written));
    on!(host, HostCall::KvpReadGuest(_))
        .returning(|_| Ok(HostReply::GuestKvp(GuestKvp::default())));
    on!(host, HostCall::Power(..)).returning(|call| match call {
        HostCall::Power(id, action) => Ok(HostReply::Power(outcome(id, action))),
        other => panic!("{other:?}"),
    });
    on!(host, HostCall::DeleteVm { .. }).returning(move |_| {
        Ok(HostReply::Deleted(DeletedVm {
            id: vm,
            name: "web-01".to_owned(),
            removed_paths: vec![],
            kept_paths: vec![],
        }))
    });
    on!(host, HostCall::RemovePath(_)).returning(removed_nothing);
    let mut config = config(4, 2, 100);
    config.provision.poll_interval = Duration::from_secs(3600);
    let q = queue(config, vec![("hv01", host)]);
    let job = q.submit(provision_job("Ubuntu 24.04")).unwrap();
    wait_until(&q, &job.id, "waiting for the key", |v| {
        v.step.as_deref() == Some("Provisioning.WaitForProvisioningKey")
            && v.message
                .as_deref()
                .is_some_and(|m| m.contains("guest agent"))
    })
    .await;
    // Whether the handshake write, the poll or the wait is under way, the step is the same.
    q.cancel(&job.id).unwrap();
    let done = wait_end(&q, &job.id).await;
    assert_eq!(done.status, JobStatus::Cancelled, "{done:?}");
    let steps = step_statuses(&done);
    assert_eq!(
        steps.last(),
        Some(&("Provisioning.Compensate".to_owned(), StepStatus::Succeeded)),
        "{done:?}"
    );
    let cancelled = steps
        .iter()
        .position(|(name, _)| name == "Provisioning.WaitForProvisioningKey")
        .unwrap();
    assert_eq!(steps[cancelled].1, StepStatus::Cancelled, "{done:?}");
    assert!(
        steps[..cancelled]
            .iter()
            .all(|(_, s)| *s == StepStatus::Succeeded),
        "{done:?}"
    );
    // The rest of the plan was skipped.
    assert_eq!(
        steps[cancelled + 1..steps.len() - 1],
        PLANNED_AFTER_PRE_CHECKS[4..]
            .iter()
            .map(|s| ((*s).to_owned(), StepStatus::Skipped))
            .collect::<Vec<_>>()[..],
        "{done:?}"
    );
    assert!(done.percent < 100, "{done:?}");
}

#[tokio::test]
async fn a_stop_job_uses_the_api_name_of_its_action_everywhere() {
    let calls = Arc::new(AtomicUsize::new(0));
    let q = queue(
        config(4, 2, 100),
        vec![("hv01", power_host("hv01", None, Arc::clone(&calls), || {}))],
    );
    let mut job = power_job("hv01", vm_id(3), PowerAction::TurnOff);
    job.parameters = serde_json::json!({ "vm_id": vm_id(3), "action": JobAction::Stop });
    let submitted = q.submit(job).unwrap();
    assert_eq!(submitted.action, Some(JobAction::Stop));
    let done = wait_end(&q, &submitted.id).await;
    let record = serde_json::to_value(&done).unwrap();
    assert_eq!(record["action"], "stop", "{record}");
    assert_eq!(record["parameters"]["action"], "stop", "{record}");
    let (lines, _) = q.lines(&submitted.id).unwrap();
    assert!(
        lines.iter().any(|l| l.message.starts_with("stop: ")),
        "{lines:?}"
    );
    assert!(!serde_json::to_string(&lines).unwrap().contains("turn_off"));
}

fn migrating_vm(id: VmId) -> Vm {
    Vm {
        id,
        name: "web-07".to_owned(),
        state: VmState::Running,
        generation: 2,
        version: None,
        path: Some(r"D:\Hyper-V\web-07".to_owned()),
        processor_count: 2,
        memory_startup_bytes: 4 << 30,
        memory_assigned_bytes: 4 << 30,
        memory_minimum_bytes: 0,
        memory_maximum_bytes: 0,
        dynamic_memory: false,
        uptime: Duration::ZERO,
        creation_time: None,
        notes: String::new(),
        clustered: false,
        disks: vec![aetherv_hyperv::ops::VmDisk {
            path: r"D:\Hyper-V\web-07\Virtual Hard Disks\web-07.vhdx".to_owned(),
            controller_type: "SCSI".to_owned(),
            controller_number: 0,
            controller_location: 0,
            disk_type: "Dynamic".to_owned(),
            max_size_bytes: 64 << 30,
            file_size_bytes: 8 << 30,
            shared: false,
        }],
        dvd_drives: Vec::new(),
        nics: Vec::new(),
        integration_services: Default::default(),
        config: Default::default(),
        checkpoints: Vec::new(),
        merge_percent: None,
    }
}

fn migrate_job(id: VmId, mode: MigrationMode) -> NewJob {
    NewJob {
        work: JobWork::Migrate(Box::new(MigrationPlan {
            vm: id,
            vm_name: "web-07".to_owned(),
            source_host: "hv01".to_owned(),
            target_host: "hv02".to_owned(),
            mode,
            destination_path: Some(r"E:\VMs\web-07".to_owned()),
            clustered: false,
        })),
        host: "hv01".to_owned(),
        vm_id: Some(id),
        vm_name: Some("web-07".to_owned()),
        requested_by: crate::Requester::default(),
        parameters: serde_json::json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_migration_moves_nothing_and_lists_each_problem() {
    let id = vm_id(7);
    let mut hv01 = mock("hv01");
    on!(hv01, HostCall::Vm(_)).returning(move |_| Ok(HostReply::Vm(Box::new(migrating_vm(id)))));
    on!(hv01, HostCall::CompareVm(..)).returning(|_| {
        Ok(HostReply::MigrationCheck(
            aetherv_hyperv::ops::MigrationCheck {
                compatible: false,
                incompatibilities: vec![
                    aetherv_hyperv::ops::Incompatibility {
                        message: "processor-specific features".to_owned(),
                        message_id: None,
                    },
                    aetherv_hyperv::ops::Incompatibility {
                        message: "Not enough memory".to_owned(),
                        message_id: None,
                    },
                ],
            },
        ))
    });
    // No MoveVm expectation: a move would panic the mock.
    let queue = queue(
        config(2, 2, 10),
        vec![("hv01", hv01), ("hv02", mock("hv02"))],
    );
    let job = queue
        .submit(migrate_job(id, MigrationMode::SharedNothing))
        .unwrap();
    let view = wait_end(&queue, &job.id).await;
    assert_eq!(view.status, JobStatus::Failed, "{view:?}");
    let error = view.error.unwrap();
    assert!(
        error.contains("processor-specific features; Not enough memory"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_move_is_cleaned_up_on_the_target_and_the_vm_stays_on_the_source() {
    let id = vm_id(8);
    let mut hv01 = mock("hv01");
    on!(hv01, HostCall::Vm(_)).returning(move |_| Ok(HostReply::Vm(Box::new(migrating_vm(id)))));
    on!(hv01, HostCall::CompareVm(..)).returning(|_| {
        Ok(HostReply::MigrationCheck(
            aetherv_hyperv::ops::MigrationCheck {
                compatible: true,
                incompatibilities: Vec::new(),
            },
        ))
    });
    on!(hv01, HostCall::MigrationStatus(_)).returning(move |_| {
        Ok(HostReply::MigrationProgress(
            aetherv_hyperv::ops::MigrationProgress {
                id,
                active: true,
                percent_complete: 40,
                job_state: Some(4),
                cancellable: true,
                status: None,
                destination_host: Some("hv02".to_owned()),
                error: None,
            },
        ))
    });
    on!(hv01, HostCall::MoveVm(..)).returning(|call| {
        let HostCall::MoveVm(_, target) = call else {
            panic!("{call:?}")
        };
        assert!(target.with_storage && !target.storage_only, "{target:?}");
        assert_eq!(target.destination_path.as_deref(), Some(r"E:\VMs\web-07"));
        Err(aetherv_hyperv::Error::ScriptFailed {
            host: "hv01".to_owned(),
            operation: "move VM",
            code: "MigrationFailed".to_owned(),
            message: "failed at migration source".to_owned(),
        })
    });
    let mut hv02 = mock("hv02");
    on!(hv02, HostCall::Vm(_)).returning(|call| {
        Err(aetherv_hyperv::Error::UnknownVm {
            host: "hv02".to_owned(),
            vm: call.vm_id().unwrap().to_string(),
        })
    });
    let removed = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&removed);
    on!(hv02, HostCall::RemovePath(_)).returning(move |call| {
        let HostCall::RemovePath(path) = call else {
            panic!("{call:?}")
        };
        seen.lock().unwrap().push(path.clone());
        Ok(HostReply::RemovedPath(RemovedPath {
            path,
            removed: true,
        }))
    });
    let queue = queue(config(2, 2, 10), vec![("hv01", hv01), ("hv02", hv02)]);
    let job = queue
        .submit(migrate_job(id, MigrationMode::SharedNothing))
        .unwrap();
    let view = wait_end(&queue, &job.id).await;
    assert_eq!(view.status, JobStatus::Failed, "{view:?}");
    // Only the copy of the VM's disk in the folder the plan named is removed (never the
    // folder itself, which the caller chose and may hold other things).
    assert_eq!(
        *removed.lock().unwrap(),
        vec![r"E:\VMs\web-07\Virtual Hard Disks\web-07.vhdx".to_owned()]
    );
    let cleanup = view.cleanup.unwrap();
    assert_eq!(cleanup.removed.len(), 1, "{cleanup:?}");
    assert!(cleanup.left_behind.is_empty());
}
