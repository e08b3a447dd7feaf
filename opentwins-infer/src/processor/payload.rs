//! Finding a frame in a thing event and turning it into image bytes.

use opentwins_core::Pointer;
use opentwins_core::protocol::ThingEvent;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::preprocess::decode_base64;

/// The frame value an event carries at `input`, if it touches it: the event's value when the
/// event is at or above `input`, or the thing's current value (read through `current`) when the
/// event changed something inside the frame object.
pub(crate) fn frame_value(
    event: &ThingEvent,
    input: &Pointer,
    current: impl FnOnce() -> Option<Value>,
) -> Option<Value> {
    if let Some(rel) = input.strip_prefix(&event.path) {
        rel.get(event.value.as_ref()?).cloned()
    } else if event.path.starts_with(input) {
        current()
    } else {
        None
    }
    .filter(|v| !v.is_null())
}

/// The encoded image inside a frame value: a base64 string, or an object with a base64 string
/// under `frame` or `data` and an optional `contentType` that must then be an image type or
/// `application/octet-stream` (the telemetry mapping's default).
pub(crate) fn image_bytes(value: &Value) -> Result<Vec<u8>> {
    match value {
        Value::String(s) => decode_base64(s),
        Value::Object(m) => {
            if let Some(ct) = m.get("contentType") {
                let ct = ct.as_str().unwrap_or_default().to_ascii_lowercase();
                if !(ct.starts_with("image/") || ct == "application/octet-stream") {
                    return Err(Error::FramePayload(format!(
                        "contentType `{ct}` is not an image"
                    )));
                }
            }
            let data = m
                .get("frame")
                .or_else(|| m.get("data"))
                .ok_or_else(|| {
                    Error::FramePayload(
                        "an object frame needs a base64 string under `frame` or `data`".into(),
                    )
                })?
                .as_str()
                .ok_or_else(|| Error::FramePayload("the frame data is not a string".into()))?;
            decode_base64(data)
        }
        other => Err(Error::FramePayload(format!(
            "expected a base64 string or an object, got {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use opentwins_core::ThingId;
    use opentwins_core::model::Timestamp;
    use opentwins_core::protocol::{EventAction, Headers};
    use serde_json::json;

    use super::*;

    fn event(path: &str, value: Value) -> ThingEvent {
        ThingEvent {
            thing_id: ThingId::new("ns:car").unwrap(),
            action: EventAction::Merged,
            path: Pointer::parse(path).unwrap(),
            value: Some(value),
            revision: 3,
            timestamp: Timestamp::from_micros(0),
            headers: Headers::default(),
            provenance: None,
        }
    }

    #[test]
    fn finds_the_frame_at_above_and_below_the_input_path() {
        let input = Pointer::parse("/features/camera/properties/frame").unwrap();
        let none = || None;
        // The telemetry mapping's merge at the properties level.
        let e = event(
            "/features/camera/properties",
            json!({"frame": "/9j/", "contentType": "image/jpeg", "size": 3}),
        );
        assert_eq!(frame_value(&e, &input, none), Some(json!("/9j/")));
        // Directly at the path, and from the root.
        let e = event("/features/camera/properties/frame", json!("/9j/"));
        assert_eq!(frame_value(&e, &input, none), Some(json!("/9j/")));
        let e = event(
            "/",
            json!({"features": {"camera": {"properties": {"frame": "AA=="}}}}),
        );
        assert_eq!(frame_value(&e, &input, none), Some(json!("AA==")));
        // Something else changed.
        let e = event("/features/gps/properties", json!({"lat": 1}));
        assert_eq!(frame_value(&e, &input, || Some(json!("x"))), None);
        let e = event("/features/camera/properties", json!({"exposure": 3}));
        assert_eq!(frame_value(&e, &input, none), None);
        // Inside an object frame: the current value is read.
        let e = event("/features/camera/properties/frame/data", json!("AA=="));
        assert_eq!(
            frame_value(&e, &input, || Some(json!({"data": "AA=="}))),
            Some(json!({"data": "AA=="}))
        );
        // A merge deleting the frame.
        let e = event("/features/camera/properties", json!({"frame": null}));
        assert_eq!(frame_value(&e, &input, none), None);
    }

    #[test]
    fn accepts_string_and_mapping_objects_and_rejects_the_rest() {
        assert_eq!(image_bytes(&json!("/9j/")).unwrap(), [0xFF, 0xD8, 0xFF]);
        let mapped = json!({"frame": "/9j/", "contentType": "image/jpeg", "size": 3});
        assert_eq!(image_bytes(&mapped).unwrap(), [0xFF, 0xD8, 0xFF]);
        let data = json!({"data": "/9j/", "contentType": "application/octet-stream"});
        assert_eq!(image_bytes(&data).unwrap(), [0xFF, 0xD8, 0xFF]);
        for bad in [
            json!(3),
            json!(["/9j/"]),
            json!({"contentType": "image/jpeg"}),
            json!({"frame": 5}),
            json!({"frame": "/9j/", "contentType": "text/plain"}),
        ] {
            assert!(
                matches!(image_bytes(&bad), Err(Error::FramePayload(_))),
                "{bad}"
            );
        }
        assert!(matches!(image_bytes(&json!("%%%")), Err(Error::Base64(_))));
    }
}
