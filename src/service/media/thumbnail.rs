//! Thumbnails of PNG, JPEG, GIF and WebP images (the `image` crate's decoders, nothing else).
//!
//! The spec's rules: `scale` keeps the aspect ratio and fits the requested box; `crop` fills the
//! box exactly, cutting off what sticks out; a thumbnail is never larger than its image (no
//! upscaling): when the image is no larger than asked, the image itself is the answer. An image
//! is measured from its header before anything is decoded: one over `max_thumbnail_pixels` is
//! refused without decoding (a few KiB of PNG can claim a billion pixels). Everything here is
//! blocking work for the blocking pool.

use std::{
    io::{BufReader, Cursor},
    path::Path,
};

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};

/// Thumbnails kept on disk per content; requests for yet other sizes are made and answered
/// without being kept, so that a client cannot fill the disk by asking for every size.
const KEPT_PER_CONTENT: usize = 16;

/// What a thumbnail request needs, decided from the image's header.
#[derive(Debug)]
pub enum Plan {
    /// The image itself (it is no larger than asked), of this format.
    Original(ImageFormat),
    /// A thumbnail decoded and resized from this image.
    Resize {
        format: ImageFormat,
        width: u32,
        height: u32,
    },
}

/// Why no thumbnail can be made.
#[derive(Debug)]
pub enum Refusal {
    /// Not an image of a decoded format, or a broken one.
    NotAnImage(String),
    /// More pixels than `max_thumbnail_pixels`.
    TooLarge {
        width: u32,
        height: u32,
    },
    Io(std::io::Error),
}

impl From<std::io::Error> for Refusal {
    fn from(e: std::io::Error) -> Self {
        Refusal::Io(e)
    }
}

/// The decoded formats.
fn decoded(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP
    )
}

/// The MIME type of a format this module reads or writes.
pub fn mime(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "image/png",
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Gif => "image/gif",
        ImageFormat::WebP => "image/webp",
        _ => "application/octet-stream",
    }
}

/// The format and dimensions of an image, from its header alone.
pub fn measure(bytes: &[u8]) -> Option<(ImageFormat, u32, u32)> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let format = reader.format().filter(|f| decoded(*f))?;
    let (w, h) = reader.into_dimensions().ok()?;
    Some((format, w, h))
}

/// The file name of a kept thumbnail.
pub fn cache_name(width: u32, height: u32, crop: bool, format: ImageFormat) -> String {
    let method = if crop { "crop" } else { "scale" };
    let ext = if format == ImageFormat::Jpeg {
        "jpg"
    } else {
        "png"
    };
    format!("{width}x{height}-{method}.{ext}")
}

/// Whether a kept thumbnail exists for this request: its path and format.
pub fn cached(
    dir: &Path,
    width: u32,
    height: u32,
    crop: bool,
) -> Option<(std::path::PathBuf, ImageFormat)> {
    [ImageFormat::Png, ImageFormat::Jpeg]
        .into_iter()
        .map(|f| (dir.join(cache_name(width, height, crop, f)), f))
        .find(|(p, _)| p.exists())
}

/// Whether another thumbnail of this content may be kept on disk.
pub fn may_keep(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(0, |d| d.count()) < KEPT_PER_CONTENT
}

fn reader(file: &Path) -> Result<ImageReader<BufReader<std::fs::File>>, Refusal> {
    Ok(ImageReader::new(BufReader::new(std::fs::File::open(file)?)).with_guessed_format()?)
}

/// What a `width` x `height` thumbnail of the image in `file` needs, from its header alone:
/// cheap, and refuses an image with more than `max_pixels` before anything is decoded.
pub fn plan(
    file: &Path,
    width: u32,
    height: u32,
    crop: bool,
    max_pixels: u64,
) -> Result<Plan, Refusal> {
    let reader = reader(file)?;
    let format = reader
        .format()
        .filter(|f| decoded(*f))
        .ok_or_else(|| Refusal::NotAnImage("not a PNG, JPEG, GIF or WebP image".into()))?;
    let (iw, ih) = reader
        .into_dimensions()
        .map_err(|e| Refusal::NotAnImage(e.to_string()))?;
    let larger_than_asked = if crop {
        // Filling the box needs no upscaling only when the image covers it.
        iw >= width && ih >= height && (iw, ih) != (width, height)
    } else {
        iw > width || ih > height
    };
    if !larger_than_asked {
        return Ok(Plan::Original(format));
    }
    if u64::from(iw) * u64::from(ih) > max_pixels {
        return Err(Refusal::TooLarge {
            width: iw,
            height: ih,
        });
    }
    Ok(Plan::Resize {
        format,
        width: iw,
        height: ih,
    })
}

/// Decodes the image in `file` (as [`plan`] measured it) and makes its `width` x `height`
/// thumbnail: its bytes and format.
pub fn render(
    file: &Path,
    (format, iw, ih): (ImageFormat, u32, u32),
    (width, height): (u32, u32),
    crop: bool,
    max_pixels: u64,
) -> Result<(Vec<u8>, ImageFormat), Refusal> {
    let mut reader = reader(file)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(iw);
    limits.max_image_height = Some(ih);
    // Up to 8 bytes a pixel (16-bit RGBA), whatever the header claimed.
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    reader.limits(limits);
    // Decoders are fed untrusted bytes: a panic in one is a refusal, not a crash.
    let resized = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let image = reader.decode()?;
        Ok::<_, image::ImageError>(resize(&image, width, height, crop))
    }))
    .map_err(|_| Refusal::NotAnImage("the decoder failed".into()))?
    .map_err(|e| Refusal::NotAnImage(e.to_string()))?;
    encode(&resized, format).map_err(|e| Refusal::NotAnImage(e.to_string()))
}

fn resize(image: &DynamicImage, width: u32, height: u32, crop: bool) -> DynamicImage {
    if crop {
        image.resize_to_fill(width, height, FilterType::Triangle)
    } else {
        image.resize(width, height, FilterType::Triangle)
    }
}

/// JPEG stays JPEG (photos); everything else becomes PNG (keeps transparency).
fn encode(image: &DynamicImage, source: ImageFormat) -> image::ImageResult<(Vec<u8>, ImageFormat)> {
    let mut out = Vec::new();
    if source == ImageFormat::Jpeg {
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
        encoder.encode_image(&image.to_rgb8())?;
        Ok((out, ImageFormat::Jpeg))
    } else {
        let image = match image {
            DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageRgb8(_)
            | DynamicImage::ImageRgba8(_) => image.clone(),
            other => DynamicImage::ImageRgba8(other.to_rgba8()),
        };
        image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)?;
        Ok((out, ImageFormat::Png))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        }));
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    /// The plan, or the thumbnail it leads to.
    enum Got {
        Original(ImageFormat),
        Made(Vec<u8>),
    }

    fn thumb(bytes: &[u8], w: u32, h: u32, crop: bool) -> Result<Got, Refusal> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        std::fs::write(&path, bytes).unwrap();
        match plan(&path, w, h, crop, 1_000_000)? {
            Plan::Original(format) => Ok(Got::Original(format)),
            Plan::Resize {
                format,
                width,
                height,
            } => render(&path, (format, width, height), (w, h), crop, 1_000_000)
                .map(|(bytes, _)| Got::Made(bytes)),
        }
    }

    fn size_of(t: Got) -> (u32, u32) {
        match t {
            Got::Made(bytes) => {
                let (_, w, h) = measure(&bytes).unwrap();
                (w, h)
            }
            Got::Original(_) => panic!("the original, not a thumbnail"),
        }
    }

    #[test]
    fn scale_fits_the_box_and_crop_fills_it() {
        let image = png(400, 200);
        assert_eq!(size_of(thumb(&image, 100, 100, false).unwrap()), (100, 50));
        assert_eq!(size_of(thumb(&image, 100, 100, true).unwrap()), (100, 100));
        assert_eq!(size_of(thumb(&image, 320, 240, false).unwrap()), (320, 160));
        assert_eq!(size_of(thumb(&image, 32, 32, true).unwrap()), (32, 32));
    }

    #[test]
    fn no_upscaling_the_original_answers() {
        let image = png(40, 20);
        assert!(matches!(
            thumb(&image, 96, 96, false).unwrap(),
            Got::Original(ImageFormat::Png)
        ));
        assert!(matches!(
            thumb(&image, 96, 96, true).unwrap(),
            Got::Original(_)
        ));
    }

    #[test]
    fn too_many_pixels_are_refused_before_decoding() {
        let image = png(2000, 1000);
        assert!(matches!(
            thumb(&image, 32, 32, true),
            Err(Refusal::TooLarge {
                width: 2000,
                height: 1000
            })
        ));
        assert!(matches!(
            thumb(b"%PDF-1.4 not an image", 32, 32, true),
            Err(Refusal::NotAnImage(_))
        ));
    }
}
