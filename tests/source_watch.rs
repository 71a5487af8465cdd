//! The watching source on real folders: every way a spec file arrives,
//! changes or leaves is seen. The resync is set to an hour, so what is seen
//! comes from events (or from the healing path under test), not from it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use calld::source::{Snapshot, SourceGuard, SourceOptions, WatchBackend, watch};
use tokio::sync::watch::Receiver;

const WAIT: Duration = Duration::from_secs(10);

fn opts() -> SourceOptions {
    SourceOptions {
        resync_interval: Duration::from_secs(3600),
        ..SourceOptions::default()
    }
}

fn start(dir: &Path, opts: SourceOptions) -> (SourceGuard, Receiver<Arc<Snapshot>>) {
    watch(dir.to_path_buf(), opts).expect("source starts")
}

/// Whether the snapshot knows `rel` with this content (a snapshot holds
/// only the bytes its own scan read; the hash of every file).
fn has(s: &Snapshot, rel: &str, body: &str) -> bool {
    use sha2::Digest;
    let want: [u8; 32] = sha2::Sha256::digest(body.as_bytes()).into();
    s.files.get(rel).is_some_and(|f| f.hash == want)
}

fn text(s: &Snapshot, rel: &str) -> Option<String> {
    s.files
        .get(rel)
        .and_then(|f| f.bytes())
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn summary(s: &Snapshot) -> String {
    let names: Vec<_> = s.files.keys().take(10).collect();
    format!(
        "generation {} with {} files {names:?}… root_error {:?} problems {:?}",
        s.generation,
        s.files.len(),
        s.root_error,
        s.problems
    )
}

/// Waits (10 s at most) for a snapshot that satisfies `pred`.
async fn wait_for(
    rx: &mut Receiver<Arc<Snapshot>>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let waiting = async {
        loop {
            let s = rx.borrow_and_update().clone();
            if pred(&s) {
                return s;
            }
            if rx.changed().await.is_err() {
                panic!("source stopped while waiting for {what}");
            }
        }
    };
    match tokio::time::timeout(timeout, waiting).await {
        Ok(s) => s,
        Err(_) => panic!(
            "no snapshot with {what} within {timeout:?}; last: {}",
            summary(&rx.borrow())
        ),
    }
}

async fn wait_text(rx: &mut Receiver<Arc<Snapshot>>, rel: &str, want: &str) -> Arc<Snapshot> {
    wait_for(rx, &format!("{rel} = {want:?}"), WAIT, |s| {
        text(s, rel).as_deref() == Some(want)
    })
    .await
}

fn write(dir: &Path, rel: &str, body: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

/// A temp dir holding `calls.d` (and room beside it on the same filesystem).
fn calls_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("calls.d");
    fs::create_dir(&dir).unwrap();
    (tmp, dir)
}

#[tokio::test]
async fn first_snapshot_is_there_at_once() {
    let (_tmp, dir) = calls_dir();
    write(&dir, "a.yaml", "a: 1\n");
    let (_g, rx) = start(&dir, opts());
    let s = rx.borrow().clone();
    assert_eq!(s.generation, 1);
    assert_eq!(text(&s, "a.yaml").as_deref(), Some("a: 1\n"));
}

#[tokio::test]
async fn a_file_renamed_into_the_directory() {
    let (tmp, dir) = calls_dir();
    let (_g, mut rx) = start(&dir, opts());
    write(tmp.path(), "staging/new.yaml", "new: 1\n");
    fs::rename(tmp.path().join("staging/new.yaml"), dir.join("new.yaml")).unwrap();
    wait_text(&mut rx, "new.yaml", "new: 1\n").await;
}

#[tokio::test]
async fn a_file_written_in_place_even_with_the_same_length() {
    let (_tmp, dir) = calls_dir();
    write(&dir, "a.yaml", "v: 1\n");
    let (_g, mut rx) = start(&dir, opts());
    fs::write(dir.join("a.yaml"), "v: 2\n").unwrap();
    wait_text(&mut rx, "a.yaml", "v: 2\n").await;
    fs::write(dir.join("a.yaml"), "v: 3\n").unwrap();
    wait_text(&mut rx, "a.yaml", "v: 3\n").await;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("a.yaml"))
        .unwrap();
    f.write_all(b"w: 4\n").unwrap();
    drop(f);
    wait_text(&mut rx, "a.yaml", "v: 3\nw: 4\n").await;
}

#[tokio::test]
async fn a_file_written_slowly_in_chunks_ends_with_its_final_content() {
    let (_tmp, dir) = calls_dir();
    let (_g, mut rx) = start(&dir, opts());
    let mut f = fs::File::create(dir.join("slow.yaml")).unwrap();
    let chunks = [
        "name: slow\n",
        "schedule:\n",
        "  cron: '0 9 * * 1-5'\n",
        "to: alice\n",
    ];
    for chunk in chunks {
        f.write_all(chunk.as_bytes()).unwrap();
        f.flush().unwrap();
        // long enough for a rescan to see a partial file in between
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    drop(f);
    wait_text(&mut rx, "slow.yaml", &chunks.concat()).await;
}

#[tokio::test]
async fn a_file_replaced_by_an_editor() {
    let (_tmp, dir) = calls_dir();
    write(&dir, "a.yaml", "v: 1\n");
    let (_g, mut rx) = start(&dir, opts());

    // write a temp file, rename it over (most editors, `sed -i`, atomic writers)
    write(&dir, ".a.yaml.swp", "swap");
    write(&dir, "a.yaml.tmp", "v: 2\n");
    fs::rename(dir.join("a.yaml.tmp"), dir.join("a.yaml")).unwrap();
    fs::remove_file(dir.join(".a.yaml.swp")).unwrap();
    let s = wait_text(&mut rx, "a.yaml", "v: 2\n").await;
    assert_eq!(s.files.keys().collect::<Vec<_>>(), ["a.yaml"]);

    // vim's backup dance: rename to a.yaml~, write a new a.yaml, delete the backup
    fs::rename(dir.join("a.yaml"), dir.join("a.yaml~")).unwrap();
    write(&dir, "a.yaml", "v: 3\n");
    fs::remove_file(dir.join("a.yaml~")).unwrap();
    let s = wait_text(&mut rx, "a.yaml", "v: 3\n").await;
    assert_eq!(s.files.keys().collect::<Vec<_>>(), ["a.yaml"]);
}

#[tokio::test]
async fn a_file_deleted() {
    let (_tmp, dir) = calls_dir();
    write(&dir, "a.yaml", "a: 1\n");
    write(&dir, "b.yaml", "b: 1\n");
    let (_g, mut rx) = start(&dir, opts());
    fs::remove_file(dir.join("a.yaml")).unwrap();
    let s = wait_for(&mut rx, "a.yaml gone", WAIT, |s| {
        !s.files.contains_key("a.yaml")
    })
    .await;
    assert_eq!(s.files.keys().collect::<Vec<_>>(), ["b.yaml"]);
}

#[tokio::test]
async fn a_subfolder_created_with_files_and_one_moved_in() {
    let (tmp, dir) = calls_dir();
    let (_g, mut rx) = start(&dir, opts());
    fs::create_dir_all(dir.join("team-a/deeper")).unwrap();
    write(&dir, "team-a/standup.yaml", "s: 1\n");
    write(&dir, "team-a/deeper/x.yml", "x: 1\n");
    wait_for(&mut rx, "both new files", WAIT, |s| {
        text(s, "team-a/standup.yaml").as_deref() == Some("s: 1\n")
            && text(s, "team-a/deeper/x.yml").as_deref() == Some("x: 1\n")
    })
    .await;
    // files added later inside the new folder are seen too (it is watched)
    write(&dir, "team-a/deeper/y.yml", "y: 1\n");
    wait_text(&mut rx, "team-a/deeper/y.yml", "y: 1\n").await;

    // a whole prepared folder moved in
    write(tmp.path(), "prep/team-b/one.yaml", "one: 1\n");
    write(tmp.path(), "prep/team-b/sub/two.yaml", "two: 2\n");
    fs::rename(tmp.path().join("prep/team-b"), dir.join("team-b")).unwrap();
    wait_for(&mut rx, "the moved folder", WAIT, |s| {
        s.files.contains_key("team-b/one.yaml") && s.files.contains_key("team-b/sub/two.yaml")
    })
    .await;
    write(&dir, "team-b/sub/three.yaml", "three: 3\n");
    wait_text(&mut rx, "team-b/sub/three.yaml", "three: 3\n").await;
}

/// The layout and update sequence of a Kubernetes ConfigMap volume.
#[cfg(unix)]
#[tokio::test]
async fn a_kubernetes_configmap_update() {
    use std::os::unix::fs::symlink;
    let (_tmp, dir) = calls_dir();
    write(&dir, "..2026_11_26_09_00_00.1/a.yaml", "v: 1\n");
    write(&dir, "..2026_11_26_09_00_00.1/b.yaml", "b: 1\n");
    symlink("..2026_11_26_09_00_00.1", dir.join("..data")).unwrap();
    symlink("..data/a.yaml", dir.join("a.yaml")).unwrap();
    symlink("..data/b.yaml", dir.join("b.yaml")).unwrap();
    let (_g, mut rx) = start(&dir, opts());
    let s = rx.borrow().clone();
    assert_eq!(s.files.keys().collect::<Vec<_>>(), ["a.yaml", "b.yaml"]);
    assert_eq!(text(&s, "a.yaml").as_deref(), Some("v: 1\n"));

    // the kubelet's atomic writer: new timestamped dir, new ..data_tmp link
    // renamed over ..data, old dir removed
    write(&dir, "..2026_11_26_10_00_00.2/a.yaml", "v: 2\n");
    write(&dir, "..2026_11_26_10_00_00.2/b.yaml", "b: 1\n");
    symlink("..2026_11_26_10_00_00.2", dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    fs::remove_dir_all(dir.join("..2026_11_26_09_00_00.1")).unwrap();
    let s = wait_text(&mut rx, "a.yaml", "v: 2\n").await;
    assert_eq!(s.files.keys().collect::<Vec<_>>(), ["a.yaml", "b.yaml"]);
    assert!(s.problems.is_empty(), "{:?}", s.problems);

    // a key added to the ConfigMap: a new visible symlink
    write(&dir, "..2026_11_26_11_00_00.3/a.yaml", "v: 3\n");
    write(&dir, "..2026_11_26_11_00_00.3/b.yaml", "b: 1\n");
    write(&dir, "..2026_11_26_11_00_00.3/c.yaml", "c: 1\n");
    symlink("..2026_11_26_11_00_00.3", dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    symlink("..data/c.yaml", dir.join("c.yaml")).unwrap();
    fs::remove_dir_all(dir.join("..2026_11_26_10_00_00.2")).unwrap();
    wait_for(&mut rx, "the third revision", WAIT, |s| {
        text(s, "a.yaml").as_deref() == Some("v: 3\n")
            && text(s, "c.yaml").as_deref() == Some("c: 1\n")
    })
    .await;
}

/// git-sync: the calls directory is reached through `current`, a symlink
/// flipped atomically to a new worktree; the old worktree is deleted.
#[cfg(unix)]
#[tokio::test]
async fn a_git_sync_worktree_flip() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, ".worktrees/hash1/calls.d/a.yaml", "rev: 1\n");
    symlink(".worktrees/hash1", root.join("current")).unwrap();
    let dir = root.join("current/calls.d");
    let (_g, mut rx) = start(&dir, opts());
    assert_eq!(text(&rx.borrow(), "a.yaml").as_deref(), Some("rev: 1\n"));

    for (old, new, rev) in [("hash1", "hash2", 2), ("hash2", "hash3", 3)] {
        write(
            root,
            &format!(".worktrees/{new}/calls.d/a.yaml"),
            &format!("rev: {rev}\n"),
        );
        write(
            root,
            &format!(".worktrees/{new}/calls.d/only-{rev}.yaml"),
            "x: 1\n",
        );
        symlink(format!(".worktrees/{new}"), root.join("current.tmp")).unwrap();
        fs::rename(root.join("current.tmp"), root.join("current")).unwrap();
        fs::remove_dir_all(root.join(".worktrees").join(old)).unwrap();
        let s = wait_text(&mut rx, "a.yaml", &format!("rev: {rev}\n")).await;
        assert!(s.files.contains_key(&format!("only-{rev}.yaml")));
        assert_eq!(s.files.len(), 2, "{}", summary(&s));
        assert!(s.root_error.is_none());
    }
    // and the new worktree is watched: an in-place change in it is seen
    write(root, ".worktrees/hash3/calls.d/a.yaml", "rev: 3b\n");
    wait_text(&mut rx, "a.yaml", "rev: 3b\n").await;
}

/// The flip without deleting the old worktree: no event at all reaches the
/// old directory's watch; only the watch on the symlink's parent sees it.
#[cfg(unix)]
#[tokio::test]
async fn a_symlink_flip_that_keeps_the_old_target() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "v1/a.yaml", "v: 1\n");
    write(root, "v2/a.yaml", "v: 2\n");
    symlink("v1", root.join("calls.d")).unwrap();
    let (_g, mut rx) = start(&root.join("calls.d"), opts());
    symlink("v2", root.join("calls.d.tmp")).unwrap();
    fs::rename(root.join("calls.d.tmp"), root.join("calls.d")).unwrap();
    wait_text(&mut rx, "a.yaml", "v: 2\n").await;
    // the old target is no longer what counts
    write(root, "v1/a.yaml", "v: 1b\n");
    write(root, "v2/a.yaml", "v: 2b\n");
    wait_text(&mut rx, "a.yaml", "v: 2b\n").await;
}

/// A spec file that is a symlink to a file elsewhere: an in-place edit of
/// the target is seen (its folder is watched too).
#[cfg(unix)]
#[tokio::test]
async fn a_symlinked_file_edited_at_its_target() {
    let (tmp, dir) = calls_dir();
    write(tmp.path(), "repo/x.yaml", "x: 1\n");
    std::os::unix::fs::symlink(tmp.path().join("repo/x.yaml"), dir.join("x.yaml")).unwrap();
    let (_g, mut rx) = start(&dir, opts());
    assert_eq!(text(&rx.borrow(), "x.yaml").as_deref(), Some("x: 1\n"));
    fs::write(tmp.path().join("repo/x.yaml"), "x: 2\n").unwrap();
    wait_text(&mut rx, "x.yaml", "x: 2\n").await;
}

const BURST: usize = 10_000;

fn burst_body(i: usize) -> String {
    format!("name: burst-{i}\n")
}

#[tokio::test]
async fn a_burst_of_ten_thousand_files_renamed_in_as_a_folder() {
    let (tmp, dir) = calls_dir();
    let (_g, mut rx) = start(&dir, opts());
    let start_gen = rx.borrow().generation;
    let prep = tmp.path().join("prep/burst");
    fs::create_dir_all(&prep).unwrap();
    for i in 0..BURST {
        fs::write(prep.join(format!("f{i:05}.yaml")), burst_body(i)).unwrap();
    }
    fs::rename(&prep, dir.join("burst")).unwrap();
    let s = wait_for(&mut rx, "10,000 files", Duration::from_secs(30), |s| {
        s.files.len() == BURST
    })
    .await;
    assert!(has(&s, "burst/f04242.yaml", &burst_body(4242)));
    let published = s.generation - start_gen;
    eprintln!("renamed-in burst: {published} snapshot(s)");
    assert!(published <= 3, "{published} snapshots for one rename");
}

#[tokio::test]
async fn a_burst_of_ten_thousand_files_written_one_by_one() {
    let (_tmp, dir) = calls_dir();
    let (_g, mut rx) = start(&dir, opts());
    let start_gen = rx.borrow().generation;
    fs::create_dir(dir.join("burst")).unwrap();
    for i in 0..BURST {
        fs::write(dir.join(format!("burst/f{i:05}.yaml")), burst_body(i)).unwrap();
    }
    // each as written (a file read between its create and its write is
    // read again: the wait is for the snapshot that holds them all whole)
    let whole = |s: &Snapshot| {
        s.files.len() == BURST
            && s.files.keys().all(|rel| {
                let i: usize = rel[7..12].parse().unwrap();
                has(s, rel, &burst_body(i))
            })
    };
    let s = wait_for(
        &mut rx,
        "10,000 files, each whole",
        Duration::from_secs(30),
        whole,
    )
    .await;
    let published = s.generation - start_gen;
    eprintln!("one-by-one burst: {published} snapshot(s)");
    // debounced and capped: a handful, not one per file
    assert!(published <= 50, "{published} snapshots for {BURST} files");
}

/// A lost event (here: a poll watcher that never polls, so no event at all)
/// is healed by the overflow path: mark dirty, rescan.
#[tokio::test]
async fn an_overflow_or_a_watcher_error_is_healed_by_a_rescan() {
    let (_tmp, dir) = calls_dir();
    let (g, mut rx) = start(
        &dir,
        SourceOptions {
            backend: WatchBackend::Poll,
            poll_interval: Duration::from_secs(3600),
            ..opts()
        },
    );
    write(&dir, "missed.yaml", "m: 1\n");
    g.simulate_overflow();
    wait_text(&mut rx, "missed.yaml", "m: 1\n").await;

    write(&dir, "missed.yaml", "m: 22\n");
    g.request_rescan();
    wait_text(&mut rx, "missed.yaml", "m: 22\n").await;
}

#[tokio::test]
async fn the_poll_watcher_sees_changes_too() {
    let (tmp, dir) = calls_dir();
    let (g, mut rx) = start(
        &dir,
        SourceOptions {
            backend: WatchBackend::Poll,
            poll_interval: Duration::from_millis(100),
            ..opts()
        },
    );
    assert!(g.is_polling());
    write(tmp.path(), "x.yaml", "x: 1\n");
    fs::rename(tmp.path().join("x.yaml"), dir.join("x.yaml")).unwrap();
    wait_text(&mut rx, "x.yaml", "x: 1\n").await;
    fs::create_dir(dir.join("sub")).unwrap();
    write(&dir, "sub/y.yaml", "y: 1\n");
    wait_text(&mut rx, "sub/y.yaml", "y: 1\n").await;
}

#[tokio::test]
async fn running_out_of_inotify_watches_falls_back_to_polling() {
    let (tmp, dir) = calls_dir();
    let (g, mut rx) = start(
        &dir,
        SourceOptions {
            poll_interval: Duration::from_millis(100),
            ..opts()
        },
    );
    g.simulate_watch_limit();
    write(tmp.path(), "x.yaml", "x: 1\n");
    fs::rename(tmp.path().join("x.yaml"), dir.join("x.yaml")).unwrap();
    wait_text(&mut rx, "x.yaml", "x: 1\n").await;
    assert!(g.is_polling(), "switched to the poll watcher");
    // and the poll watcher keeps seeing changes
    fs::write(dir.join("x.yaml"), "x: 2\n").unwrap();
    wait_text(&mut rx, "x.yaml", "x: 2\n").await;
}

#[tokio::test]
async fn the_inotify_watcher_is_the_default() {
    let (_tmp, dir) = calls_dir();
    let (g, _rx) = start(&dir, opts());
    // on a machine out of inotify instances this falls back, which is the point
    if !g.is_polling() {
        assert!(format!("{g:?}").contains("polling: false"));
    }
}

#[tokio::test]
async fn a_big_file_and_an_unreadable_file_are_reported_beside_the_others() {
    let (_tmp, dir) = calls_dir();
    let (_g, mut rx) = start(&dir, opts());
    write(&dir, "ok.yaml", "ok: 1\n");
    let big = fs::File::create(dir.join("big.yaml")).unwrap();
    big.set_len(calld::spec::files::MAX_SPEC_FILE_BYTES + 1)
        .unwrap();
    drop(big);
    #[cfg(target_os = "linux")]
    std::os::unix::fs::symlink("/proc/self/mem", dir.join("mem.yaml")).unwrap();
    let s = wait_for(&mut rx, "all three", WAIT, |s| {
        s.files.contains_key("ok.yaml")
            && s.files.contains_key("big.yaml")
            && (cfg!(not(target_os = "linux")) || s.files.contains_key("mem.yaml"))
    })
    .await;
    let big_err = s.files["big.yaml"].content.as_ref().unwrap_err();
    assert!(big_err.contains("limit"), "{big_err}");
    #[cfg(target_os = "linux")]
    assert!(s.files["mem.yaml"].content.is_err());
    assert_eq!(text(&s, "ok.yaml").as_deref(), Some("ok: 1\n"));
}

/// No file bytes are kept after parsing: the published snapshot holds the
/// bytes its scan read for a receiver to take; a few seconds later the
/// channel's copy has the hashes only.
#[tokio::test]
async fn the_published_snapshot_lets_go_of_its_bytes() {
    let (_tmp, dir) = calls_dir();
    write(&dir, "a.yaml", "a: 1\n");
    let (_g, rx) = start(&dir, opts());
    let first = rx.borrow().clone();
    assert_eq!(text(&first, "a.yaml").as_deref(), Some("a: 1\n"));
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rx.borrow().files["a.yaml"].content != Ok(None) {
        assert!(
            std::time::Instant::now() < deadline,
            "the channel still holds the bytes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = rx.borrow().clone();
    assert!(has(&now, "a.yaml", "a: 1\n"), "the hash stays");
    assert!(!rx.has_changed().unwrap(), "no change notice for it");
}

#[tokio::test]
async fn the_calls_directory_removed_and_recreated() {
    let (tmp, dir) = calls_dir();
    write(&dir, "a.yaml", "a: 1\n");
    let (_g, mut rx) = start(&dir, opts());
    fs::rename(&dir, tmp.path().join("old")).unwrap();
    let s = wait_for(&mut rx, "a root error", WAIT, |s| s.root_error.is_some()).await;
    // the last known file is kept: its hash (no snapshot keeps the bytes
    // of a file it did not read)
    assert!(has(&s, "a.yaml", "a: 1\n"), "last known kept");
    write(&dir, "a.yaml", "a: 2\n");
    let s = wait_text(&mut rx, "a.yaml", "a: 2\n").await;
    assert!(s.root_error.is_none());
    // the new directory is watched
    write(&dir, "b.yaml", "b: 1\n");
    wait_text(&mut rx, "b.yaml", "b: 1\n").await;
}

#[tokio::test]
async fn a_directory_missing_at_start_is_picked_up_when_it_appears() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("calls.d");
    let (_g, mut rx) = start(&dir, opts());
    assert!(rx.borrow().root_error.is_some());
    write(&dir, "a.yaml", "a: 1\n");
    wait_text(&mut rx, "a.yaml", "a: 1\n").await;
    write(&dir, "b.yaml", "b: 1\n");
    wait_text(&mut rx, "b.yaml", "b: 1\n").await;
}

#[tokio::test]
async fn dropping_the_guard_stops_the_source() {
    let (_tmp, dir) = calls_dir();
    let (g, mut rx) = start(&dir, opts());
    drop(g);
    let closed = tokio::time::timeout(WAIT, async { while rx.changed().await.is_ok() {} }).await;
    assert!(closed.is_ok(), "the source thread kept running");
}

#[tokio::test]
async fn stop_waits_for_the_thread() {
    let (_tmp, dir) = calls_dir();
    let (g, mut rx) = start(&dir, opts());
    tokio::task::spawn_blocking(move || g.stop()).await.unwrap();
    // the sender is gone once the thread has ended
    assert!(rx.changed().await.is_err());
}
