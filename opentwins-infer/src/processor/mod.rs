//! [`Processor`]: runs the lane model on every new camera frame of every thing and writes the
//! result, plus a steering decision, back into the twin.
//!
//! Data flow: one task holds an engine [`Subscription`](opentwins_core::engine::Subscription)
//! filtered (RQL `exists(..)`) to events touching the input path and drops each frame into a
//! per-thing latest-value slot; a newer frame replaces a waiting one (counted as skipped), so
//! memory stays bounded however fast frames come. `workers` tasks take frames from the slots,
//! decode and infer on tokio's blocking pool (never on the async threads), and apply one merge
//! command per frame that sets the lane feature and the decision together. Dropping the
//! [`ProcessorHandle`] (or calling [`ProcessorHandle::shutdown`]) stops all of it.

mod config;
mod metrics;
mod payload;
mod slots;

use std::sync::Arc;
use std::time::Instant;

use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{Pointer, Twins};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use config::{ControlRule, ProcessorConfig};
pub use metrics::ProcessorMetrics;

use crate::error::{Error, Result};
use crate::lane::{LaneModel, Prediction};
use metrics::Metrics;
use slots::{Job, Slots};

/// Builds running processors; see the [module docs](self).
#[derive(Debug)]
pub struct Processor;

struct Shared {
    twins: Twins,
    model: LaneModel,
    auth: AuthContext,
    config: ProcessorConfig,
    input: Pointer,
    output: Pointer,
    decision: Pointer,
    slots: Slots,
    work: Notify,
    metrics: Metrics,
}

/// A running processor. Dropping it stops the processor (in-flight frames finish first).
pub struct ProcessorHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ProcessorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorHandle")
            .field("config", &self.shared.config)
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl Processor {
    /// Starts a processor on `twins` that acts as `auth` (it needs READ on the input path and
    /// WRITE on the output feature and decision path). Must be called inside a tokio runtime.
    pub fn spawn(
        twins: Twins,
        model: LaneModel,
        auth: AuthContext,
        config: ProcessorConfig,
    ) -> Result<ProcessorHandle> {
        let pointer = |what: &str, s: &str| {
            Pointer::parse(s).map_err(|e| Error::Spec(format!("processor {what} `{s}`: {e}")))
        };
        let input = pointer("input", &config.input)?;
        let decision = pointer("decision", &config.decision)?;
        if input.is_root() || decision.is_root() {
            return Err(Error::Spec(
                "processor input and decision must not be the thing root".into(),
            ));
        }
        opentwins_core::model::validate_feature_id(&config.output_feature)
            .map_err(|e| Error::Spec(format!("output feature: {e}")))?;
        let output =
            Pointer::from_segments(["features", config.output_feature.as_str(), "properties"])
                .map_err(|e| Error::Spec(format!("output feature: {e}")))?;
        if input.starts_with(&output) || output.starts_with(&input) || decision.starts_with(&input)
        {
            return Err(Error::Spec(
                "the processor's outputs must not overlap its input".into(),
            ));
        }
        let filter = format!("exists({})", input.segments().join("/"));
        let subscription = twins
            .subscribe(auth.clone(), Some(&filter))
            .map_err(|e| Error::Spec(format!("subscribing with `{filter}`: {e}")))?;
        let workers = config.workers.max(1);
        let shared = Arc::new(Shared {
            twins,
            model,
            auth,
            config,
            input,
            output,
            decision,
            slots: Slots::default(),
            work: Notify::new(),
            metrics: Metrics::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(receive(
            shared.clone(),
            subscription,
            stopped.clone(),
        ))];
        for _ in 0..workers {
            tasks.push(tokio::spawn(work(shared.clone(), stopped.clone())));
        }
        Ok(ProcessorHandle {
            shared,
            stop,
            tasks,
        })
    }
}

impl ProcessorHandle {
    /// A reader of the counters that outlives borrowing the handle (for a metrics registry).
    pub fn metrics_reader(&self) -> impl Fn() -> ProcessorMetrics + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.metrics.snapshot(shared.slots.pending())
    }

    /// The counters right now.
    pub fn metrics(&self) -> ProcessorMetrics {
        self.shared.metrics.snapshot(self.shared.slots.pending())
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ProcessorConfig {
        &self.shared.config
    }

    /// Stops receiving, lets in-flight frames finish, and waits for every task to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for ProcessorHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // Ends when `true` is sent or the handle (the sender) is gone.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn receive(
    shared: Arc<Shared>,
    mut subscription: opentwins_core::engine::Subscription,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            _ = stopped(&mut stop) => break,
            event = subscription.recv() => event,
        };
        match event {
            Ok(event) => {
                let value = payload::frame_value(&event, &shared.input, || {
                    shared
                        .twins
                        .get_thing(&event.thing_id)
                        .and_then(|t| t.get(&shared.input).cloned())
                });
                if let Some(value) = value {
                    let replaced = shared.slots.offer(event.thing_id, value, event.revision);
                    shared.metrics.frame_in(replaced);
                    shared.work.notify_one();
                }
            }
            Err(opentwins_core::engine::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "lane processor lagged behind the engine's events"
                );
                shared.metrics.lagged(n);
            }
            Err(opentwins_core::engine::RecvError::Closed) => break,
        }
    }
}

async fn work(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let job = loop {
            if *stop.borrow() {
                return;
            }
            if let Some(job) = shared.slots.take() {
                break job;
            }
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = shared.work.notified() => {}
            }
        };
        let thing = job.thing.clone();
        if let Err(e) = process(&shared, job).await {
            shared.metrics.error();
            tracing::warn!(thing = %thing, error = %e, "lane processor: frame failed");
        }
        if shared.slots.finish(&thing) {
            shared.work.notify_one();
        }
    }
}

/// What one inference produced, with its timings.
struct Inferred {
    prediction: Prediction,
    preprocess_us: u64,
    inference_us: u64,
}

async fn process(shared: &Arc<Shared>, job: Job) -> std::result::Result<(), String> {
    let model = shared.model.clone();
    let value = job.value;
    // A camera that numbers its frames (`{"data": .., "id": 17}`) finds the number in the result.
    let frame_id = value.get("id").cloned();
    let inferred = tokio::task::spawn_blocking(move || -> Result<Inferred> {
        let started = Instant::now();
        let bytes = payload::image_bytes(&value)?;
        let input = model.preprocess(&bytes)?;
        let preprocessed = Instant::now();
        let prediction = model.predict_tensor(&input)?;
        Ok(Inferred {
            prediction,
            preprocess_us: (preprocessed - started).as_micros() as u64,
            inference_us: preprocessed.elapsed().as_micros() as u64,
        })
    })
    .await
    .map_err(|e| format!("inference task failed: {e}"))?
    .map_err(|e| e.to_string())?;

    let p = &inferred.prediction;
    let correction = shared.config.control.correction(p);
    let mut lane = json!({
        "offset": p.offset,
        "heading": p.heading_deg,
        "curvature": p.curvature,
        "laneWidth": p.lane_width_m,
        "coefficients": p.coefficients,
        "frameSeq": job.seq,
        "frameRevision": job.revision,
        "preprocessMs": inferred.preprocess_us as f64 / 1000.0,
        "inferenceMs": inferred.inference_us as f64 / 1000.0,
        "model": shared.model.spec().name,
    });
    if let (Some(id), Value::Object(m)) = (frame_id, &mut lane) {
        m.insert("frameId".into(), id);
    }
    let mut patch = shared.output.wrap(lane);
    merge_into(&mut patch, shared.decision.wrap(json!(correction)));
    let cmd = ThingCommand::new(job.thing, Action::Merge, Pointer::root(), Some(patch));
    shared
        .twins
        .apply(&shared.auth, cmd)
        .await
        .map_err(|e| format!("writing the result: {e}"))?;
    shared
        .metrics
        .processed(inferred.preprocess_us, inferred.inference_us);
    Ok(())
}

/// Deep-merges object `b` into `a` (both built by `Pointer::wrap`, so only objects nest).
fn merge_into(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge_into(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (a, b) => *a = b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_joins_two_wrapped_paths() {
        let mut a = Pointer::parse("/features/lane/properties")
            .unwrap()
            .wrap(json!({"offset": 1}));
        merge_into(
            &mut a,
            Pointer::parse("/features/steering/properties/correction")
                .unwrap()
                .wrap(json!(2)),
        );
        assert_eq!(
            a,
            json!({"features": {"lane": {"properties": {"offset": 1}},
                                "steering": {"properties": {"correction": 2}}}})
        );
    }
}
