//! The PostgreSQL pool every service uses.

use std::time::Duration;

use anyhow::Context;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

pub type DbPool = Pool<AsyncPgConnection>;

/// `database_url` with `application_name` set to `application` (unless it sets one already), so
/// that `pg_stat_activity` tells the services' sessions apart. A URL that does not parse is
/// returned as it is.
pub fn named(database_url: &str, application: &str) -> String {
    match url::Url::parse(database_url) {
        Ok(mut url) if !url.query_pairs().any(|(k, _)| k == "application_name") => {
            url.query_pairs_mut()
                .append_pair("application_name", application);
            url.into()
        }
        _ => database_url.to_owned(),
    }
}

/// `database_url` with its sessions planning each prepared statement once, for every value of its
/// parameters (`plan_cache_mode = force_generic_plan`), for a service whose prepared statements
/// each have one right plan, as the API's do: a list page's order is its index's order whoever
/// asks. Left to choose, PostgreSQL planned a page again on every run for a user with many tasks
/// (the page's share of that user's rows made the one-off plan look cheaper): a third of
/// PostgreSQL's CPU per page. A statement whose best plan depends on its values runs with
/// `SET LOCAL plan_cache_mode = force_custom_plan` in its transaction.
pub fn generic_plans(database_url: &str) -> String {
    with_setting(database_url, "plan_cache_mode%3Dforce_generic_plan")
}

/// `database_url` with JIT compilation off in its sessions ([`pool`] opens every connection so).
/// PostgreSQL compiles a statement whose estimated cost passes `jit_above_cost`, on every run,
/// and the estimate over a table that was never analyzed can be anything: on a new database with
/// 40,000 rows waiting, the relay's claim of 500 was estimated at 19 million, compiled for 144 ms
/// (inlining, optimization, emission) and run in 2 ms. No statement of these services reads
/// enough rows to win back a compile.
pub fn without_jit(database_url: &str) -> String {
    with_setting(database_url, "jit%3Doff")
}

/// `database_url` with `-c SETTING` added to its `options` (or as its `options`). `setting` is
/// percent-encoded as PostgreSQL's URL readers decode it (a `+` would stay a `+`). A URL that
/// does not parse is returned as it is.
fn with_setting(database_url: &str, setting: &str) -> String {
    let Ok(mut url) = url::Url::parse(database_url) else {
        return database_url.to_owned();
    };
    let mut pairs: Vec<String> = url
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(str::to_owned)
        .collect();
    match pairs.iter_mut().find(|pair| pair.starts_with("options=")) {
        Some(options) => *options = format!("{options}%20-c%20{setting}"),
        None => pairs.push(format!("options=-c%20{setting}")),
    }
    url.set_query(Some(&pairs.join("&")));
    url.into()
}

/// How long a [`pool`] waits for a connection, and for opening one.
pub const WAIT: Duration = Duration::from_secs(5);

/// A pool of at most `size` connections, opened lazily, without JIT ([`without_jit`]); waits for
/// a connection at most [`WAIT`].
///
/// A connection goes back into use unchecked, as long as it is open and has no transaction left
/// over: the default check (a `SELECT 1` on every checkout) was one round trip of a create's
/// five. A connection the server has closed (a restart, `pg_terminate_backend`) is seen as closed
/// by then and replaced; one whose network silently died fails its first statement, as it would
/// also have failed right after a passing check.
pub fn pool(database_url: &str, size: usize) -> anyhow::Result<DbPool> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        without_jit(database_url),
        config,
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(WAIT))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .context("building the database pool")
}

/// A round trip to the database.
pub async fn ping(pool: &DbPool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}

/// True when a statement failed because its connection or the server went away (a closed
/// connection, PostgreSQL shutting down or restarting), not because of the statement itself:
/// trying again later can succeed. diesel reports no SQLSTATE, so the server's messages of
/// class 57 (operator intervention: `57P01` admin shutdown, `57P02` crash shutdown, `57P03`
/// cannot connect now) are recognised by their text, which is English unless `lc_messages` says
/// otherwise.
pub fn connection_lost(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        Error::DatabaseError(_, info) => {
            let message = info.message();
            message.starts_with("terminating connection")
                || message.starts_with("the database system is")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{connection_lost, generic_plans, without_jit};

    #[test]
    fn generic_plans_is_added_to_the_options_a_url_has() {
        assert_eq!(
            generic_plans("postgres://u:p@db:5432/taskflow?application_name=api"),
            "postgres://u:p@db:5432/taskflow?application_name=api&options=-c%20plan_cache_mode%3Dforce_generic_plan"
        );
        assert_eq!(
            generic_plans("postgres://u:p@db/taskflow?options=-c%20statement_timeout%3D5s"),
            "postgres://u:p@db/taskflow?options=-c%20statement_timeout%3D5s%20-c%20plan_cache_mode%3Dforce_generic_plan"
        );
        assert_eq!(generic_plans("host=db user=u"), "host=db user=u");
        assert_eq!(
            without_jit(&generic_plans("postgres://u:p@db/taskflow")),
            "postgres://u:p@db/taskflow?options=-c%20plan_cache_mode%3Dforce_generic_plan%20-c%20jit%3Doff"
        );
    }
    use diesel::result::{DatabaseErrorKind, Error};

    fn db_error(kind: DatabaseErrorKind, message: &str) -> Error {
        Error::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn a_closed_connection_or_a_server_going_away_is_a_lost_connection() {
        for (kind, message) in [
            (DatabaseErrorKind::UnableToSendCommand, "connection closed"),
            (
                DatabaseErrorKind::ClosedConnection,
                "server closed the connection unexpectedly",
            ),
            (
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            (
                DatabaseErrorKind::Unknown,
                "terminating connection because of crash of another server process",
            ),
            (
                DatabaseErrorKind::Unknown,
                "the database system is shutting down",
            ),
        ] {
            assert!(connection_lost(&db_error(kind, message)), "{message}");
        }
    }

    #[test]
    fn errors_of_the_statement_are_not() {
        assert!(!connection_lost(&db_error(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key"
        )));
        assert!(!connection_lost(&db_error(
            DatabaseErrorKind::Unknown,
            "syntax error at or near"
        )));
        assert!(!connection_lost(&Error::NotFound));
        assert!(!connection_lost(&Error::RollbackTransaction));
    }
}
