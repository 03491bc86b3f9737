//! Python literals (what `repr` writes and `ast.literal_eval` reads), and JSON:
//! `None`, `True`, `False` (and JSON's `null`, `true`, `false`), ints of any size
//! (`0x`, `0o`, `0b`, `_`), floats (`inf`, `nan` as `float('inf')`… are not
//! literals; JSON has none either), complex (`2j`, `1+2j`), strings (`'…'`, `"…"`,
//! with escapes; `r` raw), bytes (`b'…'`), lists, tuples, dicts, `OrderedDict([…])`,
//! and the arrays `repr` writes: `array('d', [1.0, 2.5])` (Python's `array` module
//! form; `array('d')` is empty) and `ndarray((2, 3), 'd', […])` (elements in C order).
//! Sets are refused (shmval has no set kind): never silently a list.

use super::heap::{Arr, ArrKind, Map, NdArr, Val};
use num_bigint::BigInt;

/// Why a literal could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not a Python literal or JSON value at byte {at}: {what}")]
pub struct LiteralError {
    /// Where.
    pub at: usize,
    /// What was expected or found.
    pub what: String,
}

impl Val {
    /// Reads a Python literal or a JSON value (see the module documentation).
    ///
    /// ```
    /// use shmval::Val;
    /// let v = Val::from_literal("{'a': [1, 2.5, None], 'b': (True,), 'c': b'\\x00'}")?;
    /// assert_eq!(v.to_string(), "{'a': [1, 2.5, None], 'b': (True,), 'c': b'\\x00'}");
    /// assert_eq!(Val::from_literal(r#"{"a": [true, null]}"#)?.to_string(), "{'a': [True, None]}");
    /// assert!(Val::from_literal("{1, 2}").is_err()); // a set
    /// # Ok::<(), shmval::LiteralError>(())
    /// ```
    ///
    /// # Errors
    /// [`LiteralError`] with the byte where reading stopped.
    pub fn from_literal(s: &str) -> Result<Val, LiteralError> {
        let mut p = Parser {
            s: s.as_bytes(),
            i: 0,
            depth: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(p.err("text after the value"));
        }
        Ok(v)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: u32,
}

const MAX_DEPTH: u32 = 200;

impl Parser<'_> {
    fn err(&self, what: impl Into<String>) -> LiteralError {
        LiteralError {
            at: self.i,
            what: what.into(),
        }
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), LiteralError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(format!("expected {:?}", c as char)))
        }
    }

    fn word(&mut self) -> &str {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("")
    }

    fn value(&mut self) -> Result<Val, LiteralError> {
        self.ws();
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let v = self.value_inner();
        self.depth -= 1;
        v
    }

    fn value_inner(&mut self) -> Result<Val, LiteralError> {
        match self.peek() {
            None => Err(self.err("a value, found the end")),
            Some(b'[') => {
                self.i += 1;
                Ok(Val::List(self.items(b']')?.0))
            }
            Some(b'(') => {
                self.i += 1;
                let (items, trailing_comma) = self.items(b')')?;
                if items.len() == 1 && !trailing_comma {
                    Ok(items.into_iter().next().expect("one item"))
                } else {
                    Ok(Val::Tup(items))
                }
            }
            Some(b'{') => {
                self.i += 1;
                self.dict(b'}').map(Val::Tab)
            }
            Some(b'\'' | b'"') => self.string(false, false),
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' || c == b'.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.i;
                let w = self.word().to_owned();
                match w.as_str() {
                    "None" | "null" => Ok(Val::None),
                    "True" | "true" => Ok(Val::Bool(true)),
                    "False" | "false" => Ok(Val::Bool(false)),
                    "b" | "B" | "r" | "R" | "br" | "rb" | "Br" | "bR" | "BR" | "rB" | "Rb"
                    | "RB"
                        if matches!(self.peek(), Some(b'\'' | b'"')) =>
                    {
                        let l = w.to_ascii_lowercase();
                        self.string(l.contains('b'), l.contains('r'))
                    }
                    "OrderedDict" => {
                        self.expect(b'(')?;
                        if self.eat(b')') {
                            return Ok(Val::OTab(Map::default()));
                        }
                        let Val::List(pairs) = self.value()? else {
                            return Err(self.err("OrderedDict of a list of pairs"));
                        };
                        self.expect(b')')?;
                        let mut m = Map::default();
                        for p in pairs {
                            match p {
                                Val::Tup(mut kv) | Val::List(mut kv) if kv.len() == 2 => {
                                    let v = kv.pop().expect("two");
                                    let k = kv.pop().expect("two");
                                    self.insert(&mut m, k, v)?;
                                }
                                _ => return Err(self.err("OrderedDict of a list of pairs")),
                            }
                        }
                        Ok(Val::OTab(m))
                    }
                    // What `repr` writes for arrays (Python's `array` module form, and
                    // `ndarray(shape, typecode, [elements in C order])`).
                    "array" => {
                        self.expect(b'(')?;
                        let a = self.typed_elements()?;
                        self.expect(b')')?;
                        Ok(Val::Arr(a))
                    }
                    "ndarray" => {
                        self.expect(b'(')?;
                        let at = self.i;
                        let shape = match self.value()? {
                            Val::Tup(dims) => dims
                                .iter()
                                .map(|d| int_of(d).and_then(|d| usize::try_from(d).ok()))
                                .collect::<Option<Vec<usize>>>(),
                            _ => None,
                        };
                        let Some(shape) = shape else {
                            self.i = at;
                            return Err(self.err("an ndarray's shape: a tuple of sizes"));
                        };
                        self.expect(b',')?;
                        let a = self.typed_elements()?;
                        self.expect(b')')?;
                        NdArr::new(shape, a).map(Val::from).map_err(|e| {
                            self.i = at;
                            self.err(e.to_string())
                        })
                    }
                    "set" | "frozenset" => {
                        self.i = start;
                        Err(self.err("a set: shmval has no set kind (use a list or a dict)"))
                    }
                    _ => {
                        self.i = start;
                        Err(self.err(format!("unknown name {w:?}")))
                    }
                }
            }
            Some(c) => Err(self.err(format!("unexpected {:?}", c as char))),
        }
    }

    /// An array's `'d', [1.0, 2.0]` (or `'d'` alone: empty, as Python writes it).
    fn typed_elements(&mut self) -> Result<Arr, LiteralError> {
        let at = self.i;
        let kind = match self.value()? {
            Val::Str(code) => {
                let mut c = code.chars();
                match (c.next(), c.next()) {
                    (Some(ch), None) => ALL_KINDS.into_iter().find(|k| k.typecode() == ch),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(kind) = kind else {
            self.i = at;
            return Err(self.err("an array typecode ('?', 'b' … 'Q', 'f', 'd', 'F', 'D')"));
        };
        self.ws();
        if self.peek() == Some(b')') {
            return Ok(arr_of(kind, &[]).expect("no elements"));
        }
        self.expect(b',')?;
        let at = self.i;
        let Val::List(items) = self.value()? else {
            self.i = at;
            return Err(self.err("an array's elements: a list"));
        };
        arr_of(kind, &items).ok_or_else(|| {
            self.i = at;
            self.err(format!(
                "an element that is not a {:?} ('{}')",
                kind,
                kind.typecode()
            ))
        })
    }

    /// Items up to `close`; whether the last was followed by a comma.
    fn items(&mut self, close: u8) -> Result<(Vec<Val>, bool), LiteralError> {
        let mut out = Vec::new();
        let mut comma = false;
        loop {
            if self.eat(close) {
                return Ok((out, comma));
            }
            out.push(self.value()?);
            comma = self.eat(b',');
            if !comma {
                self.expect(close)?;
                return Ok((out, false));
            }
        }
    }

    fn insert(&self, m: &mut Map, k: Val, v: Val) -> Result<(), LiteralError> {
        if !k.is_hashable() {
            return Err(self.err(format!("unhashable key of type {}", k.type_name())));
        }
        m.insert(k, v);
        Ok(())
    }

    fn dict(&mut self, close: u8) -> Result<Map, LiteralError> {
        let mut m = Map::default();
        loop {
            if self.eat(close) {
                return Ok(m);
            }
            let k = self.value()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err(if m.is_empty() {
                    "':' (a set? shmval has no set kind: use a list or a dict)"
                } else {
                    "':'"
                }));
            }
            self.i += 1;
            let v = self.value()?;
            self.insert(&mut m, k, v)?;
            if !self.eat(b',') {
                self.expect(close)?;
                return Ok(m);
            }
        }
    }

    fn number(&mut self) -> Result<Val, LiteralError> {
        let start = self.i;
        let re = self.real()?;
        self.ws();
        // `a+bj` / `a-bj`: a complex.
        if let (Some(c @ (b'+' | b'-')), false) = (self.peek(), matches!(re, Num::Imag(_))) {
            let save = self.i;
            self.i += 1;
            self.ws();
            if let Ok(Num::Imag(im)) = self.real() {
                let re = match re {
                    // `repr` writes a real part of -0.0 as `-0` (as Python does):
                    // read back, it keeps its sign.
                    Num::Int(i) if self.s.get(start) == Some(&b'-') && f64_of(&i) == 0.0 => -0.0,
                    Num::Int(i) => f64_of(&i),
                    Num::Float(f) => f,
                    Num::Imag(_) => unreachable!(),
                };
                let im = if c == b'-' { -im } else { im };
                return Ok(Val::Complex64(num_complex_of(re, im)));
            }
            self.i = save;
        }
        Ok(match re {
            Num::Int(i) => match i64::try_from(&i) {
                Ok(x) => Val::I64(x),
                Err(_) => match u64::try_from(&i) {
                    Ok(x) => Val::U64(x),
                    Err(_) => Val::BigInt(i),
                },
            },
            Num::Float(f) => Val::F64(f),
            Num::Imag(im) => Val::Complex64(num_complex_of(0.0, im)),
        })
    }

    /// A signed int, float or imaginary number.
    fn real(&mut self) -> Result<Num, LiteralError> {
        let start = self.i;
        let neg = match self.peek() {
            Some(b'-') => {
                self.i += 1;
                true
            }
            Some(b'+') => {
                self.i += 1;
                false
            }
            _ => false,
        };
        self.ws();
        let body = self.i;
        let radix = match (self.s.get(self.i), self.s.get(self.i + 1)) {
            (Some(b'0'), Some(b'x' | b'X')) => 16,
            (Some(b'0'), Some(b'o' | b'O')) => 8,
            (Some(b'0'), Some(b'b' | b'B')) => 2,
            _ => 10,
        };
        if radix != 10 {
            self.i += 2;
            let w = self.word().replace('_', "");
            let i = BigInt::parse_bytes(w.as_bytes(), radix)
                .ok_or_else(|| self.err(format!("not a base-{radix} int")))?;
            return Ok(Num::Int(if neg { -i } else { i }));
        }
        let mut float = false;
        while let Some(c) = self.peek() {
            match c {
                b'0'..=b'9' | b'_' => {}
                b'.' => float = true,
                b'e' | b'E' => {
                    float = true;
                    if matches!(self.s.get(self.i + 1), Some(b'+' | b'-')) {
                        self.i += 1;
                    }
                }
                _ => break,
            }
            self.i += 1;
        }
        let text: String = std::str::from_utf8(&self.s[body..self.i])
            .unwrap_or("")
            .replace('_', "");
        if text.is_empty() || text == "." {
            self.i = start;
            return Err(self.err("a number"));
        }
        let imag = matches!(self.peek(), Some(b'j' | b'J'));
        if imag {
            self.i += 1;
        }
        let sign = if neg { -1.0 } else { 1.0 };
        if float || imag {
            let f: f64 = text.parse().map_err(|_| self.err("a float"))?;
            return Ok(if imag {
                Num::Imag(sign * f)
            } else {
                Num::Float(sign * f)
            });
        }
        let i: BigInt = text.parse().map_err(|_| self.err("an int"))?;
        Ok(Num::Int(if neg { -i } else { i }))
    }

    fn string(&mut self, bytes: bool, raw: bool) -> Result<Val, LiteralError> {
        let q = self.peek().expect("a quote");
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("an unterminated string"));
            };
            self.i += 1;
            if c == q {
                break;
            }
            if c != b'\\' || raw {
                if bytes && c >= 0x80 {
                    return Err(self.err("bytes literals hold ASCII only"));
                }
                out.push(c);
                continue;
            }
            let Some(e) = self.peek() else {
                return Err(self.err("an unterminated escape"));
            };
            self.i += 1;
            let simple = match e {
                b'n' => Some(b'\n'),
                b't' => Some(b'\t'),
                b'r' => Some(b'\r'),
                b'0' if !matches!(self.peek(), Some(b'0'..=b'7')) => Some(0),
                b'\\' => Some(b'\\'),
                b'\'' => Some(b'\''),
                b'"' => Some(b'"'),
                b'a' => Some(7),
                b'b' => Some(8),
                b'f' => Some(12),
                b'v' => Some(11),
                b'\n' => None, // a line continuation
                _ => None,
            };
            if let Some(b) = simple {
                out.push(b);
                continue;
            }
            if e == b'\n' {
                continue;
            }
            let digits = match e {
                b'x' => 2,
                b'u' if !bytes => 4,
                b'U' if !bytes => 8,
                b'0'..=b'7' => {
                    self.i -= 1;
                    let start = self.i;
                    while self.i < start + 3 && matches!(self.peek(), Some(b'0'..=b'7')) {
                        self.i += 1;
                    }
                    let v = u32::from_str_radix(
                        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("0"),
                        8,
                    )
                    .unwrap_or(0);
                    self.push_code(&mut out, v, bytes)?;
                    continue;
                }
                _ => return Err(self.err(format!("unknown escape \\{}", e as char))),
            };
            let hex = self
                .s
                .get(self.i..self.i + digits)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| self.err("hex digits"))?;
            self.i += digits;
            self.push_code(&mut out, hex, bytes)?;
        }
        if bytes {
            Ok(Val::Bytes(out))
        } else {
            String::from_utf8(out)
                .map(Val::Str)
                .map_err(|_| self.err("invalid UTF-8 in a string"))
        }
    }

    fn push_code(&self, out: &mut Vec<u8>, v: u32, bytes: bool) -> Result<(), LiteralError> {
        if bytes {
            out.push(u8::try_from(v).map_err(|_| self.err("a byte above 0xff"))?);
        } else {
            let c = char::from_u32(v).ok_or_else(|| self.err("not a Unicode scalar"))?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        Ok(())
    }
}

enum Num {
    Int(BigInt),
    Float(f64),
    Imag(f64),
}

fn f64_of(i: &BigInt) -> f64 {
    i.to_string().parse().unwrap_or(f64::NAN)
}

const ALL_KINDS: [ArrKind; 13] = [
    ArrKind::Bool,
    ArrKind::I8,
    ArrKind::I16,
    ArrKind::I32,
    ArrKind::I64,
    ArrKind::U8,
    ArrKind::U16,
    ArrKind::U32,
    ArrKind::U64,
    ArrKind::F32,
    ArrKind::F64,
    ArrKind::C32,
    ArrKind::C64,
];

/// An integer literal's value (not a bool: `array('q', [True])` is no repr of ours).
fn int_of(v: &Val) -> Option<i128> {
    match v {
        Val::I8(x) => Some((*x).into()),
        Val::I16(x) => Some((*x).into()),
        Val::I32(x) => Some((*x).into()),
        Val::I64(x) => Some((*x).into()),
        Val::U8(x) => Some((*x).into()),
        Val::U16(x) => Some((*x).into()),
        Val::U32(x) => Some((*x).into()),
        Val::U64(x) => Some((*x).into()),
        Val::BigInt(x) => i128::try_from(x).ok(),
        _ => None,
    }
}

/// A real number literal's value (an int, exactly representable or not, as Python
/// puts an int into a float array).
fn real_of(v: &Val) -> Option<f64> {
    match v {
        Val::F64(x) => Some(*x),
        Val::F32(x) => Some(f64::from(*x)),
        v => int_of(v).map(|i| i as f64),
    }
}

fn complex_of(v: &Val) -> Option<(f64, f64)> {
    match v {
        Val::Complex64(c) => Some((c.re, c.im)),
        Val::Complex32(c) => Some((f64::from(c.re), f64::from(c.im))),
        v => real_of(v).map(|re| (re, 0.0)),
    }
}

/// The array of `kind` holding `items`, if each is a value of that kind (integers in
/// its range).
fn arr_of(kind: ArrKind, items: &[Val]) -> Option<Arr> {
    fn all<T>(items: &[Val], f: impl Fn(&Val) -> Option<T>) -> Option<Vec<T>> {
        items.iter().map(f).collect()
    }
    fn ints<T: TryFrom<i128>>(items: &[Val]) -> Option<Vec<T>> {
        all(items, |v| int_of(v).and_then(|i| T::try_from(i).ok()))
    }
    use super::heap::Complex;
    Some(match kind {
        ArrKind::Bool => Arr::Bool(all(items, |v| match v {
            Val::Bool(b) => Some(*b),
            _ => None,
        })?),
        ArrKind::I8 => Arr::I8(ints(items)?),
        ArrKind::I16 => Arr::I16(ints(items)?),
        ArrKind::I32 => Arr::I32(ints(items)?),
        ArrKind::I64 => Arr::I64(ints(items)?),
        ArrKind::U8 => Arr::U8(ints(items)?),
        ArrKind::U16 => Arr::U16(ints(items)?),
        ArrKind::U32 => Arr::U32(ints(items)?),
        ArrKind::U64 => Arr::U64(ints(items)?),
        ArrKind::F32 => Arr::F32(all(items, |v| real_of(v).map(|x| x as f32))?),
        ArrKind::F64 => Arr::F64(all(items, real_of)?),
        ArrKind::C32 => Arr::C32(all(items, |v| {
            complex_of(v).map(|(re, im)| Complex {
                re: re as f32,
                im: im as f32,
            })
        })?),
        ArrKind::C64 => Arr::C64(all(items, |v| {
            complex_of(v).map(|(re, im)| Complex { re, im })
        })?),
    })
}

fn num_complex_of(re: f64, im: f64) -> super::heap::Complex<f64> {
    super::heap::Complex { re, im }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_round_trips() {
        for s in [
            "None",
            "[1, -2, 3.5, 'x', b'y', (1,), (), [], {}]",
            "{'a': {'b': [1, 2]}, 3: 'three'}",
            "123456789012345678901234567890",
            "-9223372036854775808",
            "18446744073709551615",
            "(1+2j)",
            "'it\\'s \\n \\u00e9'",
            "OrderedDict([('a', 1), ('b', 2)])",
            "1e+100",
        ] {
            let v = Val::from_literal(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let again = Val::from_literal(&v.to_string()).unwrap();
            assert_eq!(v, again, "{s} -> {v}");
        }
        assert_eq!(Val::from_literal("0x_ff").unwrap(), Val::I64(255));
        // A complex's real part of -0.0 is written `-0` and keeps its sign.
        let Val::Complex64(c) = Val::from_literal("(-0+1j)").unwrap() else {
            panic!("a complex")
        };
        assert!(c.re == 0.0 && c.re.is_sign_negative() && c.im == 1.0);
        assert_eq!(Val::from_literal("'\\x41\\101'").unwrap(), Val::from("AA"));
        for bad in ["{1, 2}", "set()", "[1,", "'abc", "1 2", "{[1]: 2}", "nope"] {
            assert!(Val::from_literal(bad).is_err(), "{bad}");
        }
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(Val::from_literal(&deep).is_err());
    }
}
