//! Issue 12, bounded memory: `cargo bench --bench memory` (`CALLD_BENCH_SPECS=N`,
//! default 100,000). Where the bytes of a loaded calls directory live.
//!
//! Writes N small cron specs (the `scale_100k` daemon benchmark's specs,
//! each with a number of its own: a subject, one phone target, a cron
//! schedule; the source and tenant from the configuration's defaults) and counts the heap, with a counting
//! global allocator, after each stage of what the daemon holds once
//! loaded: the scanner (its stat cache and the snapshot), the incremental
//! spec set (each file's load and the merged set), what is left once the
//! snapshot is dropped (the scanner keeps no file bytes), and the report
//! entries behind `calld status`. Prints bytes per spec at each stage and the peak;
//! asserts only that every spec loaded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};

use calld::config::Defaults;
use calld::source::Scanner;
use calld::spec::{Context, IncrementalSet};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> (usize, usize) {
    (LIVE.load(Ordering::Relaxed), COUNT.load(Ordering::Relaxed))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("memory: bench");
        return;
    }
    let n: usize = std::env::var("CALLD_BENCH_SPECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("calls.d");
    for i in 0..n {
        let sub = dir.join(format!("team-{:03}", i % 500));
        if i < 500 {
            fs::create_dir_all(&sub).unwrap();
        }
        fs::write(
            sub.join(format!("s{i:06}.yaml")),
            format!(
                "subject: Spec {i}\ntargets:\n  - phone: \"+1425{i:07}\"\nschedule: {{ cron: \"{} {} * * *\" }}\n",
                i % 60,
                (i / 60) % 24
            ),
        )
        .unwrap();
    }
    let source: serde_json::Value = serde_json::from_str(
        r#"{"identity":{"applicationInstance":{"id":"3d913abb-aec0-4964-8fa6-3c6850c4f278","displayName":"calld test"}}}"#,
    )
    .unwrap();
    let defaults = Defaults {
        tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
        source: Some(source),
        timezone: None,
    };
    let ctx = Context {
        defaults: &defaults,
        public_url: Some("https://bot.example.com/callback"),
        now: jiff::Timestamp::now(),
    };

    let (base, base_count) = live();
    let mut stages: Vec<(&str, usize, usize)> = Vec::new();
    let mut scanner = Scanner::new(&dir);
    let snap = scanner.scan();
    assert_eq!(snap.stats.files_read, n);
    stages.push(("scanner (stat cache + snapshot)", live().0, live().1));

    let mut set = IncrementalSet::new();
    snap.update_spec_set(&mut set, &ctx);
    set.take_touched(); // as the daemon does after each update
    assert_eq!(
        set.set().specs.len(),
        n,
        "{:?}",
        set.set().diagnostics.first()
    );
    stages.push(("+ incremental spec set", live().0, live().1));
    // the sample below reads its files itself
    let sample: Vec<(String, std::path::PathBuf)> = snap
        .files
        .values()
        .take(1000)
        .map(|f| (f.rel.clone(), f.path.clone()))
        .collect();
    drop(snap); // the daemon drops each snapshot once the set took it
    stages.push(("snapshot dropped (the scanner's own)", live().0, live().1));

    let entries: Vec<String> = set
        .set()
        .specs
        .values()
        .map(|s| calld::status::spec_report_entry(s).to_string())
        .collect();
    stages.push(("+ report entries (compact JSON)", live().0, live().1));

    // The parts of one file's load, over the first 1,000 files: the
    // `FileLoad` as validation returns it, and its specs alone.
    let bytes: Vec<Vec<u8>> = sample.iter().map(|(_, p)| fs::read(p).unwrap()).collect();
    let (before, before_count) = live();
    let loads: Vec<calld::spec::FileLoad> = sample
        .iter()
        .zip(&bytes)
        .map(|((rel, path), b)| calld::spec::load_file(&path.to_string_lossy(), rel, b, &ctx))
        .collect();
    let (after, after_count) = live();
    let per_load = (after - before) / sample.len();
    let specs: Vec<calld::spec::Spec> = loads.iter().map(|l| (*l.specs[0]).clone()).collect();
    let (cloned, cloned_count) = live();
    println!(
        "memory: one file's FileLoad {per_load} B in {:.1} allocations; a clone of its Spec {} B in {:.1} allocations",
        (after_count - before_count) as f64 / sample.len() as f64,
        (cloned - after) / sample.len(),
        (cloned_count - after_count) as f64 / sample.len() as f64,
    );
    // field by field (a clone allocates what the field holds; a shared
    // JsonObject costs nothing here, so call.* shows only what is the
    // spec's own)
    let part = |what: &str, f: &dyn Fn(&calld::spec::Spec) -> Box<dyn std::any::Any>| {
        let (b, bc) = live();
        let kept: Vec<_> = specs.iter().map(f).collect();
        let (a, ac) = live();
        println!(
            "memory:   {what:<22} {:>4} B in {:.1} allocations",
            (a - b) / specs.len(),
            (ac - bc) as f64 / specs.len() as f64
        );
        drop(kept);
    };
    part("name + file", &|s| {
        Box::new((s.name.clone(), s.file.clone()))
    });
    part("revision", &|s| Box::new(s.revision.clone()));
    part("call.source", &|s| Box::new(s.call.source.clone()));
    part("call.kind (targets)", &|s| Box::new(s.call.kind.clone()));
    part("call (whole)", &|s| Box::new(s.call.clone()));
    part("schedule", &|s| Box::new(s.schedule.clone()));
    drop((specs, loads));

    let peak = PEAK.load(Ordering::Relaxed);
    let mut prev = base;
    let mut prev_count = base_count;
    println!(
        "memory: {n} specs (live heap after each stage; peak {:.1} MB = {} B/spec)",
        (peak - base) as f64 / 1e6,
        (peak - base) / n
    );
    for (what, bytes, count) in &stages {
        println!(
            "memory: {what:<36} {:>8.1} MB total, {:>5} B/spec, {:>+6} B/spec, {:>+5.1} allocations/spec",
            (bytes - base) as f64 / 1e6,
            (bytes - base) / n,
            (*bytes as i64 - prev as i64) / n as i64,
            (*count as f64 - prev_count as f64) / n as f64,
        );
        prev = *bytes;
        prev_count = *count;
    }
    println!(
        "memory: size_of Spec {} B, FileSnapshot {} B",
        std::mem::size_of::<calld::spec::Spec>(),
        std::mem::size_of::<calld::source::scan::FileSnapshot>()
    );
    drop(entries);
}
