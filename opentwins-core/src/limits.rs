//! Process-wide limits on what network input may cost: how deep a path, a thing, a field
//! selector or an RQL filter may be, and how large. Every parser that takes input from the
//! network checks them before it recurses or allocates in proportion to the input, so a
//! request can never overflow a stack or spin a worker (docs/security.md). RQL's nesting and
//! length have fixed bounds (`query::MAX_DEPTH`, `query::MAX_INPUT_LEN`); its operator count is
//! [`Limits::max_rql_nodes`].
//!
//! The limits are one value per process: [`Limits::install`] sets them once at start-up (the
//! binaries take them from the `[limits]` section of their configuration); until then, and in
//! tests and embedding programs that never install any, [`Limits::get`] answers the defaults.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The ceilings no configuration may exceed. `MAX_JSON_DEPTH` stays well below serde_json's
/// recursion limit (128), so every thing the engine accepts can be parsed again from the store.
pub const CEILING_JSON_DEPTH: usize = 100;

/// Limits on the shape of network input. Every field has a safe default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Keys in one JSON pointer (`/a/b/c` has 3). Longer pointers are refused by the parser.
    /// At least `max_json_depth`, so every path inside an accepted thing parses.
    pub max_pointer_segments: usize,
    /// Nesting of a thing: the keys of a path plus the depth of the value written there
    /// (a scalar has depth 0, `{"a":1}` depth 1). At most [`CEILING_JSON_DEPTH`].
    pub max_json_depth: usize,
    /// Nesting of parentheses in a `fields` selector (`a(b(c))` has 2).
    pub max_selector_depth: usize,
    /// Paths one `fields` selector may expand to.
    pub max_selector_paths: usize,
    /// Size of one policy, in bytes of compact JSON (strings counted without escapes), checked
    /// when a policy is created or changed (`policies:policy.toolarge`, 413). Ditto's default
    /// is 100 kB; ours is 1 MiB, about 10,000 small entries.
    pub max_policy_bytes: usize,
    /// Operators (`eq`, `and`, `not`, ...) in one RQL filter; each is evaluated for every thing
    /// a search visits. Nesting is bounded apart (`query::MAX_DEPTH`, 64), and so is the text
    /// (`query::MAX_INPUT_LEN`, 64 KiB).
    pub max_rql_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pointer_segments: 32,
            max_json_depth: 32,
            max_selector_depth: 16,
            max_selector_paths: 256,
            max_policy_bytes: 1024 * 1024,
            max_rql_nodes: 1000,
        }
    }
}

static INSTALLED: OnceLock<Limits> = OnceLock::new();
static DEFAULT: OnceLock<Limits> = OnceLock::new();

impl Limits {
    /// The limits in force: the installed ones, else the defaults.
    pub fn get() -> &'static Limits {
        INSTALLED
            .get()
            .unwrap_or_else(|| DEFAULT.get_or_init(Limits::default))
    }

    /// Checks the values against the ceilings.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_pointer_segments", self.max_pointer_segments),
            ("max_json_depth", self.max_json_depth),
            ("max_selector_depth", self.max_selector_depth),
            ("max_selector_paths", self.max_selector_paths),
            ("max_policy_bytes", self.max_policy_bytes),
            ("max_rql_nodes", self.max_rql_nodes),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("limits.{name} must be at least 1"));
        }
        if self.max_json_depth > CEILING_JSON_DEPTH {
            return Err(format!(
                "limits.max_json_depth must be at most {CEILING_JSON_DEPTH} (things must parse again from the store)"
            ));
        }
        if self.max_pointer_segments < self.max_json_depth {
            // Every path inside an accepted thing (a clock's path, say) must parse again.
            return Err(
                "limits.max_pointer_segments must be at least limits.max_json_depth".into(),
            );
        }
        Ok(())
    }

    /// Makes these the limits of the process. Fails if they are invalid, or if different
    /// limits were installed before (installing the same limits again is fine).
    pub fn install(self) -> Result<(), String> {
        self.validate()?;
        let installed = INSTALLED.get_or_init(|| self.clone());
        if *installed != self {
            return Err("different limits were installed before in this process".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounded() {
        let d = Limits::default();
        d.validate().unwrap();
        let too_deep = Limits {
            max_json_depth: CEILING_JSON_DEPTH + 1,
            ..Limits::default()
        };
        assert!(too_deep.validate().is_err());
        let zero = Limits {
            max_selector_paths: 0,
            ..Limits::default()
        };
        assert!(zero.validate().is_err());
        let short_pointers = Limits {
            max_pointer_segments: 20,
            ..Limits::default()
        };
        assert!(short_pointers.validate().is_err());
        assert!(serde_json::from_str::<Limits>(r#"{"max_depth": 3}"#).is_err());
    }
}
