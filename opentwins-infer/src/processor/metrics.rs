//! Counters and timings of a running processor.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters, updated by the processor's tasks.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    frames_in: AtomicU64,
    processed: AtomicU64,
    skipped: AtomicU64,
    errors: AtomicU64,
    lagged_events: AtomicU64,
    last_preprocess_us: AtomicU64,
    last_inference_us: AtomicU64,
    total_preprocess_us: AtomicU64,
    total_inference_us: AtomicU64,
}

impl Metrics {
    pub(crate) fn frame_in(&self, replaced: bool) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        if replaced {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn lagged(&self, events: u64) {
        self.lagged_events.fetch_add(events, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn processed(&self, preprocess_us: u64, inference_us: u64) {
        self.last_preprocess_us
            .store(preprocess_us, Ordering::Relaxed);
        self.last_inference_us
            .store(inference_us, Ordering::Relaxed);
        self.total_preprocess_us
            .fetch_add(preprocess_us, Ordering::Relaxed);
        self.total_inference_us
            .fetch_add(inference_us, Ordering::Relaxed);
        self.processed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, pending: usize) -> ProcessorMetrics {
        let processed = self.processed.load(Ordering::Relaxed);
        let ms = |us: u64| us as f64 / 1000.0;
        let avg = |total: &AtomicU64| {
            if processed == 0 {
                0.0
            } else {
                ms(total.load(Ordering::Relaxed)) / processed as f64
            }
        };
        ProcessorMetrics {
            frames_in: self.frames_in.load(Ordering::Relaxed),
            processed,
            skipped: self.skipped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            lagged_events: self.lagged_events.load(Ordering::Relaxed),
            pending,
            last_preprocess_ms: ms(self.last_preprocess_us.load(Ordering::Relaxed)),
            last_inference_ms: ms(self.last_inference_us.load(Ordering::Relaxed)),
            avg_preprocess_ms: avg(&self.total_preprocess_us),
            avg_inference_ms: avg(&self.total_inference_us),
        }
    }
}

/// A snapshot of a processor's counters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessorMetrics {
    /// Frames received from the engine.
    pub frames_in: u64,
    /// Frames inferred and written back.
    pub processed: u64,
    /// Frames replaced by a newer frame of the same thing before inference started.
    pub skipped: u64,
    /// Frames that failed (undecodable, inference error, write rejected).
    pub errors: u64,
    /// Engine events this processor's subscription missed because it lagged (these may have
    /// carried frames; they are not in `frames_in`).
    pub lagged_events: u64,
    /// Frames waiting right now (at most one per thing).
    pub pending: usize,
    /// Decode + resize + normalise time of the last frame, ms.
    pub last_preprocess_ms: f64,
    /// Model run time of the last frame, ms.
    pub last_inference_ms: f64,
    /// Mean preprocessing time, ms.
    pub avg_preprocess_ms: f64,
    /// Mean model run time, ms.
    pub avg_inference_ms: f64,
}
