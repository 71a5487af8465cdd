//! The scanner on real folders: what a scan sees, and what a rescan re-reads.

use std::fs;
use std::path::Path;

use calld::source::Scanner;
use calld::source::scan::RACY_WINDOW;
use calld::spec::files::MAX_SPEC_FILE_BYTES;

fn sha(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn text(s: &calld::source::Snapshot, rel: &str) -> Option<String> {
    s.files
        .get(rel)
        .and_then(|f| f.bytes())
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn write(dir: &Path, rel: &str, body: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

#[test]
fn first_scan_reads_everything_and_hashes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "a.yaml", "name: a\n");
    write(d, "team/b.yml", "name: b\n");
    write(d, "notes.txt", "not a spec");
    write(d, ".a.yaml.swp", "vim swap");
    let mut sc = Scanner::new(d);
    let s = sc.scan();
    assert_eq!(s.generation, 1);
    assert!(s.changed);
    assert!(s.root_error.is_none());
    assert_eq!(s.files.keys().collect::<Vec<_>>(), ["a.yaml", "team/b.yml"]);
    assert_eq!(text(&s, "team/b.yml").as_deref(), Some("name: b\n"));
    assert_eq!(s.files["team/b.yml"].path, d.join("team/b.yml"));
    assert_eq!(s.stats.files_read, 2);
    assert_eq!(s.stats.bytes_read, 16);
    use sha2::Digest;
    let want: [u8; 32] = sha2::Sha256::digest(b"name: a\n").into();
    assert_eq!(s.files["a.yaml"].hash, want);
}

#[test]
fn unchanged_rescan_is_not_a_change_and_keeps_the_generation() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "a.yaml", "x: 1\n");
    let mut sc = Scanner::new(tmp.path());
    let first = sc.scan();
    let second = sc.scan();
    assert!(!second.changed);
    assert_eq!(second.generation, first.generation);
    assert_eq!(second.files, first.files);
}

#[test]
fn change_add_delete_are_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "a.yaml", "x: 1\n");
    write(d, "b.yaml", "x: 2\n");
    let mut sc = Scanner::new(d);
    sc.scan();

    write(d, "a.yaml", "x: 100\n");
    let s = sc.scan();
    assert!(s.changed);
    assert_eq!(s.generation, 2);
    assert_eq!(text(&s, "a.yaml").as_deref(), Some("x: 100\n"));

    write(d, "sub/c.yaml", "x: 3\n");
    let s = sc.scan();
    assert!(s.changed);
    assert_eq!(s.files.len(), 3);

    fs::remove_file(d.join("b.yaml")).unwrap();
    let s = sc.scan();
    assert!(s.changed);
    assert_eq!(s.generation, 4);
    assert_eq!(s.files.keys().collect::<Vec<_>>(), ["a.yaml", "sub/c.yaml"]);
}

/// A rewrite with the same length right after a scan can keep the stat key
/// on filesystems with coarse timestamps (same tick): the scanner must still
/// see it. (On kernels with fine-grained ctime the key differs anyway; the
/// mechanism itself is checked by `recent_files_are_re_read_until_settled`.)
#[test]
fn same_size_rewrite_right_after_a_scan_is_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for round in 0..20 {
        let before = format!("v: {:04}\n", round * 2);
        let after = format!("v: {:04}\n", round * 2 + 1);
        write(d, "a.yaml", &before);
        let mut sc = Scanner::new(d);
        assert_eq!(text(&sc.scan(), "a.yaml"), Some(before));
        // same inode, same length, most likely the same mtime tick
        fs::write(d.join("a.yaml"), &after).unwrap();
        assert_eq!(text(&sc.scan(), "a.yaml"), Some(after), "round {round}");
    }
}

#[test]
fn recent_files_are_re_read_until_settled() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "a.yaml", "x: 1\n");
    write(tmp.path(), "b.yaml", "x: 2\n");
    let mut sc = Scanner::new(tmp.path());
    assert_eq!(sc.scan().stats.files_read, 2);
    // equal stat keys, but too recent to trust: read again, no change
    let s = sc.scan();
    assert_eq!(s.stats.files_read, 2);
    assert_eq!(s.stats.racy_files, 2);
    assert!(!s.changed);
}

/// A scan where nothing changed re-reads the files that were too recent
/// at the last read (once they are out of the racy window), shares the
/// last file map, and then reads nothing more.
#[test]
fn an_unchanged_rescan_settles_racy_files_and_shares_the_map() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "a.yaml", "x: 1\n");
    write(tmp.path(), "b/c.yaml", "x: 2\n");
    let mut sc = Scanner::new(tmp.path());
    let first = sc.scan();
    assert_eq!(first.stats.racy_files, 2);
    // what the scanner keeps of it: the same files without their bytes
    let kept = sc.last().unwrap().files.clone();
    std::thread::sleep(calld::source::RACY_WINDOW + std::time::Duration::from_millis(100));
    let second = sc.scan();
    assert_eq!(second.stats.files_read, 2, "the racy files are read again");
    assert!(!second.changed);
    assert_eq!(second.generation, first.generation);
    assert!(kept.ptr_eq(&second.files), "the map is shared");
    let third = sc.scan();
    assert_eq!(third.stats.files_read, 0);
    assert!(!third.changed);
    // a change after all that is seen
    write(tmp.path(), "b/c.yaml", "x: 3\n");
    let fourth = sc.scan();
    assert!(fourth.changed);
    assert_eq!(text(&fourth, "b/c.yaml").as_deref(), Some("x: 3\n"));
}

/// The warm rescan of files older than the racy window opens no file.
#[test]
fn warm_rescan_reads_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for i in 0..200 {
        write(d, &format!("f{:03}/s{i}.yaml", i % 7), &format!("i: {i}\n"));
    }
    let mut sc = Scanner::new(d);
    let s = sc.scan();
    assert_eq!(s.stats.files_read, 200);
    assert_eq!(s.stats.racy_files, 200, "files just written are racy");
    std::thread::sleep(RACY_WINDOW + std::time::Duration::from_millis(100));
    // re-read once more since they were racy; now they are settled
    let s = sc.scan();
    assert_eq!(s.stats.racy_files, 0);
    assert!(!s.changed);
    let s = sc.scan();
    assert_eq!(s.stats.files_listed, 200);
    assert_eq!(s.stats.files_read, 0);
    assert_eq!(s.stats.bytes_read, 0);
    assert!(!s.changed);

    // touching one file re-reads that one only
    write(d, "f003/s3.yaml", "i: changed\n");
    let s = sc.scan();
    assert_eq!(s.stats.files_read, 1);
    assert!(s.changed);
    assert_eq!(text(&s, "f003/s3.yaml").as_deref(), Some("i: changed\n"));
}

#[test]
fn a_missing_directory_keeps_the_last_known_files_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("calls.d");
    let mut sc = Scanner::new(&d);
    let s = sc.scan();
    assert!(
        s.root_error.as_deref().unwrap().contains("calls.d"),
        "{s:?}"
    );
    assert!(s.files.is_empty());
    assert_eq!(s.generation, 1);

    write(&d, "a.yaml", "x: 1\n");
    let s = sc.scan();
    assert!(s.root_error.is_none());
    assert!(s.changed);
    assert_eq!(s.files.len(), 1);

    fs::rename(&d, tmp.path().join("away")).unwrap();
    let s = sc.scan();
    assert!(s.changed);
    let err = s.root_error.as_deref().unwrap();
    assert!(err.contains("cannot read the calls directory"), "{err}");
    // the last known file is kept: its hash (its bytes went with the
    // snapshot of the scan that read them)
    let known = &s.files["a.yaml"];
    assert_eq!(known.hash, sha(b"x: 1\n"), "last known kept");
    assert_eq!(known.content, Ok(None));
    let again = sc.scan();
    assert!(!again.changed, "the same error twice is not a change");

    fs::rename(tmp.path().join("away"), &d).unwrap();
    let s = sc.scan();
    assert!(s.changed);
    assert!(s.root_error.is_none());
}

#[test]
fn a_file_over_the_limit_is_reported_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "ok.yaml", "x: 1\n");
    let big = fs::File::create(d.join("big.yaml")).unwrap();
    big.set_len(MAX_SPEC_FILE_BYTES + 1).unwrap();
    let mut sc = Scanner::new(d);
    let s = sc.scan();
    let err = s.files["big.yaml"].content.as_ref().unwrap_err();
    assert!(err.contains("1048577 bytes"), "{err}");
    assert!(err.contains("limit"), "{err}");
    assert_eq!(s.stats.bytes_read, 5, "the big file was not read");
    assert_eq!(text(&s, "ok.yaml").as_deref(), Some("x: 1\n"));

    // shrinking it heals it
    big.set_len(3).unwrap();
    let s = sc.scan();
    assert_eq!(s.files["big.yaml"].bytes().map(<[u8]>::len), Some(3));
}

#[cfg(target_os = "linux")]
#[test]
fn an_unreadable_file_is_reported_with_its_error_beside_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "ok.yaml", "x: 1\n");
    // Reading /proc/self/mem at offset 0 fails with EIO, even for root (the
    // tests run as root, so chmod 000 would not stop the read).
    std::os::unix::fs::symlink("/proc/self/mem", d.join("mem.yaml")).unwrap();
    let mut sc = Scanner::new(d);
    let s = sc.scan();
    let err = s.files["mem.yaml"].content.as_ref().unwrap_err();
    assert!(err.starts_with("cannot read"), "{err}");
    assert_eq!(text(&s, "ok.yaml").as_deref(), Some("x: 1\n"));

    // not root: a plain permission error too
    let is_root = fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(true);
    if !is_root {
        use std::os::unix::fs::PermissionsExt;
        write(d, "locked.yaml", "x: 2\n");
        fs::set_permissions(d.join("locked.yaml"), fs::Permissions::from_mode(0o000)).unwrap();
        let s = sc.scan();
        let err = s.files["locked.yaml"].content.as_ref().unwrap_err();
        assert!(err.contains("ermission denied"), "{err}");
    }
}
