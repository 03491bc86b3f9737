//! Writing pickles (protocols 2 to 5), plain opcodes, no memo.

use super::{PickleError, MAX_DEPTH};
use crate::val::heap::Val;
use num_bigint::BigInt;

/// Writes `v` as a pickle of `protocol` (2 to 5) that Python's `pickle.loads` reads.
///
/// # Errors
/// [`PickleError::Protocol`] outside 2..=5, [`PickleError::TooDeep`].
///
/// # Examples
/// ```
/// use shmval::{from_pickle, tab, to_pickle};
/// let v = tab! { "seq" => 1, "name" => "sensor" };
/// assert_eq!(from_pickle(&to_pickle(&v, 2)?)?, v);
/// # Ok::<(), shmval::PickleError>(())
/// ```
pub fn to_pickle(v: &Val, protocol: u8) -> Result<Vec<u8>, PickleError> {
    write(v, protocol, false)
}

/// As [`to_pickle`], every numeric array written as a numpy array (one dimension
/// too; `to_pickle` writes those as `array.array`, or as a list for the kinds
/// `array` lacks): what a Python program that reads them with numpy wants. Reading
/// the pickle then needs numpy (1.x or 2.x).
///
/// # Errors
/// As [`to_pickle`].
///
/// ```
/// use shmval::{from_pickle, to_pickle_numpy, Val};
/// let v = Val::from(vec![1.5f64, 2.5]);
/// let p = to_pickle_numpy(&v, 2)?;
/// assert!(p.windows(7).any(|w| w == b"ndarray"));
/// assert_eq!(from_pickle(&p)?, v);
/// # Ok::<(), shmval::PickleError>(())
/// ```
pub fn to_pickle_numpy(v: &Val, protocol: u8) -> Result<Vec<u8>, PickleError> {
    write(v, protocol, true)
}

fn write(v: &Val, protocol: u8, numpy: bool) -> Result<Vec<u8>, PickleError> {
    if !(2..=5).contains(&protocol) {
        return Err(PickleError::Protocol(protocol));
    }
    let mut w = Writer {
        out: vec![0x80, protocol],
        protocol,
        numpy,
    };
    w.val(v, 0)?;
    w.out.push(b'.');
    Ok(w.out)
}

struct Writer {
    out: Vec<u8>,
    protocol: u8,
    /// One-dimensional arrays as numpy arrays too.
    numpy: bool,
}

impl Writer {
    fn global(&mut self, module: &str, name: &str) {
        if self.protocol >= 4 {
            self.str(module);
            self.str(name);
            self.out.push(0x93);
        } else {
            let module = if self.protocol < 3 && module == "builtins" {
                "__builtin__"
            } else {
                module
            };
            self.out.push(b'c');
            self.out
                .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        }
    }
    fn str(&mut self, s: &str) {
        if self.protocol >= 4 && s.len() < 256 {
            self.out.push(0x8c);
            self.out.push(s.len() as u8);
        } else {
            self.out.push(b'X');
            self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        }
        self.out.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, b: BigInt) {
        if let Ok(x) = i32::try_from(&b) {
            if (0..256).contains(&x) {
                self.out.extend_from_slice(&[b'K', x as u8]);
            } else if (0..65536).contains(&x) {
                self.out.push(b'M');
                self.out.extend_from_slice(&(x as u16).to_le_bytes());
            } else {
                self.out.push(b'J');
                self.out.extend_from_slice(&x.to_le_bytes());
            }
            return;
        }
        let bytes = b.to_signed_bytes_le();
        if bytes.len() < 256 {
            self.out.extend_from_slice(&[0x8a, bytes.len() as u8]);
        } else {
            self.out.push(0x8b);
            self.out
                .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        }
        self.out.extend_from_slice(&bytes);
    }
    fn float(&mut self, f: f64) {
        self.out.push(b'G');
        self.out.extend_from_slice(&f.to_be_bytes());
    }
    fn complex(&mut self, re: f64, im: f64) {
        self.global("builtins", "complex");
        self.float(re);
        self.float(im);
        self.out.extend_from_slice(&[0x86, b'R']);
    }
    fn bytes(&mut self, b: &[u8]) {
        if self.protocol >= 3 {
            if b.len() < 256 {
                self.out.extend_from_slice(&[b'C', b.len() as u8]);
            } else {
                self.out.push(b'B');
                self.out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            }
            self.out.extend_from_slice(b);
        } else {
            // Protocol 2 has no bytes opcode: _codecs.encode(latin-1 text, 'latin1').
            self.global("_codecs", "encode");
            let latin1: String = b.iter().map(|&c| char::from(c)).collect();
            self.str(&latin1);
            self.str("latin1");
            self.out.extend_from_slice(&[0x86, b'R']);
        }
    }
    /// A numpy array as numpy pickles it (`_reconstruct`, then its state): what
    /// `pickle.loads` turns into an `ndarray` where numpy is installed (1.x or 2.x).
    fn ndarray(&mut self, a: &crate::val::heap::Arr, shape: &[usize]) {
        self.global("numpy.core.multiarray", "_reconstruct");
        self.global("numpy", "ndarray");
        self.out.extend_from_slice(&[b'K', 0, 0x85]); // (0,)
        self.bytes(b"b");
        self.out.extend_from_slice(&[0x87, b'R']);
        // state: (1, shape, dtype, is_fortran, data)
        self.out.push(b'(');
        self.int(1.into());
        self.out.push(b'(');
        for &d in shape {
            self.int(d.into());
        }
        self.out.push(b't');
        let kind = a.kind();
        self.global("numpy", "dtype");
        self.str(super::numpy::descr(kind));
        self.out.extend_from_slice(&[0x89, 0x88, 0x87, b'R']);
        // dtype state: (3, order, None, None, None, -1, -1, 0)
        self.out.push(b'(');
        self.int(3.into());
        self.str(if kind.size() == 1 { "|" } else { "<" });
        self.out.extend_from_slice(b"NNN");
        self.int((-1).into());
        self.int((-1).into());
        self.int(0.into());
        self.out.extend_from_slice(b"tb");
        self.out.push(0x89); // C order
        self.bytes(a.as_bytes());
        self.out.extend_from_slice(b"tb");
    }
    fn items(&mut self, items: impl Iterator<Item = Val>, depth: usize) -> Result<(), PickleError> {
        self.out.push(b'(');
        for v in items {
            self.val(&v, depth + 1)?;
        }
        Ok(())
    }
    fn val(&mut self, v: &Val, depth: usize) -> Result<(), PickleError> {
        if depth > MAX_DEPTH {
            return Err(PickleError::TooDeep(MAX_DEPTH));
        }
        match v {
            Val::None => self.out.push(b'N'),
            Val::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Val::BigInt(b) => self.int(b.clone()),
            Val::F32(f) => self.float(*f as f64),
            Val::F64(f) => self.float(*f),
            Val::Complex32(c) => self.complex(c.re as f64, c.im as f64),
            Val::Complex64(c) => self.complex(c.re, c.im),
            Val::Str(s) => self.str(s),
            Val::Bytes(b) => self.bytes(b),
            Val::Arr(a) if self.numpy => self.ndarray(a, &[a.len()]),
            Val::Arr(a) => {
                let code = a.kind().typecode();
                if matches!(code, '?' | 'F' | 'D') {
                    // No such Python array type: a list of the elements.
                    self.val(
                        &Val::List((0..a.len()).filter_map(|i| a.get(i)).collect()),
                        depth,
                    )?;
                } else {
                    self.global("array", "array");
                    self.str(&code.to_string());
                    self.out.push(b']');
                    if !a.is_empty() {
                        self.items((0..a.len()).filter_map(|i| a.get(i)), depth)?;
                        self.out.push(b'e');
                    }
                    self.out.extend_from_slice(&[0x86, b'R']);
                }
            }
            Val::NdArr(a) => self.ndarray(a.data(), a.shape()),
            Val::List(items) => {
                self.out.push(b']');
                if !items.is_empty() {
                    self.items(items.iter().cloned(), depth)?;
                    self.out.push(b'e');
                }
            }
            Val::Tup(items) => {
                if items.is_empty() {
                    self.out.push(b')');
                } else {
                    self.items(items.iter().cloned(), depth)?;
                    self.out.push(b't');
                }
            }
            Val::Tab(m) | Val::OTab(m) => {
                if matches!(v, Val::OTab(_)) {
                    self.global("collections", "OrderedDict");
                    self.out.extend_from_slice(b")R");
                } else {
                    self.out.push(b'}');
                }
                if !m.is_empty() {
                    self.out.push(b'(');
                    for (k, x) in m {
                        self.val(k, depth + 1)?;
                        self.val(x, depth + 1)?;
                    }
                    self.out.push(b'u');
                }
            }
            int => self.int(match int {
                Val::I8(x) => (*x).into(),
                Val::I16(x) => (*x).into(),
                Val::I32(x) => (*x).into(),
                Val::I64(x) => (*x).into(),
                Val::U8(x) => (*x).into(),
                Val::U16(x) => (*x).into(),
                Val::U32(x) => (*x).into(),
                Val::U64(x) => (*x).into(),
                _ => unreachable!("every other variant is matched above"),
            }),
        }
        Ok(())
    }
}
