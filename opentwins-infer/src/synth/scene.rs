//! Scene parameters, the camera model, seeded random scenes and their ground truth.

use super::rng::SplitMix64;

/// A pinhole camera on the vehicle, looking forward over a flat ground plane.
///
/// Ground coordinates are metres on the road plane with the origin under the camera: `x` to the
/// right, `z` forward. Image coordinates are pixels with the origin at the top-left corner, the
/// principal point at the image centre and square pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    /// Height of the optical centre above the road, metres.
    pub height_m: f32,
    /// Downward pitch of the optical axis, degrees (positive looks down).
    pub pitch_deg: f32,
    /// Horizontal field of view, degrees.
    pub hfov_deg: f32,
}

impl Default for Camera {
    fn default() -> Self {
        Self {
            height_m: 1.5,
            pitch_deg: 4.0,
            hfov_deg: 64.0,
        }
    }
}

impl Camera {
    /// Focal length in pixels for an image `width` pixels wide.
    pub fn focal_px(&self, width: u32) -> f32 {
        width as f32 / 2.0 / (self.hfov_deg.to_radians() / 2.0).tan()
    }

    /// Image row of the horizon (may be fractional or negative for steep pitches).
    pub fn horizon_row(&self, width: u32, height: u32) -> f32 {
        height as f32 / 2.0 - self.focal_px(width) * self.pitch_deg.to_radians().tan()
    }

    /// Projects the ground point (`x` right, `z` forward, metres) to image pixel coordinates
    /// `(column, row)`, or `None` when the point is behind the camera or at/above the horizon.
    pub fn project(&self, x: f32, z: f32, width: u32, height: u32) -> Option<(f32, f32)> {
        let (s, c) = self.pitch_deg.to_radians().sin_cos();
        let f = self.focal_px(width);
        // World: y points down, the ground is at y = height_m.
        let y_cam = c * self.height_m - s * z;
        let z_cam = s * self.height_m + c * z;
        if z_cam <= 1e-3 {
            return None;
        }
        let u = width as f32 / 2.0 + f * x / z_cam;
        let v = height as f32 / 2.0 + f * y_cam / z_cam;
        Some((u, v))
    }

    /// The ground point seen through pixel row `row` (at its centre line): forward distance
    /// `z` in metres and the lateral metres per pixel there. `None` above the horizon.
    pub(crate) fn row_ground(&self, row: f32, width: u32, height: u32) -> Option<(f32, f32)> {
        let (s, c) = self.pitch_deg.to_radians().sin_cos();
        let f = self.focal_px(width);
        let dy = (row - height as f32 / 2.0) / f;
        // Ray (dx, dy, 1) in camera coordinates rotated into the world by the pitch.
        let wy = dy * c + s;
        let wz = -dy * s + c;
        if wy <= 1e-6 {
            return None;
        }
        let t = self.height_m / wy;
        Some((t * wz, t / f))
    }
}

/// Paint colour of a lane marking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkingColor {
    /// White paint.
    White,
    /// Yellow paint.
    Yellow,
}

impl MarkingColor {
    pub(crate) fn rgb(self) -> [f32; 3] {
        match self {
            MarkingColor::White => [235.0, 235.0, 230.0],
            MarkingColor::Yellow => [225.0, 180.0, 45.0],
        }
    }
}

/// One painted line on the road.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marking {
    /// Lateral position relative to the ego lane centre in half lane widths: `-1` is the ego
    /// lane's left boundary, `+1` its right boundary, `±3` the far side of an adjacent lane.
    pub position: f32,
    /// Dashed (`dash_m` painted, then a gap, every `period_m`) or solid.
    pub dashed: bool,
    /// Paint colour.
    pub color: MarkingColor,
    /// Where along `z` the dash pattern starts, metres in `[0, period_m)`.
    pub dash_phase_m: f32,
}

/// A shadow band across the road (a tree line, a bridge, a pole).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shadow {
    /// Forward distance where the band starts at `x = 0`, metres.
    pub z_start_m: f32,
    /// Length of the band along `z`, metres.
    pub length_m: f32,
    /// How much `z` shifts per metre of `x` (a slanted shadow).
    pub slant: f32,
    /// Brightness multiplier inside the band, in `(0, 1)`.
    pub darkness: f32,
}

/// Everything that determines a rendered frame, apart from its resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneParams {
    /// Vehicle offset from the ego lane centre, normalised: `-1..1` is one half lane width to the
    /// left..right, so `±1` puts the camera on a boundary marking. Positive is right.
    pub lateral_offset: f32,
    /// Vehicle heading relative to the lane direction, degrees; positive means the camera points
    /// to the right of the lane, so the lane runs off to the left in the image.
    pub heading_deg: f32,
    /// Road curvature in 1/m; positive bends to the right.
    pub curvature: f32,
    /// Lane width, metres.
    pub lane_width_m: f32,
    /// Markings, left to right (2 or 3 for random scenes).
    pub markings: Vec<Marking>,
    /// Painted width of each marking, metres.
    pub marking_width_m: f32,
    /// Dash length, metres.
    pub dash_m: f32,
    /// Dash period (dash plus gap), metres.
    pub period_m: f32,
    /// Global brightness multiplier (1 = nominal daylight).
    pub lighting: f32,
    /// Shadow bands; empty for none.
    pub shadows: Vec<Shadow>,
    /// Amplitude of per-pixel uniform noise, in 8-bit levels.
    pub noise: f32,
    /// Base grey of the asphalt, 8-bit level.
    pub asphalt: f32,
    /// Seed of the road texture and pixel noise.
    pub texture_seed: u64,
    /// The camera.
    pub camera: Camera,
}

impl Default for SceneParams {
    fn default() -> Self {
        let solid = |position| Marking {
            position,
            dashed: false,
            color: MarkingColor::White,
            dash_phase_m: 0.0,
        };
        Self {
            lateral_offset: 0.0,
            heading_deg: 0.0,
            curvature: 0.0,
            lane_width_m: 3.5,
            markings: vec![solid(-1.0), solid(1.0)],
            marking_width_m: 0.15,
            dash_m: 3.0,
            period_m: 9.0,
            lighting: 1.0,
            shadows: Vec::new(),
            noise: 0.0,
            asphalt: 85.0,
            texture_seed: 0,
            camera: Camera::default(),
        }
    }
}

/// Ranges drawn by [`Scene::random`].
pub mod ranges {
    /// `lateral_offset` is uniform in `±OFFSET`.
    pub const OFFSET: f32 = 0.7;
    /// `heading_deg` is uniform in `±HEADING_DEG`.
    pub const HEADING_DEG: f32 = 5.0;
    /// `curvature` is uniform in `±CURVATURE` (1/m; 0.002 is a 500 m radius).
    pub const CURVATURE: f32 = 0.002;
    /// `lane_width_m` range.
    pub const LANE_WIDTH_M: (f32, f32) = (3.2, 3.8);
    /// `lighting` range.
    pub const LIGHTING: (f32, f32) = (0.55, 1.3);
    /// `noise` range (8-bit levels).
    pub const NOISE: (f32, f32) = (0.0, 14.0);
}

/// A road scene: parameters plus the derived ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// What is rendered.
    pub params: SceneParams,
}

/// Ground truth of a scene, independent of the rendered resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    /// Vehicle offset from the lane centre, normalised as [`SceneParams::lateral_offset`].
    pub offset: f32,
    /// Heading relative to the lane, degrees, as [`SceneParams::heading_deg`].
    pub heading_deg: f32,
    /// Road curvature, 1/m, as [`SceneParams::curvature`].
    pub curvature: f32,
    /// Per marking, left to right, the road-space polynomial `[k0, k1, k2]` with
    /// `x(z) = k0 + k1*z + k2*z^2`: lateral position `x` (metres, right positive) at forward
    /// distance `z` (metres) on the ground plane, origin under the camera. This is exactly the
    /// curve that is painted; [`Camera::project`] maps it into the image.
    pub lane_coefficients: Vec<[f32; 3]>,
}

impl Truth {
    /// Lateral position of marking `i` at forward distance `z`, metres.
    pub fn marking_x(&self, i: usize, z: f32) -> f32 {
        let [k0, k1, k2] = self.lane_coefficients[i];
        k0 + k1 * z + k2 * z * z
    }
}

impl Scene {
    /// A scene with the given parameters.
    pub fn new(params: SceneParams) -> Self {
        Self { params }
    }

    /// A varied scene drawn from `seed` (see [`ranges`]); the same seed always gives the same
    /// scene.
    pub fn random(seed: u64) -> Self {
        let mut r = SplitMix64::new(seed);
        let lateral_offset = r.range(-ranges::OFFSET, ranges::OFFSET);
        let heading_deg = r.range(-ranges::HEADING_DEG, ranges::HEADING_DEG);
        let curvature = r.range(-ranges::CURVATURE, ranges::CURVATURE);
        let lane_width_m = r.range(ranges::LANE_WIDTH_M.0, ranges::LANE_WIDTH_M.1);
        let period_m = r.range(8.0, 12.0);
        let dash_m = r.range(2.5, 4.0);
        let marking = |r: &mut SplitMix64, position: f32, dashed_p: f32, yellow_p: f32| Marking {
            position,
            dashed: r.chance(dashed_p),
            color: if r.chance(yellow_p) {
                MarkingColor::Yellow
            } else {
                MarkingColor::White
            },
            dash_phase_m: r.range(0.0, period_m),
        };
        let mut markings = vec![
            marking(&mut r, -1.0, 0.4, 0.25),
            marking(&mut r, 1.0, 0.4, 0.1),
        ];
        if r.chance(0.5) {
            // A third marking on the far side of an adjacent lane; the shared boundary then is
            // usually the dashed one.
            if r.chance(0.5) {
                markings.insert(0, marking(&mut r, -3.0, 0.2, 0.2));
                markings[1].dashed = r.chance(0.8);
            } else {
                markings.push(marking(&mut r, 3.0, 0.2, 0.05));
                markings[1].dashed = r.chance(0.8);
            }
        }
        let lighting = r.range(ranges::LIGHTING.0, ranges::LIGHTING.1);
        let mut shadows = Vec::new();
        if r.chance(0.5) {
            let n = 1 + (r.next_u64() % 3) as usize;
            for _ in 0..n {
                shadows.push(Shadow {
                    z_start_m: r.range(4.0, 40.0),
                    length_m: r.range(0.5, 6.0),
                    slant: r.range(-0.6, 0.6),
                    darkness: r.range(0.35, 0.7),
                });
            }
        }
        let noise = r.range(ranges::NOISE.0, ranges::NOISE.1);
        let asphalt = r.range(60.0, 115.0);
        let texture_seed = r.next_u64();
        Self::new(SceneParams {
            lateral_offset,
            heading_deg,
            curvature,
            lane_width_m,
            markings,
            dash_m,
            period_m,
            lighting,
            shadows,
            noise,
            asphalt,
            texture_seed,
            ..SceneParams::default()
        })
    }

    /// The ground truth of this scene.
    pub fn truth(&self) -> Truth {
        let p = &self.params;
        let half = p.lane_width_m / 2.0;
        let k1 = -p.heading_deg.to_radians().tan();
        let k2 = 0.5 * p.curvature;
        Truth {
            offset: p.lateral_offset,
            heading_deg: p.heading_deg,
            curvature: p.curvature,
            lane_coefficients: p
                .markings
                .iter()
                .map(|m| [(m.position - p.lateral_offset) * half, k1, k2])
                .collect(),
        }
    }
}
