//! Prometheus metrics: jobs, host calls, inventory refreshes and HTTP requests.
//!
//! [`Metrics`] owns one `prometheus-client` registry and its metric families; every recording
//! method is lock-free apart from the families' short read locks. [`handler`] serves
//! [`Metrics::render`] as OpenMetrics text on `GET /metrics`. [`Metered`] is a
//! [`Middleware`] that records every host call it forwards, labelled by
//! [`aetherv_hyperv::ops::OperationKind::name`]; [`metered`] puts it in front of a host.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `aetherv_jobs` | gauge: jobs in the history per status | `type`, `status` |
//! | `aetherv_jobs_finished_total` | counter | `type`, `status` |
//! | `aetherv_job_duration_seconds` | histogram | `type` |
//! | `aetherv_winrm_requests_total` | counter: host operations started | `host` |
//! | `aetherv_winrm_failures_total` | counter: host operations that failed | `host` |
//! | `aetherv_host_operation_duration_seconds` | histogram | `operation` |
//! | `aetherv_inventory_refresh_duration_seconds` | histogram | — |
//! | `aetherv_inventory_refresh_failures_total` | counter | `host` |
//! | `aetherv_hosts_connected`, `aetherv_hosts`, `aetherv_vms` | gauges | — |
//! | `aetherv_http_requests_total` | counter | `route`, `status` |
//! | `aetherv_orphaned_vms` | gauge: VMs marked by a provisioning job this server is not running | `host` |
//! | `aetherv_host_maintenance_state` | gauge: 1 for the host's maintenance state, 0 for the others | `host`, `state` |

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

use aetherv_hyperv::Result as HostResult;
use aetherv_hyperv::ops::layer::{Layered, Middleware};
use aetherv_hyperv::ops::{HostCall, HostReply, HyperVHost, OperationKind};
use async_trait::async_trait;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the job gauge and the finished-jobs counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobLabels {
    r#type: String,
    status: String,
}

/// Labels of the job duration histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobTypeLabels {
    r#type: String,
}

/// Labels of the per-host counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

/// Labels of the host maintenance state gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HostStateLabels {
    host: String,
    state: String,
}

/// Labels of the host operation histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

/// Labels of the HTTP request counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets for host operations: 10 ms to about 5.5 minutes.
fn operation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Buckets for whole jobs: 1 s to about 4.5 hours.
fn job_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// Saturating conversion for gauges (an `i64` holds any real count).
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The server's metrics: one registry and the families the server records into.
pub struct Metrics {
    registry: Registry,
    jobs: Family<JobLabels, Gauge<i64, AtomicI64>>,
    jobs_finished: Family<JobLabels, Counter>,
    job_duration: HistogramFamily<JobTypeLabels>,
    winrm_requests: Family<HostLabels, Counter>,
    winrm_failures: Family<HostLabels, Counter>,
    host_operation_duration: HistogramFamily<OperationLabels>,
    refresh_duration: Histogram,
    refresh_failures: Family<HostLabels, Counter>,
    hosts_connected: Gauge<i64, AtomicI64>,
    hosts_total: Gauge<i64, AtomicI64>,
    vms: Gauge<i64, AtomicI64>,
    http_requests: Family<HttpLabels, Counter>,
    orphaned_vms: Family<HostLabels, Gauge<i64, AtomicI64>>,
    host_state: Family<HostStateLabels, Gauge<i64, AtomicI64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered (and no samples yet).
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let jobs = Family::<JobLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "aetherv_jobs",
            "Jobs in the job history by type and status",
            jobs.clone(),
        );
        let jobs_finished = Family::<JobLabels, Counter>::default();
        registry.register(
            "aetherv_jobs_finished",
            "Jobs that reached a final status",
            jobs_finished.clone(),
        );
        let job_duration: HistogramFamily<JobTypeLabels> =
            Family::new_with_constructor(job_histogram);
        registry.register(
            "aetherv_job_duration_seconds",
            "Wall time of finished jobs from start to end",
            job_duration.clone(),
        );
        let winrm_requests = Family::<HostLabels, Counter>::default();
        registry.register(
            "aetherv_winrm_requests",
            "Host operations sent over WinRM",
            winrm_requests.clone(),
        );
        let winrm_failures = Family::<HostLabels, Counter>::default();
        registry.register(
            "aetherv_winrm_failures",
            "Host operations that failed",
            winrm_failures.clone(),
        );
        let host_operation_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(operation_histogram);
        registry.register(
            "aetherv_host_operation_duration_seconds",
            "Duration of typed host operations",
            host_operation_duration.clone(),
        );
        let refresh_duration = operation_histogram();
        registry.register(
            "aetherv_inventory_refresh_duration_seconds",
            "Duration of one host's inventory refresh",
            refresh_duration.clone(),
        );
        let refresh_failures = Family::<HostLabels, Counter>::default();
        registry.register(
            "aetherv_inventory_refresh_failures",
            "Inventory refreshes that failed",
            refresh_failures.clone(),
        );
        let hosts_connected = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "aetherv_hosts_connected",
            "Hosts whose last refresh succeeded",
            hosts_connected.clone(),
        );
        let hosts_total = Gauge::<i64, AtomicI64>::default();
        registry.register("aetherv_hosts", "Configured hosts", hosts_total.clone());
        let vms = Gauge::<i64, AtomicI64>::default();
        registry.register("aetherv_vms", "VMs in the inventory", vms.clone());
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "aetherv_http_requests",
            "HTTP requests answered, by route template and status code",
            http_requests.clone(),
        );
        let orphaned_vms = Family::<HostLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "aetherv_orphaned_vms",
            "VMs whose notes mark a provisioning job this server is not running",
            orphaned_vms.clone(),
        );
        let host_state = Family::<HostStateLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "aetherv_host_maintenance_state",
            "1 for the host's maintenance state (active, draining, maintenance, resuming, failed_drain), 0 for the others",
            host_state.clone(),
        );
        Self {
            registry,
            jobs,
            jobs_finished,
            job_duration,
            winrm_requests,
            winrm_failures,
            host_operation_duration,
            refresh_duration,
            refresh_failures,
            hosts_connected,
            hosts_total,
            vms,
            http_requests,
            orphaned_vms,
            host_state,
        }
    }

    /// A job of `job_type` moved from status `from` (`None`: it is new) to `to`.
    pub fn job_status(&self, job_type: &str, from: Option<&str>, to: &str) {
        if let Some(from) = from {
            if from == to {
                return;
            }
            self.jobs
                .get_or_create(&JobLabels {
                    r#type: job_type.to_owned(),
                    status: from.to_owned(),
                })
                .dec();
        }
        self.jobs
            .get_or_create(&JobLabels {
                r#type: job_type.to_owned(),
                status: to.to_owned(),
            })
            .inc();
    }

    /// A job of `job_type` finished with `status` after `duration`.
    pub fn job_finished(&self, job_type: &str, status: &str, duration: Duration) {
        self.jobs_finished
            .get_or_create(&JobLabels {
                r#type: job_type.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.job_duration
            .get_or_create(&JobTypeLabels {
                r#type: job_type.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// A finished job with `status` left the bounded job history.
    pub fn job_forgotten(&self, job_type: &str, status: &str) {
        self.jobs
            .get_or_create(&JobLabels {
                r#type: job_type.to_owned(),
                status: status.to_owned(),
            })
            .dec();
    }

    /// One host operation (`operation`, e.g. `inventory`) on `host` took `duration`.
    pub fn host_call(&self, host: &str, operation: &str, duration: Duration, ok: bool) {
        let labels = HostLabels {
            host: host.to_owned(),
        };
        self.winrm_requests.get_or_create(&labels).inc();
        if !ok {
            self.winrm_failures.get_or_create(&labels).inc();
        }
        self.host_operation_duration
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// One inventory refresh of `host` took `duration`.
    pub fn refresh(&self, host: &str, duration: Duration, ok: bool) {
        self.refresh_duration.observe(duration.as_secs_f64());
        if !ok {
            self.refresh_failures
                .get_or_create(&HostLabels {
                    host: host.to_owned(),
                })
                .inc();
        }
    }

    /// The inventory's current size.
    pub fn set_inventory(&self, hosts_connected: u64, hosts_total: u64, vms: u64) {
        self.hosts_connected.set(gauge_value(hosts_connected));
        self.hosts_total.set(gauge_value(hosts_total));
        self.vms.set(gauge_value(vms));
    }

    /// `host` is in maintenance state `state` (every state gets a series: 1 for this one).
    pub fn set_host_state(&self, host: &str, state: aetherv_hyperv::ops::HostState) {
        for s in aetherv_hyperv::ops::HostState::ALL {
            self.host_state
                .get_or_create(&HostStateLabels {
                    host: host.to_owned(),
                    state: s.as_str().to_owned(),
                })
                .set(i64::from(s == state));
        }
    }

    /// `count` VMs on `host` are orphaned (see [`crate::orphan`]).
    pub fn set_orphaned_vms(&self, host: &str, count: u64) {
        self.orphaned_vms
            .get_or_create(&HostLabels {
                host: host.to_owned(),
            })
            .set(gauge_value(count));
    }

    /// One HTTP request to the route template `route` was answered with `status`.
    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Every metric in the OpenMetrics text format (ends with `# EOF`).
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing into a String cannot fail; keep the output well-formed regardless.
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }
}

/// `GET /metrics`: [`Metrics::render`] as `application/openmetrics-text`.
pub async fn handler(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics.render(),
    )
        .into_response()
}

/// Records every host call into [`Metrics`]: requests, failures and duration per host and
/// operation; an inventory call also counts as an inventory refresh. Whatever stands behind
/// it (the deployment gate, timeouts) is part of the call: a refused call counts as failed.
#[derive(Debug, Clone)]
pub struct Metered(pub Arc<Metrics>);

#[async_trait]
impl Middleware for Metered {
    async fn handle(&self, next: &dyn HyperVHost, call: HostCall) -> HostResult<HostReply> {
        let kind = call.kind();
        let started = Instant::now();
        let result = next.call(call).await;
        let elapsed = started.elapsed();
        let host = next.host_name();
        self.0.host_call(host, kind.name(), elapsed, result.is_ok());
        if kind == OperationKind::Inventory {
            self.0.refresh(host, elapsed, result.is_ok());
        }
        result
    }
}

/// `host` behind a [`Metered`] layer recording into `metrics`.
#[must_use]
pub fn metered(host: Arc<dyn HyperVHost>, metrics: Arc<Metrics>) -> Arc<dyn HyperVHost> {
    Arc::new(Layered::new(host, Metered(metrics)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use aetherv_hyperv::ops::{HyperVHostExt, Inventory, MockHyperVHost, RemovedPath, VmId};
    use aetherv_hyperv::psjson::Timestamp;
    use axum::body::to_bytes;

    use super::*;

    /// One parsed sample line: metric name, labels, value.
    type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

    /// Parses the OpenMetrics text into samples (comments skipped).
    fn samples(text: &str) -> Samples {
        let mut out = Samples::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value: f64 = value.parse().expect("numeric sample value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let mut labels = BTreeMap::new();
                    for pair in body.split(',').filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once('=').expect("label pair");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .expect("quoted label value");
                        labels.insert(k.to_owned(), v.to_owned());
                    }
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            assert!(
                out.insert((name, labels), value).is_none(),
                "duplicate series in {line}"
            );
        }
        out
    }

    fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        samples.get(&(name.to_owned(), labels)).copied()
    }

    #[test]
    fn render_ends_with_eof_and_lists_families() {
        let text = Metrics::new().render();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for family in [
            "aetherv_jobs gauge",
            "aetherv_jobs_finished counter",
            "aetherv_job_duration_seconds histogram",
            "aetherv_winrm_requests counter",
            "aetherv_winrm_failures counter",
            "aetherv_host_operation_duration_seconds histogram",
            "aetherv_inventory_refresh_duration_seconds histogram",
            "aetherv_inventory_refresh_failures counter",
            "aetherv_hosts_connected gauge",
            "aetherv_hosts gauge",
            "aetherv_vms gauge",
            "aetherv_http_requests counter",
            "aetherv_orphaned_vms gauge",
        ] {
            assert!(
                text.lines().any(|l| l == format!("# TYPE {family}")),
                "missing {family} in {text}"
            );
        }
    }

    #[test]
    fn job_gauges_follow_status_changes_and_forgetting() {
        let m = Metrics::new();
        m.job_status("provision", None, "queued");
        m.job_status("provision", None, "queued");
        m.job_status("power", None, "queued");
        m.job_status("provision", Some("queued"), "running");
        let s = samples(&m.render());
        let jobs = |s: &Samples, t: &str, st: &str| {
            value(s, "aetherv_jobs", &[("status", st), ("type", t)])
        };
        assert_eq!(jobs(&s, "provision", "queued"), Some(1.0));
        assert_eq!(jobs(&s, "provision", "running"), Some(1.0));
        assert_eq!(jobs(&s, "power", "queued"), Some(1.0));

        m.job_status("provision", Some("running"), "succeeded");
        m.job_finished("provision", "succeeded", Duration::from_secs(3));
        let s = samples(&m.render());
        assert_eq!(jobs(&s, "provision", "running"), Some(0.0));
        assert_eq!(jobs(&s, "provision", "succeeded"), Some(1.0));
        assert_eq!(
            value(
                &s,
                "aetherv_jobs_finished_total",
                &[("status", "succeeded"), ("type", "provision")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "aetherv_job_duration_seconds_count",
                &[("type", "provision")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "aetherv_job_duration_seconds_sum",
                &[("type", "provision")]
            ),
            Some(3.0)
        );
        // 3 s falls into the 4 s bucket but not the 2 s one.
        assert_eq!(
            value(
                &s,
                "aetherv_job_duration_seconds_bucket",
                &[("le", "2.0"), ("type", "provision")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &s,
                "aetherv_job_duration_seconds_bucket",
                &[("le", "4.0"), ("type", "provision")]
            ),
            Some(1.0)
        );

        m.job_forgotten("provision", "succeeded");
        let s = samples(&m.render());
        assert_eq!(jobs(&s, "provision", "succeeded"), Some(0.0));
        // The counter of finished jobs is not affected by forgetting.
        assert_eq!(
            value(
                &s,
                "aetherv_jobs_finished_total",
                &[("status", "succeeded"), ("type", "provision")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn host_states_are_one_hot_gauges() {
        let m = Metrics::new();
        m.set_host_state("hv01", aetherv_hyperv::ops::HostState::Draining);
        m.set_host_state("hv01", aetherv_hyperv::ops::HostState::Maintenance);
        let s = samples(&m.render());
        let of = |state: &str| {
            value(
                &s,
                "aetherv_host_maintenance_state",
                &[("host", "hv01"), ("state", state)],
            )
        };
        assert_eq!(of("maintenance"), Some(1.0));
        assert_eq!(of("draining"), Some(0.0));
        assert_eq!(of("active"), Some(0.0));
    }

    #[test]
    fn orphaned_vms_are_a_gauge_per_host() {
        let m = Metrics::new();
        m.set_orphaned_vms("hv01", 2);
        m.set_orphaned_vms("hv02", 0);
        m.set_orphaned_vms("hv01", 1);
        let s = samples(&m.render());
        assert_eq!(
            value(&s, "aetherv_orphaned_vms", &[("host", "hv01")]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "aetherv_orphaned_vms", &[("host", "hv02")]),
            Some(0.0)
        );
    }

    #[test]
    fn host_calls_refreshes_inventory_and_http_requests_are_counted() {
        let m = Metrics::new();
        m.host_call("hv01", "power", Duration::from_millis(5), true);
        m.host_call("hv01", "power", Duration::from_millis(5), false);
        m.host_call("hv02", "facts", Duration::from_millis(5), true);
        m.refresh("hv02", Duration::from_millis(50), false);
        m.refresh("hv01", Duration::from_millis(50), true);
        m.set_inventory(4, 5, 40);
        m.http_request("/api/v1/vms/{id}", 200);
        m.http_request("/api/v1/vms/{id}", 200);
        m.http_request("/api/v1/vms/{id}", 404);
        let s = samples(&m.render());
        let req = |h| value(&s, "aetherv_winrm_requests_total", &[("host", h)]);
        let fail = |h| value(&s, "aetherv_winrm_failures_total", &[("host", h)]);
        assert_eq!(req("hv01"), Some(2.0));
        assert_eq!(fail("hv01"), Some(1.0));
        assert_eq!(req("hv02"), Some(1.0));
        assert_eq!(fail("hv02"), None);
        assert_eq!(
            value(
                &s,
                "aetherv_host_operation_duration_seconds_count",
                &[("operation", "power")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(&s, "aetherv_inventory_refresh_duration_seconds_count", &[]),
            Some(2.0)
        );
        assert_eq!(
            value(
                &s,
                "aetherv_inventory_refresh_failures_total",
                &[("host", "hv02")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "aetherv_inventory_refresh_failures_total",
                &[("host", "hv01")]
            ),
            None
        );
        assert_eq!(value(&s, "aetherv_hosts_connected", &[]), Some(4.0));
        assert_eq!(value(&s, "aetherv_hosts", &[]), Some(5.0));
        assert_eq!(value(&s, "aetherv_vms", &[]), Some(40.0));
        let http = |st| {
            value(
                &s,
                "aetherv_http_requests_total",
                &[("route", "/api/v1/vms/{id}"), ("status", st)],
            )
        };
        assert_eq!(http("200"), Some(2.0));
        assert_eq!(http("404"), Some(1.0));

        m.set_inventory(3, 5, 38);
        let s = samples(&m.render());
        assert_eq!(value(&s, "aetherv_hosts_connected", &[]), Some(3.0));
        assert_eq!(value(&s, "aetherv_vms", &[]), Some(38.0));
    }

    #[tokio::test]
    async fn handler_serves_openmetrics() {
        let m = Arc::new(Metrics::new());
        m.http_request("/healthz", 200);
        let response = handler(State(m)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(CONTENT_TYPE.as_bytes())
        );
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        let s = samples(&text);
        assert_eq!(
            value(
                &s,
                "aetherv_http_requests_total",
                &[("route", "/healthz"), ("status", "200")]
            ),
            Some(1.0)
        );
    }

    fn mock(name: &str) -> MockHyperVHost {
        let mut host = MockHyperVHost::new();
        host.expect_host_name().return_const(name.to_owned());
        host
    }

    #[tokio::test]
    async fn metered_host_counts_and_passes_results_through() {
        let metrics = Arc::new(Metrics::new());

        let mut one = mock("hv01");
        one.expect_call()
            .withf(|c| matches!(c, HostCall::RemovePath(p) if p == r"C:\VMs\web-01"))
            .times(1)
            .returning(|call| match call {
                HostCall::RemovePath(path) => Ok(HostReply::RemovedPath(RemovedPath {
                    path,
                    removed: true,
                })),
                other => panic!("unexpected {other:?}"),
            });
        one.expect_call()
            .withf(|c| matches!(c, HostCall::Inventory))
            .times(1)
            .returning(|_| {
                Ok(HostReply::Inventory(Inventory {
                    host: "hv01".to_owned(),
                    collected_at: Timestamp::from_unix_millis(1_700_000_000_000),
                    vms: Vec::new(),
                    digest: None,
                    unchanged: false,
                }))
            });
        let mut two = mock("hv02");
        two.expect_call()
            .withf(|c| matches!(c, HostCall::Vm(_)))
            .times(1)
            .returning(|call| {
                Err(aetherv_hyperv::Error::UnknownVm {
                    host: "hv02".to_owned(),
                    vm: call.vm_id().map(|id| id.0.to_string()).unwrap_or_default(),
                })
            });
        two.expect_call()
            .withf(|c| matches!(c, HostCall::Inventory))
            .times(1)
            .returning(|_| {
                Err(aetherv_hyperv::Error::UnknownVm {
                    host: "hv02".to_owned(),
                    vm: "all".to_owned(),
                })
            });

        let one = metered(Arc::new(one), Arc::clone(&metrics));
        let two = metered(Arc::new(two), Arc::clone(&metrics));
        assert_eq!(one.host_name(), "hv01");

        let removed = one
            .remove_path(r"C:\VMs\web-01".to_owned())
            .await
            .expect("success passes through");
        assert_eq!(
            removed,
            RemovedPath {
                path: r"C:\VMs\web-01".to_owned(),
                removed: true
            }
        );
        let inventory = one.inventory().await.expect("inventory passes through");
        assert_eq!(inventory.host, "hv01");
        assert_eq!(inventory.collected_at.unix_millis(), 1_700_000_000_000);

        let id = VmId(uuid::Uuid::from_u128(7));
        match two.vm(id).await {
            Err(aetherv_hyperv::Error::UnknownVm { host, vm }) => {
                assert_eq!(host, "hv02");
                assert_eq!(vm, id.0.to_string());
            }
            other => panic!("error not passed through: {other:?}"),
        }
        assert!(matches!(
            two.inventory().await,
            Err(aetherv_hyperv::Error::UnknownVm { .. })
        ));

        let s = samples(&metrics.render());
        let req = |h| value(&s, "aetherv_winrm_requests_total", &[("host", h)]);
        let fail = |h| value(&s, "aetherv_winrm_failures_total", &[("host", h)]);
        assert_eq!(req("hv01"), Some(2.0));
        assert_eq!(fail("hv01"), None);
        assert_eq!(req("hv02"), Some(2.0));
        assert_eq!(fail("hv02"), Some(2.0));
        let op = |o| {
            value(
                &s,
                "aetherv_host_operation_duration_seconds_count",
                &[("operation", o)],
            )
        };
        assert_eq!(op("remove_path"), Some(1.0));
        assert_eq!(op("inventory"), Some(2.0));
        assert_eq!(op("vm"), Some(1.0));
        assert_eq!(op("facts"), None);
        assert_eq!(
            value(&s, "aetherv_inventory_refresh_duration_seconds_count", &[]),
            Some(2.0)
        );
        assert_eq!(
            value(
                &s,
                "aetherv_inventory_refresh_failures_total",
                &[("host", "hv02")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "aetherv_inventory_refresh_failures_total",
                &[("host", "hv01")]
            ),
            None
        );
    }

    struct Refuse;

    #[async_trait]
    impl Middleware for Refuse {
        async fn handle(&self, _next: &dyn HyperVHost, _call: HostCall) -> HostResult<HostReply> {
            Err(aetherv_hyperv::Error::ScriptFailed {
                host: "hv09".to_owned(),
                operation: "deploy",
                code: "DeployFailed".to_owned(),
                message: "disk full".to_owned(),
            })
        }
    }

    #[tokio::test]
    async fn a_closed_gate_stops_the_call_and_counts_a_failure() {
        let metrics = Arc::new(Metrics::new());
        // No expectations: a forwarded call would panic the mock.
        let gated: Arc<dyn HyperVHost> = Arc::new(Layered::new(Arc::new(mock("hv09")), Refuse));
        let host = metered(gated, Arc::clone(&metrics));
        let err = host.facts().await.expect_err("the gate refuses");
        assert!(err.to_string().contains("disk full"), "{err}");
        let samples = samples(&metrics.render());
        assert_eq!(
            value(
                &samples,
                "aetherv_winrm_failures_total",
                &[("host", "hv09")]
            ),
            Some(1.0)
        );
    }
}
