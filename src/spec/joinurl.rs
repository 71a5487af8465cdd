//! Teams meeting links (`meeting.joinUrl`) into Graph's meeting info.
//!
//! Two forms exist:
//! - `https://teams.microsoft.com/l/meetup-join/<thread>/<message>?context={"Tid":...,"Oid":...}`:
//!   the chat thread, the organizer's object id and tenant → chatInfo +
//!   organizerMeetingInfo + tenantId.
//! - `https://teams.microsoft.com/meet/<meeting id>?p=<passcode>`: the newer
//!   short link → joinMeetingIdMeetingInfo.

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinUrl {
    MeetupJoin {
        thread_id: String,
        message_id: String,
        tenant_id: Option<String>,
        organizer_id: String,
    },
    MeetingId {
        id: String,
        passcode: Option<String>,
    },
}

const EXAMPLE: &str =
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_...%40thread.v2/0?context=...";

pub fn parse_join_url(text: &str) -> Result<JoinUrl, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| {
        format!("`{text}` is not a URL ({e}); paste the meeting's join link, such as {EXAMPLE}")
    })?;
    if url.scheme() != "https" {
        return Err(format!("`{text}` must be an https Teams link"));
    }
    let segments: Vec<String> = url
        .path_segments()
        .map(|s| {
            s.map(|seg| percent_decode_str(seg).decode_utf8_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let segs: Vec<&str> = segments
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["l", "meetup-join", thread, message, ..] => {
            let context = url
                .query_pairs()
                .find(|(k, _)| k == "context")
                .map(|(_, v)| v.into_owned())
                .ok_or_else(|| format!("`{text}` has no context parameter naming the organizer; copy the full join link"))?;
            let ctx: serde_json::Value = serde_json::from_str(&context).map_err(|_| {
                format!("the context parameter of `{text}` is not JSON; copy the full join link")
            })?;
            let field = |k: &str| ctx.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let organizer_id = field("Oid").ok_or_else(|| {
                format!(
                    "the context of `{text}` has no Oid (organizer id); copy the full join link"
                )
            })?;
            if !thread.starts_with("19:") {
                return Err(format!(
                    "`{thread}` is not a Teams thread id (19:...@thread.v2)"
                ));
            }
            Ok(JoinUrl::MeetupJoin {
                thread_id: thread.to_string(),
                message_id: message.to_string(),
                tenant_id: field("Tid"),
                organizer_id,
            })
        }
        ["meet", id] => {
            if !id.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!("`{id}` is not a meeting id (digits) in `{text}`"));
            }
            let passcode = url
                .query_pairs()
                .find(|(k, _)| k == "p")
                .map(|(_, v)| v.into_owned());
            Ok(JoinUrl::MeetingId {
                id: id.to_string(),
                passcode,
            })
        }
        _ => Err(format!(
            "`{text}` is not a Teams join link: expected {EXAMPLE} or https://teams.microsoft.com/meet/<id>?p=<passcode>"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meetup_join_link() {
        let url = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NTg0NmQ3NTctZDVkZC00YzRhLThmNmEtOGQ3M2E0ODdmZDZk%40thread.v2/0?context=%7b%22Tid%22%3a%2272f988bf-86f1-41af-91ab-2d7cd011db47%22%2c%22Oid%22%3a%2290ed37dc-d8e3-4e11-9de3-30a955dda06f%22%7d";
        assert_eq!(
            parse_join_url(url).unwrap(),
            JoinUrl::MeetupJoin {
                thread_id: "19:meeting_NTg0NmQ3NTctZDVkZC00YzRhLThmNmEtOGQ3M2E0ODdmZDZk@thread.v2"
                    .into(),
                message_id: "0".into(),
                tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
                organizer_id: "90ed37dc-d8e3-4e11-9de3-30a955dda06f".into(),
            }
        );
    }

    #[test]
    fn meet_link_with_passcode() {
        assert_eq!(
            parse_join_url("https://teams.microsoft.com/meet/2345678901234?p=AbC123").unwrap(),
            JoinUrl::MeetingId {
                id: "2345678901234".into(),
                passcode: Some("AbC123".into())
            }
        );
        assert_eq!(
            parse_join_url("https://teams.microsoft.com/meet/123").unwrap(),
            JoinUrl::MeetingId {
                id: "123".into(),
                passcode: None
            }
        );
    }

    #[test]
    fn bad_links_say_what_to_paste() {
        for bad in [
            "not a url",
            "http://teams.microsoft.com/meet/1",
            "https://teams.microsoft.com/l/meetup-join/19%3ax%40thread.v2/0",
            "https://teams.microsoft.com/l/meetup-join/19%3ax%40thread.v2/0?context=%7b%7d",
            "https://example.com/foo",
            "https://teams.microsoft.com/meet/abc",
        ] {
            assert!(parse_join_url(bad).is_err(), "{bad}");
        }
    }
}
