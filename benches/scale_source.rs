//! Issue 12, incremental source: `cargo bench --bench scale_source`
//! (`-- --quick`: N = 1,000 and 10,000 only; `CALLD_BENCH_SIZES=100000`:
//! the sizes named; `CALLD_BENCH_JSONSCHEMA=0`: no check-jsonschema
//! ratio). Prints figures; asserts only
//! that the work is right (what was read and loaded), never a timing.
//!
//! At N = 1,000, 10,000 and 100,000 spec files of about 1 KB each:
//! - full scan, cold (fresh scanner: every file read and hashed, page cache
//!   warm) and warm (nothing changed: stat only, nothing read);
//! - start-up spec set: the cold snapshot validated into the incremental
//!   set (in parallel), and the same by a sequential full `load_set`;
//! - one changed file → new spec set: the edit, the rescan of the path
//!   its event names (one file read) and the incremental update (one file
//!   validated, its names resolved), against a full `load_set` of the same
//!   snapshot;
//! - `calld check` of the directory (the release binary, wall time), and
//!   `check-jsonschema` validating the same files against `calld schema`,
//!   with the ratio (N ≤ 10,000; it takes minutes beyond). check-jsonschema
//!   is installed with pip into `target/venv-check-jsonschema`; when it
//!   cannot be, the benchmark says so and prints calld's figure alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use calld::config::Defaults;
use calld::source::Scanner;
use calld::source::scan::RACY_WINDOW;
use calld::spec::{Context, IncrementalSet, Input, load_set};

const BIN: &str = env!("CARGO_BIN_EXE_calld");

/// About 1 KB: a cron spec with a description, media and two targets.
fn body(i: usize, subject: &str) -> String {
    let team = i / 100;
    [
        format!("# Team stand-up, generated for the scale benchmark (file {i})."),
        "# Comments and a description make it the size of a real spec.".into(),
        "description: >-".into(),
        format!("  The daily stand-up of team {team}: rings both leads at 09:00 on"),
        "  weekdays, Paris time, and plays the two prompts.".into(),
        format!("subject: {subject}"),
        "tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        "callbackUri: https://bot.contoso.com/api/calls".into(),
        "schedule:".into(),
        "  cron: \"0 9 * * 1-5\"".into(),
        "  timezone: Europe/Paris".into(),
        "  deadline: 10m".into(),
        "source:".into(),
        "  identity:".into(),
        "    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }".into(),
        "targets:".into(),
        "  - user:".into(),
        "      id: 550fae72-d251-43ec-868c-373732c2704f".into(),
        "      tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        "      displayName: Heidi Steen".into(),
        "  - user:".into(),
        "      id: 660fae72-d251-43ec-868c-373732c2704f".into(),
        "      tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        "      displayName: Kim Akers".into(),
        "media:".into(),
        "  prefetch:".into(),
        "    - uri: https://cdn.contoso.com/beep.wav".into(),
        "      resourceId: 1D6DE2D4-CD51-4309-8DAA-70768651088E".into(),
        "    - uri: https://cdn.contoso.com/cool.wav".into(),
        "      resourceId: 1D6DE2D4-CD51-4309-8DAA-70768651088F".into(),
        String::new(),
    ]
    .join("\n")
}

fn rel(i: usize) -> String {
    format!("team-{:04}/standup-{i:06}.yaml", i / 100)
}

fn populate(dir: &Path, n: usize) {
    for i in 0..n {
        if i % 100 == 0 {
            fs::create_dir_all(dir.join(format!("team-{:04}", i / 100))).unwrap();
        }
        fs::write(dir.join(rel(i)), body(i, &format!("Stand-up {i}"))).unwrap();
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

/// A full reload of a snapshot: a snapshot holds only the bytes its own
/// scan read, so the others are read again (as the incremental set does
/// for a file it validates again).
fn full_load(snap: &calld::source::Snapshot, ctx: &Context) -> calld::spec::SpecSet {
    let bytes: Vec<Result<std::sync::Arc<[u8]>, String>> = snap
        .files
        .values()
        .map(|f| match &f.content {
            Ok(Some(b)) => Ok(b.clone()),
            Ok(None) => calld::source::scan::read_again(&f.path, &f.hash),
            Err(e) => Err(e.clone()),
        })
        .collect();
    load_set(
        snap.files.values().zip(&bytes).map(|(f, b)| Input {
            label: f.path.display().to_string(),
            rel: f.rel.clone(),
            bytes: b.as_deref().map_err(Clone::clone),
        }),
        ctx,
    )
}

fn source(n: usize, dir: &Path) {
    let defaults = Defaults::default();
    let ctx = || Context {
        defaults: &defaults,
        public_url: None,
        now: jiff::Timestamp::now(),
    };
    let runs = if n >= 100_000 { 3 } else { 5 };

    let mut cold = Vec::new();
    for _ in 0..runs {
        let mut sc = Scanner::new(dir);
        let s = sc.scan();
        assert_eq!(s.stats.files_read, n);
        cold.push(s.stats.elapsed);
    }
    let mut sc = Scanner::new(dir);
    let snap = sc.scan();
    let mut warm = Vec::new();
    for _ in 0..runs {
        let s = sc.scan();
        assert_eq!(s.stats.files_read, 0, "a warm rescan reads nothing");
        warm.push(s.stats.elapsed);
    }
    println!(
        "N = {n:>7}: full scan cold {:>9.1?}  warm {:>9.1?} (stat only, 0 files read)",
        median(cold),
        median(warm)
    );

    // start-up: every file validated
    let mut inc = IncrementalSet::new();
    let (stats, parallel) = time(|| snap.update_spec_set(&mut inc, &ctx()));
    assert_eq!(stats.files_loaded, n);
    assert_eq!(
        inc.set().specs.len(),
        n,
        "{:?}",
        inc.set().diagnostics.first()
    );
    let (full, sequential) = time(|| full_load(&snap, &ctx()));
    assert_eq!(full.specs.len(), n);
    let (_, nothing) = time(|| inc.update(snap.file_refs(), &ctx()));
    println!(
        "N = {n:>7}: start-up spec set {:>9.1?} on {} threads (sequential load_set {:>9.1?}); an update where nothing changed {:>7.1?}",
        parallel,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        sequential,
        nothing,
    );

    // one changed file → new spec set
    let (mut total, mut scan, mut update, mut reload) = (vec![], vec![], vec![], vec![]);
    for round in 0..runs {
        let i = (round * 7919) % n;
        let t = Instant::now();
        fs::write(dir.join(rel(i)), body(i, &format!("Edited {round}"))).unwrap();
        // as the watcher does: look where the event points
        let path = dir.join(rel(i));
        let (snap, s) = time(|| sc.scan_paths([path.as_path()]));
        assert!(snap.stats.targeted);
        assert_eq!(snap.stats.files_read, 1);
        let (stats, u) = time(|| snap.update_spec_set(&mut inc, &ctx()));
        assert_eq!(stats.files_loaded, 1);
        total.push(t.elapsed());
        scan.push(s);
        update.push(u);
        if round == 0 || n < 100_000 {
            let (_, r) = time(|| full_load(&snap, &ctx()));
            reload.push(r);
        }
    }
    println!(
        "N = {n:>7}: one changed file → new spec set {:>9.1?} (write {:>7.1?}, rescan of the named path {:>7.1?}, incremental update {:>7.1?}); a full reload instead {:>9.1?}",
        median(total.clone()),
        median(total).saturating_sub(median(scan.clone()) + median(update.clone())),
        median(scan),
        median(update),
        median(reload),
    );
}

fn check(n: usize, dir: &Path, jsonschema: Option<&Path>, schema: &Path) {
    let mut walls = Vec::new();
    for _ in 0..3 {
        let (out, wall) = time(|| {
            Command::new(BIN)
                .arg("check")
                .arg(dir)
                .env_remove("CALLD_CONFIG")
                .output()
                .unwrap()
        });
        assert!(
            out.status.success(),
            "calld check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        walls.push(wall);
    }
    let calld = median(walls);
    let files: Vec<PathBuf> = (0..n).map(|i| dir.join(rel(i))).collect();
    match jsonschema {
        Some(js) if n <= 10_000 => {
            let (out, wall) = time(|| {
                Command::new(js)
                    .arg("--schemafile")
                    .arg(schema)
                    .args(&files)
                    .output()
                    .unwrap()
            });
            assert!(
                out.status.success(),
                "check-jsonschema: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            println!(
                "N = {n:>7}: calld check {:>9.1?} wall (median of 3); check-jsonschema {:>9.1?}; ratio calld / check-jsonschema {:.3}",
                calld,
                wall,
                calld.as_secs_f64() / wall.as_secs_f64()
            );
        }
        Some(_) => println!(
            "N = {n:>7}: calld check {calld:>9.1?} wall (median of 3); check-jsonschema not run at this N (minutes)"
        ),
        None => println!(
            "N = {n:>7}: calld check {calld:>9.1?} wall (median of 3); check-jsonschema could not be installed (see above): no ratio"
        ),
    }
}

/// check-jsonschema from a venv under target/, installed with pip if needed.
fn check_jsonschema() -> Option<PathBuf> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let venv = target.join("venv-check-jsonschema");
    let exe = venv.join("bin/check-jsonschema");
    if !exe.exists() {
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "check-jsonschema"])
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            println!(
                "check-jsonschema: cannot install it with pip into {}",
                venv.display()
            );
            return None;
        }
    }
    Some(exe)
}

fn main() {
    if let Ok(load) = fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", load.trim());
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // CALLD_BENCH_JSONSCHEMA=0: no check-jsonschema ratio (it takes minutes
    // at 100,000 files); CALLD_BENCH_SIZES=100000: only these sizes
    let jsonschema = match std::env::var("CALLD_BENCH_JSONSCHEMA").as_deref() {
        Ok("0") => None,
        _ => check_jsonschema(),
    };
    let chosen: Option<Vec<usize>> = std::env::var("CALLD_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let tmp = tempfile::tempdir().unwrap();
    let schema = tmp.path().join("schema.json");
    let out = Command::new(BIN).arg("schema").output().unwrap();
    fs::write(&schema, out.stdout).unwrap();
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let sizes = chosen.as_deref().unwrap_or(sizes);
    for &n in sizes {
        let dir = tmp.path().join(format!("calls-{n}"));
        fs::create_dir_all(&dir).unwrap();
        populate(&dir, n);
        // past the racy window, so warm scans may trust stat keys
        std::thread::sleep(RACY_WINDOW + Duration::from_millis(200));
        source(n, &dir);
        check(n, &dir, jsonschema.as_deref(), &schema);
        fs::remove_dir_all(&dir).unwrap();
    }
}
