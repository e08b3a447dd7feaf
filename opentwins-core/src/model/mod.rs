//! The data model: ids, paths, the Thing, what values may look like, field selection.

mod fields;
mod id;
mod pattern;
mod pointer;
pub mod schema;
mod thing;

pub use fields::FieldSelector;
pub use id::{MAX_ID_LEN, PolicyId, ThingId, validate_feature_id};
pub use pattern::PathPattern;
pub use pointer::{Pointer, validate_key};
pub use thing::{Thing, Timestamp};
