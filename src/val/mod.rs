//! Values: the heap [`Val`] (serde-friendly, Python semantics) and, in the pool,
//! shared objects reached through handles.

pub(crate) mod heap;
mod key;
mod literal;
mod pickle;
mod repr;
mod serde_impl;

pub use heap::{Arr, ArrKind, Complex, Map, NdArr, ShapeError, UnhashableKey, Val, MAX_NDIM};
pub use literal::LiteralError;
pub use pickle::{
    from_pickle, from_pickle_with, to_pickle, to_pickle_numpy, PickleError, PickleLimits,
    DEFAULT_PICKLE_BYTES,
};

/// Builds a [`Val`] from a literal: `val!(None)`, `val!([1, "x", [2.5]])`,
/// `val!({"a" => 1})`, or any expression convertible with `Val::from`.
///
/// List elements and map entries are single token trees: wrap negative numbers and
/// longer expressions in parentheses (`val!([(-1), (x + 1)])`).
///
/// # Examples
/// ```
/// use shmval::val;
/// assert_eq!(val!([1, "x", [2.5], (-3)]).to_string(), "[1, 'x', [2.5], -3]");
/// assert_eq!(val!({"a" => [1, 2]}).to_string(), "{'a': [1, 2]}");
/// ```
#[macro_export]
macro_rules! val {
    (None) => { $crate::Val::None };
    ([ $($e:tt),* $(,)? ]) => { $crate::Val::List(vec![ $( $crate::val!($e) ),* ]) };
    ({ $($k:tt => $v:tt),* $(,)? }) => { $crate::tab!{ $( $crate::val!($k) => $crate::val!($v) ),* } };
    ($e:expr) => { $crate::Val::from($e) };
}

/// Builds a `dict` [`Val`]: `tab! { "seq" => 1, "data" => vec![1.5f64; 8] }`.
///
/// # Panics
/// If a key is unhashable (a list, dict or array).
///
/// # Examples
/// ```
/// use shmval::tab;
/// let t = tab! { "seq" => 1, "name" => "sensor" };
/// assert_eq!(t.to_string(), "{'seq': 1, 'name': 'sensor'}");
/// ```
#[macro_export]
macro_rules! tab {
    () => { $crate::Val::tab() };
    ($($k:expr => $v:expr),+ $(,)?) => {{
        let mut t = $crate::Val::tab();
        $( t.insert($crate::Val::from($k), $crate::Val::from($v)).expect("tab! keys must be hashable"); )+
        t
    }};
}

/// Builds an `OrderedDict` [`Val`], like [`tab!`].
///
/// # Panics
/// If a key is unhashable.
///
/// # Examples
/// ```
/// use shmval::otab;
/// assert_eq!(otab! { "b" => 1, "a" => 2 }.to_string(), "OrderedDict([('b', 1), ('a', 2)])");
/// ```
#[macro_export]
macro_rules! otab {
    () => { $crate::Val::OTab($crate::Map::new()) };
    ($($k:expr => $v:expr),+ $(,)?) => {{
        let mut t = $crate::Val::OTab($crate::Map::new());
        $( t.insert($crate::Val::from($k), $crate::Val::from($v)).expect("otab! keys must be hashable"); )+
        t
    }};
}
