//! Reading pickles: a small pickle machine over a node graph.

use super::build::int_val;
use super::escape::{escape_decode, raw_unicode_escape};
use super::{PickleError, PickleLimits, MAX_VALUES};
use crate::val::heap::Val;
use num_bigint::BigInt;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Global {
    Complex,
    OrderedDict,
    Array,
    ArrayReconstructor,
    CodecsEncode,
    Bytearray,
    Bytes,
    Set,
    /// `numpy.core.multiarray._reconstruct` (numpy 2: `numpy._core`).
    NpReconstruct,
    /// `numpy.ndarray` (the class `_reconstruct` is given).
    NpNdarray,
    /// `numpy.dtype`.
    NpDtype,
    /// `numpy.core.multiarray.scalar`.
    NpScalar,
    /// `numpy.core.numeric._frombuffer` (protocol 5).
    NpFrombuffer,
}

/// A node of the object graph being unpickled.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Leaf(Val),
    List(Vec<usize>),
    Tup(Vec<usize>),
    Dict(Vec<(usize, usize)>, bool),
    Global(Global),
    /// A numpy dtype (its byte order set by its state).
    Dtype(super::numpy::Dtype),
    /// A numpy array made by `_reconstruct`, waiting for its state (BUILD).
    NdEmpty,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Item {
    Mark,
    Node(usize),
}

pub(super) struct Machine<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) nodes: Vec<Node>,
    pub(super) stack: Vec<Item>,
    pub(super) memo: std::collections::HashMap<u64, usize>,
    /// Nodes that are Python sets or frozensets (read as lists until the end, where
    /// any is refused as `Unsupported`; a frozenset used as a dict key is refused
    /// when met, unlike a list key, which no Python pickle holds: `Malformed`).
    pub(super) sets: std::collections::HashSet<usize>,
    pub(super) limits: PickleLimits,
}

/// Reads a pickle (protocols 0 to 5 for these types) into a [`Val`].
///
/// # Errors
/// A [`PickleError`] for malformed, unsupported or oversized input.
///
/// # Examples
/// ```
/// // pickle.dumps({'a': [1, 2.5]}, 2)
/// let p = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00es.";
/// assert_eq!(shmval::from_pickle(p)?.to_string(), "{'a': [1, 2.5]}");
/// # Ok::<(), shmval::PickleError>(())
/// ```
pub fn from_pickle(data: &[u8]) -> Result<Val, PickleError> {
    from_pickle_with(data, &PickleLimits::default())
}

/// [`from_pickle`] within the given limits (bytes of the result, nesting).
///
/// # Errors
/// As [`from_pickle`]; `TooBig` when the result would take more than
/// `limits.max_bytes`.
///
/// # Examples
/// ```
/// use shmval::{from_pickle_with, PickleError, PickleLimits};
/// // pickle.dumps(['x' * 1000] * 1000, 2): 1,000 references to one string.
/// let mut p = b"\x80\x02]q\x00(X\xe8\x03\x00\x00".to_vec();
/// p.extend(std::iter::repeat(b'x').take(1000));
/// p.extend(b"q\x01");
/// for _ in 0..999 { p.extend(b"h\x01"); }
/// p.extend(b"e.");
/// let small = PickleLimits { max_bytes: 100_000, ..PickleLimits::default() };
/// assert!(matches!(from_pickle_with(&p, &small), Err(PickleError::TooBig { .. })));
/// let v = from_pickle_with(&p, &PickleLimits::default())?;
/// assert_eq!(v.to_string().len(), 1000 * 1002 + 999 * 2 + 2); // ['xx…', …]
/// # Ok::<(), PickleError>(())
/// ```
pub fn from_pickle_with(data: &[u8], limits: &PickleLimits) -> Result<Val, PickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        memo: Default::default(),
        sets: Default::default(),
        limits: limits.clone(),
    };
    let root = m.run()?;
    m.check_size(root)?;
    let mut budget = MAX_VALUES;
    m.to_val(root, 0, &mut budget)
}

impl<'a> Machine<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated)?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub(super) fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn le(&mut self, n: usize) -> Result<u64, PickleError> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }
    pub(super) fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or(PickleError::Truncated)?;
        let l = &rest[..n];
        self.pos += n + 1;
        Ok(l)
    }
    pub(super) fn push_val(&mut self, v: Val) {
        self.push_node(Node::Leaf(v));
    }
    pub(super) fn push_node(&mut self, n: Node) {
        self.nodes.push(n);
        self.stack.push(Item::Node(self.nodes.len() - 1));
    }
    pub(super) fn pop(&mut self) -> Result<usize, PickleError> {
        match self.stack.pop() {
            Some(Item::Node(n)) => Ok(n),
            Some(Item::Mark) => Err(PickleError::Malformed("mark where a value was expected")),
            None => Err(PickleError::Malformed("stack underflow")),
        }
    }
    pub(super) fn top(&self) -> Result<usize, PickleError> {
        match self.stack.last() {
            Some(Item::Node(n)) => Ok(*n),
            _ => Err(PickleError::Malformed("no value on the stack")),
        }
    }
    /// The items above the topmost mark (the mark is removed).
    pub(super) fn pop_mark(&mut self) -> Result<Vec<usize>, PickleError> {
        let k = self
            .stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or(PickleError::Malformed("no mark"))?;
        let items = self.stack.split_off(k + 1);
        self.stack.pop();
        items
            .into_iter()
            .map(|i| match i {
                Item::Node(n) => Ok(n),
                Item::Mark => Err(PickleError::Malformed("nested mark")),
            })
            .collect()
    }
    pub(super) fn text(b: &[u8]) -> Result<String, PickleError> {
        String::from_utf8(b.to_vec()).map_err(|_| PickleError::Malformed("string is not UTF-8"))
    }
    pub(super) fn global(module: &str, name: &str) -> Result<Global, PickleError> {
        Ok(match (module, name) {
            ("builtins" | "__builtin__", "complex") => Global::Complex,
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("array", "array") => Global::Array,
            ("array", "_array_reconstructor") => Global::ArrayReconstructor,
            ("_codecs", "encode") => Global::CodecsEncode,
            ("builtins" | "__builtin__", "bytearray") => Global::Bytearray,
            ("builtins" | "__builtin__", "bytes") => Global::Bytes,
            ("builtins" | "__builtin__", "set" | "frozenset") => Global::Set,
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Global::NpReconstruct
            }
            ("numpy", "ndarray") => Global::NpNdarray,
            ("numpy", "dtype") => Global::NpDtype,
            ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Global::NpScalar,
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Global::NpFrombuffer,
            _ => return Err(PickleError::Unsupported(format!("global {module}.{name}"))),
        })
    }
    pub(super) fn append(&mut self, list: usize, items: &[usize]) -> Result<(), PickleError> {
        match &mut self.nodes[list] {
            Node::List(v) => v.extend_from_slice(items),
            _ => return Err(PickleError::Malformed("append to a non-list")),
        }
        Ok(())
    }
    pub(super) fn setitems(&mut self, dict: usize, items: &[usize]) -> Result<(), PickleError> {
        if items.len() % 2 != 0 {
            return Err(PickleError::Malformed("odd number of dict items"));
        }
        match &mut self.nodes[dict] {
            Node::Dict(v, _) => v.extend(items.chunks(2).map(|c| (c[0], c[1]))),
            _ => return Err(PickleError::Malformed("setitem on a non-dict")),
        }
        Ok(())
    }
    pub(super) fn leaf(&self, n: usize) -> Result<&Val, PickleError> {
        match &self.nodes[n] {
            Node::Leaf(v) => Ok(v),
            _ => Err(PickleError::Malformed("argument is not a scalar")),
        }
    }

    pub(super) fn run(&mut self) -> Result<usize, PickleError> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(PickleError::Unsupported(format!("protocol {p}")));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a hint only
                }
                b'.' => {
                    // Python sets and frozensets: `Val` has no set kind, and a list
                    // would silently drop their meaning (uniqueness, no order).
                    if !self.sets.is_empty() {
                        return Err(PickleError::Unsupported(
                            "a set or frozenset (shmval has no set kind: convert it to a \
                             list or tuple before pickling)"
                                .into(),
                        ));
                    }
                    return self.pop();
                }
                b'(' => self.stack.push(Item::Mark),
                b'0' => {
                    self.stack
                        .pop()
                        .ok_or(PickleError::Malformed("pop on an empty stack"))?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.stack.push(Item::Node(t));
                }
                b'N' => self.push_val(Val::None),
                0x88 => self.push_val(Val::Bool(true)),
                0x89 => self.push_val(Val::Bool(false)),
                b'I' => {
                    let l = self.line()?;
                    let v = match l {
                        b"01" => Val::Bool(true),
                        b"00" => Val::Bool(false),
                        _ => Val::I64(
                            std::str::from_utf8(l)
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .ok_or(PickleError::Malformed("INT"))?,
                        ),
                    };
                    self.push_val(v);
                }
                b'J' => {
                    let v = self.le(4)? as u32 as i32;
                    self.push_val(Val::I64(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push_val(Val::I64(v.into()));
                }
                b'M' => {
                    let v = self.le(2)?;
                    self.push_val(Val::I64(v as i64));
                }
                b'L' => {
                    let l = self.line()?;
                    let s = std::str::from_utf8(l)
                        .map_err(|_| PickleError::Malformed("LONG"))?
                        .trim_end_matches('L');
                    let b: BigInt = s.parse().map_err(|_| PickleError::Malformed("LONG"))?;
                    self.push_val(int_val(b));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        self.le(4)? as usize
                    };
                    let b = BigInt::from_signed_bytes_le(self.take(n)?);
                    self.push_val(int_val(b));
                }
                b'G' => {
                    let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
                    self.push_val(Val::F64(f64::from_be_bytes(b)));
                }
                b'F' => {
                    let l = self.line()?;
                    let f = std::str::from_utf8(l)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or(PickleError::Malformed("FLOAT"))?;
                    self.push_val(Val::F64(f));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.le(4)?,
                        0x8c => self.u8()? as u64,
                        _ => self.le(8)?,
                    };
                    let s = Self::text(self.take(n as usize)?)?;
                    self.push_val(Val::Str(s));
                }
                b'V' => {
                    let l = self.line()?;
                    self.push_val(Val::Str(raw_unicode_escape(l)?));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.le(4)?,
                        b'C' => self.u8()? as u64,
                        _ => self.le(8)?,
                    };
                    let b = self.take(n as usize)?.to_vec();
                    self.push_val(Val::Bytes(b));
                }
                b'T' | b'U' => {
                    // Python 2 `str`: text when it is UTF-8, bytes otherwise.
                    let n = if op == b'T' {
                        self.le(4)?
                    } else {
                        self.u8()? as u64
                    };
                    let b = self.take(n as usize)?;
                    let v = std::str::from_utf8(b)
                        .map_or_else(|_| Val::Bytes(b.to_vec()), |s| Val::Str(s.to_owned()));
                    self.push_val(v);
                }
                b'S' => {
                    // A Python 2 `str` in repr quotes: escapes decoded, then text
                    // when it is UTF-8, bytes otherwise (as SHORT_BINSTRING).
                    let l = self.line()?;
                    let quoted =
                        l.len() >= 2 && (l[0] == b'\'' || l[0] == b'"') && l[l.len() - 1] == l[0];
                    if !quoted {
                        return Err(PickleError::Malformed("STRING not quoted"));
                    }
                    let b = escape_decode(&l[1..l.len() - 1])?;
                    let v =
                        String::from_utf8(b).map_or_else(|e| Val::Bytes(e.into_bytes()), Val::Str);
                    self.push_val(v);
                }
                b']' => self.push_node(Node::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::List(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    let l = self.top()?;
                    self.append(l, &[v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let l = self.top()?;
                    self.append(l, &items)?;
                }
                b')' => self.push_node(Node::Tup(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Tup(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(PickleError::Malformed("stack underflow"));
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_node(Node::Tup(items));
                }
                b'}' => self.push_node(Node::Dict(Vec::new(), false)),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Dict(Vec::new(), false));
                    let d = self.top()?;
                    self.setitems(d, &items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.setitems(d, &[k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    self.setitems(d, &items)?;
                }
                0x8f => {
                    self.push_node(Node::List(Vec::new())); // EMPTY_SET → list
                    self.sets.insert(self.nodes.len() - 1);
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    let s = self.top()?;
                    self.append(s, &items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::List(items));
                    self.sets.insert(self.nodes.len() - 1);
                }
                b'c' => {
                    let module = Self::text(self.line()?)?;
                    let name = Self::text(self.line()?)?;
                    self.push_node(Node::Global(Self::global(&module, &name)?));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Val::Str(module), Val::Str(name)) =
                        (self.leaf(module)?.clone(), self.leaf(name)?.clone())
                    else {
                        return Err(PickleError::Malformed("STACK_GLOBAL needs two strings"));
                    };
                    self.push_node(Node::Global(Self::global(&module, &name)?));
                }
                b'R' | 0x81 => {
                    // REDUCE (callable, args) and NEWOBJ (cls, args) alike.
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let set = matches!(self.nodes[f], Node::Global(Global::Set));
                    let node = self.call(f, args)?;
                    self.push_node(node);
                    if set {
                        self.sets.insert(self.nodes.len() - 1);
                    }
                }
                b'b' => {
                    // BUILD (state): a numpy dtype's or array's state; for our
                    // other types only a None state is meaningful.
                    let st = self.pop()?;
                    let obj = self.top()?;
                    self.build(obj, st)?;
                }
                b'p' => {
                    let k: u64 = std::str::from_utf8(self.line()?)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or(PickleError::Malformed("PUT"))?;
                    let t = self.top()?;
                    self.memo.insert(k, t);
                }
                b'q' | b'r' => {
                    let k = if op == b'q' {
                        self.u8()? as u64
                    } else {
                        self.le(4)?
                    };
                    let t = self.top()?;
                    self.memo.insert(k, t);
                }
                0x94 => {
                    let t = self.top()?;
                    let k = self.memo.len() as u64;
                    self.memo.insert(k, t);
                }
                b'g' | b'h' | b'j' => {
                    let k = match op {
                        b'g' => std::str::from_utf8(self.line()?)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or(PickleError::Malformed("GET"))?,
                        b'h' => self.u8()? as u64,
                        _ => self.le(4)?,
                    };
                    let n = *self
                        .memo
                        .get(&k)
                        .ok_or(PickleError::Malformed("memo key not found"))?;
                    self.stack.push(Item::Node(n));
                }
                b'P' | b'Q' => return Err(PickleError::Unsupported("persistent id".into())),
                b'i' | b'o' | 0x92 => {
                    return Err(PickleError::Unsupported("class instance".into()))
                }
                0x82..=0x84 => return Err(PickleError::Unsupported("copyreg extension".into())),
                0x97 | 0x98 => return Err(PickleError::Unsupported("out-of-band buffer".into())),
                other => return Err(PickleError::BadOpcode(other)),
            }
        }
    }
}
