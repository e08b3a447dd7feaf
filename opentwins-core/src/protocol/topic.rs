//! Ditto Protocol topics: `{namespace}/{name}/{group}/{channel}/{criterion}/{action}`.
//!
//! Supported shapes (everything else is `things:protocol.invalid`, 400):
//!
//! | shape | example |
//! |---|---|
//! | `{ns}/{name}/things/{twin\|live}/commands/{action}` | `org.acme/car-1/things/twin/commands/modify` |
//! | `{ns}/{name}/things/{twin\|live}/events/{action}` | `org.acme/car-1/things/twin/events/modified` |
//! | `{ns}/{name}/things/{twin\|live}/errors` | `org.acme/car-1/things/twin/errors` |
//! | `{ns}/{name}/policies/commands/{action}` | `org.acme/policy-1/policies/commands/create` |
//! | `{ns}/{name}/policies/errors` | `org.acme/policy-1/policies/errors` |
//!
//! An entity with an empty namespace (`:car-1`) has an empty first segment (`/car-1/things/...`),
//! exactly as Ditto's `TopicPath` renders and parses it. `_` is Ditto's placeholder for "no
//! entity": `_/_/things/twin/errors` answers a message whose entity could not be determined. It is
//! never a namespace (`_` is not a valid namespace), so `_/car-1/...` is rejected as an invalid id.

use std::fmt;

use super::{Action, EventAction};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{PolicyId, ThingId};

/// Ditto's placeholder segment for "no namespace / no entity" (`TopicPath.ID_PLACEHOLDER`).
pub const PLACEHOLDER: &str = "_";

/// Longest topic accepted (an id is at most 256 characters; the rest is a few short words).
const MAX_TOPIC_LEN: usize = 512;

/// Whether a things message addresses the digital twin or the device itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `twin`: the persisted digital twin.
    Twin,
    /// `live`: the device itself. Parsed, but not supported by [`super::Message`] conversion.
    Live,
}

impl Channel {
    /// The topic word.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Twin => "twin",
            Channel::Live => "live",
        }
    }
}

/// Which kind of entity the topic names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// `things/{channel}`.
    Things(Channel),
    /// `policies` (no channel segment).
    Policies,
}

/// What the message is: a command, an event or an error, with its action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Criterion {
    /// `commands/{action}`: a command, or its response when the envelope carries a `status`.
    Commands(Action),
    /// `events/{action}`.
    Events(EventAction),
    /// `errors` (no action).
    Errors,
}

/// A parsed Ditto Protocol topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// The entity's namespace (may be empty; [`PLACEHOLDER`] when there is no entity).
    pub namespace: String,
    /// The entity's name ([`PLACEHOLDER`] when there is no entity).
    pub name: String,
    /// Things (with a channel) or policies.
    pub group: Group,
    /// Commands, events or errors.
    pub criterion: Criterion,
}

impl Topic {
    /// A twin-channel topic for a thing.
    pub fn thing(id: &ThingId, criterion: Criterion) -> Self {
        Topic {
            namespace: id.namespace().to_owned(),
            name: id.name().to_owned(),
            group: Group::Things(Channel::Twin),
            criterion,
        }
    }

    /// A topic for a policy.
    pub fn policy(id: &PolicyId, criterion: Criterion) -> Self {
        Topic {
            namespace: id.namespace().to_owned(),
            name: id.name().to_owned(),
            group: Group::Policies,
            criterion,
        }
    }

    /// `_/_/things/twin/errors`: the error topic when the entity is unknown.
    pub fn unknown_error() -> Self {
        Topic {
            namespace: PLACEHOLDER.to_owned(),
            name: PLACEHOLDER.to_owned(),
            group: Group::Things(Channel::Twin),
            criterion: Criterion::Errors,
        }
    }

    /// Whether namespace and name are both Ditto's "no entity" placeholder (`_/_/...`).
    pub fn is_placeholder(&self) -> bool {
        self.namespace == PLACEHOLDER && self.name == PLACEHOLDER
    }

    /// The thing id `{namespace}:{name}` (the id error if it is not a valid id).
    pub fn thing_id(&self) -> Result<ThingId> {
        ThingId::from_parts(&self.namespace, &self.name)
    }

    /// The policy id `{namespace}:{name}` (the id error if it is not a valid id).
    pub fn policy_id(&self) -> Result<PolicyId> {
        PolicyId::from_parts(&self.namespace, &self.name)
    }

    /// Parses a topic; see the module doc for the accepted shapes.
    pub fn parse(topic: &str) -> Result<Self> {
        let invalid = |why: String| {
            Error::new(
                ErrorKind::ProtocolInvalid,
                format!("The topic '{}' is not valid: {why}.", topic.escape_debug()),
            )
            .with_description(
                "Use '{namespace}/{name}/things/twin/{commands|events}/{action}', \
                 '{namespace}/{name}/things/twin/errors', \
                 '{namespace}/{name}/policies/commands/{action}' or '{namespace}/{name}/policies/errors'.",
            )
        };
        if topic.len() > MAX_TOPIC_LEN {
            return Err(invalid(format!("it is longer than {MAX_TOPIC_LEN} bytes")));
        }
        let parts: Vec<&str> = topic.split('/').collect();
        let [namespace, name, group, rest @ ..] = parts.as_slice() else {
            return Err(invalid(
                "it needs at least namespace, name, group and criterion".into(),
            ));
        };
        if name.is_empty() {
            return Err(invalid("the entity name is empty".into()));
        }
        let (group, rest) = match *group {
            "things" => {
                let Some((channel, rest)) = rest.split_first() else {
                    return Err(invalid(
                        "the things group needs a channel ('twin' or 'live')".into(),
                    ));
                };
                let channel = match *channel {
                    "twin" => Channel::Twin,
                    "live" => Channel::Live,
                    other => {
                        return Err(invalid(format!(
                            "unknown channel '{other}' (expected 'twin' or 'live')"
                        )));
                    }
                };
                (Group::Things(channel), rest)
            }
            "policies" => (Group::Policies, rest),
            "connections" => {
                return Err(invalid("the group 'connections' is not supported".into()));
            }
            other => {
                return Err(invalid(format!(
                    "unknown group '{other}' (expected 'things' or 'policies')"
                )));
            }
        };
        let Some((criterion, rest)) = rest.split_first() else {
            return Err(invalid(
                "it has no criterion ('commands', 'events' or 'errors')".into(),
            ));
        };
        let (criterion, rest) = match *criterion {
            "commands" => {
                let Some((action, rest)) = rest.split_first() else {
                    return Err(invalid(
                        "a command needs an action (create, retrieve, modify, merge or delete)"
                            .into(),
                    ));
                };
                let action = Action::parse(action).ok_or_else(|| {
                    invalid(format!(
                        "unknown command action '{action}' (expected create, retrieve, modify, merge or delete)"
                    ))
                })?;
                (Criterion::Commands(action), rest)
            }
            "events" => {
                let Some((action, rest)) = rest.split_first() else {
                    return Err(invalid(
                        "an event needs an action (created, modified, merged or deleted)".into(),
                    ));
                };
                let action = EventAction::parse(action).ok_or_else(|| {
                    invalid(format!(
                        "unknown event action '{action}' (expected created, modified, merged or deleted)"
                    ))
                })?;
                (Criterion::Events(action), rest)
            }
            "errors" => (Criterion::Errors, rest),
            known @ ("messages" | "search" | "acks" | "announcements" | "streaming") => {
                return Err(invalid(format!("the criterion '{known}' is not supported")));
            }
            other => {
                return Err(invalid(format!(
                    "unknown criterion '{other}' (expected 'commands', 'events' or 'errors')"
                )));
            }
        };
        if !rest.is_empty() {
            return Err(invalid(format!(
                "unexpected trailing segments '{}'",
                rest.join("/")
            )));
        }
        Ok(Topic {
            namespace: (*namespace).to_owned(),
            name: (*name).to_owned(),
            group,
            criterion,
        })
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/", self.namespace, self.name)?;
        match self.group {
            Group::Things(channel) => write!(f, "things/{}/", channel.as_str())?,
            Group::Policies => f.write_str("policies/")?,
        }
        match self.criterion {
            Criterion::Commands(action) => write!(f, "commands/{}", action.as_str()),
            Criterion::Events(action) => write!(f, "events/{}", action.as_str()),
            Criterion::Errors => f.write_str("errors"),
        }
    }
}

impl std::str::FromStr for Topic {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Topic::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trip_examples() {
        for t in [
            "org.eclipse.ditto/fancy-car-1/things/twin/commands/create",
            "org.eclipse.ditto/fancy-car-1/things/twin/commands/merge",
            "org.eclipse.ditto/fancy-car-0815/things/live/events/modified",
            "com.acme/xdk_53/things/twin/events/merged",
            "com.acme/xdk_53/things/twin/errors",
            "org.eclipse.ditto/fancy-policy-1/policies/commands/delete",
            "org.eclipse.ditto/fancy-policy-1/policies/errors",
            "/no-namespace/things/twin/commands/retrieve",
            "_/_/things/twin/errors",
            "a/name:with:colons/things/twin/commands/modify",
        ] {
            let topic = Topic::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(topic.to_string(), t);
        }
    }

    #[test]
    fn fields_are_parsed() {
        let t = Topic::parse("com.acme/xdk_53/things/twin/commands/modify").unwrap();
        assert_eq!(t.namespace, "com.acme");
        assert_eq!(t.name, "xdk_53");
        assert_eq!(t.group, Group::Things(Channel::Twin));
        assert_eq!(t.criterion, Criterion::Commands(Action::Modify));
        assert_eq!(t.thing_id().unwrap().as_str(), "com.acme:xdk_53");

        let t = Topic::parse("/car/things/twin/events/deleted").unwrap();
        assert_eq!(t.namespace, "");
        assert_eq!(t.thing_id().unwrap().as_str(), ":car");
        assert_eq!(t.criterion, Criterion::Events(EventAction::Deleted));

        let t = Topic::parse("ns/p/policies/commands/create").unwrap();
        assert_eq!(t.group, Group::Policies);
        assert_eq!(t.policy_id().unwrap().as_str(), "ns:p");

        assert!(
            Topic::parse("_/_/things/twin/errors")
                .unwrap()
                .is_placeholder()
        );
        assert_eq!(Topic::unknown_error().to_string(), "_/_/things/twin/errors");
    }

    #[test]
    fn empty_namespace_renders_as_empty_segment() {
        let id = ThingId::new(":foo").unwrap();
        let t = Topic::thing(&id, Criterion::Commands(Action::Retrieve));
        assert_eq!(t.to_string(), "/foo/things/twin/commands/retrieve");
        // `_` is the "no entity" placeholder, never a namespace.
        let t = Topic::parse("_/foo/things/twin/commands/retrieve").unwrap();
        assert_eq!(t.thing_id().unwrap_err().code(), "things:id.invalid");
    }

    #[test]
    fn invalid_topics() {
        let long = format!("ns/{}/things/twin/errors", "x".repeat(600));
        for (t, needle) in [
            ("", "at least"),
            ("ns/name", "at least"),
            ("ns//things/twin/errors", "name is empty"),
            ("ns/n/things", "channel"),
            (
                "ns/n/things/shadow/commands/modify",
                "unknown channel 'shadow'",
            ),
            (
                "ns/n/gadgets/twin/commands/modify",
                "unknown group 'gadgets'",
            ),
            (
                "ns/n/connections/announcements",
                "'connections' is not supported",
            ),
            ("ns/n/things/twin", "no criterion"),
            ("ns/n/things/twin/commands", "needs an action"),
            (
                "ns/n/things/twin/commands/patch",
                "unknown command action 'patch'",
            ),
            ("ns/n/things/twin/events", "needs an action"),
            (
                "ns/n/things/twin/events/touched",
                "unknown event action 'touched'",
            ),
            ("ns/n/things/twin/events/modify", "unknown event action"),
            (
                "ns/n/things/twin/commands/modified",
                "unknown command action",
            ),
            (
                "ns/n/things/live/messages/hello",
                "'messages' is not supported",
            ),
            (
                "_/_/things/twin/search/subscribe",
                "'search' is not supported",
            ),
            ("ns/n/things/twin/orders/x", "unknown criterion 'orders'"),
            ("ns/n/things/twin/errors/404", "trailing segments '404'"),
            (
                "ns/n/things/twin/commands/modify/x/y",
                "trailing segments 'x/y'",
            ),
            (
                "ns/n/policies/twin/commands/modify",
                "unknown criterion 'twin'",
            ),
            (long.as_str(), "longer than"),
        ] {
            let e = Topic::parse(t).unwrap_err();
            assert_eq!(e.code(), "things:protocol.invalid", "{t}");
            assert_eq!(e.status(), 400);
            assert!(e.message().contains(needle), "{t}: {}", e.message());
        }
    }

    fn criterion() -> impl Strategy<Value = Criterion> {
        let actions = [
            Action::Create,
            Action::Retrieve,
            Action::Modify,
            Action::Merge,
            Action::Delete,
        ];
        let events = [
            EventAction::Created,
            EventAction::Modified,
            EventAction::Merged,
            EventAction::Deleted,
        ];
        prop_oneof![
            proptest::sample::select(actions.to_vec()).prop_map(Criterion::Commands),
            proptest::sample::select(events.to_vec()).prop_map(Criterion::Events),
            Just(Criterion::Errors),
        ]
    }

    fn group() -> impl Strategy<Value = Group> {
        prop_oneof![
            Just(Group::Things(Channel::Twin)),
            Just(Group::Things(Channel::Live)),
            Just(Group::Policies),
        ]
    }

    proptest! {
        #[test]
        fn render_parse_round_trip(
            namespace in "(|[a-z][a-z0-9_]{0,6}(\\.[a-z][a-z0-9]{0,4}){0,2}|_)",
            name in "[a-zA-Z0-9_:.-]{1,20}",
            group in group(),
            criterion in criterion(),
        ) {
            let topic = Topic { namespace, name, group, criterion };
            let text = topic.to_string();
            prop_assert_eq!(Topic::parse(&text)?, topic);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            if let Ok(t) = Topic::parse(&s) {
                prop_assert_eq!(t.to_string(), s);
            }
        }

        #[test]
        fn parse_never_panics_on_slashy_input(parts in proptest::collection::vec(
            "(|_|ns|n|things|policies|twin|live|commands|events|errors|modify|created|x)", 0..9)) {
            let s = parts.join("/");
            if let Ok(t) = Topic::parse(&s) {
                prop_assert_eq!(t.to_string(), s);
            }
        }
    }
}
