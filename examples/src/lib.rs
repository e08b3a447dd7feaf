//! Shared pieces of the example programs in `examples/examples/`: a synthetic camera that sends
//! numbered JPEG frames to a twin over HTTP or MQTT, and latency statistics.

use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use opentwins_infer::synth;
use serde_json::json;

/// Frames rendered once and sent in a loop (rendering costs more than sending).
pub struct FramePool {
    frames: Vec<(String, synth::Truth)>,
}

impl FramePool {
    /// `n` frames of `width`x`height` from consecutive seeds starting at `seed`, as base64 JPEG.
    pub fn render(seed: u64, n: usize, width: u32, height: u32) -> anyhow::Result<FramePool> {
        let frames = (0..n as u64)
            .map(|i| {
                let (frame, truth) = synth::sample(seed + i, width, height);
                let jpeg = frame.to_jpeg(85).context("encoding a frame")?;
                Ok((
                    base64::engine::general_purpose::STANDARD.encode(jpeg),
                    truth,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(FramePool { frames })
    }

    /// Frame `i` (cycling) and its ground truth.
    pub fn get(&self, i: u64) -> &(String, synth::Truth) {
        &self.frames[(i as usize) % self.frames.len()]
    }

    /// Average base64 size of a frame, bytes.
    pub fn mean_bytes(&self) -> usize {
        self.frames.iter().map(|(b, _)| b.len()).sum::<usize>() / self.frames.len().max(1)
    }
}

/// A numbered frame as the camera writes it at `/features/camera/properties/frame`: the lane
/// processor decodes `data` and echoes `id` as the decision's `frameId`.
pub fn frame_value(frame: &str, id: u64) -> serde_json::Value {
    json!({"data": frame, "id": id, "contentType": "image/jpeg"})
}

/// How a camera reaches its twin.
pub enum CameraLink {
    /// `PUT {base}/api/2/things/{thing}/features/camera/properties/frame`.
    Http {
        /// The client.
        client: reqwest::Client,
        /// The frame URL.
        url: String,
    },
    /// A JSON telemetry message `{"frame": ..}` on `topic` (the instance's telemetry mapping).
    Mqtt {
        /// The client.
        client: paho_mqtt::AsyncClient,
        /// The topic.
        topic: String,
    },
}

impl CameraLink {
    /// A camera for `thing` on the HTTP API at `base` (e.g. `http://127.0.0.1:8081`).
    pub fn http(base: &str, thing: &str) -> CameraLink {
        CameraLink::Http {
            client: reqwest::Client::new(),
            url: format!("{base}/api/2/things/{thing}/features/camera/properties/frame"),
        }
    }

    /// A camera publishing to `topic` on the broker at `url`.
    pub async fn mqtt(url: &str, client_id: &str, topic: String) -> anyhow::Result<CameraLink> {
        let uri = url.replacen("mqtt://", "tcp://", 1);
        let client = paho_mqtt::CreateOptionsBuilder::new()
            .server_uri(&uri)
            .client_id(client_id)
            .mqtt_version(paho_mqtt::MQTT_VERSION_5)
            .max_buffered_messages(10_000)
            .create_client()
            .context("creating the camera's MQTT client")?;
        let options = paho_mqtt::ConnectOptionsBuilder::new_v5()
            .clean_start(true)
            .connect_timeout(Duration::from_secs(5))
            .finalize();
        client
            .connect(options)
            .await
            .with_context(|| format!("the camera cannot connect to {url}"))?;
        Ok(CameraLink::Mqtt { client, topic })
    }

    /// Sends frame `id` (base64 JPEG).
    pub async fn send(&self, frame: &str, id: u64) -> anyhow::Result<()> {
        let value = frame_value(frame, id);
        match self {
            CameraLink::Http { client, url } => {
                let response = client
                    .put(url)
                    .header("content-type", "application/json")
                    .body(value.to_string())
                    .send()
                    .await
                    .context("sending a frame")?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "the twin refused a frame: {}",
                    response.status()
                );
            }
            CameraLink::Mqtt { client, topic } => {
                let body = json!({"frame": value}).to_string();
                let message = paho_mqtt::MessageBuilder::new()
                    .topic(topic)
                    .payload(body)
                    .qos(1)
                    .finalize();
                client
                    .publish(message)
                    .await
                    .context("publishing a frame")?;
            }
        }
        Ok(())
    }

    /// Disconnects (MQTT).
    pub async fn close(self) {
        if let CameraLink::Mqtt { client, .. } = self {
            let _ = client.disconnect(None).await;
        }
    }
}

/// Latency samples in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<f64>);

impl Latencies {
    /// Adds a sample.
    pub fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }

    /// The samples, in the order pushed.
    pub fn values(&self) -> &[f64] {
        &self.0
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile (0..=1), nearest rank; 0 without samples.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    /// The mean; 0 without samples.
    pub fn mean(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().sum::<f64>() / self.0.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut l = Latencies::default();
        assert_eq!((l.quantile(0.5), l.mean()), (0.0, 0.0));
        for v in [5.0, 1.0, 3.0, 2.0, 4.0] {
            l.push(v);
        }
        assert_eq!(l.quantile(0.5), 3.0);
        assert_eq!(l.quantile(0.0), 1.0);
        assert_eq!(l.quantile(1.0), 5.0);
        assert_eq!(l.quantile(0.8), 4.0);
        assert_eq!(l.mean(), 3.0);
    }
}
