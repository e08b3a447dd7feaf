//! Namespaced entity ids (`namespace:name`) validated as Ditto does.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};

/// Maximum length of a namespaced id, as in Ditto.
pub const MAX_ID_LEN: usize = 256;

/// Checks `namespace:name`: namespace `(|[a-zA-Z]\w*([.-][a-zA-Z]\w*)*)`, name non-empty without
/// control characters or `/`, total at most 256 characters. Returns the position of the colon.
fn validate(id: &str) -> std::result::Result<usize, &'static str> {
    if id.chars().count() > MAX_ID_LEN {
        return Err("it is longer than 256 characters");
    }
    let colon = id
        .find(':')
        .ok_or("it has no ':' between namespace and name")?;
    let (namespace, name) = (&id[..colon], &id[colon + 1..]);
    if !valid_namespace(namespace) {
        return Err(
            "the namespace must be empty or match [a-zA-Z]\\w*([.-][a-zA-Z]\\w*)* (letters, digits, '_', segments separated by '.' or '-')",
        );
    }
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err("the name contains '/' or a control character");
    }
    Ok(colon)
}

fn valid_namespace(ns: &str) -> bool {
    if ns.is_empty() {
        return true;
    }
    ns.split(['.', '-']).all(|segment| {
        let mut chars = segment.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

macro_rules! namespaced_id {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            id: Arc<str>,
            colon: usize,
        }

        impl $name {
            /// Validates and builds the id; error code as Ditto's.
            pub fn new(id: &str) -> Result<Self> {
                match validate(id) {
                    Ok(colon) => Ok($name { id: Arc::from(id), colon }),
                    Err(why) => Err(Error::new(
                        $kind,
                        format!("{} ID '{}' is not valid: {}.", $what, id, why),
                    )
                    .with_description(
                        "It must conform to the namespaced entity ID notation (see Ditto documentation).",
                    )),
                }
            }

            /// Builds the id from a namespace and a name.
            pub fn from_parts(namespace: &str, name: &str) -> Result<Self> {
                Self::new(&format!("{namespace}:{name}"))
            }

            /// The namespace (may be empty).
            pub fn namespace(&self) -> &str {
                &self.id[..self.colon]
            }

            /// The name.
            pub fn name(&self) -> &str {
                &self.id[self.colon + 1..]
            }

            /// The whole id.
            pub fn as_str(&self) -> &str {
                &self.id
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.id)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.id)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.id
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.id)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

namespaced_id!(
    /// A thing id, `namespace:name`.
    ThingId,
    ErrorKind::ThingIdInvalid,
    "Thing"
);
namespaced_id!(
    /// A policy id, `namespace:name`.
    PolicyId,
    ErrorKind::PolicyIdInvalid,
    "Policy"
);

impl From<&ThingId> for PolicyId {
    /// Ditto's default: a thing created without a policy gets a policy with the same id.
    fn from(t: &ThingId) -> Self {
        PolicyId {
            id: t.id.clone(),
            colon: t.colon,
        }
    }
}

/// Checks a feature id: non-empty, no `/`, no control characters (Ditto's rule).
pub fn validate_feature_id(id: &str) -> Result<()> {
    if id.is_empty() || id.chars().any(|c| c == '/' || c.is_control()) {
        return Err(Error::field_invalid(format!(
            "The Feature ID '{id}' is not valid: it must not be empty and must not contain '/' or control characters."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        for id in [
            "org.eclipse.ditto:fancy-car-1",
            ":no-namespace",
            "a:b",
            "my-ns_1.sub:x y z",
            "car:ünïcödé",
        ] {
            let t = ThingId::new(id).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(t.as_str(), id);
        }
        let t = ThingId::new("org.eclipse:car:1").unwrap();
        assert_eq!(t.namespace(), "org.eclipse");
        assert_eq!(t.name(), "car:1");
    }

    #[test]
    fn invalid_ids() {
        let long = format!("a:{}", "x".repeat(255));
        for id in [
            "",
            "nocolon",
            "a:",
            "1abc:x",
            "a..b:x",
            "a.:x",
            "a:b/c",
            "a:b\u{7}",
            "ns$:x",
            long.as_str(),
        ] {
            let e = ThingId::new(id).unwrap_err();
            assert_eq!(e.code(), "things:id.invalid", "{id}");
            assert_eq!(e.status(), 400);
        }
        assert_eq!(
            PolicyId::new("x").unwrap_err().code(),
            "policies:id.invalid"
        );
    }

    #[test]
    fn serde_validates() {
        let t: ThingId = serde_json::from_str("\"a:b\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"a:b\"");
        assert!(serde_json::from_str::<ThingId>("\"ab\"").is_err());
    }
}
