//! Transient paths: values that subscribers see but the thing never keeps.
//!
//! A write is split before it applies: the part at transient paths is taken out of the command
//! (so the thing, the store, the clocks, the links and history never see it) and handed back to
//! subscribers in the event. A write that is transient as a whole changes nothing: no revision,
//! no store write, an event for subscribers only.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{PathPattern, Pointer};
use crate::protocol::{Action, ThingCommand};

/// The parsed `transient` configuration.
#[derive(Debug, Default)]
pub(super) struct Transient(Vec<PathPattern>);

/// What a command's value holds at transient paths.
#[derive(Debug, PartialEq)]
pub(super) enum Split {
    /// Nothing transient: apply as it is.
    Keep,
    /// Everything is transient: the thing does not change.
    All,
    /// The command now carries only its persistent part; this is the whole value, for
    /// subscribers.
    Part(Value),
}

impl Transient {
    pub(super) fn parse(patterns: &[String]) -> Result<Transient> {
        let parsed = patterns
            .iter()
            .map(|s| PathPattern::parse(s))
            .collect::<Result<Vec<_>>>()?;
        if let Some(root) = parsed.iter().find(|p| p.is_root()) {
            return Err(Error::field_invalid(format!(
                "The transient path '{root}' would make every write transient."
            )));
        }
        Ok(Transient(parsed))
    }

    /// Takes the transient part out of `cmd`'s value (creates, modifies and merges only).
    ///
    /// Merges drop the objects the removal emptied, so a patch that only carried transient
    /// values creates no structure; a modify keeps them (it replaces what is there).
    pub(super) fn split(&self, cmd: &mut ThingCommand) -> Split {
        if self.0.is_empty()
            || !matches!(cmd.action, Action::Create | Action::Modify | Action::Merge)
        {
            return Split::Keep;
        }
        if self.covers(&cmd.path) {
            return Split::All;
        }
        let Some(value) = &cmd.value else {
            return Split::Keep;
        };
        let prune = cmd.action == Action::Merge;
        let mut below = self.0.iter().filter(|p| p.is_below(&cmd.path)).peekable();
        if below.peek().is_none() {
            return Split::Keep;
        }
        let mut rest = value.clone();
        let mut removed = false;
        for pattern in below {
            removed |= pattern.remove_below(&cmd.path, &mut rest, prune);
        }
        if !removed {
            return Split::Keep;
        }
        let emptied = prune && rest.as_object().is_some_and(|m| m.is_empty());
        if emptied {
            return Split::All;
        }
        let whole = cmd.value.replace(rest).unwrap_or(Value::Null);
        Split::Part(whole)
    }

    fn covers(&self, path: &Pointer) -> bool {
        self.0.iter().any(|p| p.covers(path))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::ThingId;

    fn cmd(action: Action, path: &str, value: Value) -> ThingCommand {
        ThingCommand::new(
            ThingId::new("ns:t").unwrap(),
            action,
            Pointer::parse(path).unwrap(),
            Some(value),
        )
    }

    fn transient() -> Transient {
        Transient::parse(&["/features/camera/properties/frame".into()]).unwrap()
    }

    #[test]
    fn splits_writes_by_what_they_carry() {
        let t = transient();
        let mut c = cmd(
            Action::Modify,
            "/features/camera/properties/frame",
            json!("AAA"),
        );
        assert_eq!(t.split(&mut c), Split::All);

        let whole = json!({"features": {"camera": {"properties": {"frame": "AAA"}}}});
        let mut c = cmd(Action::Merge, "/", whole.clone());
        assert_eq!(t.split(&mut c), Split::All);

        let whole = json!({"properties": {"frame": "AAA", "seq": 3}});
        let mut c = cmd(Action::Merge, "/features/camera", whole.clone());
        assert_eq!(t.split(&mut c), Split::Part(whole));
        assert_eq!(c.value, Some(json!({"properties": {"seq": 3}})));

        // A modify keeps the structure it replaces.
        let whole = json!({"frame": "AAA"});
        let mut c = cmd(Action::Modify, "/features/camera/properties", whole.clone());
        assert_eq!(t.split(&mut c), Split::Part(whole));
        assert_eq!(c.value, Some(json!({})));

        let mut c = cmd(
            Action::Merge,
            "/features/lane",
            json!({"properties": {"x": 1}}),
        );
        assert_eq!(t.split(&mut c), Split::Keep);
        assert_eq!(c.value, Some(json!({"properties": {"x": 1}})));

        let mut c = cmd(Action::Merge, "/", json!({"attributes": {"frame": 1}}));
        assert_eq!(t.split(&mut c), Split::Keep);
    }

    #[test]
    fn several_patterns_remove_together() {
        let t = Transient::parse(&[
            "/features/camera/properties/frame".into(),
            "/features/*/properties/raw".into(),
        ])
        .unwrap();
        let whole = json!({"features": {
            "camera": {"properties": {"frame": "AAA", "raw": [1]}},
            "lidar": {"properties": {"raw": [2], "ok": true}}
        }});
        let mut c = cmd(Action::Merge, "/", whole.clone());
        assert_eq!(t.split(&mut c), Split::Part(whole));
        assert_eq!(
            c.value,
            Some(json!({"features": {"lidar": {"properties": {"ok": true}}}}))
        );
    }

    #[test]
    fn the_root_cannot_be_transient() {
        assert!(Transient::parse(&["/".into()]).is_err());
        assert!(Transient::parse(&["/features//frame".into()]).is_err());
    }
}
