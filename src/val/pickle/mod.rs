//! Python pickle in and out (protocols 2 to 5) for the types of [`Val`].
//!
//! Reading runs a small pickle machine over a node graph (so memoized containers
//! filled later, as Python emits them, stay one object), resolving only an allow-list
//! of globals (`complex`, `collections.OrderedDict`, `array.array`,
//! `array._array_reconstructor`, `_codecs.encode`, `bytearray`, `set`, `frozenset`):
//! a pickle naming anything else is refused, never executed. Nesting and the size of
//! the result are bounded — in values (50 million) and in bytes ([`PickleLimits`]:
//! 256 MiB by default, each value counted with its own heap data and shared
//! references expanded, checked on the node graph before anything is expanded).
//! Protocol 0 text (UNICODE) is raw-unicode-escape, STRING is a Python 2 `str` in
//! repr quotes (escapes decoded; text when UTF-8, else bytes); `bytes()` (how
//! Python 3 writes `b''` in protocols 0 to 2) reads as empty bytes. Valid Python that
//! `Val` cannot hold (a set or frozenset, a class instance) is `Unsupported`;
//! impossible opcode sequences are `Malformed`. Writing emits plain opcodes (no memo).
//!
//! | Val | written as | read back as |
//! |---|---|---|
//! | ints, BigInt | BININT*/LONG1/LONG4 | I64, or BigInt beyond i64 |
//! | F32, F64 | BINFLOAT | F64 |
//! | Complex32/64 | `complex(re, im)` | Complex64 |
//! | Str / Bytes | BINUNICODE / BINBYTES (protocol 2: `_codecs.encode`) | Str / Bytes |
//! | Arr (numeric) | `array.array(code, [..])` | Arr of the same kind |
//! | Arr of bool / complex | list (Python's `array` has no such codes) | List |
//! | List, Tup, Tab | list, tuple, dict | same |
//! | OTab | `collections.OrderedDict()` + SETITEMS | OTab |

use thiserror::Error;

mod arrays;
mod build;
mod escape;
mod numpy;
mod read;
mod write;

pub use read::{from_pickle, from_pickle_with};
pub use write::{to_pickle, to_pickle_numpy};

/// Deepest nesting read or written.
pub(crate) const MAX_DEPTH: usize = 1000;
/// Most values one pickle may expand to.
pub(crate) const MAX_VALUES: usize = 50_000_000;

/// Bounds on what reading a pickle may build: a pickle is small, but memoized
/// references expand (1,000 references to one 1,000-character string are 1 MB of
/// `Val`s, and a 1.1 KB pickle can reference one 2^20 times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleLimits {
    /// Bytes the result may take (each value counted with its own heap data,
    /// shared references expanded). Default: [`DEFAULT_PICKLE_BYTES`] (256 MiB).
    pub max_bytes: u64,
    /// Deepest nesting. Default: 1000 (as Python's recursion limit).
    pub max_depth: usize,
}

/// The default byte budget of [`from_pickle`]: 256 MiB.
pub const DEFAULT_PICKLE_BYTES: u64 = 256 << 20;

impl Default for PickleLimits {
    fn default() -> Self {
        PickleLimits {
            max_bytes: DEFAULT_PICKLE_BYTES,
            max_depth: MAX_DEPTH,
        }
    }
}

/// Why a pickle could not be read or written.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum PickleError {
    /// The data ended inside an opcode.
    #[error("pickle truncated")]
    Truncated,
    /// An opcode this reader does not know.
    #[error("unknown pickle opcode {0:#04x}")]
    BadOpcode(u8),
    /// A known construct that `Val` cannot represent (a class instance, a persistent id...).
    #[error("unsupported in a value pickle: {0}")]
    Unsupported(String),
    /// Well-formed opcodes in an impossible order.
    #[error("malformed pickle: {0}")]
    Malformed(&'static str),
    /// The result would exceed the size limit (shared references expanded).
    #[error("pickle expands beyond {0} values")]
    TooLarge(usize),
    /// The result would take more than the byte budget ([`PickleLimits`]; shared
    /// references expanded).
    #[error("pickle expands beyond {budget} bytes")]
    TooBig {
        /// The budget.
        budget: u64,
    },
    /// Nested deeper than the limit (or cyclic).
    #[error("pickle nested deeper than {0} levels (or cyclic)")]
    TooDeep(usize),
    /// Only protocols 2 to 5 are written.
    #[error("cannot write pickle protocol {0} (2 to 5 are supported)")]
    Protocol(u8),
}
