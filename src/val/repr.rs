//! `Display` prints Python `repr`: `{'a': 1, 'b': [1.5, 'x']}`.

use super::heap::{with_arr, Arr, Complex, Map, Val};
use std::fmt::{self, Display, Formatter, Write};

/// Python's `repr(float)`: shortest round-trip digits, positional for exponents in
/// -4..16, otherwise `1e+16` style; integral values keep a `.0`.
pub(crate) fn float_repr(
    f: f64,
    sci: String,
    out: &mut impl Write,
    keep_point: bool,
) -> fmt::Result {
    if f.is_nan() {
        return out.write_str("nan");
    }
    if f.is_infinite() {
        return out.write_str(if f > 0.0 { "inf" } else { "-inf" });
    }
    // `sci` is Rust's shortest scientific form, e.g. "-1.2345e-5" or "1e21".
    let (mant, exp) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let (neg, mant) = mant.strip_prefix('-').map_or((false, mant), |m| (true, m));
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if neg {
        out.write_char('-')?;
    }
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            out.write_str("0.")?;
            for _ in 0..-point {
                out.write_char('0')?;
            }
            out.write_str(&digits)
        } else if point as usize >= digits.len() {
            out.write_str(&digits)?;
            for _ in 0..point as usize - digits.len() {
                out.write_char('0')?;
            }
            if keep_point {
                out.write_str(".0")?;
            }
            Ok(())
        } else {
            let (a, b) = digits.split_at(point as usize);
            write!(out, "{a}.{b}")
        }
    } else {
        let (a, b) = digits.split_at(1);
        if b.is_empty() {
            write!(
                out,
                "{a}e{}{:02}",
                if exp < 0 { '-' } else { '+' },
                exp.abs()
            )
        } else {
            write!(
                out,
                "{a}.{b}e{}{:02}",
                if exp < 0 { '-' } else { '+' },
                exp.abs()
            )
        }
    }
}

fn f64_repr(f: f64, out: &mut impl Write) -> fmt::Result {
    float_repr(f, format!("{f:e}"), out, true)
}

fn f32_repr(f: f32, out: &mut impl Write) -> fmt::Result {
    float_repr(f as f64, format!("{f:e}"), out, true)
}

fn complex_repr(
    re: f64,
    im: f64,
    re_sci: String,
    im_sci: String,
    out: &mut impl Write,
) -> fmt::Result {
    if re == 0.0 && re.is_sign_positive() {
        float_repr(im, im_sci, out, false)?;
        return out.write_char('j');
    }
    out.write_char('(')?;
    float_repr(re, re_sci, out, false)?;
    if im >= 0.0 || im.is_nan() {
        out.write_char('+')?;
    }
    float_repr(im, im_sci, out, false)?;
    out.write_str("j)")
}

/// Python's string quoting: single quotes unless the text has `'` and no `"`.
fn quote(
    chars: impl Iterator<Item = u32> + Clone,
    bytes: bool,
    out: &mut impl Write,
) -> fmt::Result {
    let has_single = chars.clone().any(|c| c == '\'' as u32);
    let has_double = chars.clone().any(|c| c == '"' as u32);
    let q = if has_single && !has_double { '"' } else { '\'' };
    if bytes {
        out.write_char('b')?;
    }
    out.write_char(q)?;
    for c in chars {
        match c {
            0x5C => out.write_str("\\\\")?,
            0x0A => out.write_str("\\n")?,
            0x0D => out.write_str("\\r")?,
            0x09 => out.write_str("\\t")?,
            c if c == q as u32 => write!(out, "\\{q}")?,
            c if c < 0x20 || c == 0x7F || (bytes && c > 0x7F) || (0x80..0xA0).contains(&c) => {
                write!(out, "\\x{c:02x}")?
            }
            c => out.write_char(char::from_u32(c).unwrap_or('\u{FFFD}'))?,
        }
    }
    out.write_char(q)
}

fn seq(items: &[Val], open: &str, close: &str, f: &mut Formatter<'_>) -> fmt::Result {
    f.write_str(open)?;
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{v}")?;
    }
    f.write_str(close)
}

fn dict(m: &Map, f: &mut Formatter<'_>) -> fmt::Result {
    f.write_char('{')?;
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{k}: {v}")?;
    }
    f.write_char('}')
}

impl Display for Arr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "array('{}', [", self.kind().typecode())?;
        for i in 0..self.len() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", self.get(i).expect("index < len"))?;
        }
        let _ = with_arr!(self, v => v.len());
        f.write_str("])")
    }
}

impl Display for Val {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Val::None => f.write_str("None"),
            Val::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Val::I8(x) => write!(f, "{x}"),
            Val::I16(x) => write!(f, "{x}"),
            Val::I32(x) => write!(f, "{x}"),
            Val::I64(x) => write!(f, "{x}"),
            Val::U8(x) => write!(f, "{x}"),
            Val::U16(x) => write!(f, "{x}"),
            Val::U32(x) => write!(f, "{x}"),
            Val::U64(x) => write!(f, "{x}"),
            Val::BigInt(x) => write!(f, "{x}"),
            Val::F32(x) => f32_repr(*x, f),
            Val::F64(x) => f64_repr(*x, f),
            Val::Complex32(Complex { re, im }) => complex_repr(
                *re as f64,
                *im as f64,
                format!("{re:e}"),
                format!("{im:e}"),
                f,
            ),
            Val::Complex64(Complex { re, im }) => {
                complex_repr(*re, *im, format!("{re:e}"), format!("{im:e}"), f)
            }
            Val::Str(s) => quote(s.chars().map(u32::from), false, f),
            Val::Bytes(b) => quote(b.iter().map(|&c| u32::from(c)), true, f),
            Val::Arr(a) => write!(f, "{a}"),
            Val::NdArr(a) => {
                // ndarray((2, 3), 'd', [elements in C order])
                f.write_str("ndarray(")?;
                let dims: Vec<Val> = a.shape().iter().map(|&d| Val::U64(d as u64)).collect();
                write!(f, "{}", Val::Tup(dims))?;
                let flat = a.data().to_string();
                // array('d', [...]) -> 'd', [...]
                let inner = flat
                    .strip_prefix("array(")
                    .and_then(|x| x.strip_suffix(')'))
                    .unwrap_or(&flat);
                write!(f, ", {inner})")
            }
            Val::List(v) => seq(v, "[", "]", f),
            Val::Tup(v) if v.len() == 1 => write!(f, "({},)", v[0]),
            Val::Tup(v) => seq(v, "(", ")", f),
            Val::Tab(m) => dict(m, f),
            Val::OTab(m) if m.is_empty() => f.write_str("OrderedDict()"),
            Val::OTab(m) => {
                f.write_str("OrderedDict([")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "({k}, {v})")?;
                }
                f.write_str("])")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{otab, tab, val};

    #[test]
    fn prints_python_repr() {
        let cases: Vec<(Val, &str)> = vec![
            (val!(None), "None"),
            (val!(true), "True"),
            (Val::F64(1.0), "1.0"),
            (Val::F64(1.5), "1.5"),
            (Val::F64(-0.0), "-0.0"),
            (Val::F64(1e16), "1e+16"),
            (Val::F64(1e15), "1000000000000000.0"),
            (Val::F64(0.0001), "0.0001"),
            (Val::F64(0.00001), "1e-05"),
            (Val::F64(1.5e-7), "1.5e-07"),
            (Val::F64(123456.789), "123456.789"),
            (Val::F64(f64::NAN), "nan"),
            (Val::F64(f64::NEG_INFINITY), "-inf"),
            (Val::F32(0.1), "0.1"),
            (Val::Complex64(Complex::new(1.0, 2.0)), "(1+2j)"),
            (Val::Complex64(Complex::new(0.0, 2.5)), "2.5j"),
            (Val::Complex64(Complex::new(1.5, -2.0)), "(1.5-2j)"),
            (val!("it's"), "\"it's\""),
            (val!("a'b\"c\n"), "'a\\'b\"c\\n'"),
            (Val::Bytes(vec![b'a', 0, 255, b'\'']), "b\"a\\x00\\xff'\""),
            (val!([1, "x", [2.5]]), "[1, 'x', [2.5]]"),
            (Val::Tup(vec![Val::I64(1)]), "(1,)"),
            (Val::Tup(vec![]), "()"),
            (
                Val::NdArr(crate::NdArr::new(vec![2, 2], Arr::I64(vec![1, 2, 3, 4])).unwrap()),
                "ndarray((2, 2), 'q', [1, 2, 3, 4])",
            ),
            (
                Val::NdArr(crate::NdArr::new(vec![], Arr::F64(vec![2.5])).unwrap()),
                "ndarray((), 'd', [2.5])",
            ),
            (
                tab! { "a" => 1, "b" => vec![1.5f64, 2.0] },
                "{'a': 1, 'b': array('d', [1.5, 2.0])}",
            ),
            (
                otab! { "z" => 1, "a" => 2 },
                "OrderedDict([('z', 1), ('a', 2)])",
            ),
            (otab! {}, "OrderedDict()"),
            (
                Val::BigInt("123456789012345678901234567890".parse().unwrap()),
                "123456789012345678901234567890",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(v.to_string(), want, "{v:?}");
        }
    }
}
