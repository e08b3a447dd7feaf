//! Frame preprocessing: base64 → JPEG/PNG bytes → RGB at the model's input size → normalised NCHW
//! `f32`.
//!
//! The default path for JPEG decodes straight to 1/2, 1/4 or 1/8 of the full size (DCT scaling in
//! `jpeg-decoder`), then box-filters the remainder down to the exact input size; a 1280x720 or
//! 640x360 camera frame lands exactly on the lane model's 160x90 input this way. PNG (and
//! [`Resize::Full`]) decodes at full size with `image` and box-filters. `benches/src/bin/infer.rs`
//! times both: decoding dominates, and `image`'s full decode (zune-jpeg) turned out faster at
//! 640x360 and equal at 1280x720, so the scaled path is not the fast one (docs/benchmarks.md). It
//! stays the default because the shipped model was trained on its pixels: the training data goes
//! through these same functions (`examples/dataset.rs`).

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::synth::Frame;

/// Largest image accepted, in pixels (a 8192x8192 frame); bigger headers are rejected before
/// any pixel buffer is allocated.
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// Image container formats the preprocessor decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG (baseline or progressive).
    Jpeg,
    /// PNG.
    Png,
}

impl ImageFormat {
    /// Recognises the format from the first bytes (the content type of a twin property is often
    /// missing or `application/octet-stream`, so the bytes decide).
    pub fn sniff(bytes: &[u8]) -> Result<ImageFormat> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Ok(ImageFormat::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Ok(ImageFormat::Png)
        } else {
            let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            Err(Error::UnknownImageFormat(if head.is_empty() {
                "nothing: the payload is empty".into()
            } else {
                head.join(" ")
            }))
        }
    }

    fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
        }
    }
}

/// How a frame is brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resize {
    /// JPEG: decode at the smallest DCT scale (1, 1/2, 1/4, 1/8) that still covers the target,
    /// then box-filter. PNG has no such shortcut and decodes at full size. The default (the
    /// shipped model was trained on these pixels).
    #[default]
    DecodeScaled,
    /// Decode at full size with `image` (zune-jpeg for JPEG), then box-filter.
    Full,
}

/// Decodes standard (padded) base64, ignoring ASCII whitespace such as line breaks.
pub fn decode_base64(text: &str) -> Result<Vec<u8>> {
    let engine = &base64::engine::general_purpose::STANDARD;
    if text.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        Ok(engine.decode(compact)?)
    } else {
        Ok(engine.decode(text)?)
    }
}

/// Decodes a JPEG or PNG at full resolution into RGB8.
pub fn decode(bytes: &[u8]) -> Result<Frame> {
    let format = ImageFormat::sniff(bytes)?;
    check_complete(bytes, format)?;
    guarded(format, || decode_full(bytes, format))
}

/// Decodes a JPEG or PNG and brings it to exactly `width x height` RGB8 pixels (the image is
/// stretched to that aspect ratio if it differs), using `resize` to get there.
pub fn decode_resized(bytes: &[u8], width: u32, height: u32, resize: Resize) -> Result<Frame> {
    if width == 0 || height == 0 {
        return Err(Error::Spec(format!(
            "target size {width}x{height} has a zero side"
        )));
    }
    let format = ImageFormat::sniff(bytes)?;
    check_complete(bytes, format)?;
    guarded(format, || {
        let frame = match (format, resize) {
            (ImageFormat::Jpeg, Resize::DecodeScaled) => decode_jpeg_scaled(bytes, width, height)?,
            _ => decode_full(bytes, format)?,
        };
        Ok(fit(frame, width, height))
    })
}

/// Brings a frame to exactly `width x height` with a box filter (a no-op when it already is).
pub fn fit(frame: Frame, width: u32, height: u32) -> Frame {
    if frame.width() == width && frame.height() == height {
        frame
    } else {
        frame.downscale(width, height)
    }
}

/// Per-channel normalisation applied to RGB8 pixels: `(value / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Channel means (R, G, B) on the `0..1` scale.
    pub mean: [f32; 3],
    /// Channel standard deviations (R, G, B) on the `0..1` scale; must be positive.
    pub std: [f32; 3],
}

impl Normalize {
    /// Writes `frame` as one NCHW image (`3 x height x width` values, R plane first) into `out`,
    /// replacing its contents.
    pub fn to_nchw_into(&self, frame: &Frame, out: &mut Vec<f32>) {
        let plane = frame.width() as usize * frame.height() as usize;
        out.clear();
        out.resize(plane * 3, 0.0);
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * self.std[c]));
        let shift: [f32; 3] = std::array::from_fn(|c| -self.mean[c] / self.std[c]);
        for (i, px) in frame.as_rgb().chunks_exact(3).enumerate() {
            r[i] = px[0] as f32 * scale[0] + shift[0];
            g[i] = px[1] as f32 * scale[1] + shift[1];
            b[i] = px[2] as f32 * scale[2] + shift[2];
        }
    }

    /// [`Normalize::to_nchw_into`] into a new vector.
    pub fn to_nchw(&self, frame: &Frame) -> Vec<f32> {
        let mut out = Vec::new();
        self.to_nchw_into(frame, &mut out);
        out
    }
}

/// Runs a decoder, turning a panic inside the third-party code into an error: a corrupt frame
/// from the network must never take the processor down.
fn guarded(format: ImageFormat, f: impl FnOnce() -> Result<Frame>) -> Result<Frame> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(_) => Err(decode_error(format, "the decoder panicked on this input")),
    }
}

fn decode_error(format: ImageFormat, message: impl ToString) -> Error {
    Error::ImageDecode {
        format: format.name(),
        message: message.to_string(),
    }
}

/// JPEG decoders are lenient: a truncated JPEG decodes "successfully", the missing part grey.
/// A camera frame cut short in transit must not become a confident prediction, so a JPEG must
/// end with its end-of-image marker (trailing padding allowed).
fn check_complete(bytes: &[u8], format: ImageFormat) -> Result<()> {
    if format == ImageFormat::Jpeg {
        let tail = &bytes[bytes.len().saturating_sub(64)..];
        if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Err(decode_error(
                format,
                "no end-of-image marker: the JPEG is truncated",
            ));
        }
    }
    Ok(())
}

fn check_size(format: ImageFormat, width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 || width as u64 * height as u64 > MAX_PIXELS {
        return Err(decode_error(
            format,
            format!("image size {width}x{height} is empty or above the {MAX_PIXELS}-pixel limit"),
        ));
    }
    Ok(())
}

fn decode_full(bytes: &[u8], format: ImageFormat) -> Result<Frame> {
    let image_format = match format {
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Png => image::ImageFormat::Png,
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image_format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(8192);
    limits.max_image_height = Some(8192);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| decode_error(format, e))?;
    check_size(format, image.width(), image.height())?;
    let rgb = image.into_rgb8();
    let (w, h) = rgb.dimensions();
    Frame::from_rgb(w, h, rgb.into_raw())
        .ok_or_else(|| decode_error(format, "decoded buffer has the wrong length"))
}

/// The largest DCT reduction (8 = 1/8 size) that keeps both sides at least the target.
fn jpeg_factor(full_w: u32, full_h: u32, width: u32, height: u32) -> u32 {
    let scaled = |len: u32, f: u32| len.div_ceil(f);
    [8, 4, 2]
        .into_iter()
        .find(|&f| scaled(full_w, f) >= width && scaled(full_h, f) >= height)
        .unwrap_or(1)
}

fn decode_jpeg_scaled(bytes: &[u8], width: u32, height: u32) -> Result<Frame> {
    let fmt = ImageFormat::Jpeg;
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.read_info().map_err(|e| decode_error(fmt, e))?;
    let info = decoder
        .info()
        .ok_or_else(|| decode_error(fmt, "no frame header"))?;
    let (full_w, full_h) = (info.width as u32, info.height as u32);
    check_size(fmt, full_w, full_h)?;
    let f = jpeg_factor(full_w, full_h, width, height);
    let (w, h) = decoder
        .scale(full_w.div_ceil(f) as u16, full_h.div_ceil(f) as u16)
        .map_err(|e| decode_error(fmt, e))?;
    let pixels = decoder.decode().map_err(|e| decode_error(fmt, e))?;
    let (w, h) = (w as u32, h as u32);
    let n = w as usize * h as usize;
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        jpeg_decoder::PixelFormat::L16 => pixels
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        jpeg_decoder::PixelFormat::CMYK32 => pixels
            .chunks_exact(4)
            .flat_map(|p| {
                // jpeg-decoder returns CMYK as stored (Adobe: inverted); k scales the rest.
                let k = p[3] as u16;
                [0, 1, 2].map(|c| ((p[c] as u16 * k) / 255) as u8)
            })
            .collect(),
    };
    if rgb.len() != n * 3 {
        return Err(decode_error(
            fmt,
            format!("decoder returned {} bytes for {w}x{h}", rgb.len()),
        ));
    }
    Frame::from_rgb(w, h, rgb).ok_or_else(|| decode_error(fmt, "empty image"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;

    #[test]
    fn sniffs_formats_and_rejects_others() {
        let (frame, _) = synth::sample(1, 64, 36);
        assert_eq!(
            ImageFormat::sniff(&frame.to_jpeg(80).unwrap()).unwrap(),
            ImageFormat::Jpeg
        );
        assert_eq!(
            ImageFormat::sniff(&frame.to_png().unwrap()).unwrap(),
            ImageFormat::Png
        );
        let err = ImageFormat::sniff(b"GIF89a").unwrap_err();
        assert!(err.to_string().contains("47 49 46 38"), "{err}");
        assert!(matches!(
            ImageFormat::sniff(b""),
            Err(Error::UnknownImageFormat(_))
        ));
    }

    #[test]
    fn jpeg_scaled_decode_lands_on_target_size_and_matches_full_decode() {
        for (w, h) in [(640, 360), (1280, 720), (333, 201)] {
            let (frame, _) = synth::sample(3, w, h);
            let jpeg = frame.to_jpeg(90).unwrap();
            let fast = decode_resized(&jpeg, 160, 90, Resize::DecodeScaled).unwrap();
            let full = decode_resized(&jpeg, 160, 90, Resize::Full).unwrap();
            assert_eq!((fast.width(), fast.height()), (160, 90));
            assert_eq!((full.width(), full.height()), (160, 90));
            // Both are area averages of the same picture: close, not identical.
            let mad = fast
                .as_rgb()
                .iter()
                .zip(full.as_rgb())
                .map(|(a, b)| (*a as f32 - *b as f32).abs())
                .sum::<f32>()
                / fast.as_rgb().len() as f32;
            assert!(mad < 6.0, "{w}x{h}: mean abs difference {mad}");
        }
        assert_eq!(jpeg_factor(1280, 720, 160, 90), 8);
        assert_eq!(jpeg_factor(640, 360, 160, 90), 4);
        assert_eq!(jpeg_factor(320, 180, 160, 90), 2);
        assert_eq!(jpeg_factor(200, 100, 160, 90), 1);
    }

    #[test]
    fn png_round_trips_exactly_at_full_size() {
        let (frame, _) = synth::sample(4, 48, 30);
        let png = frame.to_png().unwrap();
        assert_eq!(decode(&png).unwrap(), frame);
        assert_eq!(
            decode_resized(&png, 48, 30, Resize::DecodeScaled).unwrap(),
            frame
        );
    }

    #[test]
    fn corrupt_and_truncated_images_are_errors() {
        let (frame, _) = synth::sample(5, 320, 180);
        let jpeg = frame.to_jpeg(85).unwrap();
        let png = frame.to_png().unwrap();
        for resize in [Resize::DecodeScaled, Resize::Full] {
            for cut in [3, 20, jpeg.len() / 2] {
                let r = decode_resized(&jpeg[..cut], 160, 90, resize).map(|_| ());
                assert!(matches!(r, Err(Error::ImageDecode { .. })), "{cut}: {r:?}");
            }
            let r = decode_resized(&png[..png.len() / 2], 160, 90, resize).map(|_| ());
            assert!(matches!(r, Err(Error::ImageDecode { .. })), "{r:?}");
            // Garbage after a valid header.
            let mut bad = jpeg.clone();
            for b in bad.iter_mut().skip(200).step_by(7) {
                *b = b.wrapping_mul(31).wrapping_add(7);
            }
            let _ = decode_resized(&bad, 160, 90, resize); // error or noise, never a panic
        }
        assert!(matches!(
            decode_resized(b"not an image", 160, 90, Resize::DecodeScaled),
            Err(Error::UnknownImageFormat(_))
        ));
        assert!(matches!(
            decode_resized(&jpeg, 0, 90, Resize::DecodeScaled),
            Err(Error::Spec(_))
        ));
    }

    #[test]
    fn base64_with_and_without_line_breaks() {
        assert_eq!(decode_base64("/9j/").unwrap(), vec![0xFF, 0xD8, 0xFF]);
        assert_eq!(decode_base64("/9j/\r\n").unwrap(), vec![0xFF, 0xD8, 0xFF]);
        assert!(matches!(decode_base64("@@@"), Err(Error::Base64(_))));
    }

    #[test]
    fn normalisation_is_channel_planar() {
        let frame = Frame::from_rgb(2, 1, vec![0, 255, 51, 255, 0, 102]).unwrap();
        let n = Normalize {
            mean: [0.0, 0.5, 0.0],
            std: [1.0, 0.5, 0.2],
        };
        let t = n.to_nchw(&frame);
        let want = [0.0, 1.0, 1.0, -1.0, 1.0, 2.0];
        for (a, b) in t.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{t:?}");
        }
    }
}
