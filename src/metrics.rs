//! calld's Prometheus metrics: one typed registry, served at the admin
//! endpoint's `/metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `calld_runs_total` | counter | `outcome` (SPEC 4: `completed`, `notEstablished`, ...) |
//! | `calld_graph_requests_total` | counter | `operation`, `status` (HTTP status, or `error` when no response) |
//! | `calld_graph_request_duration_seconds` | histogram | `operation` |
//! | `calld_token_refreshes_total` | counter | `result` (`ok`, `transient`, `environment`) |
//! | `calld_notifications_total` | counter | `result` (`accepted`, `unauthorized`, `tooLarge`, `invalid`, `unmatched`, ...) |
//! | `calld_spec_files` | gauge | `state` (`valid` / `invalid`) |
//! | `calld_watcher_rescans_total` | counter | |
//! | `calld_next_run_lag_seconds` | gauge | how late the last placement was vs its due time |
//! | `calld_calls_up` | gauge | calls currently established |
//! | `calld_build_info` | gauge (always 1) | `version`, `commit` |
//! | `calld_claims_total` | counter | `result` (`won`, `lost`): claims of due runs on a shared ledger |
//! | `calld_lease_renewals_total` | counter | leases of in-flight runs renewed |
//! | `calld_fenced_requests_total` | counter | requests not sent because the claim's lease ran out |
//! | `calld_ledger_up` | gauge | 1 while the ledger answers, 0 while it does not |
//! | `calld_spec_last_success_timestamp_seconds` | gauge | `spec`: scheduled time of its latest `completed` run (0: never) |
//! | `calld_spec_last_run_timestamp_seconds` | gauge | `spec`: scheduled time of its latest finished run, `canceled` ones aside (0: none) |
//! | `calld_spec_next_run_timestamp_seconds` | gauge | `spec`: due time of its next planned run (0: none) |
//! | `calld_spec_last_outcome` | gauge (1) | `spec`, `outcome`: the outcome of that latest finished run |
//! | `calld_spec_series_omitted` | gauge | specs left out of the per-spec series by the cap |
//!
//! Label values come from the daemon's own vocabulary (outcomes, operation
//! names, HTTP statuses), never from spec content, so cardinality stays
//! small. The exception is the per-spec series (`calld_spec_*`), labelled
//! with the spec's name: they are refreshed from the ledger at each scrape,
//! a removed spec's series go away, and at most [`MAX_SPEC_SERIES`] specs
//! (the first by name) get them; `calld_spec_series_omitted` counts the rest.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// `Content-Type` of [`Metrics::encode`]: the Prometheus text format 0.0.4,
/// which every Prometheus and `promtool check metrics` read.
pub const CONTENT_TYPE_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `Content-Type` of [`Metrics::encode_openmetrics`].
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The run outcomes of SPEC 4, pre-created at zero so that `rate()` and
/// alerts see every series from the start.
pub const OUTCOMES: [&str; 8] = [
    "completed",
    "notEstablished",
    "rejected",
    "failed",
    "unknown",
    "missed",
    "skipped",
    "canceled",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpecLabels {
    spec: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpecOutcomeLabels {
    spec: String,
    outcome: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// At most this many specs get per-spec series (4 each, 5 with the outcome).
pub const MAX_SPEC_SERIES: usize = 1000;

/// One spec's per-spec series.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecSeries {
    pub spec: String,
    pub last_success: Option<jiff::Timestamp>,
    /// The latest finished run (not `canceled`): its scheduled time and outcome.
    pub last_run: Option<(jiff::Timestamp, String)>,
    pub next_run: Option<jiff::Timestamp>,
}

/// The per-spec families and what they hold now.
struct SpecFamilies {
    last_success: Family<SpecLabels, F64Gauge>,
    last_run: Family<SpecLabels, F64Gauge>,
    next_run: Family<SpecLabels, F64Gauge>,
    last_outcome: Family<SpecOutcomeLabels, Gauge>,
    omitted: Gauge,
    /// spec → the outcome label it has now.
    current: std::sync::Mutex<std::collections::BTreeMap<String, Option<String>>>,
}

fn secs(t: jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// Latency buckets for Graph requests: 10 ms to ~41 s, doubling.
fn request_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 2.0, 13,
    ))
}

/// The daemon's metrics. Cheap to clone (every handle is shared); all
/// methods take `&self` and may be called from any thread.
#[derive(Clone)]
pub struct Metrics {
    /// The registry, for encoding; written only in [`Metrics::new`].
    registry: Arc<Registry>,
    runs: Family<OutcomeLabels, Counter>,
    graph_requests: Family<RequestLabels, Counter>,
    graph_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    token_refreshes: Family<ResultLabels, Counter>,
    notifications: Family<ResultLabels, Counter>,
    spec_files: Family<StateLabels, Gauge>,
    watcher_rescans: Counter,
    next_run_lag: F64Gauge,
    calls_up: Gauge,
    specs: Arc<SpecFamilies>,
    claims: Family<ResultLabels, Counter>,
    lease_renewals: Counter,
    fenced: Counter,
    ledger_up: Gauge,
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
    /// A registry with calld's metrics and this build's `calld_build_info`.
    pub fn new() -> Self {
        Self::with_build_info(env!("CARGO_PKG_VERSION"), crate::GIT_COMMIT)
    }

    /// As [`Metrics::new`], with an explicit version and commit (tests).
    pub fn with_build_info(version: &str, commit: &str) -> Self {
        let mut registry = Registry::with_prefix("calld");

        let runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "runs",
            "Runs that reached a final outcome, by outcome",
            runs.clone(),
        );
        for outcome in OUTCOMES {
            let _ = runs.get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            });
        }

        let graph_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "graph_requests",
            "Requests sent to Microsoft Graph, by operation and HTTP status (error: no response)",
            graph_requests.clone(),
        );

        let graph_duration: Family<OperationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "graph_request_duration",
            "Time from sending a Graph request to its response or error",
            Unit::Seconds,
            graph_duration.clone(),
        );

        let token_refreshes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_refreshes",
            "Access token requests to the authority, by result",
            token_refreshes.clone(),
        );

        for result in ["ok", "error"] {
            let _ = token_refreshes.get_or_create(&ResultLabels {
                result: result.to_string(),
            });
        }

        let notifications = Family::<ResultLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications received on the callback listener, by result",
            notifications.clone(),
        );

        let spec_files = Family::<StateLabels, Gauge>::default();
        registry.register(
            "spec_files",
            "Spec files in the calls directory, by state (valid or invalid)",
            spec_files.clone(),
        );
        for state in ["valid", "invalid"] {
            let _ = spec_files.get_or_create(&StateLabels {
                state: state.to_string(),
            });
        }

        let watcher_rescans = Counter::default();
        registry.register(
            "watcher_rescans",
            "Rescans of the calls directory (events, overflow or periodic resync)",
            watcher_rescans.clone(),
        );

        let next_run_lag = F64Gauge::default();
        registry.register_with_unit(
            "next_run_lag",
            "How late the last placement was compared with its due time",
            Unit::Seconds,
            next_run_lag.clone(),
        );

        let calls_up = Gauge::default();
        registry.register("calls_up", "Calls currently established", calls_up.clone());

        let claims = Family::<ResultLabels, Counter>::default();
        registry.register(
            "claims",
            "Claims of due runs on a shared ledger, by result (won, lost)",
            claims.clone(),
        );
        let lease_renewals = Counter::default();
        registry.register(
            "lease_renewals",
            "Leases of in-flight runs renewed",
            lease_renewals.clone(),
        );
        let fenced = Counter::default();
        registry.register(
            "fenced_requests",
            "Create requests not sent because the claim's lease ran out",
            fenced.clone(),
        );
        let ledger_up = Gauge::default();
        ledger_up.set(1);
        registry.register(
            "ledger_up",
            "1 while the ledger answers, 0 while it does not",
            ledger_up.clone(),
        );

        let specs = Arc::new(SpecFamilies {
            last_success: Family::default(),
            last_run: Family::default(),
            next_run: Family::default(),
            last_outcome: Family::default(),
            omitted: Gauge::default(),
            current: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        });
        registry.register(
            "spec_last_success_timestamp_seconds",
            "Per spec: scheduled time of its latest completed run (0: never)",
            specs.last_success.clone(),
        );
        registry.register(
            "spec_last_run_timestamp_seconds",
            "Per spec: scheduled time of its latest finished run (0: none)",
            specs.last_run.clone(),
        );
        registry.register(
            "spec_next_run_timestamp_seconds",
            "Per spec: due time of its next planned run (0: none)",
            specs.next_run.clone(),
        );
        registry.register(
            "spec_last_outcome",
            "Per spec: 1 for the outcome of its latest finished run",
            specs.last_outcome.clone(),
        );
        registry.register(
            "spec_series_omitted",
            "Specs without per-spec series (over the cap of 1000)",
            specs.omitted.clone(),
        );

        registry.register(
            "build",
            "calld build information",
            Info::new(BuildLabels {
                version: version.to_string(),
                commit: commit.to_string(),
            }),
        );

        Metrics {
            registry: Arc::new(registry),
            runs,
            graph_requests,
            graph_duration,
            token_refreshes,
            notifications,
            spec_files,
            watcher_rescans,
            next_run_lag,
            calls_up,
            specs,
            claims,
            lease_renewals,
            fenced,
            ledger_up,
        }
    }

    /// Claims of due runs on a shared ledger: `won` and `lost`.
    pub fn claims(&self, won: u64, lost: u64) {
        for (result, n) in [("won", won), ("lost", lost)] {
            if n > 0 {
                self.claims
                    .get_or_create(&ResultLabels {
                        result: result.to_string(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// The lease of an in-flight run was renewed.
    pub fn lease_renewed(&self) {
        self.lease_renewals.inc();
    }

    /// A request was not sent: its claim's lease ran out first.
    pub fn fenced_request(&self) {
        self.fenced.inc();
    }

    /// Whether the ledger answers.
    pub fn ledger_up(&self, up: bool) {
        self.ledger_up.set(i64::from(up));
    }

    /// Replaces the per-spec series with `rows` (one per current spec; at
    /// most [`MAX_SPEC_SERIES`], the first by name): series of specs not in
    /// `rows` are removed.
    pub fn set_spec_series(&self, mut rows: Vec<SpecSeries>) {
        rows.sort_by(|a, b| a.spec.cmp(&b.spec));
        let omitted = rows.len().saturating_sub(MAX_SPEC_SERIES);
        rows.truncate(MAX_SPEC_SERIES);
        let f = &self.specs;
        let mut current = f.current.lock().unwrap_or_else(|p| p.into_inner());
        let keep: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.spec.as_str()).collect();
        let gone: Vec<String> = current
            .keys()
            .filter(|k| !keep.contains(k.as_str()))
            .cloned()
            .collect();
        for spec in gone {
            let l = SpecLabels { spec: spec.clone() };
            f.last_success.remove(&l);
            f.last_run.remove(&l);
            f.next_run.remove(&l);
            if let Some(Some(o)) = current.remove(&spec) {
                f.last_outcome
                    .remove(&SpecOutcomeLabels { spec, outcome: o });
            }
        }
        for r in rows {
            let l = SpecLabels {
                spec: r.spec.clone(),
            };
            f.last_success
                .get_or_create(&l)
                .set(r.last_success.map_or(0.0, secs));
            f.next_run
                .get_or_create(&l)
                .set(r.next_run.map_or(0.0, secs));
            let entry = current.entry(r.spec.clone()).or_insert(None);
            match r.last_run {
                Some((at, outcome)) => {
                    f.last_run.get_or_create(&l).set(secs(at));
                    if entry.as_deref() != Some(outcome.as_str()) {
                        if let Some(old) = entry.take() {
                            f.last_outcome.remove(&SpecOutcomeLabels {
                                spec: r.spec.clone(),
                                outcome: old,
                            });
                        }
                        f.last_outcome
                            .get_or_create(&SpecOutcomeLabels {
                                spec: r.spec.clone(),
                                outcome: outcome.clone(),
                            })
                            .set(1);
                        *entry = Some(outcome);
                    }
                }
                None => {
                    f.last_run.get_or_create(&l).set(0.0);
                    if let Some(old) = entry.take() {
                        f.last_outcome.remove(&SpecOutcomeLabels {
                            spec: r.spec.clone(),
                            outcome: old,
                        });
                    }
                }
            }
        }
        f.omitted.set(i64::try_from(omitted).unwrap_or(i64::MAX));
    }

    /// A run reached its final `outcome` (SPEC 4 names: `completed`, ...).
    pub fn run_finished(&self, outcome: &str) {
        self.runs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// One Graph request (`operation`: e.g. `createCall`, `deleteCall`,
    /// `keepAlive`) answered with HTTP `status`, or `None` when no response
    /// came (network error, timeout), after `elapsed`.
    pub fn graph_request(&self, operation: &str, status: Option<u16>, elapsed: Duration) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.graph_requests
            .get_or_create(&RequestLabels {
                operation: operation.to_string(),
                status,
            })
            .inc();
        self.graph_duration
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One access-token request finished (`ok`: a token was obtained).
    pub fn token_refresh(&self, ok: bool) {
        self.token_refreshes
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// `n` access-token requests finished, by outcome: `ok`, `transient`
    /// (unreachable, 5xx, throttled) or `environment` (wrong secret,
    /// missing consent, bad certificate).
    pub fn token_refreshes_add(&self, result: &str, n: u64) {
        if n > 0 {
            self.token_refreshes
                .get_or_create(&ResultLabels {
                    result: result.to_string(),
                })
                .inc_by(n);
        }
    }

    /// One notification request handled, with its `result`
    /// (`accepted`, `unauthorized`, `tooLarge`, `invalid`, `unmatched`, ...).
    pub fn notification(&self, result: &str) {
        self.notifications
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// `n` notification requests handled with the same `result` (the
    /// listener's own counters, synced by the daemon).
    pub fn notifications_add(&self, result: &str, n: u64) {
        if n > 0 {
            self.notifications
                .get_or_create(&ResultLabels {
                    result: result.to_string(),
                })
                .inc_by(n);
        }
    }

    /// After a scan: how many spec files are valid and invalid.
    pub fn set_spec_files(&self, valid: u64, invalid: u64) {
        for (state, n) in [("valid", valid), ("invalid", invalid)] {
            self.spec_files
                .get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// One rescan of the calls directory.
    pub fn watcher_rescan(&self) {
        self.watcher_rescans.inc();
    }

    /// A run was placed `lag` after its due time (zero when on time).
    pub fn placement_lag(&self, lag: Duration) {
        self.next_run_lag.set(lag.as_secs_f64());
    }

    /// How many calls are established now.
    pub fn set_calls_up(&self, n: u64) {
        self.calls_up.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The Prometheus text format (0.0.4): [`CONTENT_TYPE_TEXT`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// The OpenMetrics text format (ends with `# EOF`): [`CONTENT_TYPE_OPENMETRICS`].
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `name{labels} value`, if present.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn per_spec_series_follow_the_specs() {
        let m = Metrics::with_build_info("9.9.9", "abc1234");
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let row = |spec: &str, outcome: Option<&str>| SpecSeries {
            spec: spec.into(),
            last_success: Some(t("2026-12-01T08:00:00Z")),
            last_run: outcome.map(|o| (t("2026-12-02T08:00:00Z"), o.to_string())),
            next_run: Some(t("2026-12-03T08:00:00Z")),
        };
        m.set_spec_series(vec![row("a", Some("failed")), row("b", None)]);
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "calld_spec_last_success_timestamp_seconds{spec=\"a\"}"
            ),
            Some(t("2026-12-01T08:00:00Z").as_second() as f64),
            "{text}"
        );
        assert_eq!(
            sample(&text, "calld_spec_last_run_timestamp_seconds{spec=\"a\"}"),
            Some(t("2026-12-02T08:00:00Z").as_second() as f64)
        );
        assert_eq!(
            sample(&text, "calld_spec_next_run_timestamp_seconds{spec=\"b\"}"),
            Some(t("2026-12-03T08:00:00Z").as_second() as f64)
        );
        assert_eq!(
            sample(&text, "calld_spec_last_run_timestamp_seconds{spec=\"b\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "calld_spec_last_outcome{spec=\"a\",outcome=\"failed\"}"
            ),
            Some(1.0)
        );
        // a new outcome replaces the old series; a removed spec's go away
        m.set_spec_series(vec![row("a", Some("completed"))]);
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "calld_spec_last_outcome{spec=\"a\",outcome=\"completed\"}"
            ),
            Some(1.0)
        );
        assert!(
            !text.contains("calld_spec_last_outcome{spec=\"a\",outcome=\"failed\"}"),
            "{text}"
        );
        assert!(!text.contains("spec=\"b\""), "{text}");
        // the cap
        let many: Vec<SpecSeries> = (0..MAX_SPEC_SERIES + 5)
            .map(|i| row(&format!("s{i:05}"), None))
            .collect();
        m.set_spec_series(many);
        let text = m.encode();
        assert_eq!(sample(&text, "calld_spec_series_omitted"), Some(5.0));
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("calld_spec_next_run_timestamp_seconds{"))
                .count(),
            MAX_SPEC_SERIES
        );
    }

    #[test]
    fn outcomes_start_at_zero_and_count() {
        let m = Metrics::with_build_info("9.9.9", "abc1234");
        let text = m.encode();
        for o in OUTCOMES {
            assert_eq!(
                sample(&text, &format!("calld_runs_total{{outcome=\"{o}\"}}")),
                Some(0.0),
                "{o}\n{text}"
            );
        }
        m.run_finished("completed");
        m.run_finished("completed");
        m.run_finished("missed");
        let text = m.encode();
        assert_eq!(
            sample(&text, "calld_runs_total{outcome=\"completed\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "calld_runs_total{outcome=\"missed\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "calld_runs_total{outcome=\"failed\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn graph_requests_count_and_time() {
        let m = Metrics::with_build_info("9.9.9", "abc1234");
        m.graph_request("createCall", Some(201), Duration::from_millis(30));
        m.graph_request("createCall", Some(429), Duration::from_millis(5));
        m.graph_request("createCall", None, Duration::from_secs(30));
        let text = m.encode();
        for status in ["201", "429", "error"] {
            assert_eq!(
                sample(
                    &text,
                    &format!(
                        "calld_graph_requests_total{{operation=\"createCall\",status=\"{status}\"}}"
                    )
                ),
                Some(1.0),
                "{text}"
            );
        }
        assert_eq!(
            sample(
                &text,
                "calld_graph_request_duration_seconds_count{operation=\"createCall\"}"
            ),
            Some(3.0)
        );
        // 5 ms falls in the first bucket (10 ms); 30 ms not before 40 ms.
        assert_eq!(
            sample(
                &text,
                "calld_graph_request_duration_seconds_bucket{operation=\"createCall\",le=\"0.01\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "calld_graph_request_duration_seconds_bucket{operation=\"createCall\",le=\"+Inf\"}"
            ),
            Some(3.0)
        );
        let sum = sample(
            &text,
            "calld_graph_request_duration_seconds_sum{operation=\"createCall\"}",
        )
        .unwrap();
        assert!((sum - 30.035).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn gauges_and_plain_counters() {
        let m = Metrics::with_build_info("9.9.9", "abc1234");
        m.set_spec_files(7, 2);
        m.set_spec_files(8, 1);
        m.watcher_rescan();
        m.placement_lag(Duration::from_millis(1500));
        m.set_calls_up(3);
        m.token_refresh(true);
        m.token_refresh(false);
        m.notification("accepted");
        m.notification("unauthorized");
        m.notification("accepted");
        let text = m.encode();
        assert_eq!(
            sample(&text, "calld_spec_files{state=\"valid\"}"),
            Some(8.0)
        );
        assert_eq!(
            sample(&text, "calld_spec_files{state=\"invalid\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "calld_watcher_rescans_total"), Some(1.0));
        assert_eq!(sample(&text, "calld_next_run_lag_seconds"), Some(1.5));
        assert_eq!(sample(&text, "calld_calls_up"), Some(3.0));
        assert_eq!(
            sample(&text, "calld_token_refreshes_total{result=\"error\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "calld_notifications_total{result=\"accepted\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "calld_build_info{version=\"9.9.9\",commit=\"abc1234\"}"
            ),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn every_family_has_help_and_type() {
        // Families without a series yet (no label set seen) are left out of
        // the text format, so record one of each first.
        let m = Metrics::new();
        m.graph_request("createCall", Some(201), Duration::from_millis(1));
        m.token_refresh(true);
        m.notification("accepted");
        let text = m.encode();
        for family in [
            "calld_runs_total",
            "calld_graph_requests_total",
            "calld_graph_request_duration_seconds",
            "calld_token_refreshes_total",
            "calld_notifications_total",
            "calld_spec_files",
            "calld_watcher_rescans_total",
            "calld_next_run_lag_seconds",
            "calld_calls_up",
            "calld_build_info",
        ] {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family}\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family}\n{text}"
            );
        }
    }

    #[test]
    fn build_info_is_this_build() {
        assert!(!crate::GIT_COMMIT.is_empty());
        assert!(
            crate::GIT_COMMIT
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
            "{}",
            crate::GIT_COMMIT
        );
        assert_eq!(
            crate::VERSION_LONG,
            format!("{} ({})", env!("CARGO_PKG_VERSION"), crate::GIT_COMMIT)
        );
        let text = Metrics::new().encode();
        let series = format!(
            "calld_build_info{{version=\"{}\",commit=\"{}\"}}",
            env!("CARGO_PKG_VERSION"),
            crate::GIT_COMMIT
        );
        assert_eq!(sample(&text, &series), Some(1.0), "{text}");
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let m = Metrics::new();
        m.run_finished("completed");
        let text = m.encode_openmetrics();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("calld_runs_total{outcome=\"completed\"} 1"));
    }
}
