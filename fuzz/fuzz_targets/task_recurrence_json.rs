#![no_main]
//! See shared_events::input_checks::task_recurrence_json.

libfuzzer_sys::fuzz_target!(|data: &[u8]| shared_events::input_checks::task_recurrence_json(data));
