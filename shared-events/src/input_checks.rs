//! What the fuzz targets (`fuzz/`, `./dev fuzz`) run on each input, and the unit tests replay on
//! their seeds: a parser of outside input either refuses it with an error or gives a value that
//! behaves (expands, describes itself, survives a round trip). A panic anywhere is a finding.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::recurrence::{Anchor, CronInput, Recurrence, RecurrenceInput, RuleInput};
use crate::CloudEvent;

/// Zones with DST edges and far offsets, picked by an input byte.
const ZONES: [Tz; 4] = [
    Tz::UTC,
    Tz::Europe__Berlin,
    Tz::America__St_Johns,
    Tz::Pacific__Kiritimati,
];

/// The first byte picks the anchor, the zone and a due date (a DST change or a month end);
/// the rest is the text.
fn split(data: &[u8]) -> Option<(Anchor, Tz, DateTime<Tz>, String)> {
    let (&pick, text) = data.split_first()?;
    let anchor = if pick & 1 == 0 {
        Anchor::Due
    } else {
        Anchor::Completion
    };
    let tz = ZONES[usize::from(pick >> 1) % ZONES.len()];
    let (y, m, d, h) = match (pick >> 3) % 4 {
        0 => (2026, 3, 29, 2),
        1 => (2026, 10, 25, 2),
        2 => (2028, 2, 29, 9),
        _ => (2026, 1, 31, 23),
    };
    let due = tz.with_ymd_and_hms(y, m, d, h, 30, 0).earliest()?;
    Some((anchor, tz, due, String::from_utf8_lossy(text).into_owned()))
}

/// A parsed recurrence expands in order, describes itself and reads back as stored.
fn behaves(recurrence: &Recurrence, due: DateTime<Tz>, tz: Tz) {
    let _ = recurrence.summary();
    let due = due.with_timezone(&Utc);
    let dates = recurrence.upcoming(due, 1, tz, 4);
    assert!(
        dates.windows(2).all(|w| w[0] < w[1]) && dates.first().is_none_or(|d| *d > due),
        "occurrences out of order: {dates:?}"
    );
    let _ = recurrence.next_occurrence(Some(due), due + chrono::TimeDelta::days(400), 2, tz);
    let stored = serde_json::to_value(recurrence).expect("a recurrence serialises");
    let back: Recurrence = serde_json::from_value(stored.clone()).expect("stored form reads back");
    assert_eq!(&back, recurrence, "stored form {stored}");
}

fn schedule(input: RecurrenceInput, due: DateTime<Tz>, tz: Tz) {
    for due in [Some(due), None] {
        if let Ok(recurrence) = Recurrence::parse(&input, due) {
            behaves(
                &recurrence,
                due.unwrap_or_else(|| tz.from_utc_datetime(&Utc::now().naive_utc())),
                tz,
            );
        }
    }
}

/// RRULE text as a client sends it in `{"rule": ...}`.
pub fn rule_text(data: &[u8]) {
    if let Some((anchor, tz, due, rule)) = split(data) {
        schedule(RecurrenceInput::Rule(RuleInput { rule, anchor }), due, tz);
    }
}

/// Cron text as a client sends it in `{"cron": ...}`.
pub fn cron_text(data: &[u8]) {
    if let Some((anchor, tz, due, cron)) = split(data) {
        schedule(RecurrenceInput::Cron(CronInput { cron, anchor }), due, tz);
    }
}

/// A Kafka or Dapr message as the consumers decode it; what decodes encodes and decodes again.
pub fn cloudevent(data: &[u8]) {
    if let Ok((event, _)) = CloudEvent::decode(Some(data)) {
        let bytes = serde_json::to_vec(&event).expect("a decoded event serialises");
        let (again, _) = CloudEvent::decode(Some(&bytes)).expect("a decoded event decodes again");
        assert_eq!(again, event);
    }
}

/// The recurrence part of a task body (`recurrence`, `due_at`, `timezone`), as the backend
/// reads it, and the stored form events carry (`TaskSnapshot.recurrence`).
pub fn task_recurrence_json(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let tz: Tz = body["timezone"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or(Tz::UTC);
    let due = body["due_at"]
        .as_str()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&tz));
    if let Ok(input) = serde_json::from_value::<RecurrenceInput>(body["recurrence"].clone()) {
        if let Ok(recurrence) = Recurrence::parse(&input, due) {
            if let Some(due) = due {
                behaves(&recurrence, due, tz);
            }
        }
    }
    if let Ok(stored) = serde_json::from_value::<Recurrence>(body["stored"].clone()) {
        // Stored text is not re-validated: it must never panic, whatever it holds.
        let _ = stored.summary();
        let at = due.map_or_else(Utc::now, |d| d.with_timezone(&Utc));
        let _ = stored.next_occurrence(Some(at), at, 1, tz);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    type Check = fn(&[u8]);

    /// Every seed of every fuzz target (`fuzz/seeds/TARGET/`), through its check.
    #[test]
    fn fuzz_seeds_replay() {
        // At run time, not `env!`: a test binary in a shared target directory may have been
        // built in another checkout.
        let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test");
        let seeds = Path::new(&crate_dir).join("../fuzz/seeds");
        let targets: [(&str, Check); 4] = [
            ("rule_text", super::rule_text),
            ("cron_text", super::cron_text),
            ("cloudevent", super::cloudevent),
            ("task_recurrence_json", super::task_recurrence_json),
        ];
        for (target, check) in targets {
            let dir = seeds.join(target);
            let mut n = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let path = entry.unwrap().path();
                check(&std::fs::read(&path).unwrap());
                n += 1;
            }
            assert!(n > 0, "no seeds in {dir:?}");
        }
    }
}
