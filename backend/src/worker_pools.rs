//! The API's database pools: one for each HTTP worker thread.
//!
//! A pooled connection's socket is driven by a task on the thread that opened it. With one pool
//! for every worker, a request was often served on a connection opened by another worker (or by
//! the main runtime, at start-up), and each statement then woke that other thread to send it and
//! again to hand back the reply: about 1.2 context switches per list page on the main runtime's
//! threads alone. A worker that only uses its own pool opens its connections itself, so a
//! statement and its reply never leave the thread.

use std::sync::atomic::{AtomicUsize, Ordering};

use taskflow_db::DbPool;

use crate::read_pipeline::ReadPipeline;

pub struct WorkerPools {
    pools: Vec<DbPool>,
    /// Where each worker's [`ReadPipeline`] connects.
    lists_url: String,
    next: AtomicUsize,
}

impl WorkerPools {
    /// `workers` pools sharing `size` connections to `database_url` between them (at least one
    /// each), and a connection to `lists_url` for each worker's read pipeline. Nothing is opened
    /// until a worker asks.
    pub fn new(
        database_url: &str,
        lists_url: &str,
        size: usize,
        workers: usize,
    ) -> anyhow::Result<WorkerPools> {
        let workers = workers.max(1);
        let each = size.div_ceil(workers).max(1);
        Ok(WorkerPools {
            pools: (0..workers)
                .map(|_| taskflow_db::pool(database_url, each))
                .collect::<anyhow::Result<_>>()?,
            lists_url: lists_url.to_owned(),
            next: AtomicUsize::new(0),
        })
    }

    /// The pool of the worker being started, each in turn, and a read pipeline of its own. A
    /// worker that actix restarts (after a panic) takes the next pool and shares it, which costs
    /// only the thread hops above.
    pub fn for_worker(&self) -> (DbPool, ReadPipeline) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.pools.len();
        (self.pools[n].clone(), ReadPipeline::new(&self.lists_url))
    }

    pub fn pools(&self) -> &[DbPool] {
        &self.pools
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerPools;

    #[test]
    fn the_connections_are_shared_out_and_each_worker_takes_its_own_pool() {
        let url = "postgres://u:p@127.0.0.1:1/db";
        let pools = WorkerPools::new(url, url, 16, 3).unwrap();
        let sizes: Vec<usize> = pools.pools().iter().map(|p| p.status().max_size).collect();
        assert_eq!(sizes, [6, 6, 6]);
        let [first, second, third, again] = std::array::from_fn(|_| pools.for_worker().0);
        // Told apart by resizing one: a pool is a handle, clones share one.
        first.resize(1);
        second.resize(2);
        let max = |p: &taskflow_db::DbPool| p.status().max_size;
        assert_eq!(
            [max(&first), max(&second), max(&third), max(&again)],
            [1, 2, 6, 1]
        );
        assert_eq!(
            WorkerPools::new(url, url, 1, 2).unwrap().pools()[1]
                .status()
                .max_size,
            1
        );
    }
}
