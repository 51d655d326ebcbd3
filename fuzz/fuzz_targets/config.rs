//! The configuration parser on arbitrary text: a config or a list of problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumbline::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = Config::parse(text)
    {
        assert!(
            !e.problems.is_empty(),
            "a refused config names its problems"
        );
    }
});
