//! `if-match`, `if-none-match` and `condition`, checked against the current entity.

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::Headers;
use crate::query::Filter;

/// Parsed preconditions of a command.
pub(super) struct Preconditions {
    if_match: Option<TagList>,
    if_none_match: Option<TagList>,
    pub(super) condition: Option<Filter>,
}

enum TagList {
    Any,
    Tags(Vec<String>),
}

impl TagList {
    fn parse(header: &str, s: &str) -> Result<TagList> {
        if s.trim() == "*" {
            return Ok(TagList::Any);
        }
        let tags: Vec<String> = s
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/").to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if tags.is_empty()
            || tags
                .iter()
                .any(|t| t.len() < 2 || !t.starts_with('"') || !t.ends_with('"'))
        {
            return Err(Error::new(
                ErrorKind::HeaderInvalid,
                format!(
                    "The value '{s}' of the header '{header}' is not valid: use '*' or entity tags such as '\"rev:3\"'."
                ),
            ));
        }
        Ok(TagList::Tags(tags))
    }

    /// Whether the list matches the current entity tag (`None`: the entity does not exist).
    fn matches(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (_, None) => false,
            (TagList::Any, Some(_)) => true,
            (TagList::Tags(tags), Some(cur)) => tags.iter().any(|t| t == cur),
        }
    }
}

impl Preconditions {
    /// Parses the precondition headers; invalid values are 400 errors.
    pub(super) fn parse(h: &Headers) -> Result<Self> {
        Ok(Preconditions {
            if_match: h
                .if_match
                .as_deref()
                .map(|s| TagList::parse("if-match", s))
                .transpose()?,
            if_none_match: h
                .if_none_match
                .as_deref()
                .map(|s| TagList::parse("if-none-match", s))
                .transpose()?,
            condition: h.condition.as_deref().map(Filter::parse).transpose()?,
        })
    }

    /// Checks the entity tags. `current` is the entity's ETag, `None` if it does not exist.
    /// A retrieve whose `if-none-match` matches is 304; a write is 412.
    pub(super) fn check_tags(
        &self,
        current: Option<&str>,
        is_retrieve: bool,
        what: &str,
    ) -> Result<()> {
        if let Some(m) = &self.if_match
            && !m.matches(current)
        {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!(
                    "The comparison of precondition header 'if-match' for the requested {what} resource evaluated to false. Actual: '{}'.",
                    current.unwrap_or("<none>")
                ),
            )
            .with_description("The comparison of the provided precondition header with the resource's ETag evaluated to false. Check the value of your conditional header."));
        }
        if let Some(m) = &self.if_none_match
            && m.matches(current)
        {
            let kind = if is_retrieve {
                ErrorKind::PreconditionNotModified
            } else {
                ErrorKind::PreconditionFailed
            };
            return Err(Error::new(
                kind,
                format!(
                    "The comparison of precondition header 'if-none-match' for the requested {what} resource evaluated to false. Actual: '{}'.",
                    current.unwrap_or("<none>")
                ),
            )
            .with_description("The comparison of the provided precondition header with the resource's ETag evaluated to false. Check the value of your conditional header."));
        }
        Ok(())
    }
}

/// The error of a `condition` that does not hold.
pub(super) fn condition_failed(condition: &Filter) -> Error {
    Error::new(
        ErrorKind::ConditionFailed,
        format!(
            "The specified condition '{condition}' does not match the state of the requested Thing."
        ),
    )
    .with_description("Check the condition and the current state of the Thing.")
}
