//! The processor's configuration and its steering rule.

use serde::{Deserialize, Serialize};

use crate::lane::Prediction;

/// Where the processor reads frames and writes results, and how it steers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessorConfig {
    /// JSON pointer of the frame inside a thing. The value there is a base64 JPEG/PNG string, or
    /// an object holding one under `frame` or `data` (plus optional `contentType`, `size`): the
    /// shape the MQTT telemetry mapping writes for a binary payload.
    pub input: String,
    /// Feature that receives the lane properties (`offset`, `heading`, `curvature`, `laneWidth`,
    /// `coefficients`, `frameSeq`, `frameRevision`, `preprocessMs`, `inferenceMs`, `model`).
    pub output_feature: String,
    /// JSON pointer where the steering decision goes.
    pub decision: String,
    /// The steering rule.
    pub control: ControlRule,
    /// Frames inferred at the same time (each on a blocking thread); frames of one thing are
    /// never processed concurrently, so results stay in order per thing.
    pub workers: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            input: "/features/camera/properties/frame".into(),
            output_feature: "lane".into(),
            decision: "/features/steering/properties/correction".into(),
            control: ControlRule::default(),
            workers: 1,
        }
    }
}

/// A proportional lane-keeping rule with curvature feed-forward, in steering-angle degrees
/// (positive steers right):
///
/// `correction = clamp(atan(wheelbase * curvature) - k_offset * offset - k_heading * heading, ±max)`
///
/// The vehicle right of centre (`offset > 0`) or pointing right (`heading > 0`) is steered left;
/// the feed-forward term is the Ackermann angle that follows the road's bend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlRule {
    /// Degrees of steering per half lane width of offset.
    pub k_offset_deg: f32,
    /// Degrees of steering per degree of heading error.
    pub k_heading: f32,
    /// Wheelbase for the curvature feed-forward, metres (0 disables it).
    pub wheelbase_m: f32,
    /// Largest correction either way, degrees.
    pub max_deg: f32,
}

impl Default for ControlRule {
    fn default() -> Self {
        ControlRule {
            k_offset_deg: 8.0,
            k_heading: 1.0,
            wheelbase_m: 2.7,
            max_deg: 15.0,
        }
    }
}

impl ControlRule {
    /// The steering correction for one prediction, degrees.
    pub fn correction(&self, p: &Prediction) -> f32 {
        let feed_forward = (self.wheelbase_m * p.curvature).atan().to_degrees();
        let raw = feed_forward - self.k_offset_deg * p.offset - self.k_heading * p.heading_deg;
        let max = self.max_deg.abs();
        if raw.is_nan() {
            0.0
        } else {
            raw.clamp(-max, max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steers_back_towards_the_centre_and_clamps() {
        let rule = ControlRule::default();
        let centred = Prediction::from_values(0.0, 0.0, 0.0, 3.5);
        assert_eq!(rule.correction(&centred), 0.0);
        let right = Prediction::from_values(0.5, 0.0, 0.0, 3.5);
        assert!((rule.correction(&right) + 4.0).abs() < 1e-5);
        let pointing_left = Prediction::from_values(0.0, -2.0, 0.0, 3.5);
        assert!((rule.correction(&pointing_left) - 2.0).abs() < 1e-5);
        let bend = Prediction::from_values(0.0, 0.0, 0.002, 3.5);
        let ff = (2.7f32 * 0.002).atan().to_degrees();
        assert!((rule.correction(&bend) - ff).abs() < 1e-5);
        let far = Prediction::from_values(-3.0, -10.0, 0.0, 3.5);
        assert_eq!(rule.correction(&far), 15.0);
    }

    #[test]
    fn config_defaults_round_trip_and_unknown_fields_fail() {
        let c = ProcessorConfig::default();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ProcessorConfig>(&text).unwrap(), c);
        assert_eq!(serde_json::from_str::<ProcessorConfig>("{}").unwrap(), c);
        let partial: ProcessorConfig =
            serde_json::from_str(r#"{"output_feature": "lanes", "control": {"max_deg": 5}}"#)
                .unwrap();
        assert_eq!(partial.output_feature, "lanes");
        assert_eq!(partial.control.max_deg, 5.0);
        assert_eq!(partial.control.k_heading, 1.0);
        assert!(serde_json::from_str::<ProcessorConfig>(r#"{"inputs": "x"}"#).is_err());
    }
}
