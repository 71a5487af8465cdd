//! The validated spec model: built only by [`super::validate`], it cannot
//! hold an invalid value. Everything after the spec module works on it.

use serde_json::Value as Json;
use std::time::Duration;

use super::compact::JsonObject;
use crate::schedule::Schedule;

/// One validated call spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Unique across the calls directory.
    pub name: String,
    /// The file it came from (relative to the calls directory).
    pub file: String,
    /// Where its document starts.
    pub line: u64,
    pub description: Option<String>,
    /// Nothing new is placed while suspended.
    pub suspend: bool,
    pub call: Call,
    /// `None`: placed once per revision, as soon as it is seen.
    pub schedule: Option<Schedule>,
    pub retry: Retry,
    pub hangup_after: Option<Duration>,
    /// The `graph:` JSON merge patch, applied last when rendering.
    pub graph_patch: Option<JsonObject>,
    /// Hex SHA-256 of everything that changes the call or its timing:
    /// a comment, description or suspend edit keeps the revision.
    pub revision: String,
    /// Application permissions the call needs (Graph's role names).
    pub permissions: &'static [&'static str],
}

/// What Graph is asked to do, in calld's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub subject: Option<String>,
    pub tenant_id: Option<String>,
    /// https (or http to a loopback host); without calld's `calldRun` query.
    pub callback_uri: String,
    /// The caller. `None`: Graph fills it in from the token (peer-to-peer
    /// VoIP calls and meeting joins); then no `source` is sent.
    pub source: Option<Participant>,
    pub kind: CallKind,
    pub modalities: Vec<Modality>,
    pub media: Media,
    /// chatInfo as written (explicit nulls kept), or from a joinUrl.
    pub chat: Option<JsonObject>,
}

/// participantInfo of the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    /// An identitySet: kind (`application`, `user`, `guest`, ...) → identity
    /// object, every key passed through.
    pub identity: JsonObject,
    /// Other participantInfo keys (`languageId`, `region`, ...), as written.
    pub extra: JsonObject,
}

/// Whom to call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallKind {
    /// One or more targets (more than one: a group call).
    Targets(Vec<Target>),
    /// Join a meeting.
    Meeting(Meeting),
}

/// One invitation target: an identity set with one identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub kind: IdentityKind,
    /// The identity object (`id`, `displayName`, any other keys).
    pub identity: JsonObject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    User,
    Phone,
    Application,
    ApplicationInstance,
    Guest,
}

impl IdentityKind {
    pub const ALL: [IdentityKind; 5] = [
        IdentityKind::User,
        IdentityKind::Phone,
        IdentityKind::Application,
        IdentityKind::ApplicationInstance,
        IdentityKind::Guest,
    ];

    /// The key in the spec and in Graph's identitySet.
    pub fn key(self) -> &'static str {
        match self {
            IdentityKind::User => "user",
            IdentityKind::Phone => "phone",
            IdentityKind::Application => "application",
            IdentityKind::ApplicationInstance => "applicationInstance",
            IdentityKind::Guest => "guest",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Meeting {
    /// organizerMeetingInfo (with the spec's or the joinUrl's chatInfo).
    Organizer { organizer: JsonObject },
    /// joinMeetingIdMeetingInfo.
    JoinMeetingId {
        id: String,
        /// `None`: not sent; `Some(None)`: sent as `null` (as Graph's
        /// "joinMeetingId without passcode" example does).
        passcode: Option<Option<String>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    Audio,
    Video,
    VideoBasedScreenSharing,
    Data,
}

impl Modality {
    pub const ALL: [Modality; 4] = [
        Modality::Audio,
        Modality::Video,
        Modality::VideoBasedScreenSharing,
        Modality::Data,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Audio => "audio",
            Modality::Video => "video",
            Modality::VideoBasedScreenSharing => "videoBasedScreenSharing",
            Modality::Data => "data",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    /// serviceHostedMediaConfig, optionally with media to prefetch.
    ServiceHosted { prefetch: Vec<Prefetch> },
    /// appHostedMediaConfig; `None`: no blob is sent (two of Graph's
    /// published examples do so; `check` warns).
    AppHosted { blob: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prefetch {
    pub uri: String,
    pub resource_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Extra attempts after the first.
    pub attempts: u32,
    /// Wait before each extra attempt.
    pub interval: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 0,
            interval: Duration::from_secs(300),
        }
    }
}

/// Graph's application roles (the singular names tokens carry).
pub mod roles {
    pub const INITIATE: &str = "Calls.Initiate.All";
    pub const INITIATE_GROUP_CALL: &str = "Calls.InitiateGroupCall.All";
    pub const JOIN_GROUP_CALL: &str = "Calls.JoinGroupCall.All";
    pub const JOIN_GROUP_CALL_AS_GUEST: &str = "Calls.JoinGroupCallAsGuest.All";
    pub const ACCESS_MEDIA: &str = "Calls.AccessMedia.All";
}

impl Call {
    /// Whether the caller joins as a guest (a `guest` source identity, or
    /// the seed's `user` identity with `identityProvider: None`).
    pub fn joins_as_guest(&self) -> bool {
        let Some(source) = &self.source else {
            return false;
        };
        if !matches!(self.kind, CallKind::Meeting(_)) {
            return false;
        }
        let identity = source.identity.to_map();
        identity.contains_key("guest")
            || identity
                .get("user")
                .and_then(|u| u.get("identityProvider"))
                .and_then(Json::as_str)
                .is_some_and(|p| p.eq_ignore_ascii_case("none"))
    }

    /// The application permissions this call needs (a static list: a
    /// spec holds no copy of it).
    pub fn permissions(&self) -> &'static [&'static str] {
        use roles::*;
        let app_hosted = matches!(self.media, Media::AppHosted { .. });
        match (&self.kind, app_hosted) {
            (CallKind::Targets(t), false) if t.len() > 1 => &[INITIATE_GROUP_CALL],
            (CallKind::Targets(t), true) if t.len() > 1 => &[INITIATE_GROUP_CALL, ACCESS_MEDIA],
            (CallKind::Targets(_), false) => &[INITIATE],
            (CallKind::Targets(_), true) => &[INITIATE, ACCESS_MEDIA],
            (CallKind::Meeting(_), false) if self.joins_as_guest() => &[JOIN_GROUP_CALL_AS_GUEST],
            (CallKind::Meeting(_), true) if self.joins_as_guest() => {
                &[JOIN_GROUP_CALL_AS_GUEST, ACCESS_MEDIA]
            }
            (CallKind::Meeting(_), false) => &[JOIN_GROUP_CALL],
            (CallKind::Meeting(_), true) => &[JOIN_GROUP_CALL, ACCESS_MEDIA],
        }
    }
}

/// Whether a granted role set covers a required role (case-insensitive;
/// `Calls.InitiateGroupCall.All` also covers `Calls.Initiate.All`).
pub fn role_granted(granted: &[String], required: &str) -> bool {
    let has = |r: &str| granted.iter().any(|g| g.eq_ignore_ascii_case(r));
    has(required)
        || (required.eq_ignore_ascii_case(roles::INITIATE) && has(roles::INITIATE_GROUP_CALL))
}
