//! Pool names.

use crate::error::NameError;

/// Suffix of the boot segment's name.
pub const BOOT_SUFFIX: &str = "_boot";

/// Longest pool name: the boot segment `NAME_boot` must fit `NAME_MAX` (255).
pub const MAX_NAME_LEN: usize = 255 - BOOT_SUFFIX.len();

/// Checks a pool name: 1 to [`MAX_NAME_LEN`] characters of `[A-Za-z0-9._-]`, not
/// only dots.
///
/// # Examples
/// ```
/// assert!(shmval::validate_name("sensors-1.a_b").is_ok());
/// assert!(shmval::validate_name("a/b").is_err());
/// assert!(shmval::validate_name("..").is_err());
/// assert!(shmval::validate_name(&"x".repeat(300)).is_err());
/// ```
///
/// # Errors
/// A [`NameError`] saying what is wrong.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let bad = |reason| {
        Err(NameError {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 250 bytes (the boot segment NAME_boot must fit 255)");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    if name.bytes().all(|b| b == b'.') {
        return bad("a name of dots only");
    }
    Ok(())
}

pub(crate) fn boot_name(name: &str) -> String {
    format!("{name}{BOOT_SUFFIX}")
}
