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

use diesel::QueryResult;
use diesel_async::pooled_connection::deadpool::{Object, PoolError};
use diesel_async::AsyncPgConnection;
use taskflow_db::pool::connection_lost;
use taskflow_db::DbPool;

type Shared = Rc<Object<AsyncPgConnection>>;

/// Lives on one HTTP worker's thread, which drives its connection's socket.
pub struct ReadPipeline {
    /// Of size 1: opens the connection, and again once a lost one has been let go.
    pool: DbPool,
    held: RefCell<Option<Shared>>,
    opening: tokio::sync::Mutex<()>,
}

impl ReadPipeline {
    /// Over `pool`, of size 1.
    pub fn new(pool: DbPool) -> ReadPipeline {
        ReadPipeline {
            pool,
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
                // Let go first: the pool opens the next one once every page has let go of this.
                drop(conn);
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
        // Pages that arrive while it opens wait for that one.
        let _opening = self.opening.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let conn = Rc::new(self.pool.get().await?);
        *self.held.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }

    /// The next page opens another connection, unless one already replaced `conn`.
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
