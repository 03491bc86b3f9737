//! The text encodings of protocol 0 pickles: `raw-unicode-escape` (UNICODE) and
//! Python's string-escape (STRING).

use super::PickleError;

/// Python's `raw-unicode-escape` decoding (the argument of protocol 0's UNICODE):
/// bytes are Latin-1 characters, except `\uXXXX` and `\UXXXXXXXX` after an odd
/// number of backslashes.
pub(super) fn raw_unicode_escape(b: &[u8]) -> Result<String, PickleError> {
    let bad = || PickleError::Malformed("UNICODE: bad \\u escape");
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(char::from(b[i]));
            i += 1;
            continue;
        }
        let run = b[i..].iter().take_while(|&&c| c == b'\\').count();
        let next = b.get(i + run).copied();
        if run % 2 == 1 && matches!(next, Some(b'u' | b'U')) {
            out.extend(std::iter::repeat_n('\\', run - 1));
            let digits = if next == Some(b'u') { 4 } else { 8 };
            let start = i + run + 1;
            let hex = b.get(start..start + digits).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            let code = u32::from_str_radix(hex, 16).map_err(|_| bad())?;
            out.push(char::from_u32(code).ok_or_else(bad)?);
            i = start + digits;
        } else {
            out.extend(std::iter::repeat_n('\\', run));
            i += run;
        }
    }
    Ok(out)
}

/// Python's `escape_decode` (the argument of protocol 0's STRING, a Python 2 `str`
/// in repr quotes): `\\`, quotes, `\n` and the other C escapes, `\xhh`, octal.
pub(super) fn escape_decode(b: &[u8]) -> Result<Vec<u8>, PickleError> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = b.get(i) else {
            return Err(PickleError::Malformed("STRING: trailing backslash"));
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'x' => {
                let h = b
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PickleError::Malformed("STRING: bad \\x escape"))?;
                out.push(h);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match b.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}
