//! Where a load's CPU went, per request: this process (the API, its relay, the bench's own
//! sampling), the load generator (wrk or pgbench, a child run to completion), PostgreSQL (its
//! postmaster and every process it started) and the broker (`BENCH_BROKER_PID`, which `./dev
//! bench` sets to the Tansu it started). The ratios compare whole-machine throughputs on two
//! shared cores; this says whose CPU each request took, so a ratio can be read.
//!
//! From `/proc/<pid>/stat` (utime, stime, and for waited-for children cutime and cstime), in
//! USER_HZ ticks, which Linux fixes at 100 per second for this interface. A backend that exits
//! during the run has its CPU added to the postmaster's children's time, so it is not lost.
//! Off Linux, or with PostgreSQL on another machine, the parts that cannot be read are left out.

use std::time::Duration;

use diesel::sql_types::Integer;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::Load;

/// Microseconds in one USER_HZ tick.
const TICK_US: f64 = 10_000.0;

/// The processes to account for.
pub(super) struct Cpu {
    postmaster: Option<u32>,
    broker: Option<u32>,
}

/// CPU ticks used so far, by part.
#[derive(Clone, Copy, Default)]
pub(super) struct Ticks {
    this: u64,
    /// Children of this process that have been waited for: the load generator of the run.
    generator: u64,
    postgres: Option<u64>,
    broker: Option<u64>,
}

#[derive(QueryableByName)]
struct BackendPid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

impl Cpu {
    /// The server's postmaster is the parent of a backend of ours.
    pub(super) async fn new(database_url: &str) -> anyhow::Result<Cpu> {
        let mut conn = AsyncPgConnection::establish(database_url).await?;
        let backend: BackendPid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result(&mut conn)
            .await?;
        let postmaster = u32::try_from(backend.pid)
            .ok()
            .and_then(stat)
            .map(|s| s.ppid);
        let broker = std::env::var("BENCH_BROKER_PID")
            .ok()
            .and_then(|p| p.trim().parse().ok());
        Ok(Cpu { postmaster, broker })
    }

    pub(super) fn now(&self) -> Ticks {
        let own = std::process::id();
        let this = stat(own).unwrap_or_default();
        let postgres = self.postmaster.map(|postmaster| {
            let started: u64 = processes()
                .iter()
                .filter(|s| s.ppid == postmaster)
                .map(|s| s.own)
                .sum();
            stat(postmaster).map_or(0, |s| s.own + s.children) + started
        });
        Ticks {
            this: this.own,
            generator: this.children,
            postgres,
            broker: self.broker.and_then(stat).map(|s| s.own),
        }
    }
}

impl Ticks {
    /// "CPU per <what>: …" over the requests of `load`, run for `time`, since `before`; this
    /// process's part under the name `this`, when it served them.
    pub(super) fn per(
        &self,
        before: &Ticks,
        (load, time): (&Load, Duration),
        what: &str,
        this: Option<&str>,
        generator: &str,
    ) -> String {
        let count = load.per_second * time.as_secs_f64();
        let us = |ticks: u64| ticks as f64 * TICK_US / count.max(1.0);
        let mut parts = Vec::new();
        if let Some(this) = this {
            parts.push(format!("{this} {:.0} µs", us(self.this - before.this)));
        }
        parts.push(format!(
            "{generator} {:.0} µs",
            us(self.generator - before.generator)
        ));
        if let (Some(now), Some(then)) = (self.postgres, before.postgres) {
            parts.push(format!("PostgreSQL {:.0} µs", us(now - then)));
        }
        if let (Some(now), Some(then)) = (self.broker, before.broker) {
            parts.push(format!("the broker {:.0} µs", us(now - then)));
        }
        format!("CPU per {what}: {}", parts.join(", "))
    }
}

#[derive(Clone, Copy, Default)]
struct Stat {
    ppid: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime.
    children: u64,
}

/// Fields of `/proc/<pid>/stat` after the command name (which may hold spaces).
fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(") ")?.1.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(field(1)?).ok()?,
        own: field(11)? + field(12)?,
        children: field(13)? + field(14)?,
    })
}

/// Every process now.
fn processes() -> Vec<Stat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .collect()
}
