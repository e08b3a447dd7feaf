//! A tiny metrics registry with Prometheus text rendering: counters, gauges and histograms,
//! each a family of series told apart by labels.
//!
//! Handles ([`Counter`], [`Gauge`], [`Histogram`]) are cheap clones of one shared series; look
//! a series up once and keep the handle where a hot path updates it. Values a component already
//! keeps (the MQTT bridge's counters) are registered as closures read when the registry renders
//! ([`Registry::counter_fn`], [`Registry::gauge_fn`]). Any component of the process (HTTP, MQTT
//! via [`register_mqtt`], links) registers into the same [`Registry`] and `GET /metrics` renders
//! all of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::mqtt::{ConnectionState, MqttHandle, MqttMetrics};

/// Latency buckets in seconds, from 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open connections, connection state as 0/1, backlog).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A distribution of observations in fixed buckets (cumulative when rendered).
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: Vec<f64>,
    /// One count per bound plus the `+Inf` bucket (not cumulative).
    counts: Vec<AtomicU64>,
    /// Sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram(Arc::new(HistogramInner {
            bounds,
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let i = self.0.bounds.partition_point(|b| *b < v);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .0
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }
}

/// A value read when the registry renders.
type ReadFn<T> = Arc<dyn Fn() -> T + Send + Sync>;

#[derive(Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
    CounterFn(ReadFn<u64>),
    GaugeFn(ReadFn<i64>),
}

impl std::fmt::Debug for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Series::Counter(c) => f.debug_tuple("Counter").field(c).finish(),
            Series::Gauge(g) => f.debug_tuple("Gauge").field(g).finish(),
            Series::Histogram(h) => f.debug_tuple("Histogram").field(h).finish(),
            Series::CounterFn(_) => f.write_str("CounterFn"),
            Series::GaugeFn(_) => f.write_str("GaugeFn"),
        }
    }
}

impl Series {
    fn kind(&self) -> &'static str {
        match self {
            Series::Counter(_) | Series::CounterFn(_) => "counter",
            Series::Gauge(_) | Series::GaugeFn(_) => "gauge",
            Series::Histogram(_) => "histogram",
        }
    }

    fn is_fn(&self) -> bool {
        matches!(self, Series::CounterFn(_) | Series::GaugeFn(_))
    }
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: &'static str,
    /// Rendered label set (`a="1",b="2"`) → series.
    series: BTreeMap<String, Series>,
}

/// A set of metric families. Cheap to clone; clones share the metrics.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<String, Family>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The counter `name{labels}`, created on first use.
    ///
    /// Panics if `name` is already registered as another kind (a programming error).
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        match self.series(name, help, labels, || Series::Counter(Counter::default())) {
            Series::Counter(c) => c,
            other => panic!("metric {name} is a {}, not a counter", other.kind()),
        }
    }

    /// The gauge `name{labels}`, created on first use.
    ///
    /// Panics if `name` is already registered as another kind (a programming error).
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        match self.series(name, help, labels, || Series::Gauge(Gauge::default())) {
            Series::Gauge(g) => g,
            other => panic!("metric {name} is a {}, not a gauge", other.kind()),
        }
    }

    /// The histogram `name{labels}` with upper bounds `buckets` (seconds for latencies, see
    /// [`LATENCY_BUCKETS`]), created on first use; later calls reuse the first buckets.
    ///
    /// Panics if `name` is already registered as another kind (a programming error).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[f64],
    ) -> Histogram {
        match self.series(name, help, labels, || {
            Series::Histogram(Histogram::new(buckets))
        }) {
            Series::Histogram(h) => h,
            other => panic!("metric {name} is a {}, not a histogram", other.kind()),
        }
    }

    /// The counter `name{labels}` whose value `read` returns when the registry renders (for
    /// counts a component keeps itself). Registering the same name and labels again replaces
    /// the closure (a restarted component re-registers).
    ///
    /// Panics if `name{labels}` is already registered as another kind or as a plain counter.
    pub fn counter_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.register_fn(name, help, labels, Series::CounterFn(Arc::new(read)));
    }

    /// The gauge `name{labels}` whose value `read` returns when the registry renders (a
    /// connection state as 0/1, a queue length). Registering the same name and labels again
    /// replaces the closure.
    ///
    /// Panics if `name{labels}` is already registered as another kind or as a plain gauge.
    pub fn gauge_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.register_fn(name, help, labels, Series::GaugeFn(Arc::new(read)));
    }

    fn register_fn(&self, name: &str, help: &str, labels: &[(&str, &str)], new: Series) {
        let key = render_labels(labels);
        let mut families = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            kind: new.kind(),
            series: BTreeMap::new(),
        });
        assert_eq!(
            new.kind(),
            family.kind,
            "metric {name} registered with two kinds"
        );
        if let Some(old) = family.series.get(&key) {
            assert!(
                old.is_fn(),
                "metric {name}{{{key}}} is a plain {}, not read from a closure",
                old.kind()
            );
        }
        family.series.insert(key, new);
    }

    fn series(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Series,
    ) -> Series {
        let key = render_labels(labels);
        let mut families = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(family) = families.get_mut(name) {
            if let Some(s) = family.series.get(&key) {
                assert!(
                    !s.is_fn(),
                    "metric {name}{{{key}}} is read from a closure, it has no handle"
                );
                return s.clone();
            }
            let s = make();
            assert_eq!(
                s.kind(),
                family.kind,
                "metric {name} registered with two kinds"
            );
            family.series.insert(key, s.clone());
            return s;
        }
        let s = make();
        let mut series = BTreeMap::new();
        series.insert(key, s.clone());
        families.insert(
            name.to_owned(),
            Family {
                help: help.to_owned(),
                kind: s.kind(),
                series,
            },
        );
        s
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for (labels, series) in &family.series {
                match series {
                    Series::Counter(c) => line(&mut out, name, labels, "", &c.get().to_string()),
                    Series::Gauge(g) => line(&mut out, name, labels, "", &g.get().to_string()),
                    Series::CounterFn(read) => {
                        line(&mut out, name, labels, "", &read().to_string())
                    }
                    Series::GaugeFn(read) => line(&mut out, name, labels, "", &read().to_string()),
                    Series::Histogram(h) => {
                        let mut cumulative = 0;
                        let bucket = format!("{name}_bucket");
                        for (i, count) in h.0.counts.iter().enumerate() {
                            cumulative += count.load(Ordering::Relaxed);
                            let le = h.0.bounds.get(i).map_or("+Inf".to_owned(), f64::to_string);
                            let extra = format!("le=\"{le}\"");
                            line(&mut out, &bucket, labels, &extra, &cumulative.to_string());
                        }
                        line(
                            &mut out,
                            &format!("{name}_sum"),
                            labels,
                            "",
                            &h.sum().to_string(),
                        );
                        line(
                            &mut out,
                            &format!("{name}_count"),
                            labels,
                            "",
                            &cumulative.to_string(),
                        );
                    }
                }
            }
        }
        out
    }
}

/// Registers the MQTT bridge behind `handle` in `registry`: `opentwins_mqtt_connected` (1 when
/// connected, else 0) and the bridge's counters as `opentwins_mqtt_*_total`, all read from the
/// handle when `/metrics` renders. One bridge per registry (the series have no labels);
/// registering again replaces the earlier bridge's series.
pub fn register_mqtt(registry: &Registry, handle: MqttHandle) {
    let h = handle.clone();
    registry.gauge_fn(
        "opentwins_mqtt_connected",
        "Whether the MQTT bridge is connected to its broker (1) or not (0).",
        &[],
        move || i64::from(h.state() == ConnectionState::Connected),
    );
    type Field = fn(&MqttMetrics) -> u64;
    let counters: [(&str, &str, Field); 9] = [
        (
            "opentwins_mqtt_messages_in_total",
            "Messages the MQTT bridge received from the broker.",
            |m| m.messages_in,
        ),
        (
            "opentwins_mqtt_messages_out_total",
            "Messages of the MQTT bridge the broker acknowledged (events, replies, status).",
            |m| m.messages_out,
        ),
        (
            "opentwins_mqtt_commands_applied_total",
            "Inbound MQTT messages the engine applied.",
            |m| m.commands_applied,
        ),
        (
            "opentwins_mqtt_commands_refused_total",
            "Inbound MQTT commands the engine refused (policy, precondition, not found, limits).",
            |m| m.commands_refused,
        ),
        (
            "opentwins_mqtt_invalid_messages_total",
            "Inbound MQTT messages that could not be read (JSON, topic, size, not a command).",
            |m| m.invalid_messages,
        ),
        (
            "opentwins_mqtt_publish_errors_total",
            "MQTT publishes that failed (including oversize events).",
            |m| m.publish_errors,
        ),
        (
            "opentwins_mqtt_events_lagged_total",
            "Events the MQTT outbound stream missed because it fell behind.",
            |m| m.events_lagged,
        ),
        (
            "opentwins_mqtt_connects_total",
            "Successful MQTT connections (the first one and every reconnect).",
            |m| m.connects,
        ),
        (
            "opentwins_mqtt_connections_lost_total",
            "MQTT connections lost.",
            |m| m.connections_lost,
        ),
    ];
    for (name, help, field) in counters {
        let h = handle.clone();
        registry.counter_fn(name, help, &[], move || field(&h.metrics()));
    }
}

fn line(out: &mut String, name: &str, labels: &str, extra: &str, value: &str) {
    let sep = if labels.is_empty() || extra.is_empty() {
        ""
    } else {
        ","
    };
    if labels.is_empty() && extra.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}{sep}{extra}}} {value}");
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = labels.iter().collect();
    sorted.sort_by_key(|(k, _)| *k);
    let mut s = String::new();
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::new();
        let c = r.counter(
            "req_total",
            "Requests.",
            &[("route", "/a"), ("status", "200")],
        );
        c.inc();
        c.add(2);
        r.counter(
            "req_total",
            "Requests.",
            &[("status", "200"), ("route", "/a")],
        )
        .inc();
        r.gauge("open", "Open \"things\".", &[]).set(-3);
        let h = r.histogram("lat_seconds", "Latency.", &[("route", "x\"y")], &[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let text = r.render();
        assert!(
            text.contains("# TYPE req_total counter\nreq_total{route=\"/a\",status=\"200\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("open -3\n"), "{text}");
        assert!(
            text.contains("lat_seconds_bucket{route=\"x\\\"y\",le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{route=\"x\\\"y\",le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{route=\"x\\\"y\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_count{route=\"x\\\"y\"} 3\n"),
            "{text}"
        );
        assert_eq!(h.count(), 3);
        assert!((h.sum() - 5.55).abs() < 1e-9);
    }

    #[test]
    fn closures_are_read_at_render_time() {
        let r = Registry::new();
        let v = Arc::new(AtomicU64::new(1));
        let read = v.clone();
        r.counter_fn("c_total", "C.", &[("a", "b")], move || {
            read.load(Ordering::Relaxed)
        });
        r.gauge_fn("up", "Up.", &[], || 1);
        assert!(r.render().contains("c_total{a=\"b\"} 1\n"));
        v.store(7, Ordering::Relaxed);
        let text = r.render();
        assert!(
            text.contains("# TYPE c_total counter\nc_total{a=\"b\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE up gauge\nup 1\n"), "{text}");
        // Registering again replaces the closure.
        r.gauge_fn("up", "Up.", &[], || 0);
        assert!(r.render().contains("up 0\n"));
    }

    #[test]
    #[should_panic(expected = "not read from a closure")]
    fn closure_over_plain_series_is_a_programming_error() {
        let r = Registry::new();
        r.counter("x", "x", &[]);
        r.counter_fn("x", "x", &[], || 0);
    }

    #[test]
    #[should_panic(expected = "not a gauge")]
    fn kind_clash_is_a_programming_error() {
        let r = Registry::new();
        r.counter("x", "x", &[]);
        r.gauge("x", "x", &[]);
    }
}
