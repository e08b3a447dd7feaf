//! An RGB8 frame and its encodings.

use base64::Engine as _;
use image::{ExtendedColorType, ImageEncoder};

/// Encoding a frame failed (for example a dimension beyond the format's limit: JPEG stops at
/// 65,535 pixels a side).
#[derive(Debug, thiserror::Error)]
#[error("encoding a {width}x{height} frame as {format}: {message}")]
pub struct EncodeError {
    /// Target format, `"jpeg"` or `"png"`.
    pub format: &'static str,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// The encoder's message.
    pub message: String,
}

/// An image: `width * height` RGB pixels, 8 bits per channel, row-major from the top-left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl Frame {
    /// Wraps a raw RGB8 buffer; `None` unless it holds exactly `width * height * 3` bytes and
    /// both sides are non-zero.
    pub fn from_rgb(width: u32, height: u32, data: Vec<u8>) -> Option<Self> {
        let len = (width as usize)
            .checked_mul(height as usize)?
            .checked_mul(3)?;
        (width > 0 && height > 0 && data.len() == len).then_some(Self {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The raw RGB8 bytes.
    pub fn as_rgb(&self) -> &[u8] {
        &self.data
    }

    /// Consumes the frame, returning the raw RGB8 bytes.
    pub fn into_rgb(self) -> Vec<u8> {
        self.data
    }

    /// The pixel at column `x`, row `y`. Panics when outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside the frame"
        );
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Rec. 601 luma of a pixel, `0..=255`.
    pub fn luma(&self, x: u32, y: u32) -> f32 {
        let [r, g, b] = self.pixel(x, y);
        0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32
    }

    /// Baseline JPEG at `quality` (1..=100, clamped).
    pub fn to_jpeg(&self, quality: u8) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
            .write_image(&self.data, self.width, self.height, ExtendedColorType::Rgb8)
            .map_err(|e| self.error("jpeg", e))?;
        Ok(out)
    }

    /// Lossless PNG.
    pub fn to_png(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&self.data, self.width, self.height, ExtendedColorType::Rgb8)
            .map_err(|e| self.error("png", e))?;
        Ok(out)
    }

    /// JPEG at `quality`, standard base64 with padding: the form a frame takes inside a twin's
    /// JSON properties.
    pub fn to_base64_jpeg(&self, quality: u8) -> Result<String, EncodeError> {
        Ok(base64::engine::general_purpose::STANDARD.encode(self.to_jpeg(quality)?))
    }

    /// Resamples to `width x height` with a box filter: each output pixel is the mean of the
    /// source pixels its area covers (at least one). Panics when a side is zero.
    pub fn downscale(&self, width: u32, height: u32) -> Frame {
        assert!(width > 0 && height > 0, "target size must be at least 1x1");
        let (sw, sh) = (self.width as usize, self.height as usize);
        let (tw, th) = (width as usize, height as usize);
        let span = |i: usize, src: usize, dst: usize| {
            let a = i * src / dst;
            let b = ((i + 1) * src).div_ceil(dst).max(a + 1).min(src);
            (a, b)
        };
        let mut data = Vec::with_capacity(tw * th * 3);
        for ty in 0..th {
            let (y0, y1) = span(ty, sh, th);
            for tx in 0..tw {
                let (x0, x1) = span(tx, sw, tw);
                let mut acc = [0u32; 3];
                for y in y0..y1 {
                    let row = &self.data[(y * sw + x0) * 3..(y * sw + x1) * 3];
                    for px in row.chunks_exact(3) {
                        acc[0] += px[0] as u32;
                        acc[1] += px[1] as u32;
                        acc[2] += px[2] as u32;
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)) as u32;
                data.extend(acc.iter().map(|a| ((a + n / 2) / n) as u8));
            }
        }
        Frame {
            width,
            height,
            data,
        }
    }

    fn error(&self, format: &'static str, e: image::ImageError) -> EncodeError {
        EncodeError {
            format,
            width: self.width,
            height: self.height,
            message: e.to_string(),
        }
    }
}
