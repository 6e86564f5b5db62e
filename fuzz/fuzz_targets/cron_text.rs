#![no_main]
//! See shared_events::input_checks::cron_text.

libfuzzer_sys::fuzz_target!(|data: &[u8]| shared_events::input_checks::cron_text(data));
