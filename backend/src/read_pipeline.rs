//! One database connection per HTTP worker that the worker's plain list pages share, their
//! statements pipelined on it.
//!
//! With a connection per request, every page woke a PostgreSQL backend of its own, and the
//! kernel switched between sixteen of them, the HTTP workers and the clients on two cores. A
//! plain page is one read outside any transaction, so a worker's concurrent pages can queue on
//! one session: PostgreSQL runs them back to back without sleeping in between, and both sides
//! read and write several at a time. Only statements that need no session state of their own may
//! come here (no transaction, no `SET`), and only ones that read little: a slow one holds up the
//! pages queued behind it.

use std::cell::RefCell;
use std::rc::Rc;

use deadpool::managed::TimeoutType;
use diesel::QueryResult;
use diesel_async::pooled_connection::deadpool::PoolError;
use diesel_async::pooled_connection::PoolError as OpenError;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use taskflow_db::pool::{connection_lost, without_jit, WAIT};

type Shared = Rc<AsyncPgConnection>;

/// Lives on one HTTP worker's thread, which drives its connection's socket. Each worker has its
/// own, a worker that actix restarts too.
pub struct ReadPipeline {
    /// Where it connects, as `taskflow_db::pool` would.
    url: String,
    held: RefCell<Option<Shared>>,
    opening: tokio::sync::Mutex<()>,
}

impl ReadPipeline {
    /// Connects to `database_url` when a page first asks.
    pub fn new(database_url: &str) -> ReadPipeline {
        ReadPipeline {
            url: without_jit(database_url),
            held: RefCell::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// `statement`'s result on the shared connection; if the server had closed it (a restart,
    /// `pg_terminate_backend`), once more on a new one: a read can run twice.
    pub async fn read<T>(
        &self,
        statement: impl AsyncFn(&AsyncPgConnection) -> QueryResult<T>,
    ) -> Result<QueryResult<T>, PoolError> {
        let conn = self.connection().await?;
        match statement(&conn).await {
            Err(e) if connection_lost(&e) => {
                self.lost(&conn);
                let conn = self.connection().await?;
                let result = statement(&conn).await;
                if result.as_ref().is_err_and(connection_lost) {
                    self.lost(&conn);
                }
                Ok(result)
            }
            result => Ok(result),
        }
    }

    /// The shared connection, opened on first use.
    async fn connection(&self) -> Result<Shared, PoolError> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        // Pages that arrive while it opens wait for that one. A page gives up after the pools'
        // wait in all, however many wait before it while the server does not answer.
        tokio::time::timeout(WAIT, async {
            let _opening = self.opening.lock().await;
            if let Some(conn) = self.current() {
                return Ok(conn);
            }
            let conn = AsyncPgConnection::establish(&self.url)
                .await
                .map_err(|e| PoolError::Backend(OpenError::ConnectionError(e)))?;
            let conn = Rc::new(conn);
            *self.held.borrow_mut() = Some(conn.clone());
            Ok(conn)
        })
        .await
        .unwrap_or(Err(PoolError::Timeout(TimeoutType::Wait)))
    }

    /// The next page opens another connection, unless one already replaced `conn` (which
    /// closes once the pages still on it let go).
    fn lost(&self, conn: &Shared) {
        let mut held = self.held.borrow_mut();
        if held.as_ref().is_some_and(|h| Rc::ptr_eq(h, conn)) {
            *held = None;
        }
    }

    fn current(&self) -> Option<Shared> {
        self.held.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use diesel_async::RunQueryDsl;

    use super::ReadPipeline;

    /// A server that accepts connections and never answers: opening one never ends. Three pages
    /// at once all give up after the pools' wait (5 s).
    #[tokio::test]
    async fn pages_waiting_for_an_unanswering_server_give_up_after_one_wait() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let url = format!("postgres://u:p@127.0.0.1:{port}/db");
        let pipeline = ReadPipeline::new(&url);
        let started = Instant::now();
        let page =
            || pipeline.read(async |conn| diesel::sql_query("SELECT 1").execute(&mut &*conn).await);
        let (a, b, c) = tokio::join!(page(), page(), page());
        let took = started.elapsed();
        assert!(a.is_err() && b.is_err() && c.is_err());
        assert!(took < Duration::from_secs(8), "{took:?}");
        held.abort();
    }
}
