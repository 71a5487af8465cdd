//! Property tests: `spec::load_file` never panics, whatever it is given —
//! arbitrary bytes, YAML-looking text, and YAML documents generated
//! structurally (nested mappings, lists and scalars with keys drawn from the
//! real key set and random ones). What it accepts must render, revise and
//! plan without panicking too, and every finding must be located.

use proptest::prelude::*;

use calld::config::{ApiVersion, Defaults};
use calld::spec::{Context, FileLoad, load_file};

fn load(bytes: &[u8]) -> FileLoad {
    let defaults = Defaults::default();
    let ctx = Context {
        defaults: &defaults,
        public_url: Some("https://bot.contoso.com/api/calls"),
        now: "2026-06-01T00:00:00Z".parse().unwrap(),
    };
    load_file("fuzz.yaml", "fuzz.yaml", bytes, &ctx)
}

/// What must hold for any input.
fn check_invariants(bytes: &[u8]) {
    let out = load(bytes);
    for d in &out.diagnostics {
        assert_eq!(d.file, "fuzz.yaml");
        assert!(d.line >= 1 && d.column >= 1, "unlocated: {d:?}");
        assert!(!d.message.is_empty());
        // the line exists in the input (or is the line after the last)
        let lines = bytes.split(|b| *b == b'\n').count() as u64;
        assert!(d.line <= lines + 1, "{d:?} beyond {lines} lines");
    }
    // a file without errors gives at least one spec; one with errors in
    // every document gives none
    if !out.has_errors() {
        assert!(!out.specs.is_empty(), "no error and no spec");
    }
    let from: jiff::Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
    for spec in &out.specs {
        let req = calld::spec::render::request(
            spec,
            "https://graph.microsoft.com",
            ApiVersion::V1,
            false,
        );
        assert!(req.body.is_object());
        assert_eq!(spec.revision.len(), 64);
        let _ = calld::spec::render::legacy_revision(spec);
        let _ = calld::spec::render::body_for_run(spec, "run-1");
        let plan = calld::plan::plan_spec(spec, from, 3, &out.diagnostics);
        assert_eq!(plan.name, spec.name);
        if let Some(s) = &spec.schedule {
            let _ = s.next_after(from);
        }
    }
}

/// Keys calld knows, at every level, and a few near misses.
const KEYS: &[&str] = &[
    "name",
    "description",
    "suspend",
    "subject",
    "tenantId",
    "callbackUri",
    "source",
    "targets",
    "modalities",
    "media",
    "chat",
    "meeting",
    "schedule",
    "retry",
    "hangupAfter",
    "graph",
    "identity",
    "languageId",
    "region",
    "countryCode",
    "application",
    "applicationInstance",
    "user",
    "guest",
    "phone",
    "device",
    "id",
    "displayName",
    "prefetch",
    "appHosted",
    "uri",
    "resourceId",
    "blob",
    "threadId",
    "messageId",
    "replyChainMessageId",
    "organizer",
    "joinUrl",
    "joinMeetingId",
    "passcode",
    "asGuest",
    "at",
    "cron",
    "timezone",
    "deadline",
    "concurrency",
    "jitter",
    "until",
    "attempts",
    "interval",
    "callOptions",
    "@odata.type",
    "state",
    "resultInfo",
    "subjet",
    "<<",
];

/// Scalars that exercise the validators.
const SCALARS: &[&str] = &[
    "\"+14255550100\"",
    "\"+1\"",
    "+14255550100",
    "0",
    "-1",
    "11",
    "1.5",
    "1e400",
    "true",
    "no",
    "null",
    "~",
    "\"\"",
    "x",
    "audio",
    "video",
    "data",
    "forbid",
    "replace",
    "none",
    "5m",
    "1h30m",
    "0s",
    "99999999999999999999999",
    "\"0 9 * * Mon-Fri\"",
    "\"@daily\"",
    "\"61 * * * *\"",
    "Europe/Berlin",
    "America/New_York",
    "Mars/Olympus",
    "2026-03-08T02:30:00",
    "2020-01-01T00:00:00Z",
    "2030-01-01T00:00:00+01:00",
    "https://bot.contoso.com/api/calls",
    "http://localhost:8080/cb",
    "http://bot.contoso.com/x",
    "\"https://teams.microsoft.com/meet/123?p=x\"",
    "\"https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0?context=%7b%22Tid%22%3a%22t%22%2c%22Oid%22%3a%22o%22%7d\"",
    "550fae72-d251-43ec-868c-373732c2704f",
    "\"19:x@thread.v2\"",
    "'quoted'",
    "\"a\\u0000b\"",
    "\"#microsoft.graph.outgoingCallOptions\"",
    "&anchor x",
    "*anchor",
    "!!binary aGVsbG8=",
    "!!str 5",
    "\"\\t\"",
    "|\n  block\n",
    ">-\n  folded\n",
];

#[derive(Debug, Clone)]
enum Y {
    Scalar(String),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-zA-Z_@][a-zA-Z0-9_.-]{0,12}",
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(SCALARS).prop_map(str::to_string),
        1 => "[ -~]{0,20}".prop_map(|s| format!("{s:?}")),
        1 => any::<i64>().prop_map(|i| i.to_string()),
    ]
}

fn yaml_value() -> impl Strategy<Value = Y> {
    scalar()
        .prop_map(Y::Scalar)
        .prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Y::Seq),
                prop::collection::vec((key(), inner), 0..6).prop_map(Y::Map),
            ]
        })
}

/// A top-level document: mostly a mapping of real keys.
fn document() -> impl Strategy<Value = Y> {
    prop_oneof![
        6 => prop::collection::vec((key(), yaml_value()), 0..12).prop_map(Y::Map),
        1 => yaml_value(),
    ]
}

fn is_block_scalar(s: &str) -> bool {
    s.starts_with('|') || s.starts_with('>')
}

/// Block style (indented lines).
fn emit_block(y: &Y, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match y {
        Y::Scalar(s) => {
            out.push(' ');
            if is_block_scalar(s) {
                // re-indent the block body below its parent
                let mut lines = s.lines();
                out.push_str(lines.next().unwrap_or("|"));
                out.push('\n');
                for l in lines {
                    out.push_str(&pad);
                    out.push_str("  ");
                    out.push_str(l.trim_start());
                    out.push('\n');
                }
                return;
            }
            out.push_str(s);
            out.push('\n');
        }
        Y::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Y::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Y::Seq(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&pad);
                out.push('-');
                emit_block(item, indent + 2, out);
            }
        }
        Y::Map(entries) => {
            out.push('\n');
            for (k, v) in entries {
                out.push_str(&pad);
                out.push_str(&format!("{k:?}:"));
                emit_block(v, indent + 2, out);
            }
        }
    }
}

/// Flow style (`{a: [1, 2]}`), block scalars replaced by plain ones.
fn emit_flow(y: &Y, out: &mut String) {
    match y {
        Y::Scalar(s) if is_block_scalar(s) => out.push_str("\"block\""),
        Y::Scalar(s) => out.push_str(s),
        Y::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                emit_flow(item, out);
            }
            out.push(']');
        }
        Y::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&format!("{k:?}: "));
                emit_flow(v, out);
            }
            out.push('}');
        }
    }
}

fn emit_document(y: &Y, flow: bool) -> String {
    let mut out = String::new();
    match (y, flow) {
        (Y::Map(entries), false) => {
            for (k, v) in entries {
                out.push_str(&format!("{k:?}:"));
                emit_block(v, 2, &mut out);
            }
        }
        (_, false) => {
            out.push_str("---");
            emit_block(y, 0, &mut out);
        }
        (_, true) => {
            emit_flow(y, &mut out);
            out.push('\n');
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_invariants(&bytes);
    }

    #[test]
    fn yaml_looking_text_never_panics(text in "([a-zA-Z0-9 :\\-\\[\\]{},&*!|>'\"#%@`?\t\n]|\r\n){0,400}") {
        check_invariants(text.as_bytes());
    }

    #[test]
    fn structured_yaml_never_panics(
        docs in prop::collection::vec((document(), any::<bool>()), 1..4),
    ) {
        let text: Vec<String> = docs.iter().map(|(d, flow)| emit_document(d, *flow)).collect();
        check_invariants(text.join("---\n").as_bytes());
    }
}

/// A generated document that is almost a valid spec: the structural
/// generator above rarely produces one, so mutate a valid spec instead,
/// deleting and duplicating lines, which reaches validation (rather than
/// the parser) on most cases.
fn valid_spec() -> String {
    "name: fuzzed\nsubject: S\ncallbackUri: https://bot.contoso.com/api/calls\ntenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47\nsource:\n  identity:\n    applicationInstance: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\n  languageId: en-US\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f, displayName: Heidi }\n  - phone: \"+14255550100\"\nmodalities: [audio, video]\nmedia:\n  prefetch:\n    - uri: https://cdn.contoso.com/beep.wav\n      resourceId: 1D6DE2D4-CD51-4309-8DAA-70768651088E\nchat:\n  threadId: \"19:x@thread.v2\"\n  messageId: \"0\"\nschedule:\n  cron: \"0 9 * * Mon-Fri\"\n  timezone: Europe/Berlin\n  deadline: 5m\n  concurrency: forbid\n  jitter: 30s\n  until: 2030-01-01T00:00:00Z\nretry:\n  attempts: 2\n  interval: 5m\nhangupAfter: 30m\ngraph:\n  callOptions:\n    \"@odata.type\": \"#microsoft.graph.outgoingCallOptions\"\n    isContentSharingNotificationEnabled: true\n".to_string()
}

#[test]
fn the_mutation_seed_is_valid() {
    let out = load(valid_spec().as_bytes());
    assert!(!out.has_errors(), "{:#?}", out.diagnostics);
    assert_eq!(out.specs.len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_valid_specs_never_panic(
        ops in prop::collection::vec((0usize..40, 0usize..40, 0u8..4, scalar()), 1..6),
    ) {
        let mut lines: Vec<String> = valid_spec().lines().map(str::to_string).collect();
        for (a, b, op, s) in ops {
            if lines.is_empty() {
                break;
            }
            let a = a % lines.len();
            let b = b % lines.len();
            match op {
                0 => { lines.remove(a); }
                1 => { let l = lines[a].clone(); lines.insert(b, l); }
                2 => {
                    // replace the value after the first `: `
                    if let Some(i) = lines[a].find(": ") {
                        let head = lines[a][..i + 2].to_string();
                        lines[a] = head + &s;
                    }
                }
                _ => lines.swap(a, b),
            }
        }
        check_invariants((lines.join("\n") + "\n").as_bytes());
    }
}

/// Regression: deeply nested input overflowed a 2 MiB test-thread stack
/// before the parse depth budget was cut to 24. Every nesting style, at
/// depths around and far beyond the budget, on an explicit 2 MiB stack.
#[test]
fn deep_nesting_on_a_2_mib_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            for depth in [20usize, 23, 24, 25, 30, 100, 1_000, 10_000, 100_000] {
                let cases = [
                    "[".repeat(depth) + &"]".repeat(depth),
                    "{a: ".repeat(depth) + "1" + &"}".repeat(depth),
                    "- ".repeat(depth) + "x\n",
                    (0..depth.min(2_000))
                        .map(|i| format!("{}k:\n", " ".repeat(i)))
                        .collect::<String>(),
                    (0..depth.min(2_000))
                        .map(|i| format!("{}- k:\n", "  ".repeat(i)))
                        .collect::<String>(),
                    format!("subject: {}x{}\n", "[".repeat(depth), "]".repeat(depth)),
                ];
                for (i, text) in cases.iter().enumerate() {
                    let out = load(text.as_bytes());
                    // nothing this deep is a valid spec
                    assert!(out.has_errors(), "depth {depth} case {i}");
                    if depth > 30 && text.len() <= 1024 * 1024 {
                        assert!(
                            out.diagnostics
                                .iter()
                                .any(|d| d.message.contains("nested too deeply")
                                    || d.message.contains("larger than")),
                            "depth {depth} case {i}: {:?}",
                            out.diagnostics
                        );
                    }
                }
            }
        })
        .unwrap();
    handle.join().expect("no stack overflow, no panic");
}
