//! `calld schema`: the JSON Schema of the spec format, for editors
//! (`# yaml-language-server: $schema=...`). Written from the same key lists
//! the validator enforces, so the two cannot drift apart on key names.

use serde_json::{Value as Json, json};

use super::validate::SPEC_KEYS;

fn identity() -> Json {
    json!({
        "type": "object",
        "description": "An identity: id and displayName, plus any other key Graph accepts (identities are open types).",
        "properties": { "id": { "type": "string" }, "displayName": { "type": "string" } },
        "additionalProperties": { "type": ["string", "boolean", "number", "null"] }
    })
}

fn identity_set() -> Json {
    let mut props = serde_json::Map::new();
    for k in super::validate::IDENTITY_SET_KEYS {
        props.insert(k.to_string(), identity());
    }
    json!({ "type": "object", "properties": props, "additionalProperties": false, "minProperties": 1 })
}

fn duration() -> Json {
    json!({ "type": "string", "pattern": "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$", "examples": ["90s", "5m", "1h30m", "2d"] })
}

pub fn json_schema() -> Json {
    let e164 = json!({ "type": "string", "pattern": "^\\+[1-9][0-9]{6,14}$" });
    let nullable_string = json!({ "type": ["string", "null"] });
    let properties = json!({
        "name": { "type": "string", "description": "Unique name; default: the file path without extension" },
        "description": { "type": "string" },
        "suspend": { "type": "boolean", "description": "true: nothing new is placed; history kept" },
        "subject": { "type": "string" },
        "tenantId": { "type": "string" },
        "callbackUri": { "type": "string", "format": "uri", "description": "https; default: config callback.publicUrl" },
        "source": {
            "type": "object", "additionalProperties": false, "required": ["identity"],
            "description": "The caller. Optional for peer-to-peer VoIP calls and meeting joins (Graph takes it from the token); a call to a phone number needs identity.applicationInstance",
            "properties": {
                "identity": identity_set(),
                "languageId": nullable_string, "region": nullable_string, "countryCode": nullable_string,
                "endpointType": { "enum": ["default", "voicemail", "skypeForBusiness", "skypeForBusinessVoipPhone", "unknownFutureValue", null] }
            }
        },
        "targets": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": false,
                "properties": {
                    "user": identity(),
                    "phone": { "oneOf": [e164, identity()] },
                    "application": identity(),
                    "applicationInstance": identity(),
                    "guest": identity()
                }
            }
        },
        "modalities": {
            "type": "array", "minItems": 1, "uniqueItems": true,
            "items": { "enum": ["audio", "video", "videoBasedScreenSharing", "data"] }
        },
        "media": {
            "type": "object", "additionalProperties": false, "maxProperties": 1,
            "properties": {
                "prefetch": {
                    "type": "array",
                    "items": {
                        "type": "object", "additionalProperties": false, "required": ["uri", "resourceId"],
                        "properties": { "uri": { "type": "string", "pattern": "^https://" }, "resourceId": { "type": "string" } }
                    }
                },
                "appHosted": {
                    "type": "object", "additionalProperties": false,
                    "properties": { "blob": { "type": "string" } }
                }
            }
        },
        "chat": {
            "type": "object", "additionalProperties": false, "required": ["threadId"],
            "properties": { "threadId": { "type": "string" }, "messageId": nullable_string, "replyChainMessageId": nullable_string }
        },
        "meeting": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "organizer": identity_set(),
                "joinUrl": { "type": "string", "pattern": "^https://" },
                "joinMeetingId": { "type": ["string", "integer"] },
                "passcode": { "type": ["string", "integer", "null"] },
                "asGuest": {
                    "type": "object", "additionalProperties": false, "required": ["displayName"],
                    "properties": { "displayName": { "type": "string" }, "id": { "type": "string" } }
                }
            }
        },
        "schedule": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "at": { "type": "string", "description": "RFC 3339, or a local time in `timezone`" },
                "cron": { "type": "string", "description": "5-field crontab, names and @daily-style macros" },
                "timezone": { "type": "string", "description": "IANA name" },
                "deadline": { "oneOf": [duration(), { "const": "none" }] },
                "concurrency": { "enum": ["forbid", "allow", "replace"] },
                "jitter": duration(),
                "until": { "type": "string" }
            }
        },
        "retry": {
            "type": "object", "additionalProperties": false,
            "properties": { "attempts": { "type": "integer", "minimum": 0, "maximum": super::validate::MAX_RETRY_ATTEMPTS }, "interval": duration() }
        },
        "hangupAfter": duration(),
        "graph": { "type": "object", "description": "JSON merge patch (RFC 7386) applied last to the create-call body" }
    });
    debug_assert_eq!(
        properties.as_object().map(|p| p.len()),
        Some(SPEC_KEYS.len())
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://calld.dev/schema/spec.json",
        "title": "calld call spec",
        "type": "object",
        "additionalProperties": false,
        "properties": properties
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_exactly_the_keys_the_validator_accepts() {
        let schema = json_schema();
        let mut keys: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = SPEC_KEYS.to_vec();
        keys.sort();
        expected.sort();
        assert_eq!(keys, expected);
    }
}
