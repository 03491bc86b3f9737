//! Arrays of 0 or 2+ dimensions (`Val::NdArr`): in and out of pools with their
//! shape, validated (a damaged shape is corrupt, never a panic), in snapshots, JSON
//! and pickles — numpy's own pickles read (protocols 2 to 5, numpy 2 and 1.x module
//! names, Fortran order, big-endian, scalars) and written back.
//!
//! The fixtures (`tests/fixtures/numpy_pickles.rs`) were written by numpy 2.4.6:
//! `pickle.dumps(value, protocol)` for each case named there (see its consts).

mod common;

use common::Scratch;
use proptest::prelude::*;
use shmval::{from_pickle, to_pickle, Arr, NdArr, Pool, PoolOptions, Val};

include!("fixtures/numpy_pickles.rs");

fn pool(s: &Scratch) -> Pool {
    Pool::create_with(s.name(), 4 << 20, &PoolOptions::new().remove_on_drop(true)).unwrap()
}

fn nd(shape: &[usize], data: Arr) -> Val {
    Val::from(NdArr::new(shape.to_vec(), data).unwrap())
}

#[test]
fn numpy_pickles_read_as_arrays_with_their_shape() {
    let m = nd(&[2, 3], Arr::F64(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    assert_eq!(from_pickle(F8_2X3_P2).unwrap(), m);
    assert_eq!(
        from_pickle(F8_2X3_P5).unwrap(),
        m,
        "protocol 5: _frombuffer"
    );
    // numpy 1.x wrote `numpy.core.multiarray`: the same bytes otherwise (protocol 2
    // names globals by newline-terminated text).
    let (new_name, old_name) = (&b"numpy._core."[..], &b"numpy.core."[..]);
    let at = F8_2X3_P2
        .windows(new_name.len())
        .position(|w| w == new_name)
        .unwrap();
    let old = [
        &F8_2X3_P2[..at],
        old_name,
        &F8_2X3_P2[at + new_name.len()..],
    ]
    .concat();
    assert_eq!(from_pickle(&old).unwrap(), m, "numpy 1.x module names");
    // Fortran order, big-endian int32: C order, native numbers.
    assert_eq!(
        from_pickle(I4BE_FORTRAN_3X4_P3).unwrap(),
        nd(&[3, 4], Arr::I32((0..12).collect()))
    );
    assert_eq!(
        from_pickle(F4_1D_P4).unwrap(),
        Val::Arr(Arr::F32(vec![1.5, -2.0, 3.25])),
        "one dimension is a plain array"
    );
    assert_eq!(
        from_pickle(F8_0D_P2).unwrap(),
        nd(&[], Arr::F64(vec![3.25]))
    );
    assert_eq!(
        from_pickle(B1_2X2_P5).unwrap(),
        nd(&[2, 2], Arr::Bool(vec![true, false, false, true]))
    );
    assert_eq!(
        from_pickle(C16_2X1_P2).unwrap(),
        nd(
            &[2, 1],
            Arr::C64(vec![
                shmval::Complex::new(1.0, 2.0),
                shmval::Complex::new(3.0, -4.0)
            ])
        )
    );
    assert_eq!(from_pickle(SCALAR_F32_P2).unwrap(), Val::F32(1.5));
    assert_eq!(from_pickle(SCALAR_I64_P5).unwrap(), Val::I64(-7));
    assert_eq!(
        from_pickle(SCALAR_C128_P3).unwrap(),
        Val::Complex64(shmval::Complex::new(1.0, 2.0))
    );
    // What is not numbers is refused, clearly.
    for (what, p) in [("object", OBJECT_ARRAY), ("structured", RECORD_ARRAY)] {
        let e = from_pickle(p).unwrap_err();
        assert!(
            matches!(e, shmval::PickleError::Unsupported(_)),
            "{what}: {e:?}"
        );
    }
}

#[test]
fn shaped_arrays_round_trip_through_pickles_snapshots_and_json() {
    let v = shmval::tab! {
        "m" => nd(&[2, 2], Arr::I16(vec![1, -2, 3, -4])),
        "cube" => nd(&[2, 1, 2], Arr::C32(vec![shmval::Complex::new(1.0, 0.5); 4])),
        "empty" => nd(&[3, 0], Arr::F64(vec![])),
        "zero_d" => nd(&[], Arr::U8(vec![7])),
    };
    for p in 2..=5 {
        assert_eq!(
            from_pickle(&to_pickle(&v, p).unwrap()).unwrap(),
            v,
            "protocol {p}"
        );
    }
    let s = Scratch::new("nd-snap");
    let pool = pool(&s);
    pool.root().unwrap().insert("v", v.clone()).unwrap();
    let file = std::env::temp_dir().join(format!("{}.snap", s.name()));
    pool.save(&file).unwrap();
    let s2 = Scratch::new("nd-load");
    let back = Pool::load(&file, s2.name(), &PoolOptions::new().remove_on_drop(true)).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(back.root().unwrap().get_val("v").unwrap(), Some(v.clone()));
    let m = &v.as_tab().unwrap()[&Val::from("m")];
    assert_eq!(serde_json::to_string(m).unwrap(), "[[1,-2],[3,-4]]");
    assert_eq!(
        serde_json::to_string(&nd(&[], Arr::F64(vec![2.5]))).unwrap(),
        "2.5"
    );
}

#[test]
fn a_damaged_shape_is_corrupt_not_a_panic() {
    let s = Scratch::new("nd-bad");
    let pool = pool(&s);
    let a = pool.new_arr_shaped::<f64>(&[3, 4]).unwrap();
    assert_eq!(a.len(), 12);
    assert_eq!(a.as_val().shape().unwrap(), Some(vec![3, 4]));
    pool.root().unwrap().insert("a", a.as_val()).unwrap();
    assert!(pool.check().is_ok());
    // The second dimension (after 96 bytes of elements) says 5: 15 != 12.
    let base = a.as_val().arr_parts().unwrap().unwrap().2;
    // SAFETY: inside the array object (its dimensions follow its elements); the
    // test alone uses this pool.
    unsafe {
        (*(base.add(96 + 8) as *const std::sync::atomic::AtomicU64))
            .store(5, std::sync::atomic::Ordering::Relaxed)
    };
    assert!(a.as_val().to_val().is_err());
    assert!(a.as_val().shape().is_err());
    let c = pool.check();
    assert!(c.problems.iter().any(|p| p.what.contains("shape")), "{c:?}");
}

fn kinds() -> impl Strategy<Value = (Vec<usize>, Arr)> {
    prop::collection::vec(0..4usize, 0..5)
        .prop_filter("not one dimension", |s| s.len() != 1)
        .prop_flat_map(|shape| {
            let n: usize = shape.iter().product();
            let arr = prop_oneof![
                prop::collection::vec(any::<f64>(), n).prop_map(Arr::F64),
                prop::collection::vec(any::<i8>(), n).prop_map(Arr::I8),
                prop::collection::vec(any::<u32>(), n).prop_map(Arr::U32),
                prop::collection::vec(any::<bool>(), n).prop_map(Arr::Bool),
            ];
            (Just(shape), arr)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any shape of 0 or 2..4 dimensions and any elements: shared and read back
    /// equal (bits for floats: NaN is not equal to itself), the shape reported, the
    /// flat view in C order, pickled and read back equal.
    #[test]
    fn any_shape_round_trips(case in kinds()) {
        let (shape, data) = case;
        let v = nd(&shape, data.clone());
        let s = Scratch::new("nd-prop");
        let pool = pool(&s);
        let h = pool.share(&v).unwrap();
        prop_assert_eq!(h.shape().unwrap(), Some(shape.clone()));
        let back = h.to_val().unwrap();
        prop_assert_eq!(format!("{back:?}"), format!("{v:?}"));
        if let Arr::F64(d) = &data {
            let flat = h.as_arr::<f64>().unwrap().unwrap().to_vec();
            prop_assert_eq!(
                flat.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                d.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
        prop_assert!(pool.check().is_ok());
        let p = from_pickle(&to_pickle(&v, 3).unwrap()).unwrap();
        prop_assert_eq!(format!("{p:?}"), format!("{v:?}"));
    }
}

/// Finite floats: `repr` writes `inf` and `nan` as Python does, which are no
/// literals (for scalars as for arrays).
fn finite64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |x| x.is_finite())
}

fn finite32() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("finite", |x| x.is_finite())
}

/// Arrays of every kind, of 0 to 3 dimensions (one dimension: a plain `array`).
fn any_array() -> impl Strategy<Value = Val> {
    use prop::collection::vec;
    use shmval::Complex;
    prop::collection::vec(0..4usize, 0..4)
        .prop_flat_map(|shape| {
            let n: usize = shape.iter().product();
            let arr = prop_oneof![
                vec(finite64(), n).prop_map(Arr::F64),
                vec(finite32(), n).prop_map(Arr::F32),
                vec(any::<i64>(), n).prop_map(Arr::I64),
                vec(any::<u64>(), n).prop_map(Arr::U64),
                vec(any::<i16>(), n).prop_map(Arr::I16),
                vec(any::<u8>(), n).prop_map(Arr::U8),
                vec(any::<bool>(), n).prop_map(Arr::Bool),
                vec((finite32(), finite32()), n).prop_map(|v| Arr::C32(
                    v.into_iter().map(|(re, im)| Complex { re, im }).collect()
                )),
                vec((finite64(), finite64()), n).prop_map(|v| Arr::C64(
                    v.into_iter().map(|(re, im)| Complex { re, im }).collect()
                )),
            ];
            (Just(shape), arr)
        })
        .prop_map(|(shape, a)| {
            if shape.len() == 1 {
                Val::Arr(a)
            } else {
                nd(&shape, a)
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `repr` of any array reads back as the same array (bit for bit: `-0.0`, the
    /// shortest float forms of `f32` elements), alone and inside a container.
    #[test]
    fn array_reprs_read_back(v in any_array()) {
        let back = Val::from_literal(&v.to_string()).unwrap();
        prop_assert_eq!(format!("{back:?}"), format!("{v:?}"));
        let t = Val::List(vec![v.clone(), Val::from("x")]);
        let back = Val::from_literal(&t.to_string()).unwrap();
        prop_assert_eq!(format!("{back:?}"), format!("{t:?}"));
    }
}

#[test]
fn array_literals_and_their_errors() {
    assert_eq!(
        Val::from_literal("array('d')").unwrap(),
        Val::Arr(Arr::F64(vec![]))
    );
    assert_eq!(
        Val::from_literal("array('q', [1, -2])").unwrap(),
        Val::Arr(Arr::I64(vec![1, -2]))
    );
    // An int in a float array, as Python's `array('d', [1])` takes it.
    assert_eq!(
        Val::from_literal("array('d', [1, 2.5])").unwrap(),
        Val::Arr(Arr::F64(vec![1.0, 2.5]))
    );
    // One dimension is a plain array.
    assert_eq!(
        Val::from_literal("ndarray((2,), 'B', [1, 2])").unwrap(),
        Val::Arr(Arr::U8(vec![1, 2]))
    );
    for bad in [
        "array('z', [1])",             // no such typecode
        "array('dd', [1])",            // not one character
        "array('b', [300])",           // out of range
        "array('q', [1.5])",           // not an integer
        "array('?', [1])",             // not a bool
        "array('d', (1, 2))",          // not a list
        "array('d', [1]",              // unclosed
        "ndarray((2, 2), 'd', [1.0])", // 4 elements wanted
        "ndarray(2, 'd', [1.0, 2.0])", // a shape is a tuple
        "ndarray((-1, 2), 'd', [])",   // a negative size
    ] {
        assert!(Val::from_literal(bad).is_err(), "{bad}");
    }
}

/// serde reads an array with a shape as nested sequences, one level a dimension (as
/// JSON writes it); 0 dimensions is the element; one dimension a flat sequence.
#[test]
fn serde_reads_a_shape_as_nested_sequences() {
    let s = Scratch::new("nd-serde");
    let pool = pool(&s);
    let share = |v: Val| pool.share(&v).unwrap();
    let m = share(nd(&[2, 3], Arr::F64(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])));
    assert_eq!(
        m.deserialize::<Vec<Vec<f64>>>().unwrap(),
        vec![vec![0.0, 1.0, 2.0], vec![3.0, 4.0, 5.0]]
    );
    let c = share(nd(&[2, 1, 2], Arr::I32(vec![1, 2, 3, 4])));
    assert_eq!(
        c.deserialize::<Vec<Vec<Vec<i32>>>>().unwrap(),
        vec![vec![vec![1, 2]], vec![vec![3, 4]]]
    );
    assert_eq!(
        share(nd(&[], Arr::U8(vec![7])))
            .deserialize::<u8>()
            .unwrap(),
        7
    );
    assert_eq!(
        share(nd(&[2, 0], Arr::F32(vec![])))
            .deserialize::<Vec<Vec<f32>>>()
            .unwrap(),
        vec![Vec::<f32>::new(), vec![]]
    );
    assert_eq!(
        share(nd(&[0, 3], Arr::F32(vec![])))
            .deserialize::<Vec<Vec<f32>>>()
            .unwrap(),
        Vec::<Vec<f32>>::new()
    );
    let flat = share(Val::Arr(Arr::I64(vec![1, 2, 3])));
    assert_eq!(flat.deserialize::<Vec<i64>>().unwrap(), vec![1, 2, 3]);
    // Read flat where nesting is: a typed error, not a wrong value.
    assert!(m.deserialize::<Vec<f64>>().is_err());
    // The typed reads are flat readers (as `as_arr`): the elements in C order, the
    // shape beside them.
    let t = pool.new_tab().unwrap();
    t.insert("m", m.clone()).unwrap();
    assert_eq!(
        t.get_as::<Vec<f64>>("m").unwrap(),
        Some(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    );
    assert_eq!(m.shape().unwrap(), Some(vec![2, 3]));
    // Inside a struct, as a message field.
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Frame {
        seq: i64,
        image: Vec<Vec<f64>>,
    }
    let t = pool.new_tab().unwrap();
    t.insert("seq", 7).unwrap();
    t.insert("image", m.clone()).unwrap();
    assert_eq!(
        t.as_val().deserialize::<Frame>().unwrap(),
        Frame {
            seq: 7,
            image: vec![vec![0.0, 1.0, 2.0], vec![3.0, 4.0, 5.0]]
        }
    );
}
