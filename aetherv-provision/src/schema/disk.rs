//! `disk_size_gb` against the golden image: a disk is only ever expanded, so a size below the
//! image's virtual size is refused, naming both sizes.

use crate::error::FieldError;

const GIB: u64 = 1 << 30;

/// The requested system disk size in bytes, checked against the image's virtual size when it
/// is known: `Ok(None)` when no size was requested, `Ok(Some(bytes))` to expand to, or a
/// problem with `disk_size_gb` (`field` is its path, e.g. `values.disk_size_gb`) naming both
/// sizes when the request is smaller than the image.
///
/// # Errors
///
/// A [`FieldError`] on `field` when `disk_size_gb` is below the image's virtual size.
pub fn check_disk_size(
    field: &str,
    disk_size_gb: Option<u32>,
    image_name: &str,
    image_virtual_bytes: Option<u64>,
) -> Result<Option<u64>, FieldError> {
    let Some(gb) = disk_size_gb else {
        return Ok(None);
    };
    let requested = u64::from(gb) * GIB;
    match image_virtual_bytes {
        Some(image) if requested < image => Err(FieldError::new(
            field,
            format!(
                "{gb} GiB is smaller than the virtual size of image {image_name:?} ({}); \
                 disks are only expanded, so ask for at least {} GiB or leave it out",
                describe_bytes(image),
                image.div_ceil(GIB)
            ),
        )),
        _ => Ok(Some(requested)),
    }
}

/// `N GiB` for whole GiB, otherwise `X.Y GiB (N bytes)`.
pub fn describe_bytes(bytes: u64) -> String {
    if bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{:.1} GiB, {bytes} bytes", bytes as f64 / GIB as f64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_below_the_image_name_both_sizes() {
        assert_eq!(
            check_disk_size("disk_size_gb", None, "x", Some(GIB)),
            Ok(None)
        );
        assert_eq!(
            check_disk_size("disk_size_gb", Some(127), "x", Some(127 * GIB)),
            Ok(Some(127 * GIB))
        );
        assert_eq!(
            check_disk_size("disk_size_gb", Some(10), "x", None),
            Ok(Some(10 * GIB))
        );
        let err = check_disk_size("values.disk_size_gb", Some(40), "Ubuntu", Some(127 * GIB))
            .unwrap_err();
        assert_eq!(err.field, "values.disk_size_gb");
        assert!(
            err.message.contains("40 GiB") && err.message.contains("127 GiB"),
            "{err}"
        );
        let odd = check_disk_size("disk_size_gb", Some(1), "x", Some(GIB + 1)).unwrap_err();
        assert!(odd.message.contains("at least 2 GiB"), "{odd}");
    }
}
