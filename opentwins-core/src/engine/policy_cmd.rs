//! Applying policy commands: create, retrieve, modify, delete of a policy or a part of it.

use std::sync::Arc;

use super::thing_cmd::policy_record;
use super::{PolicyOutcome, Twins, lock, write};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{PolicyId, Timestamp};
use crate::policy::{AuthContext, Permission, Policy, ResourceType};
use crate::protocol::{Action, Headers, PolicyCommand, PolicyResponse};
use crate::store::{Expect, Kind, WriteOp};

impl Twins {
    /// Applies one policy command for the caller `auth`. Policies are checked against
    /// themselves: READ / WRITE on `policy:/...` of the policy decides.
    pub async fn apply_policy(
        &self,
        auth: &AuthContext,
        mut cmd: PolicyCommand,
    ) -> Result<PolicyOutcome> {
        // Owned from here on: a big body is parsed into the policy and dropped, never copied.
        let value = cmd.value.take();
        let wait = cmd.action.is_write() && cmd.headers.wants_persisted();
        let inner = &self.inner;
        if cmd.action.is_write() {
            inner.check_store()?;
        }
        let guard = lock(&inner.policy_write);
        let current = inner.policy(&cmd.policy_id);
        let reply = |status: u16, value, etag: Option<String>| PolicyResponse {
            policy_id: cmd.policy_id.clone(),
            action: cmd.action,
            path: cmd.path.clone(),
            status,
            value,
            headers: Headers {
                etag,
                ..cmd.headers.for_reply()
            },
        };
        let may = |p: &Policy, perm: Permission| {
            auth.is_system() || p.has_unrestricted(auth, ResourceType::Policy, &cmd.path, perm)
        };
        let (response, op, new_policy) = match (cmd.action, current) {
            (Action::Merge, _) => {
                return Err(Error::new(
                    ErrorKind::ProtocolInvalid,
                    "Policies do not support merge commands.",
                ));
            }
            (Action::Create, Some(_)) => {
                return Err(Error::new(
                    ErrorKind::PolicyConflict,
                    format!("The Policy with ID '{}' already exists.", cmd.policy_id),
                ));
            }
            (Action::Create | Action::Modify, None) if cmd.path.is_root() => {
                let value =
                    value.ok_or_else(|| Error::field_invalid("A policy command needs a value."))?;
                let policy = Arc::new(Policy::from_json(&cmd.policy_id, &value, Timestamp::now())?);
                drop(value);
                let response = reply(201, Some(policy.to_json()), Some(policy.etag()));
                let op = WriteOp::Put {
                    record: policy_record(&policy),
                    expect: Expect::Absent,
                };
                (response, op, Some(policy))
            }
            (_, None) => return Err(not_found(&cmd.policy_id)),
            (Action::Retrieve, Some(p)) => {
                if !auth.is_system()
                    && !p.has_permission(auth, ResourceType::Policy, &cmd.path, Permission::Read)
                {
                    return Err(not_found(&cmd.policy_id));
                }
                // Parts below a path where READ is revoked are left out, as for things.
                let value = p
                    .filter_readable(auth, ResourceType::Policy, &cmd.path, &p.get_at(&cmd.path)?)
                    .ok_or_else(|| not_found(&cmd.policy_id))?;
                return Ok(PolicyOutcome {
                    response: reply(200, Some(value), Some(p.etag())),
                });
            }
            (Action::Modify | Action::Delete, Some(p)) => {
                if !may(&p, Permission::Write) {
                    return Err(if may(&p, Permission::Read) {
                        Error::new(
                            ErrorKind::PolicyNotModifiable,
                            format!(
                                "The Policy with ID '{}' could not be modified as the requester had insufficient permissions.",
                                cmd.policy_id
                            ),
                        )
                    } else {
                        not_found(&cmd.policy_id)
                    });
                }
                if cmd.action == Action::Delete && cmd.path.is_root() {
                    let op = WriteOp::Delete {
                        kind: Kind::Policy,
                        id: cmd.policy_id.to_string(),
                        expect: Expect::Revision(p.revision()),
                    };
                    write(&inner.policies).remove(&cmd.policy_id);
                    let durable = inner.store.write(vec![op]);
                    drop(guard);
                    inner.settle(durable, wait, None).await?;
                    return Ok(PolicyOutcome {
                        response: reply(204, None, None),
                    });
                }
                let mut next = (*p).clone();
                let status = if cmd.action == Action::Delete {
                    next.delete_at(&cmd.path)?;
                    204
                } else {
                    let value = value
                        .ok_or_else(|| Error::field_invalid("A modify command needs a value."))?;
                    if next.modify_at(&cmd.path, value)? {
                        201
                    } else {
                        204
                    }
                };
                next.touch(Timestamp::now());
                let value = (status == 201)
                    .then(|| next.get_at(&cmd.path))
                    .transpose()?;
                let next = Arc::new(next);
                let response = reply(status, value, Some(next.etag()));
                let op = WriteOp::Put {
                    record: policy_record(&next),
                    expect: Expect::Revision(p.revision()),
                };
                (response, op, Some(next))
            }
        };
        if let Some(policy) = new_policy {
            write(&inner.policies).insert(policy.id().clone(), policy);
        }
        let durable = inner.store.write(vec![op]);
        drop(guard);
        inner.settle(durable, wait, None).await?;
        Ok(PolicyOutcome { response })
    }
}

/// `policies:policy.notfound` for `id`, with Ditto's wording.
pub(super) fn not_found(id: &PolicyId) -> Error {
    Error::new(
        ErrorKind::PolicyNotFound,
        format!("The Policy with ID '{id}' could not be found or requester had insufficient permissions to access it."),
    )
    .with_description("Check if the ID of your requested Policy was correct and you have sufficient permissions.")
}
