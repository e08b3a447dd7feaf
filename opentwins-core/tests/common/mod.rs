//! Helpers the engine's integration tests share.

use std::time::Duration;

use opentwins_core::engine::Twins;
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, PolicyCommand, ThingCommand};
use opentwins_core::{Pointer, PolicyId, ThingId};
use serde_json::Value;

/// How long one engine call may take before a test calls it hung.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

pub(crate) fn id(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

pub(crate) fn cmd(thing: &str, action: Action, path: &str, value: Option<Value>) -> ThingCommand {
    ThingCommand::new(id(thing), action, Pointer::parse(path).unwrap(), value)
}

/// Creates policy `policy_id` from `body` as `auth`; it must succeed.
pub(crate) async fn put_policy(tw: &Twins, auth: &AuthContext, policy_id: &str, body: Value) {
    let c = PolicyCommand {
        policy_id: PolicyId::new(policy_id).unwrap(),
        action: Action::Create,
        path: Pointer::root(),
        value: Some(body),
        headers: Headers::default(),
    };
    let out = tokio::time::timeout(LIMIT, tw.apply_policy(auth, c))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.response.status, 201);
}
