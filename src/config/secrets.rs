//! Secrets in the configuration: read from the environment or a file, never
//! a flag; and the check that a person-typed admin secret is not guessable.

use std::ffi::OsString;
use std::path::Path;

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::ConfigError;

/// A secret from environment variable `name`, or from the file named by its
/// `{name}_FILE` setting (`file`); giving both is an error. A file's trailing
/// newlines are dropped (editors and `echo` add them).
pub(super) fn read_secret(
    env: &impl Fn(&str) -> Option<OsString>,
    name: &str,
    file: Option<&Path>,
) -> Result<Option<SecretString>, ConfigError> {
    let value = match env(name) {
        Some(v) => Some(
            v.into_string()
                .map_err(|_| ConfigError(format!("{name} is not valid UTF-8")))?,
        ),
        None => None,
    };
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError(format!("give {name} or {name}_FILE, not both"))),
        (Some(v), None) => Ok(Some(SecretString::from(v))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map(Zeroizing::new)
                .map_err(|e| ConfigError(format!("cannot read {name}_FILE {}: {e}", path.display())))?;
            Ok(Some(SecretString::from(text.trim_end_matches(['\n', '\r']))))
        }
        (None, None) => Ok(None),
    }
}

/// Why a bootstrap admin secret is too guessable, if it is. The admin client
/// can do everything, and its secret is often typed by a person.
pub(super) fn weak_secret(secret: &str) -> Option<&'static str> {
    let chars: Zeroizing<Vec<char>> = Zeroizing::new(secret.chars().collect());
    if chars.len() < 32 {
        return Some("it has fewer than 32 characters");
    }
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 12 {
        return Some("it has fewer than 12 distinct characters");
    }
    let class = |c: &char| match c {
        'a'..='z' => 0,
        'A'..='Z' => 1,
        '0'..='9' => 2,
        _ => 3,
    };
    let first = class(&chars[0]);
    if chars.iter().all(|c| class(c) == first) {
        return Some("it uses one kind of character only (all lowercase, all uppercase, all digits, …)");
    }
    // A string with period p equals itself shifted by p: `abc…abc…ab`.
    let n = chars.len();
    if (1..=n / 2).any(|p| (0..n - p).all(|i| chars[i] == chars[i + p])) {
        return Some("it repeats a shorter pattern");
    }
    None
}
