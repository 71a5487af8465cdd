//! `cargo bench --bench schedule`: the cost of asking a schedule for its next
//! run, which the daemon does once per run and `calld plan` N times per spec.

use std::hint::black_box;

use calld::schedule::{CronExpr, Schedule, Trigger, parse_time};
use criterion::{Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};

fn cron(pattern: &str, zone: &str) -> Schedule {
    Schedule::new(Trigger::Cron(CronExpr::parse(pattern).unwrap()), zone).unwrap()
}

fn bench(c: &mut Criterion) {
    let now: Timestamp = "2026-06-10T10:17:23Z".parse().unwrap();

    let weekdays = cron("0 9 * * Mon-Fri", "Europe/Berlin");
    c.bench_function("next_after cron `0 9 * * Mon-Fri` Europe/Berlin", |b| {
        b.iter(|| weekdays.next_after(black_box(now)))
    });

    let quarter = cron("*/15 * * * *", "America/New_York");
    c.bench_function("next_after cron `*/15 * * * *` America/New_York", |b| {
        b.iter(|| quarter.next_after(black_box(now)))
    });

    // Just before a fall-back fold: the interval search looks at both passes.
    let fold: Timestamp = "2026-11-01T05:50:00Z".parse().unwrap();
    c.bench_function("next_after cron `*/15 * * * *` in the NY fold", |b| {
        b.iter(|| quarter.next_after(black_box(fold)))
    });

    let at = parse_time("2026-12-01T09:00:00", &weekdays.timezone).unwrap();
    let once = Schedule::new(Trigger::At(at), "Europe/Berlin").unwrap();
    c.bench_function("next_after at", |b| {
        b.iter(|| once.next_after(black_box(now)))
    });

    c.bench_function("runs_after 100 `0 9 * * Mon-Fri`", |b| {
        b.iter(|| weekdays.runs_after(black_box(now), 100))
    });

    let week_later = now + SignedDuration::from_hours(24 * 7);
    let minutely = cron("* * * * *", "Europe/Berlin");
    c.bench_function("last_between a week of `* * * * *`", |b| {
        b.iter(|| minutely.last_between(black_box(now), black_box(week_later)))
    });

    c.bench_function("CronExpr::parse `0 9 * * Mon-Fri`", |b| {
        b.iter(|| CronExpr::parse(black_box("0 9 * * Mon-Fri")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
