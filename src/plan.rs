//! `calld plan`: per spec, the next run times (in its time zone and UTC),
//! the permissions it needs and its warnings. Pure: `now` is passed in.

use jiff::Timestamp;
use serde::Serialize;
use std::fmt::Write;

use crate::duration::format_duration;
use crate::schedule::Trigger;
use crate::spec::{Diagnostic, Severity, Spec};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecPlan {
    pub name: String,
    pub file: String,
    pub line: u64,
    pub suspended: bool,
    /// `once` (unscheduled: placed when first seen, once per revision),
    /// `at` or `cron`.
    pub kind: &'static str,
    /// The schedule in words.
    pub schedule: String,
    pub timezone: Option<String>,
    /// The next nominal run times (jitter not included).
    pub runs: Vec<PlannedRun>,
    pub permissions: Vec<&'static str>,
    /// The first 12 hex digits of the spec's revision.
    pub revision: String,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedRun {
    /// RFC 3339 in UTC.
    pub utc: String,
    /// RFC 3339 with the spec's offset and zone name.
    pub local: String,
}

pub fn plan_spec(
    spec: &Spec,
    now: Timestamp,
    count: usize,
    diagnostics: &[Diagnostic],
) -> SpecPlan {
    let (kind, schedule, timezone, runs) = match &spec.schedule {
        None => (
            "once",
            "once, as soon as it is seen (again after each change)".to_string(),
            None,
            Vec::new(),
        ),
        Some(s) => {
            let mut words = match &s.trigger {
                Trigger::At(t) => format!("at {t}"),
                Trigger::Cron(c) => format!("cron \"{}\"", c.as_str()),
            };
            write!(words, " in {}", s.timezone_name).ok();
            match s.deadline {
                Some(d) => write!(words, ", deadline {}", format_duration(d)).ok(),
                None => write!(words, ", no deadline").ok(),
            };
            if let Some(j) = s.jitter {
                write!(words, ", jitter up to {}", format_duration(j)).ok();
            }
            if let Some(u) = s.until {
                write!(words, ", until {u}").ok();
            }
            write!(words, ", concurrency {}", s.concurrency).ok();
            let runs = s
                .runs_after(now, count)
                .into_iter()
                .map(|t| PlannedRun {
                    utc: t.to_string(),
                    local: t
                        .to_zoned(s.timezone.clone())
                        .strftime("%Y-%m-%dT%H:%M:%S%:z[%Q]")
                        .to_string(),
                })
                .collect();
            let kind = if matches!(s.trigger, Trigger::At(_)) {
                "at"
            } else {
                "cron"
            };
            (kind, words, Some(s.timezone_name.clone()), runs)
        }
    };
    let warnings = diagnostics
        .iter()
        .filter(|d| {
            d.severity == Severity::Warning && d.spec.as_deref() == Some(spec.name.as_str())
        })
        .map(|d| {
            if d.path.is_empty() {
                d.message.clone()
            } else {
                format!("{}: {}", d.path, d.message)
            }
        })
        .collect();
    SpecPlan {
        name: spec.name.clone(),
        file: spec.file.clone(),
        line: spec.line,
        suspended: spec.suspend,
        kind,
        schedule,
        timezone,
        runs,
        permissions: spec.permissions.to_vec(),
        revision: spec.revision[..12.min(spec.revision.len())].to_string(),
        warnings,
    }
}

/// The human-readable form.
pub fn plans_text(plans: &[SpecPlan]) -> String {
    let mut out = String::new();
    for (i, p) in plans.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let suspended = if p.suspended {
            "  [suspended: nothing new is placed]"
        } else {
            ""
        };
        writeln!(out, "{}  ({}:{}){suspended}", p.name, p.file, p.line).ok();
        writeln!(out, "  schedule:    {}", p.schedule).ok();
        writeln!(out, "  permissions: {}", p.permissions.join(", ")).ok();
        writeln!(out, "  revision:    {}", p.revision).ok();
        if p.kind != "once" {
            if p.runs.is_empty() {
                writeln!(out, "  next runs:   none").ok();
            } else {
                writeln!(out, "  next runs:").ok();
                for r in &p.runs {
                    writeln!(out, "    {:<40} {}", r.local, r.utc).ok();
                }
            }
        }
        for w in &p.warnings {
            writeln!(out, "  warning:     {w}").ok();
        }
    }
    out
}
