//! `from_pickle` on arbitrary bytes: a value or a typed error, never a panic, a hang
//! or unbounded memory; what it reads writes back and reads again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmval::{from_pickle, from_pickle_with, to_pickle, PickleLimits};

fuzz_target!(|data: &[u8]| {
    let limits = PickleLimits {
        max_bytes: 64 << 20,
        ..PickleLimits::default()
    };
    if let Ok(v) = from_pickle_with(data, &limits) {
        // Whatever was read can be written (protocol 5) and read back.
        if let Ok(p) = to_pickle(&v, 5) {
            let back = from_pickle(&p).expect("a pickle we wrote reads back");
            assert_eq!(back.to_string(), v.to_string());
        }
    }
});
