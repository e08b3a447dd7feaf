//! Links between twin instances: outbound and inbound replication of updates to peers.

pub mod outbox;
