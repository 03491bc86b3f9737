//! From the machine's node graph to a value: calls of the allowed globals
//! (`REDUCE`, `NEWOBJ`), the size check against the limits, and the conversion.

use super::arrays::{array_from_machine, array_from_vals};
use super::numpy::{self, Dtype};
use super::read::{Global, Machine, Node};
use super::{PickleError, MAX_VALUES};
use crate::val::heap::{Complex, Map, Val};
use num_bigint::BigInt;

/// Bytes a value of the result takes besides its children: the `Val` itself and
/// its own heap data (what `from_pickle` would allocate for it).
pub(super) fn own_bytes(n: &Node) -> u64 {
    const VAL: u64 = std::mem::size_of::<Val>() as u64;
    match n {
        Node::Leaf(v) => {
            VAL + match v {
                Val::Str(s) => s.len() as u64,
                Val::Bytes(b) => b.len() as u64,
                Val::BigInt(b) => b.bits() / 8 + 8,
                Val::Arr(a) => (a.len() * a.kind().size()) as u64,
                Val::NdArr(a) => (a.data().len() * a.data().kind().size() + 8 * a.ndim()) as u64,
                _ => 0,
            }
        }
        // A dict entry also costs its hash and index slot.
        Node::Dict(items, _) => VAL + 16 * items.len() as u64,
        Node::List(_) | Node::Tup(_) | Node::Global(_) | Node::Dtype(_) | Node::NdEmpty => VAL,
    }
}

impl Machine<'_> {
    pub(super) fn call(&mut self, f: usize, args: usize) -> Result<Node, PickleError> {
        let Node::Global(g) = self.nodes[f] else {
            return Err(PickleError::Malformed("REDUCE on a non-callable"));
        };
        let Node::Tup(args) = self.nodes[args].clone() else {
            return Err(PickleError::Malformed("REDUCE arguments are not a tuple"));
        };
        let arg = |i: usize| -> Result<&Val, PickleError> {
            args.get(i)
                .ok_or(PickleError::Malformed("missing argument"))
                .and_then(|&n| self.leaf(n))
        };
        Ok(match g {
            Global::Complex => {
                let re = args.first().map_or(Ok(0.0), |_| {
                    arg(0)?
                        .as_f64()
                        .ok_or(PickleError::Malformed("complex real part"))
                })?;
                let im = args.get(1).map_or(Ok(0.0), |_| {
                    arg(1)?
                        .as_f64()
                        .ok_or(PickleError::Malformed("complex imaginary part"))
                })?;
                Node::Leaf(Val::Complex64(Complex::new(re, im)))
            }
            Global::OrderedDict => {
                let mut items = Vec::new();
                if let Some(&n) = args.first() {
                    // OrderedDict([(k, v), ...])
                    let Node::List(pairs) = self.nodes[n].clone() else {
                        return Err(PickleError::Malformed("OrderedDict argument"));
                    };
                    for p in pairs {
                        let Node::Tup(kv) = &self.nodes[p] else {
                            return Err(PickleError::Malformed("OrderedDict item"));
                        };
                        if kv.len() != 2 {
                            return Err(PickleError::Malformed("OrderedDict item"));
                        }
                        items.push((kv[0], kv[1]));
                    }
                }
                Node::Dict(items, true)
            }
            Global::Array => {
                let Val::Str(code) = arg(0)? else {
                    return Err(PickleError::Malformed("array type code"));
                };
                let code = code.clone();
                let items = args.get(1).ok_or(PickleError::Malformed("array items"))?;
                let vals: Vec<Val> = match &self.nodes[*items] {
                    Node::List(v) => v
                        .iter()
                        .map(|&n| self.leaf(n).cloned())
                        .collect::<Result<_, _>>()?,
                    _ => return Err(PickleError::Malformed("array items")),
                };
                Node::Leaf(Val::Arr(array_from_vals(&code, &vals)?))
            }
            Global::ArrayReconstructor => {
                let Val::Str(code) = arg(1)? else {
                    return Err(PickleError::Malformed("array type code"));
                };
                let code = code.clone();
                let fmt = arg(2)?
                    .as_i64()
                    .ok_or(PickleError::Malformed("array format"))?;
                let Val::Bytes(b) = arg(3)? else {
                    return Err(PickleError::Malformed("array bytes"));
                };
                Node::Leaf(Val::Arr(array_from_machine(&code, fmt, b)?))
            }
            Global::CodecsEncode => {
                let Val::Str(s) = arg(0)? else {
                    return Err(PickleError::Malformed("_codecs.encode text"));
                };
                // latin-1: each char is one byte.
                let b = s
                    .chars()
                    .map(|c| {
                        u8::try_from(u32::from(c))
                            .map_err(|_| PickleError::Malformed("non-latin-1 bytes"))
                    })
                    .collect::<Result<Vec<u8>, _>>()?;
                Node::Leaf(Val::Bytes(b))
            }
            // `bytes()` is how Python 3 writes b'' in protocols 0 to 2.
            Global::Bytearray | Global::Bytes => match args.first() {
                None => Node::Leaf(Val::Bytes(Vec::new())),
                Some(_) => match arg(0)? {
                    Val::Bytes(b) => Node::Leaf(Val::Bytes(b.clone())),
                    _ => {
                        return Err(PickleError::Unsupported(format!(
                            "{g:?} from a non-bytes value"
                        )))
                    }
                },
            },
            Global::NpDtype => {
                let Val::Str(d) = arg(0)? else {
                    return Err(PickleError::Malformed("numpy dtype"));
                };
                Node::Dtype(Dtype {
                    descr: d.clone(),
                    order: '=',
                })
            }
            Global::NpReconstruct => {
                if !matches!(
                    args.first().map(|&n| &self.nodes[n]),
                    Some(Node::Global(Global::NpNdarray))
                ) {
                    return Err(PickleError::Unsupported(
                        "numpy _reconstruct of a class other than ndarray".into(),
                    ));
                }
                Node::NdEmpty
            }
            Global::NpScalar => {
                let dtype = self.dtype_at(args.first().copied())?;
                let Val::Bytes(b) = arg(1)? else {
                    return Err(PickleError::Unsupported(
                        "a numpy scalar of an object dtype".into(),
                    ));
                };
                Node::Leaf(numpy::scalar(&dtype, b)?)
            }
            Global::NpFrombuffer => {
                // _frombuffer(buffer, dtype, shape, order)
                let dtype = self.dtype_at(args.get(1).copied())?;
                let shape = self.shape_at(args.get(2).copied())?;
                let Val::Str(order) = arg(3)? else {
                    return Err(PickleError::Malformed("numpy order"));
                };
                let Val::Bytes(b) = arg(0)? else {
                    return Err(PickleError::Malformed("numpy buffer"));
                };
                Node::Leaf(numpy::ndarray(&dtype, shape, order == "F", b)?)
            }
            Global::NpNdarray => {
                return Err(PickleError::Unsupported(
                    "numpy.ndarray called directly".into(),
                ))
            }
            Global::Set => match args.first() {
                None => Node::List(Vec::new()),
                Some(&n) => match &self.nodes[n] {
                    Node::List(v) => Node::List(v.clone()),
                    _ => return Err(PickleError::Malformed("set argument")),
                },
            },
        })
    }

    /// Refuses a graph whose expansion into a tree (shared nodes copied) would exceed
    /// the size limit, or that is cyclic — in time proportional to the node count.
    pub(super) fn check_size(&self, root: usize) -> Result<(), PickleError> {
        // 0 = unvisited, 1 = on the current path, 2 = size known.
        let mut state = vec![0u8; self.nodes.len()];
        let mut size = vec![0usize; self.nodes.len()];
        let mut bytes = vec![0u64; self.nodes.len()];
        let children = |n: usize| -> Vec<usize> {
            match &self.nodes[n] {
                Node::List(v) | Node::Tup(v) => v.clone(),
                Node::Dict(v, _) => v.iter().flat_map(|&(k, x)| [k, x]).collect(),
                _ => Vec::new(),
            }
        };
        let mut stack = vec![(root, false)];
        while let Some((n, done)) = stack.pop() {
            if done {
                let total = children(n)
                    .iter()
                    .fold(1usize, |a, &c| a.saturating_add(size[c]));
                if total > MAX_VALUES {
                    return Err(PickleError::TooLarge(MAX_VALUES));
                }
                let b = children(n).iter().fold(own_bytes(&self.nodes[n]), |a, &c| {
                    a.saturating_add(bytes[c])
                });
                if b > self.limits.max_bytes {
                    return Err(PickleError::TooBig {
                        budget: self.limits.max_bytes,
                    });
                }
                bytes[n] = b;
                size[n] = total;
                state[n] = 2;
                continue;
            }
            match state[n] {
                2 => continue,
                1 => return Err(PickleError::TooDeep(self.limits.max_depth)), // a cycle
                _ => {}
            }
            state[n] = 1;
            stack.push((n, true));
            for c in children(n) {
                if state[c] == 1 {
                    return Err(PickleError::TooDeep(self.limits.max_depth));
                }
                if state[c] == 0 {
                    stack.push((c, false));
                }
            }
        }
        Ok(())
    }

    pub(super) fn to_val(
        &self,
        n: usize,
        depth: usize,
        budget: &mut usize,
    ) -> Result<Val, PickleError> {
        if depth > self.limits.max_depth {
            return Err(PickleError::TooDeep(self.limits.max_depth));
        }
        *budget = budget
            .checked_sub(1)
            .ok_or(PickleError::TooLarge(MAX_VALUES))?;
        Ok(match &self.nodes[n] {
            Node::Leaf(v) => v.clone(),
            Node::List(items) => Val::List(
                items
                    .iter()
                    .map(|&i| self.to_val(i, depth + 1, budget))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Tup(items) => Val::Tup(
                items
                    .iter()
                    .map(|&i| self.to_val(i, depth + 1, budget))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Dict(items, ordered) => {
                let mut m = Map::with_capacity(items.len());
                for &(k, v) in items {
                    let kv = self.to_val(k, depth + 1, budget)?;
                    if !kv.is_hashable() {
                        // A frozenset key (or a tuple holding one) is valid Python;
                        // a list or dict key is in no pickle Python writes.
                        return Err(if self.holds_set(k) {
                            PickleError::Unsupported("a frozenset as a dict key".into())
                        } else {
                            PickleError::Malformed("unhashable dict key")
                        });
                    }
                    let k = kv;
                    m.insert(k, self.to_val(v, depth + 1, budget)?);
                }
                if *ordered {
                    Val::OTab(m)
                } else {
                    Val::Tab(m)
                }
            }
            Node::Global(_) => {
                return Err(PickleError::Unsupported("a bare global as a value".into()))
            }
            Node::Dtype(_) => {
                return Err(PickleError::Unsupported("a numpy dtype as a value".into()))
            }
            Node::NdEmpty => return Err(PickleError::Malformed("a numpy array without its state")),
        })
    }

    /// BUILD: sets the state `st` of the object `obj` — a numpy dtype's byte
    /// order, a numpy array's shape, dtype and data; other objects take no state
    /// but None.
    pub(super) fn build(&mut self, obj: usize, st: usize) -> Result<(), PickleError> {
        match &self.nodes[obj] {
            Node::Dtype(d) => {
                // (3, '<', subarray, names, fields, elsize, alignment, flags)
                let Node::Tup(items) = &self.nodes[st] else {
                    return Err(PickleError::Malformed("numpy dtype state"));
                };
                let order = match items.get(1).map(|&n| &self.nodes[n]) {
                    Some(Node::Leaf(Val::Str(o))) if o.len() == 1 => {
                        o.chars().next().unwrap_or('=')
                    }
                    _ => return Err(PickleError::Malformed("numpy dtype byte order")),
                };
                // Structured dtypes (names/fields) are not numbers.
                if matches!(items.get(3).map(|&n| &self.nodes[n]), Some(n) if !matches!(n, Node::Leaf(Val::None)))
                {
                    return Err(PickleError::Unsupported("a structured numpy dtype".into()));
                }
                let descr = d.descr.clone();
                self.nodes[obj] = Node::Dtype(Dtype { descr, order });
            }
            Node::NdEmpty => {
                // (1, shape, dtype, is_fortran, data)
                let Node::Tup(items) = self.nodes[st].clone() else {
                    return Err(PickleError::Malformed("numpy array state"));
                };
                if items.len() != 5 {
                    return Err(PickleError::Malformed("numpy array state"));
                }
                let shape = self.shape_at(Some(items[1]))?;
                let dtype = self.dtype_at(Some(items[2]))?;
                let fortran = matches!(self.nodes[items[3]], Node::Leaf(Val::Bool(true)));
                let data = match &self.nodes[items[4]] {
                    Node::Leaf(Val::Bytes(b)) => b.clone(),
                    // Protocol 0/1 from Python 2: the data as a latin-1 str.
                    Node::Leaf(Val::Str(s)) => s
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)))
                        .collect::<Result<Vec<u8>, _>>()
                        .map_err(|_| PickleError::Malformed("numpy data"))?,
                    Node::List(_) => {
                        return Err(PickleError::Unsupported(
                            "a numpy array of Python objects".into(),
                        ))
                    }
                    _ => return Err(PickleError::Malformed("numpy data")),
                };
                self.nodes[obj] = Node::Leaf(numpy::ndarray(&dtype, shape, fortran, &data)?);
            }
            _ => {
                if !matches!(self.nodes[st], Node::Leaf(Val::None)) {
                    return Err(PickleError::Unsupported("object state (BUILD)".into()));
                }
            }
        }
        Ok(())
    }

    /// The numpy dtype at node `n`.
    fn dtype_at(&self, n: Option<usize>) -> Result<Dtype, PickleError> {
        match n.map(|n| &self.nodes[n]) {
            Some(Node::Dtype(d)) => Ok(d.clone()),
            _ => Err(PickleError::Malformed("a numpy dtype expected")),
        }
    }

    /// The shape (a tuple of ints) at node `n`.
    fn shape_at(&self, n: Option<usize>) -> Result<Vec<usize>, PickleError> {
        let Some(Node::Tup(dims)) = n.map(|n| &self.nodes[n]) else {
            return Err(PickleError::Malformed("a numpy shape expected"));
        };
        if dims.len() > crate::MAX_NDIM {
            return Err(PickleError::Unsupported("more than 64 dimensions".into()));
        }
        dims.iter()
            .map(|&d| match &self.nodes[d] {
                Node::Leaf(v) => v
                    .as_i64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or(PickleError::Malformed("numpy dimension")),
                _ => Err(PickleError::Malformed("numpy dimension")),
            })
            .collect()
    }
}

impl Machine<'_> {
    /// Whether node `n` is a set, or a tuple holding one (at any depth).
    pub(super) fn holds_set(&self, n: usize) -> bool {
        let mut todo = vec![n];
        let mut seen = 0usize;
        while let Some(n) = todo.pop() {
            seen += 1;
            if self.sets.contains(&n) {
                return true;
            }
            if let Node::Tup(items) = &self.nodes[n] {
                if seen < self.nodes.len() {
                    todo.extend(items);
                }
            }
        }
        false
    }
}

pub(super) fn int_val(b: BigInt) -> Val {
    i64::try_from(&b).map_or(Val::BigInt(b), Val::I64)
}
