//! The near-duplicate transforms: what a copy of a photo goes through
//! (re-compression, rescaling, a crop, exposure changes).
#![allow(dead_code)] // each benchmark uses a different subset

use std::path::Path;

use image::DynamicImage;
use imgsearch::imageio::{self, DecodeLimits};

pub type Transform = (&'static str, fn(&DynamicImage) -> DynamicImage);

pub fn jpeg50(img: &DynamicImage) -> DynamicImage {
    let mut bytes = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 50);
    img.to_rgb8().write_with_encoder(enc).expect("jpeg encode");
    imageio::decode_bytes(&bytes, Path::new("copy.jpg"), DecodeLimits::default())
        .expect("jpeg decode")
}

pub fn half_and_back(img: &DynamicImage) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let small = img.resize_exact(w / 2, h / 2, image::imageops::FilterType::Triangle);
    small.resize_exact(w, h, image::imageops::FilterType::Triangle)
}

pub fn crop10(img: &DynamicImage) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let (cw, ch) = (
        (w as f32 * 0.9).round() as u32,
        (h as f32 * 0.9).round() as u32,
    );
    img.crop_imm((w - cw) / 2, (h - ch) / 2, cw, ch)
}

pub fn scale_brightness(img: &DynamicImage, factor: f32) -> DynamicImage {
    let mut rgb = img.to_rgb8();
    for p in rgb.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = (*c as f32 * factor).round().clamp(0.0, 255.0) as u8;
        }
    }
    DynamicImage::ImageRgb8(rgb)
}

pub fn brighter(img: &DynamicImage) -> DynamicImage {
    scale_brightness(img, 1.2)
}

pub fn darker(img: &DynamicImage) -> DynamicImage {
    scale_brightness(img, 0.8)
}

pub const TRANSFORMS: [Transform; 5] = [
    ("JPEG q50", jpeg50),
    ("resize 0.5x and back", half_and_back),
    ("crop 10%", crop10),
    ("brightness +20%", brighter),
    ("brightness -20%", darker),
];
