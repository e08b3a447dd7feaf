//! What a big policy costs in memory (issue 14, finding 6: "a 1.8 MiB policy costs 122 MiB").
//!
//! A counting global allocator measures the heap: the bytes still allocated once a ~1.8 MiB
//! policy is created and enforced (the engine's copy, its compiled form, the store's record), and
//! the peak while that happens (the parsed request, the reply, the record being encoded). Both
//! must stay a small multiple of the policy's JSON size, whatever its shape: many entries with
//! one subject each (the compiled form once held a bit set of every entry per subject: quadratic),
//! or fewer entries with many subjects and resources.
//!
//! Everything runs in one test so that no other test allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, PolicyCommand, ThingCommand};
use opentwins_core::{Limits, Pointer, PolicyId, ThingId};
use serde_json::{Value, json};

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// The workspace denies unsafe code; a global allocator cannot be written without it. This one
// only forwards to the system allocator and counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LIMIT: Duration = Duration::from_secs(60);
const MIB: f64 = 1024.0 * 1024.0;

/// The policy the attack run sent, in two shapes of ~1.8 MiB: `entries` entries, each with
/// `subjects` subjects of its own and `resources` resources.
fn big_policy(entries: usize, subjects: usize, resources: usize) -> Value {
    let mut all = serde_json::Map::new();
    all.insert(
        "owner".into(),
        json!({
            "subjects": {"test:owner": {"type": "user"}},
            "resources": {
                "policy:/": {"grant": ["READ", "WRITE"], "revoke": []},
                "thing:/": {"grant": ["READ", "WRITE"], "revoke": []}
            }
        }),
    );
    for e in 0..entries {
        let mut s = serde_json::Map::new();
        for j in 0..subjects {
            s.insert(format!("user:u{e}-{j}"), json!({"type": "user"}));
        }
        let mut r = serde_json::Map::new();
        for j in 0..resources {
            r.insert(
                format!("thing:/features/f{e}/properties/p{j}"),
                json!({"grant": ["READ"], "revoke": ["WRITE"]}),
            );
        }
        all.insert(format!("entry-{e}"), json!({"subjects": s, "resources": r}));
    }
    json!({ "entries": all })
}

struct Cost {
    json: usize,
    /// The request as the transport hands it over (a `serde_json::Value`).
    request: usize,
    retained: usize,
    peak: usize,
}

/// Creates the policy from its JSON text as a transport would (parse, command), then a thing
/// under it (which enforces it), and measures.
async fn cost(text: &str) -> Cost {
    let tw = Twins::in_memory(EngineConfig::default());
    let owner = AuthContext::new(["test:owner"]);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let request;
    {
        let value: Value = serde_json::from_str(text).unwrap();
        request = LIVE.load(Ordering::Relaxed).saturating_sub(base);
        let c = PolicyCommand {
            policy_id: PolicyId::new("mem:big").unwrap(),
            action: Action::Create,
            path: Pointer::root(),
            value: Some(value),
            headers: Headers::default(),
        };
        let out = tokio::time::timeout(LIMIT, tw.apply_policy(&owner, c))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.response.status, 201);
        let c = ThingCommand::new(
            ThingId::new("mem:thing").unwrap(),
            Action::Create,
            Pointer::root(),
            Some(json!({"policyId": "mem:big", "attributes": {"a": 1}})),
        );
        let out = tokio::time::timeout(LIMIT, tw.apply(&owner, c))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.response.status, 201);
    }
    let retained = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    drop(tw);
    Cost {
        json: text.len(),
        request,
        retained,
        peak,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_big_policy_costs_a_small_multiple_of_its_size() {
    // The policies below are larger than the default limit (1 MiB) on purpose.
    Limits {
        max_policy_bytes: 4 * 1024 * 1024,
        ..Limits::default()
    }
    .install()
    .unwrap();
    let mut failed = Vec::new();
    for (shape, entries, subjects, resources) in [
        ("12,500 entries of 1 subject, 1 resource", 12_500, 1, 1),
        ("1,200 entries of 8 subjects, 16 resources", 1_200, 8, 16),
    ] {
        let text = serde_json::to_string(&big_policy(entries, subjects, resources)).unwrap();
        let c = cost(&text).await;
        let (json, request) = (c.json as f64, c.request as f64);
        let (retained, peak) = (c.retained as f64, c.peak as f64);
        eprintln!(
            "{shape}: JSON {:.2} MiB, parsed request {:.1} MiB ({:.1}x), retained {:.1} MiB \
             ({:.1}x), peak {:.1} MiB ({:.1}x; {:.1}x beyond the request)",
            json / MIB,
            request / MIB,
            request / json,
            retained / MIB,
            retained / json,
            peak / MIB,
            peak / json,
            (peak - request) / json,
        );
        assert!(
            (1.5 * MIB..2.5 * MIB).contains(&json),
            "{shape}: the policy is {json} bytes"
        );
        // What stays (the policy, its compiled form, the store's record) and what the engine
        // adds on top of the request it was handed, each a few times the JSON.
        if retained > 6.0 * json || peak - request > 8.0 * json {
            failed.push(shape);
        }
    }
    assert!(failed.is_empty(), "too costly: {failed:?}");
}
