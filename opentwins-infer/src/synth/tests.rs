use base64::Engine as _;

use super::*;

const W: u32 = 640;
const H: u32 = 360;

fn straight() -> SceneParams {
    SceneParams::default()
}

/// Forward distance seen by a row, from the camera model (independent of the rasteriser loop).
fn row_z(cam: &Camera, row: u32, w: u32, h: u32) -> Option<f32> {
    cam.row_ground(row as f32 + 0.5, w, h).map(|(z, _)| z)
}

#[test]
fn same_seed_same_bytes_different_seed_different_frame() {
    let a = Scene::random(11).render(W, H);
    let b = Scene::random(11).render(W, H);
    assert_eq!(a, b);
    assert_eq!(sample(11, W, H).0, a);
    let c = Scene::random(12).render(W, H);
    assert_ne!(a, c);
    let differing = a
        .as_rgb()
        .iter()
        .zip(c.as_rgb())
        .filter(|(x, y)| x != y)
        .count();
    assert!(
        differing > a.as_rgb().len() / 4,
        "only {differing} bytes differ"
    );
    assert_ne!(Scene::random(11), Scene::random(12));
}

#[test]
fn random_scenes_stay_in_range_and_vary() {
    let (mut two, mut three, mut dashed, mut yellow, mut shadowed) = (0, 0, 0, 0, 0);
    let (mut neg_off, mut pos_off, mut neg_head, mut pos_head, mut neg_k, mut pos_k) =
        (0, 0, 0, 0, 0, 0);
    for seed in 0..1000 {
        let s = Scene::random(seed);
        let p = &s.params;
        let t = s.truth();
        assert!(
            t.offset.abs() <= ranges::OFFSET,
            "seed {seed}: offset {}",
            t.offset
        );
        assert!(t.heading_deg.abs() <= ranges::HEADING_DEG);
        assert!(t.curvature.abs() <= ranges::CURVATURE);
        assert!((ranges::LIGHTING.0..=ranges::LIGHTING.1).contains(&p.lighting));
        assert!((ranges::NOISE.0..=ranges::NOISE.1).contains(&p.noise));
        assert!(p.dash_m < p.period_m);
        assert_eq!(t.lane_coefficients.len(), p.markings.len());
        match p.markings.len() {
            2 => two += 1,
            3 => three += 1,
            n => panic!("seed {seed}: {n} markings"),
        }
        // Left to right, the ego lane boundaries are one lane width apart, and every marking
        // shares the heading and curvature terms.
        let k0: Vec<f32> = t.lane_coefficients.iter().map(|k| k[0]).collect();
        assert!(
            k0.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: not ordered {k0:?}"
        );
        let ego = p.markings.iter().position(|m| m.position == -1.0).unwrap();
        let width = t.lane_coefficients[ego + 1][0] - t.lane_coefficients[ego][0];
        assert!((width - p.lane_width_m).abs() < 1e-4);
        let centre = (t.lane_coefficients[ego + 1][0] + t.lane_coefficients[ego][0]) / 2.0;
        assert!((-centre / (p.lane_width_m / 2.0) - t.offset).abs() < 1e-4);
        for k in &t.lane_coefficients {
            assert!((k[1] + t.heading_deg.to_radians().tan()).abs() < 1e-6);
            assert!((k[2] - t.curvature / 2.0).abs() < 1e-9);
        }
        dashed += p.markings.iter().filter(|m| m.dashed).count();
        yellow += p
            .markings
            .iter()
            .filter(|m| m.color == MarkingColor::Yellow)
            .count();
        shadowed += usize::from(!p.shadows.is_empty());
        neg_off += usize::from(t.offset < -0.3);
        pos_off += usize::from(t.offset > 0.3);
        neg_head += usize::from(t.heading_deg < -2.5);
        pos_head += usize::from(t.heading_deg > 2.5);
        neg_k += usize::from(t.curvature < -0.001);
        pos_k += usize::from(t.curvature > 0.001);
    }
    for (name, n) in [
        ("2 markings", two),
        ("3 markings", three),
        ("dashed", dashed),
        ("yellow", yellow),
        ("shadowed", shadowed),
        ("offset < -0.3", neg_off),
        ("offset > 0.3", pos_off),
        ("heading < -2.5", neg_head),
        ("heading > 2.5", pos_head),
        ("curvature < -0.001", neg_k),
        ("curvature > 0.001", pos_k),
    ] {
        assert!(n >= 150, "only {n} of 1000 scenes with {name}");
    }
}

/// Solid markings are bright exactly where the truth polynomial projects, and the road between
/// the ego lane boundaries is darker, on the near rows of many random scenes.
#[test]
fn markings_appear_where_the_truth_says() {
    let (mut checked, mut failed, mut three_marking_scenes) = (0, 0, 0);
    for seed in 0..40 {
        let mut scene = Scene::random(seed);
        scene.params.shadows.clear();
        let p = &scene.params;
        let t = scene.truth();
        three_marking_scenes += usize::from(p.markings.len() == 3);
        let frame = scene.render(W, H);
        let ego = p.markings.iter().position(|m| m.position == -1.0).unwrap();
        for row in (H * 2 / 3..H).step_by(4) {
            let z = row_z(&p.camera, row, W, H).unwrap();
            let centre_x = (t.marking_x(ego, z) + t.marking_x(ego + 1, z)) / 2.0;
            let (cu, _) = p.camera.project(centre_x, z, W, H).unwrap();
            if !(0.0..W as f32).contains(&cu) {
                continue;
            }
            let road = frame.luma(cu as u32, row);
            for (i, m) in p.markings.iter().enumerate() {
                if m.dashed {
                    continue;
                }
                let (u, v) = p.camera.project(t.marking_x(i, z), z, W, H).unwrap();
                assert!(
                    (v - (row as f32 + 0.5)).abs() < 0.01,
                    "row/projection mismatch"
                );
                if !(0.0..W as f32).contains(&u) {
                    continue;
                }
                checked += 1;
                if frame.luma(u as u32, row) < road + 20.0 {
                    failed += 1;
                }
            }
        }
    }
    assert!(checked > 600, "only {checked} samples");
    assert!(
        three_marking_scenes >= 5,
        "only {three_marking_scenes} scenes with 3 markings"
    );
    assert!(
        failed * 100 <= checked,
        "{failed} of {checked} marking samples not brighter"
    );
}

/// The brightest column of the bottom row's left half, i.e. the left boundary's image position.
fn left_marking_column(params: SceneParams) -> u32 {
    let frame = Scene::new(params).render(W, H);
    (0..W / 2)
        .max_by(|&a, &b| frame.luma(a, H - 1).total_cmp(&frame.luma(b, H - 1)))
        .unwrap()
}

#[test]
fn sign_conventions_move_the_markings_the_documented_way() {
    // Centred and straight: the two boundaries are mirror images.
    let frame = Scene::new(straight()).render(W, H);
    let left = left_marking_column(straight());
    let mirrored = W - 1 - left;
    assert!(
        frame.luma(mirrored, H - 1) > 180.0,
        "no right marking mirrored at {mirrored}"
    );
    let (z, mpp) = straight().camera.row_ground(H as f32 - 0.5, W, H).unwrap();
    let (u, _) = straight().camera.project(-1.75, z, W, H).unwrap();
    // Any column inside the painted strip may be the brightest one.
    let half_strip_px = straight().marking_width_m / 2.0 / mpp;
    assert!(
        (u - (left as f32 + 0.5)).abs() <= half_strip_px + 0.5,
        "left marking at {left}, projection says {u}"
    );
    // Vehicle to the right of the centre: the markings move left in the image, and vice versa
    // (0.2 half lanes = 0.35 m, about 50 px at the bottom row; more would leave the frame).
    let right_of_centre = left_marking_column(SceneParams {
        lateral_offset: 0.2,
        ..straight()
    });
    assert!(right_of_centre + 30 < left, "{right_of_centre} vs {left}");
    let left_of_centre = left_marking_column(SceneParams {
        lateral_offset: -0.2,
        ..straight()
    });
    assert!(left_of_centre > left + 30, "{left_of_centre} vs {left}");
    // Far away (high in the image), a positive heading makes the lane run off to the left, and a
    // positive curvature bends it to the right.
    let far_row = (0..H)
        .find(|&r| row_z(&straight().camera, r, W, H).is_some_and(|z| z < 35.0))
        .unwrap();
    let far_z = row_z(&straight().camera, far_row, W, H).unwrap();
    let brightest_far = |params: SceneParams| {
        let frame = Scene::new(params).render(W, H);
        (0..W)
            .max_by(|&a, &b| frame.luma(a, far_row).total_cmp(&frame.luma(b, far_row)))
            .unwrap()
    };
    let single = |position| Marking {
        position,
        ..straight().markings[0]
    };
    let one = SceneParams {
        markings: vec![single(-1.0)],
        ..straight()
    };
    let base = brightest_far(one.clone());
    assert!(far_z > 20.0);
    assert!(
        brightest_far(SceneParams {
            heading_deg: 4.0,
            ..one.clone()
        }) + 10
            < base
    );
    assert!(
        brightest_far(SceneParams {
            curvature: 0.002,
            ..one
        }) > base + 10
    );
}

#[test]
fn dashed_markings_have_gaps_where_the_pattern_says() {
    let mut params = straight();
    params.markings[1].dashed = true;
    params.markings[1].dash_phase_m = 1.3;
    let scene = Scene::new(params);
    let p = &scene.params;
    let t = scene.truth();
    let frame = scene.render(1280, 720);
    let (mut on, mut off) = (0, 0);
    for row in 420..720 {
        let z = row_z(&p.camera, row, 1280, 720).unwrap();
        let phase = (z + 1.3).rem_euclid(p.period_m);
        if (phase - p.dash_m).abs() < 0.3 || phase < 0.3 || phase > p.period_m - 0.3 {
            continue; // too close to a dash end to call
        }
        let (u, _) = p.camera.project(t.marking_x(1, z), z, 1280, 720).unwrap();
        let (lu, _) = p.camera.project(t.marking_x(0, z), z, 1280, 720).unwrap();
        let dash = frame.luma(u as u32, row);
        let solid = frame.luma(lu as u32, row);
        assert!(solid > 180.0, "solid marking dark ({solid}) at row {row}");
        if phase < p.dash_m {
            on += 1;
            assert!(dash > 180.0, "dash expected at z={z:.1}, luma {dash}");
        } else {
            off += 1;
            assert!(dash < 130.0, "gap expected at z={z:.1}, luma {dash}");
        }
    }
    assert!(on > 20 && off > 20, "on {on}, off {off}");
}

#[test]
fn three_markings_all_visible() {
    let mut params = straight();
    params.lateral_offset = 0.4;
    params.markings.push(Marking {
        position: 3.0,
        ..params.markings[0]
    });
    let scene = Scene::new(params);
    let t = scene.truth();
    let frame = scene.render(W, H);
    let z = 12.0;
    for i in 0..3 {
        let (u, v) = scene
            .params
            .camera
            .project(t.marking_x(i, z), z, W, H)
            .unwrap();
        assert!(
            (0.0..W as f32).contains(&u),
            "marking {i} out of frame at {u}"
        );
        assert!(
            frame.luma(u as u32, v as u32) > 150.0,
            "marking {i} not bright at ({u}, {v})"
        );
    }
}

#[test]
fn lighting_shadows_and_noise_change_the_frame() {
    let mean =
        |f: &Frame| f.as_rgb().iter().map(|&b| b as f64).sum::<f64>() / f.as_rgb().len() as f64;
    let dim = Scene::new(SceneParams {
        lighting: 0.6,
        ..straight()
    })
    .render(W, H);
    let bright = Scene::new(SceneParams {
        lighting: 1.2,
        ..straight()
    })
    .render(W, H);
    assert!(mean(&bright) > mean(&dim) * 1.6);

    let shadow = Shadow {
        z_start_m: 6.0,
        length_m: 3.0,
        slant: 0.0,
        darkness: 0.5,
    };
    let params = SceneParams {
        shadows: vec![shadow],
        ..straight()
    };
    let cam = params.camera;
    let shaded = Scene::new(params).render(W, H);
    let plain = Scene::new(straight()).render(W, H);
    let row = (0..H).find(|&r| row_z(&cam, r, W, H).is_some_and(|z| (7.0..8.0).contains(&z)));
    let row = row.expect("a row at 7.5 m");
    let (u, _) = cam
        .project(0.0, row_z(&cam, row, W, H).unwrap(), W, H)
        .unwrap();
    assert!(shaded.luma(u as u32, row) < plain.luma(u as u32, row) * 0.6);
    assert_eq!(shaded.pixel(u as u32, H - 1), plain.pixel(u as u32, H - 1));

    let noisy = Scene::new(SceneParams {
        noise: 10.0,
        ..straight()
    })
    .render(W, H);
    let diff: Vec<i32> = noisy
        .as_rgb()
        .iter()
        .zip(plain.as_rgb())
        .map(|(&a, &b)| a as i32 - b as i32)
        .collect();
    assert!(diff.iter().all(|d| d.abs() <= 11));
    assert!(diff.iter().filter(|d| **d != 0).count() > diff.len() / 2);
}

#[test]
fn full_hd_ready_720p_renders_with_sky_above_road() {
    let frame = Scene::random(3).render(1280, 720);
    assert_eq!((frame.width(), frame.height()), (1280, 720));
    assert_eq!(frame.as_rgb().len(), 1280 * 720 * 3);
    let [r, _, b] = frame.pixel(640, 5);
    assert!(
        b > r,
        "sky should be blue at the top: {:?}",
        frame.pixel(640, 5)
    );
    // Odd and tiny sizes work too.
    assert_eq!(Scene::random(3).render(1, 1).as_rgb().len(), 3);
    assert_eq!(
        Scene::random(3).render(333, 77).as_rgb().len(),
        333 * 77 * 3
    );
}

#[test]
fn png_and_jpeg_decode_back_to_the_frame() {
    let frame = Scene::random(5).render(1280, 720);
    let png = frame.to_png().unwrap();
    let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(decoded.dimensions(), (1280, 720));
    assert_eq!(decoded.as_raw(), frame.as_rgb(), "PNG is lossless");

    let jpeg = frame.to_jpeg(90).unwrap();
    assert!(jpeg.len() < png.len());
    let decoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    assert_eq!(decoded.dimensions(), (1280, 720));
    let mae = decoded
        .as_raw()
        .iter()
        .zip(frame.as_rgb())
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .sum::<i32>() as f64
        / frame.as_rgb().len() as f64;
    assert!(mae < 8.0, "JPEG mean absolute error {mae}");
    assert!(frame.to_jpeg(20).unwrap().len() < jpeg.len());
}

#[test]
fn base64_jpeg_round_trips() {
    let frame = Scene::random(9).render(W, H);
    let text = frame.to_base64_jpeg(80).unwrap();
    assert!(text.starts_with("/9j/"), "JPEG SOI marker in base64");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .unwrap();
    assert_eq!(bytes, frame.to_jpeg(80).unwrap());
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (W, H));
}

#[test]
fn downscale_is_a_box_filter() {
    let f = Frame::from_rgb(4, 2, (0..24).collect()).unwrap();
    let d = f.downscale(2, 1);
    // Left box: pixels (0,0),(1,0),(0,1),(1,1) → bytes 0,3,12,15 (+channel).
    assert_eq!(d.as_rgb(), &[8, 9, 10, 14, 15, 16]);
    let uniform = Frame::from_rgb(10, 7, vec![77; 210]).unwrap();
    assert!(uniform.downscale(3, 2).as_rgb().iter().all(|&b| b == 77));
    let big = Scene::random(1).render(1280, 720);
    let small = big.downscale(224, 224);
    assert_eq!((small.width(), small.height()), (224, 224));
    assert_eq!(big.downscale(1280, 720), big);
    // Upscaling is allowed (each output pixel takes at least one source pixel).
    assert_eq!(f.downscale(8, 4).as_rgb().len(), 8 * 4 * 3);
}

#[test]
fn from_rgb_checks_the_buffer() {
    assert!(Frame::from_rgb(2, 2, vec![0; 12]).is_some());
    assert!(Frame::from_rgb(2, 2, vec![0; 11]).is_none());
    assert!(Frame::from_rgb(0, 2, Vec::new()).is_none());
}

#[test]
fn camera_projection_and_row_ground_agree() {
    let cam = Camera::default();
    for row in [200u32, 250, 300, 359] {
        let (z, mpp) = cam.row_ground(row as f32 + 0.5, W, H).unwrap();
        let (u0, v0) = cam.project(0.0, z, W, H).unwrap();
        let (u1, _) = cam.project(1.0, z, W, H).unwrap();
        assert!((v0 - (row as f32 + 0.5)).abs() < 1e-2);
        assert!((u0 - W as f32 / 2.0).abs() < 1e-3);
        assert!(((u1 - u0) * mpp - 1.0).abs() < 1e-3);
    }
    let horizon = cam.horizon_row(W, H);
    assert!(cam.row_ground(horizon - 1.0, W, H).is_none());
    assert!(cam.project(0.0, -5.0, W, H).is_none());
}
