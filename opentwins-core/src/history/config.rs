//! [`HistoryConfig`]: what is recorded and for how long, and [`run_retention`], the task that
//! prunes old points.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::History;
use crate::model::{PathPattern, Timestamp};

/// The default of [`HistoryConfig::max_points_per_path`] and of the backends' point limit
/// ([`super::MemoryHistory::new`], [`super::SledHistory::open`]): about a week of one point a
/// minute, so that one writer reporting fast cannot grow a path without bound.
pub const DEFAULT_MAX_POINTS_PER_PATH: usize = 10_000;

/// Configuration of the history (TOML-friendly: durations as `"7d"`, `"5m"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Recorded subtrees: path patterns whose segments may be `*`. Every leaf value at or below
    /// one of them is recorded. Default `["/features/*/properties"]`.
    pub paths: Vec<PathPattern>,
    /// Subtrees never recorded, even inside `paths` (e.g. `/features/camera/properties/frame`).
    /// Default none.
    pub exclude: Vec<PathPattern>,
    /// How long points are kept; `0s` keeps them forever. Default `7d`.
    #[serde(with = "humantime_duration")]
    pub retention: Duration,
    /// The most points kept per path: recording one more removes the oldest (on write).
    /// Default [`DEFAULT_MAX_POINTS_PER_PATH`] (10,000: a week of one point a minute);
    /// 0 = unlimited.
    pub max_points_per_path: usize,
    /// Values whose JSON is longer are not recorded (camera frames, blobs); 0 = no limit.
    /// Default 64 KiB.
    pub max_value_bytes: usize,
    /// How often [`run_retention`] prunes. Default `5m`; at least `1s`.
    #[serde(with = "humantime_duration")]
    pub prune_interval: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            paths: vec![PathPattern::parse("/features/*/properties").expect("a valid pattern")],
            exclude: Vec::new(),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_points_per_path: DEFAULT_MAX_POINTS_PER_PATH,
            max_value_bytes: 64 * 1024,
            prune_interval: Duration::from_secs(300),
        }
    }
}

impl HistoryConfig {
    /// The oldest time kept at `now`, or `None` when points are kept forever.
    pub fn cutoff(&self, now: Timestamp) -> Option<Timestamp> {
        if self.retention.is_zero() {
            return None;
        }
        let keep = u64::try_from(self.retention.as_micros()).unwrap_or(u64::MAX);
        Some(Timestamp::from_micros(now.as_micros().saturating_sub(keep)))
    }
}

/// Prunes points older than `config.retention` every `config.prune_interval` (first right
/// away) until `shutdown` completes. With retention `0s` it only waits for `shutdown`. Each
/// prune runs on a blocking thread; failures are logged and retried at the next interval.
pub async fn run_retention(
    history: Arc<dyn History>,
    config: HistoryConfig,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    if config.retention.is_zero() {
        shutdown.await;
        return;
    }
    let mut tick = tokio::time::interval(config.prune_interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let Some(before) = config.cutoff(Timestamp::now()) else {
            continue;
        };
        let h = history.clone();
        let mut pruned = tokio::task::spawn_blocking(move || h.prune(before));
        tokio::select! {
            // The prune holds the history (and its database) until it ends: a shutdown waits
            // for it, so that the store is released when the shutdown returns.
            () = &mut shutdown => {
                let _ = pruned.await;
                return;
            }
            result = &mut pruned => match result {
                Ok(Ok(n)) if n > 0 => tracing::debug!(points = n, %before, "history pruned"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "pruning the history failed"),
                Err(e) => tracing::error!(error = %e, "the history pruning task failed"),
            },
        }
    }
}

/// Durations in config files as humantime strings (`"0s"`, `"5m"`, `"7d"`).
mod humantime_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration '{s}' (expected e.g. \"7d\", \"5m\"): {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::{MemoryHistory, Point};
    use crate::model::{Pointer, ThingId};

    #[test]
    fn defaults_round_trip_and_unknown_fields_fail() {
        let c: HistoryConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(c, HistoryConfig::default());
        assert_eq!(c.paths[0].to_string(), "/features/*/properties");
        assert_eq!(c.max_points_per_path, 10_000, "a path is capped by default");
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<HistoryConfig>(&text).unwrap(), c);
        let c: HistoryConfig = serde_json::from_value(json!({
            "paths": ["/features/*/properties", "/attributes/location"],
            "exclude": ["/features/camera"],
            "retention": "0s",
            "max_points_per_path": 100
        }))
        .unwrap();
        assert_eq!(c.cutoff(Timestamp::now()), None, "0s keeps forever");
        assert_eq!(c.exclude[0].to_string(), "/features/camera");
        assert!(serde_json::from_value::<HistoryConfig>(json!({"retain": "1d"})).is_err());
        assert!(serde_json::from_value::<HistoryConfig>(json!({"retention": "soon"})).is_err());
        assert!(serde_json::from_value::<HistoryConfig>(json!({"paths": ["/a//b"]})).is_err());
    }

    #[test]
    fn cutoff_is_now_minus_retention() {
        let c = HistoryConfig {
            retention: Duration::from_secs(60),
            ..HistoryConfig::default()
        };
        let now = Timestamp::from_micros(100_000_000);
        assert_eq!(c.cutoff(now), Some(Timestamp::from_micros(40_000_000)));
        assert_eq!(
            c.cutoff(Timestamp::from_micros(5)),
            Some(Timestamp::from_micros(0))
        );
    }

    #[tokio::test]
    async fn retention_task_prunes_old_points_and_stops_on_shutdown() {
        let history = Arc::new(MemoryHistory::new());
        let thing = ThingId::new("t:r").unwrap();
        let path = Pointer::parse("/features/f/properties/x").unwrap();
        let now = Timestamp::now().as_micros();
        let point = |ago_s: u64, revision| {
            (
                path.clone(),
                Point {
                    time: Timestamp::from_micros(now - ago_s * 1_000_000),
                    revision,
                    value: Some(json!(revision)),
                },
            )
        };
        history
            .record(&thing, &[point(7200, 1), point(10, 2)])
            .unwrap();
        let config = HistoryConfig {
            retention: Duration::from_secs(3600),
            ..HistoryConfig::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_retention(history.clone(), config, async {
            let _ = stopped.await;
        }));
        let pruned = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let paths = history.paths(&thing, &Pointer::root()).unwrap();
                if paths[0].count == 1 {
                    return paths;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the first prune runs at once");
        assert_eq!(pruned[0].first.as_micros(), now - 10_000_000);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops on shutdown")
            .unwrap();
    }
}
