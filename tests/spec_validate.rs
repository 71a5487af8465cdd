//! Every validation rule of `spec::validate`, table-driven through
//! `spec::load_file`: each case is a whole spec file and the exact list of
//! findings it must give (severity, line, column, key path, message).

use calld::config::Defaults;
use calld::spec::{Context, Diagnostic, Severity, load_file};

const E: Severity = Severity::Error;
const W: Severity = Severity::Warning;

struct Case {
    name: &'static str,
    text: &'static str,
    /// (severity, line, column, path, start of the message)
    expect: &'static [(Severity, u64, u64, &'static str, &'static str)],
}

fn ctx(defaults: &Defaults) -> Context<'_> {
    Context {
        defaults,
        public_url: None,
        now: "2026-06-01T00:00:00Z".parse().unwrap(),
    }
}

fn show(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

const CASES: &[Case] = &[
    Case {
        name: "doc-not-map",
        text: "- a\n- b\n",
        expect: &[(
            E,
            1,
            1,
            "",
            "a call spec must be a mapping (key: value lines), not a list",
        )],
    },
    Case {
        name: "name-empty",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nname: \" \"\n",
        expect: &[(E, 7, 7, "name", "must not be empty")],
    },
    Case {
        name: "name-spaces",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nname: \" x\"\n",
        expect: &[(E, 7, 7, "name", "a name must not start or end with spaces")],
    },
    Case {
        name: "name-control",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nname: \"a\\u0007b\"\n",
        expect: &[(
            E,
            7,
            7,
            "name",
            "a name must not contain control characters",
        )],
    },
    Case {
        name: "name-long",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nname: nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\n",
        expect: &[(E, 7, 7, "name", "a name must be at most 200 characters")],
    },
    Case {
        name: "name-number",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nname: 12\n",
        expect: &[(E, 7, 7, "name", "expected a string, found a number")],
    },
    Case {
        name: "description-list",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\ndescription: [a]\n",
        expect: &[(E, 7, 14, "description", "expected a string, found a list")],
    },
    Case {
        name: "suspend-string",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nsuspend: \"yes\"\n",
        expect: &[(
            E,
            7,
            10,
            "suspend",
            "expected true or false, found a string",
        )],
    },
    Case {
        name: "subject-map",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nsubject: { a: 1 }\n",
        expect: &[(E, 7, 10, "subject", "expected a string, found a mapping")],
    },
    Case {
        name: "tenant-empty",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\ntenantId: \"\"\n",
        expect: &[(E, 7, 11, "tenantId", "must not be empty")],
    },
    Case {
        name: "callback-ftp",
        text: "callbackUri: ftp://bot.contoso.com/x\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            1,
            14,
            "callbackUri",
            "`ftp://bot.contoso.com/x` has scheme `ftp`: write an https:// URL",
        )],
    },
    Case {
        name: "callback-not-url",
        text: "callbackUri: \"not a url\"\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            1,
            14,
            "callbackUri",
            "`not a url` is not a URL (relative URL without a base); write https://host/path",
        )],
    },
    Case {
        name: "callback-http-loopback-ok",
        text: "callbackUri: http://127.0.0.1:8080/cb\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[],
    },
    Case {
        name: "callback-missing",
        text: "source:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            1,
            1,
            "callbackUri",
            "no callbackUri: set `callbackUri:` here or `callback.publicUrl` in the configuration",
        )],
    },
    Case {
        // (a VoIP call without a source is fine: Graph takes the caller
        // from the token; a PSTN call needs its resource account)
        name: "source-missing",
        text: "callbackUri: https://bot.contoso.com/api/calls\ntenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47\ntargets:\n  - phone: \"+14255550100\"\n",
        expect: &[(
            E,
            1,
            1,
            "source",
            "a call to a phone number (PSTN) needs the resource account as its source",
        )],
    },
    Case {
        name: "source-no-identity",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  languageId: en-US\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            3,
            3,
            "source.identity",
            "the source needs an identity, such as identity: { application: { id: ... } }",
        )],
    },
    Case {
        name: "source-unknown-key",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    applicaton: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            4,
            5,
            "source.identity.applicaton",
            "unknown key `applicaton`: did you mean `application`?",
        )],
    },
    Case {
        name: "source-extra-key",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\n  langId: en\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            5,
            3,
            "source.langId",
            "unknown key `langId`: allowed here are identity, languageId, region, countryCode",
        )],
    },
    Case {
        name: "identity-empty",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity: {}\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            3,
            13,
            "source.identity",
            "an identity set needs one identity, such as application: { id: ... }",
        )],
    },
    Case {
        name: "identity-not-map",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: app-1\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            4,
            18,
            "source.identity.application",
            "expected an identity mapping such as { id: ..., displayName: ... }, found a string",
        )],
    },
    Case {
        name: "identity-nested",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698, x: [1] }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            4,
            65,
            "source.identity.application.x",
            "identity values must be plain values",
        )],
    },
    Case {
        name: "identity-display-number",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698, displayName: 2024 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            4,
            75,
            "source.identity.application.displayName",
            "`displayName` must be a string, found a number: write it in quotes",
        )],
    },
    Case {
        name: "app-id-not-guid",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: my-bot }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            W,
            4,
            18,
            "source.identity.application.id",
            "`my-bot` is not GUID-shaped; Graph expects an Entra object id here",
        )],
    },
    Case {
        name: "app-id-missing",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { displayName: Bot }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            4,
            18,
            "source.identity.application",
            "an application identity needs an id",
        )],
    },
    Case {
        name: "user-id-number",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 12 }\n",
        expect: &[(
            E,
            6,
            17,
            "targets[0].user.id",
            "`id` must be a string, found a number: write it in quotes",
        )],
    },
    Case {
        name: "targets-meeting-both",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmeeting:\n  joinMeetingId: \"1\"\n",
        expect: &[(
            E,
            7,
            1,
            "meeting",
            "set either `targets` (place a call) or `meeting` (join one), not both",
        )],
    },
    Case {
        name: "nothing-to-call",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\n",
        expect: &[(
            E,
            1,
            1,
            "",
            "nothing to call: set `targets:` (who to call) or `meeting:` (which meeting to join)",
        )],
    },
    Case {
        name: "targets-not-list",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets: { phone: \"+14255550100\" }\n",
        expect: &[(
            E,
            5,
            10,
            "targets",
            "`targets` must be a list (- user: ...), not a mapping",
        )],
    },
    Case {
        name: "targets-empty",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets: []\n",
        expect: &[(
            E,
            5,
            10,
            "targets",
            "`targets` is empty: list at least one, such as - phone: \"+12345678890\"",
        )],
    },
    Case {
        name: "target-two-kinds",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n    phone: \"+14255550100\"\n",
        expect: &[(
            E,
            6,
            5,
            "targets[0]",
            "each target is exactly one of user, phone, application, applicationInstance, guest",
        )],
    },
    Case {
        name: "target-empty-map",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - {}\n",
        expect: &[(
            E,
            6,
            5,
            "targets[0]",
            "each target is exactly one of user, phone, application, applicationInstance, guest",
        )],
    },
    Case {
        name: "target-unknown-kind",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - telephone: \"+14255550100\"\n",
        expect: &[(
            E,
            6,
            5,
            "targets[0].telephone",
            "unknown key `telephone`: allowed here are user, phone, application, applicationInstance, g",
        )],
    },
    Case {
        name: "target-phone-int",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - phone: 14255550100\n",
        expect: &[(
            E,
            6,
            12,
            "targets[0].phone",
            "write the phone number in quotes with its +, such as \"+12345678890\"",
        )],
    },
    Case {
        name: "target-phone-no-id",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - phone: { displayName: Desk }\n",
        expect: &[(
            E,
            6,
            12,
            "targets[0].phone",
            "a phone identity needs an id in E.164, such as \"+12345678890\"",
        )],
    },
    Case {
        name: "target-phone-short",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - phone: \"+12345\"\n",
        expect: &[(
            E,
            6,
            12,
            "targets[0].phone.id",
            "`+12345` is not an E.164 phone number: write + and 7 to 15 digits, such as \"+12345678890\" ",
        )],
    },
    Case {
        name: "target-guest-empty",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - guest: { tenantId: x }\n",
        expect: &[(
            E,
            6,
            12,
            "targets[0].guest",
            "a guest target needs an id or a displayName",
        )],
    },
    Case {
        name: "target-not-map",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - \"+14255550100\"\n",
        expect: &[(
            E,
            6,
            5,
            "targets[0]",
            "`targets[0]` must be a mapping (key: value lines), not a string",
        )],
    },
    Case {
        name: "voip-6",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c27040 }\n  - user: { id: 550fae72-d251-43ec-868c-373732c27041 }\n  - user: { id: 550fae72-d251-43ec-868c-373732c27042 }\n  - user: { id: 550fae72-d251-43ec-868c-373732c27043 }\n  - user: { id: 550fae72-d251-43ec-868c-373732c27044 }\n  - user: { id: 550fae72-d251-43ec-868c-373732c27045 }\n",
        expect: &[(
            W,
            6,
            3,
            "targets",
            "6 VoIP targets: Graph allows at most 5 in a group call; split the spec or join a meeting i",
        )],
    },
    Case {
        name: "modalities-string",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmodalities: audio\n",
        expect: &[(
            E,
            7,
            13,
            "modalities",
            "`modalities` must be a list such as [audio, video]",
        )],
    },
    Case {
        name: "modalities-empty",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmodalities: []\n",
        expect: &[(
            E,
            7,
            13,
            "modalities",
            "`modalities` is empty: Graph needs at least one; write [audio] or leave it out",
        )],
    },
    Case {
        name: "modalities-twice",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmodalities: [audio, audio]\n",
        expect: &[(E, 7, 21, "modalities[1]", "`audio` is listed twice")],
    },
    Case {
        name: "modalities-unknown",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmodalities: [audio, smell]\n",
        expect: &[(
            E,
            7,
            21,
            "modalities[1]",
            "unknown modality `smell`: use audio, video, videoBasedScreenSharing, data",
        )],
    },
    Case {
        name: "modalities-number",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmodalities: [1]\n",
        expect: &[(
            E,
            7,
            14,
            "modalities[0]",
            "expected a string, found a number",
        )],
    },
    Case {
        name: "media-both",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmedia:\n  prefetch: []\n  appHosted: { blob: x }\n",
        expect: &[(
            E,
            9,
            14,
            "media.appHosted",
            "set either media.prefetch (service-hosted media) or media.appHosted, not both",
        )],
    },
    Case {
        name: "media-unknown",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmedia:\n  prefech: []\n",
        expect: &[(
            E,
            8,
            3,
            "media.prefech",
            "unknown key `prefech`: did you mean `prefetch`?",
        )],
    },
    Case {
        name: "prefetch-not-list",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmedia:\n  prefetch: { uri: x }\n",
        expect: &[(
            E,
            8,
            13,
            "media.prefetch",
            "`prefetch` must be a list of { uri, resourceId }",
        )],
    },
    Case {
        name: "prefetch-http",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmedia:\n  prefetch:\n    - { uri: \"http://cdn.contoso.com/a.wav\", resourceId: r1 }\n",
        expect: &[(
            E,
            9,
            14,
            "media.prefetch[0].uri",
            "`http://cdn.contoso.com/a.wav` must be an https URL of a WAV file (mono, 16-bit, 16 kHz)",
        )],
    },
    Case {
        name: "prefetch-no-uri",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmedia:\n  prefetch:\n    - { resourceId: r1 }\n",
        expect: &[(
            E,
            9,
            7,
            "media.prefetch[0].uri",
            "missing uri: the https URL of the WAV file to prefetch",
        )],
    },
    Case {
        name: "prefetch-no-resource",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmedia:\n  prefetch:\n    - { uri: \"https://cdn.contoso.com/a.wav\" }\n",
        expect: &[(
            E,
            9,
            7,
            "media.prefetch[0].resourceId",
            "missing resourceId: a GUID naming this media file",
        )],
    },
    Case {
        name: "prefetch-dup-resource",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmedia:\n  prefetch:\n    - { uri: \"https://cdn.contoso.com/a.wav\", resourceId: R1 }\n    - { uri: \"https://cdn.contoso.com/b.wav\", resourceId: r1 }\n",
        expect: &[(
            E,
            10,
            59,
            "media.prefetch[1].resourceId",
            "resourceId `r1` is used twice: each prefetched file needs its own",
        )],
    },
    Case {
        name: "apphosted-no-blob",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmedia:\n  appHosted: {}\n",
        // a warning since Microsoft's published examples 4 and 6 omit it
        expect: &[(
            W,
            8,
            14,
            "media.appHosted.blob",
            "no blob: Graph connects app-hosted media to the media platform",
        )],
    },
    Case {
        name: "apphosted-empty-blob",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmedia:\n  appHosted: { blob: \"\" }\n",
        expect: &[(E, 8, 22, "media.appHosted.blob", "must not be empty")],
    },
    Case {
        name: "chat-no-thread",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nchat: { messageId: \"0\" }\n",
        expect: &[(
            E,
            7,
            7,
            "chat.threadId",
            "chat needs a threadId, such as \"19:meeting_...@thread.v2\"",
        )],
    },
    Case {
        name: "chat-null-thread",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nchat: { threadId: null }\n",
        expect: &[(
            E,
            7,
            7,
            "chat.threadId",
            "chat needs a threadId, such as \"19:meeting_...@thread.v2\"",
        )],
    },
    Case {
        name: "chat-float",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nchat: { threadId: \"19:x@thread.v2\", messageId: 1.5 }\n",
        expect: &[(
            E,
            7,
            48,
            "chat.messageId",
            "expected a string, found a number",
        )],
    },
    Case {
        name: "meeting-no-form",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  passcode: x\n",
        expect: &[(
            E,
            6,
            3,
            "meeting",
            "say which meeting: set one of meeting.organizer (with chat), meeting.joinUrl or meeting.jo",
        )],
    },
    Case {
        name: "meeting-two-forms",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  joinMeetingId: \"1\"\n  joinUrl: https://teams.microsoft.com/meet/1\n",
        expect: &[(
            E,
            6,
            3,
            "meeting",
            "set only one of meeting.organizer, meeting.joinUrl, meeting.joinMeetingId (found joinUrl, ",
        )],
    },
    Case {
        name: "meeting-passcode-url",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  joinUrl: https://teams.microsoft.com/meet/1\n  passcode: x\n",
        expect: &[(
            E,
            7,
            3,
            "meeting.passcode",
            "a passcode goes with meeting.joinMeetingId",
        )],
    },
    Case {
        name: "meeting-organizer-no-chat",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  organizer:\n    user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n",
        expect: &[(
            E,
            6,
            3,
            "meeting.organizer",
            "joining by organizer needs `chat: { threadId: ..., messageId: ... }` (or use meeting.joinU",
        )],
    },
    Case {
        name: "meeting-organizer-empty",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nchat: { threadId: \"19:x@thread.v2\" }\nmeeting:\n  organizer: {}\n",
        expect: &[(
            E,
            7,
            14,
            "meeting.organizer",
            "an identity set needs one identity, such as application: { id: ... }",
        )],
    },
    Case {
        name: "meeting-url-and-chat",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nchat: { threadId: \"19:x@thread.v2\" }\nmeeting:\n  joinUrl: \"https://teams.microsoft.com/l/meetup-join/19%3ax%40thread.v2/0?context=%7b%22Oid%22%3a%22o%22%7d\"\n",
        expect: &[(
            E,
            7,
            12,
            "meeting.joinUrl",
            "the joinUrl already names the chat: remove `chat:` or use meeting.organizer",
        )],
    },
    Case {
        name: "meeting-url-bad",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  joinUrl: https://example.com/join/1\n",
        expect: &[(
            E,
            6,
            12,
            "meeting.joinUrl",
            "`https://example.com/join/1` is not a Teams join link: expected https://teams.microsoft.co",
        )],
    },
    Case {
        name: "meeting-url-no-context",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  joinUrl: \"https://teams.microsoft.com/l/meetup-join/19%3ax%40thread.v2/0\"\n",
        expect: &[(
            E,
            6,
            12,
            "meeting.joinUrl",
            "`https://teams.microsoft.com/l/meetup-join/19%3ax%40thread.v2/0` has no context parameter ",
        )],
    },
    Case {
        name: "meeting-url-number",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  joinUrl: 5\n",
        expect: &[(
            E,
            6,
            12,
            "meeting.joinUrl",
            "expected a string, found a number",
        )],
    },
    Case {
        name: "guest-no-name",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  joinMeetingId: \"1\"\n  asGuest: { id: g }\n",
        expect: &[(
            E,
            7,
            12,
            "meeting.asGuest.displayName",
            "a guest needs a displayName, shown to the meeting",
        )],
    },
    Case {
        name: "guest-empty-name",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  joinMeetingId: \"1\"\n  asGuest: { displayName: \"\" }\n",
        expect: &[(E, 7, 27, "meeting.asGuest.displayName", "must not be empty")],
    },
    Case {
        name: "guest-unknown",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  joinMeetingId: \"1\"\n  asGuest: { displayName: x, name: y }\n",
        expect: &[(
            E,
            7,
            30,
            "meeting.asGuest.name",
            "unknown key `name`: allowed here are displayName, id",
        )],
    },
    Case {
        name: "meetingid-list",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\nmeeting:\n  joinMeetingId: [1]\n",
        expect: &[(
            E,
            6,
            18,
            "meeting.joinMeetingId",
            "expected a string, found a list",
        )],
    },
    Case {
        name: "schedule-neither",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  timezone: UTC\n",
        expect: &[(
            E,
            8,
            3,
            "schedule",
            "a schedule needs `at:` (once, such as 2026-12-01T09:00:00+01:00) or `cron:` (such as \"0 9 ",
        )],
    },
    Case {
        name: "schedule-both",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  at: 2030-01-01T00:00:00Z\n  cron: \"@daily\"\n",
        expect: &[(
            E,
            9,
            9,
            "schedule.cron",
            "set either schedule.at (once) or schedule.cron (repeating), not both",
        )],
    },
    Case {
        name: "schedule-not-map",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule: \"@daily\"\n",
        expect: &[(
            E,
            7,
            11,
            "schedule",
            "`schedule` must be a mapping (key: value lines), not a string",
        )],
    },
    Case {
        name: "schedule-bad-at",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  at: tomorrow\n",
        expect: &[(
            E,
            8,
            7,
            "schedule.at",
            "`tomorrow` is not a time: write an RFC 3339 time such as 2026-12-01T09:00:00+01:00 or 2026",
        )],
    },
    Case {
        name: "schedule-at-date-only",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  at: 2030-01-01\n",
        expect: &[(
            E,
            8,
            7,
            "schedule.at",
            "`2030-01-01` has a date but no time of day: write an RFC 3339 time such as 2026-12-01T09:0",
        )],
    },
    Case {
        name: "schedule-at-number",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  at: 5\n",
        expect: &[(E, 8, 7, "schedule.at", "expected a string, found a number")],
    },
    Case {
        name: "schedule-at-past",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  at: 2020-01-01T00:00:00Z\n",
        expect: &[(
            W,
            8,
            7,
            "schedule.at",
            "2020-01-01T00:00:00Z is in the past: this run will not be placed (it is recorded as missed",
        )],
    },
    Case {
        name: "schedule-until-past",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"@daily\"\n  until: 2020-01-01T00:00:00Z\n",
        expect: &[(
            W,
            9,
            10,
            "schedule.until",
            "2020-01-01T00:00:00Z is in the past: no run will be placed",
        )],
    },
    Case {
        name: "schedule-until-bad",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"@daily\"\n  until: soon\n",
        expect: &[(
            E,
            9,
            10,
            "schedule.until",
            "`soon` is not a time: write an RFC 3339 time such as 2026-12-01T09:00:00+01:00 or 2026-12-",
        )],
    },
    Case {
        name: "schedule-cron-bad",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"0 9 * *\"\n",
        expect: &[(
            E,
            8,
            9,
            "schedule.cron",
            "cron expression `0 9 * *` has 4 fields: calld uses 5-field crontab (minute hour day-of-mon",
        )],
    },
    Case {
        name: "schedule-cron-number",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: 5\n",
        expect: &[(
            E,
            8,
            9,
            "schedule.cron",
            "expected a string, found a number",
        )],
    },
    Case {
        name: "schedule-tz-bad",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"@daily\"\n  timezone: Mars/Olympus\n",
        expect: &[(
            E,
            9,
            13,
            "schedule.timezone",
            "unknown time zone `Mars/Olympus`: use an IANA name such as Europe/Berlin",
        )],
    },
    Case {
        name: "schedule-tz-number",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"@daily\"\n  timezone: 1\n",
        expect: &[(
            E,
            9,
            13,
            "schedule.timezone",
            "expected a string, found a number",
        )],
    },
    Case {
        name: "schedule-deadline-bad",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"@daily\"\n  deadline: soon\n",
        expect: &[(
            E,
            9,
            13,
            "schedule.deadline",
            "`soon` is not a duration: write a duration such as 90s, 5m, 1h30m or 2d (units: d, h, m, s",
        )],
    },
    Case {
        name: "schedule-deadline-zero",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"@daily\"\n  deadline: 0s\n",
        expect: &[(
            E,
            9,
            13,
            "schedule.deadline",
            "deadline `0s` would miss every run: write a positive duration such as 5m, or none for no d",
        )],
    },
    Case {
        name: "schedule-concurrency-bad",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"@daily\"\n  concurrency: queue\n",
        expect: &[(
            E,
            9,
            16,
            "schedule.concurrency",
            "unknown concurrency `queue`: write forbid (skip the run while the previous call is up, the",
        )],
    },
    Case {
        name: "schedule-jitter-number",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"@daily\"\n  jitter: 30\n",
        expect: &[(
            E,
            9,
            11,
            "schedule.jitter",
            "a duration needs a unit: write 90s, 5m, 1h30m or 2d",
        )],
    },
    Case {
        name: "schedule-jitter-list",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"@daily\"\n  jitter: [1]\n",
        expect: &[(
            E,
            9,
            11,
            "schedule.jitter",
            "expected a duration such as 5m, found a list",
        )],
    },
    Case {
        name: "schedule-jitter-bad",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nschedule:\n  cron: \"@daily\"\n  jitter: 30 seconds\n",
        expect: &[(
            E,
            9,
            11,
            "schedule.jitter",
            "`30 seconds` lacks a unit: write a duration such as 90s, 5m, 1h30m or 2d (units: d, h, m, ",
        )],
    },
    Case {
        name: "retry-attempts-11",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nretry:\n  attempts: 11\n",
        expect: &[(
            E,
            8,
            13,
            "retry.attempts",
            "attempts must be a whole number from 0 to 10",
        )],
    },
    Case {
        name: "retry-attempts-neg",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nretry:\n  attempts: -1\n",
        expect: &[(
            E,
            8,
            13,
            "retry.attempts",
            "attempts must be a whole number from 0 to 10",
        )],
    },
    Case {
        name: "retry-interval-bad",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nretry:\n  interval: often\n",
        expect: &[(
            E,
            8,
            13,
            "retry.interval",
            "`often` is not a duration: write a duration such as 90s, 5m, 1h30m or 2d (units: d, h, m, ",
        )],
    },
    Case {
        name: "retry-unknown",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nretry:\n  attempt: 1\n",
        expect: &[(
            E,
            8,
            3,
            "retry.attempt",
            "unknown key `attempt`: did you mean `attempts`?",
        )],
    },
    Case {
        name: "hangup-bad",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nhangupAfter: 1x\n",
        expect: &[(
            E,
            7,
            14,
            "hangupAfter",
            "`1x` has an unknown unit `x`: write a duration such as 90s, 5m, 1h30m or 2d (units: d, h, ",
        )],
    },
    Case {
        name: "graph-not-map",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\ngraph: [a]\n",
        expect: &[(
            E,
            7,
            8,
            "graph",
            "`graph` must be a mapping: a JSON merge patch applied to the request body",
        )],
    },
    Case {
        name: "graph-server-generated",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\ngraph:\n  state: established\n  callOptions: {}\n",
        expect: &[(
            E,
            8,
            3,
            "graph.state",
            "`state` is generated by Graph and cannot be sent; remove it",
        )],
    },
    Case {
        name: "top-server-generated",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nid: abc\n",
        expect: &[(
            E,
            7,
            1,
            "id",
            "`id` is generated by Graph and cannot be set in a spec; remove it",
        )],
    },
    Case {
        name: "top-graph-name",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nrequestedModalities: [audio]\n",
        expect: &[(
            E,
            7,
            1,
            "requestedModalities",
            "unknown key `requestedModalities`: calld calls it `modalities`",
        )],
    },
    Case {
        name: "top-graph-name-2",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nmediaConfig: {}\n",
        expect: &[(
            E,
            7,
            1,
            "mediaConfig",
            "unknown key `mediaConfig`: calld calls it `media`",
        )],
    },
    Case {
        name: "top-unknown-far",
        text: "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\ntargets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\nxyzzy: 1\n",
        expect: &[(
            E,
            7,
            1,
            "xyzzy",
            "unknown key `xyzzy`: allowed here are name, description, suspend, subject, tenantId, callb",
        )],
    },
];

#[test]
fn every_rule_gives_its_located_finding() {
    let defaults = Defaults::default();
    let ctx = ctx(&defaults);
    let mut failures = Vec::new();
    for case in CASES {
        let file = format!("{}.yaml", case.name);
        let out = load_file(&file, &file, case.text.as_bytes(), &ctx);
        let got: Vec<_> = out
            .diagnostics
            .iter()
            .map(|d| {
                (
                    d.severity,
                    d.line,
                    d.column,
                    d.path.as_str(),
                    d.message.as_str(),
                )
            })
            .collect();
        let matches = got.len() == case.expect.len()
            && got.iter().zip(case.expect).all(|(g, x)| {
                g.0 == x.0 && g.1 == x.1 && g.2 == x.2 && g.3 == x.3 && g.4.starts_with(x.4)
            });
        if !matches {
            failures.push(format!(
                "{}: expected {:?}\n  got:\n{}",
                case.name,
                case.expect,
                show(&out.diagnostics)
            ));
            continue;
        }
        for d in &out.diagnostics {
            assert_eq!(d.file, file);
            assert!(d.spec.is_some(), "{d:?}");
        }
        // errors: no spec, and its name is held as invalid; warnings only: a spec
        let has_errors = case.expect.iter().any(|x| x.0 == E);
        assert_eq!(out.specs.is_empty(), has_errors, "{}", case.name);
        if has_errors && !case.name.starts_with("name-") {
            assert!(out.invalid_names.contains(case.name), "{}", case.name);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_table_keeps_its_breadth() {
    // each distinct message start in the table is a rule; this guards
    // against the table shrinking unnoticed
    let mut starts: Vec<&str> = CASES
        .iter()
        .flat_map(|c| c.expect.iter().map(|x| x.4))
        .collect();
    starts.sort();
    starts.dedup();
    assert!(starts.len() >= 80, "{}", starts.len());
}

const H: &str = "callbackUri: https://bot.contoso.com/api/calls\n";
const T: &str = "targets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n";

#[test]
fn configuration_defaults_fill_in_and_are_validated_like_the_spec() {
    // defaults.source, defaults.tenantId, defaults.timezone and the public URL
    let defaults = Defaults {
        tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
        source: Some(
            serde_json::json!({"identity": {"application": {"id": "8a34a46b-3d17-4adc-8dce-dc4e7d572698"}}, "languageId": "en-US"}),
        ),
        timezone: Some("Europe/Berlin".into()),
    };
    let ctx = Context {
        defaults: &defaults,
        public_url: Some("https://calld.contoso.com/notify"),
        now: "2026-06-01T00:00:00Z".parse().unwrap(),
    };
    let text = format!("{T}schedule:\n  cron: \"0 9 * * *\"\n");
    let out = load_file("d.yaml", "d.yaml", text.as_bytes(), &ctx);
    assert!(!out.has_errors(), "{}", show(&out.diagnostics));
    let spec = &out.specs[0];
    assert_eq!(spec.call.callback_uri, "https://calld.contoso.com/notify");
    assert_eq!(
        spec.call.tenant_id.as_deref(),
        Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
    );
    assert_eq!(
        spec.schedule.as_ref().unwrap().timezone_name,
        "Europe/Berlin"
    );
    let body = calld::spec::render::body(spec);
    assert_eq!(body["source"]["languageId"], "en-US");

    // the spec's own values win
    let text = format!(
        "{H}tenantId: own\nsource: {{ identity: {{ application: {{ id: 8a34a46b-3d17-4adc-8dce-dc4e7d572699 }} }} }}\n{T}"
    );
    let out = load_file("o.yaml", "o.yaml", text.as_bytes(), &ctx);
    let spec = &out.specs[0];
    assert_eq!(spec.call.callback_uri, "https://bot.contoso.com/api/calls");
    assert_eq!(spec.call.tenant_id.as_deref(), Some("own"));
    let body = calld::spec::render::body(spec);
    assert_eq!(
        body["source"]["identity"]["application"]["id"],
        "8a34a46b-3d17-4adc-8dce-dc4e7d572699"
    );
    assert!(body["source"].get("languageId").is_none());

    // a bad defaults.source is reported on the spec that uses it, saying so
    let bad = Defaults {
        source: Some(serde_json::json!({"identity": {"phone": {"id": "123"}}})),
        ..Defaults::default()
    };
    let ctx = Context {
        defaults: &bad,
        ..ctx
    };
    let out = load_file("b.yaml", "b.yaml", format!("{H}{T}").as_bytes(), &ctx);
    let d: Vec<_> = out.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(d.len(), 1, "{}", show(&out.diagnostics));
    assert_eq!(d[0].path, "defaults.source.identity.phone.id");
    assert!(
        d[0].message
            .ends_with("(from the configuration's defaults.source)"),
        "{}",
        d[0].message
    );

    // a bad default timezone is reported at the schedule
    let bad_tz = Defaults {
        timezone: Some("Mars/Olympus".into()),
        ..Defaults::default()
    };
    let ctx = Context {
        defaults: &bad_tz,
        ..ctx
    };
    let text = format!(
        "{H}source: {{ identity: {{ application: {{ id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }} }} }}\n{T}schedule:\n  cron: \"@daily\"\n"
    );
    let out = load_file("t.yaml", "t.yaml", text.as_bytes(), &ctx);
    let d: Vec<_> = out.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(d.len(), 1, "{}", show(&out.diagnostics));
    assert_eq!(
        (d[0].line, d[0].column, d[0].path.as_str()),
        (6, 3, "schedule.timezone")
    );
    assert!(d[0].message.contains("Mars/Olympus"));
}

#[test]
fn several_documents_each_need_a_name_and_are_checked_apart() {
    let defaults = Defaults::default();
    let ctx = ctx(&defaults);
    let src =
        "source: { identity: { application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 } } }\n";
    let text =
        format!("name: a\n{H}{src}{T}---\n{H}{src}{T}---\nname: c\n{H}{src}targets: []\n---\n");
    let out = load_file("m.yaml", "m.yaml", text.as_bytes(), &ctx);
    let names: Vec<&str> = out.specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a"]);
    let errors: Vec<_> = out
        .diagnostics
        .iter()
        .map(|d| (d.line, d.path.as_str(), d.spec.as_deref()))
        .collect();
    assert_eq!(
        errors,
        [(7, "name", None), (15, "targets", Some("c"))],
        "{}",
        show(&out.diagnostics)
    );
    assert!(out.invalid_names.contains("c"));
    assert_eq!(out.specs[0].line, 1);
}

#[test]
fn a_valid_spec_sharing_its_name_with_an_invalid_one_is_a_duplicate() {
    let defaults = Defaults::default();
    let ctx = ctx(&defaults);
    let src =
        "source: { identity: { application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 } } }\n";
    let good = format!("name: shared\n{H}{src}{T}");
    let bad = format!("name: shared\n{H}{src}targets: []\n");
    let set = calld::spec::load_set(
        [
            calld::spec::Input {
                label: "a.yaml".into(),
                rel: "a.yaml".into(),
                bytes: Ok(good.as_bytes()),
            },
            calld::spec::Input {
                label: "b.yaml".into(),
                rel: "b.yaml".into(),
                bytes: Ok(bad.as_bytes()),
            },
        ],
        &ctx,
    );
    assert!(set.specs.is_empty(), "{:?}", set.specs.keys());
    assert!(set.invalid_names.contains("shared"));
    let dup: Vec<_> = set
        .diagnostics
        .iter()
        .filter(|d| d.message.starts_with("duplicate name"))
        .collect();
    assert_eq!(dup.len(), 1);
    assert_eq!((dup[0].file.as_str(), dup[0].line), ("a.yaml", 1));
    assert!(
        dup[0].message.contains("also at b.yaml, which has errors"),
        "{}",
        dup[0].message
    );
    assert_eq!(set.invalid_files.len(), 2);
}
